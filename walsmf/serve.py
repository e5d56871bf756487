"""Online recommendations: an HTTP server for a walsmf export, speaking TF Serving's REST API and Vertex AI's
custom-container contract, on gunicorn.

    python -m walsmf.serve --model-dir wals_trained/export/Servo [--port 8080] [--workers 2]

Routes (docs/serving.md):

    GET  /v1/models/NAME                 TF Serving's model status: the versions and their states
    GET  /v1/models/NAME/metadata        the export's inputs and outputs
    POST /v1/models/NAME:predict         {"instances": [...]} -> {"predictions": [...]},
                                         {"inputs": {key: [...]}} -> {"outputs": {key: [...]}}
    GET  $AIP_HEALTH_ROUTE (/health)     200 once this worker has loaded the model
    POST $AIP_PREDICT_ROUTE (/predict)   {"instances": [...], "parameters": {...}} -> {"predictions": [...]}

An instance is what walsmf.predict reads (walsmf.instances); Vertex's
``parameters`` (k, exclude, excludeRead) apply to every instance that does not
set them.  A bad request is a 400 with one line {"error": "instance 2: ..."}
naming the instance and the field; a body over --max_request_bytes (Vertex's
1.5 MB) a 413; headers or a body that do not arrive in time a 408
(walsmf.http_deadlines); the server goes on serving.  Each worker process (one per core)
loads the model after the fork (TensorFlow does not survive a fork), so the
port answers only once a worker holds the model.  SIGTERM (Vertex removing a
replica) lets in-flight requests finish, then the server exits 0.

Given a directory of versions (export/Servo, or a training's output_dir), each
worker looks for a newer version every --poll_seconds, as TF Serving polls
its base path: it loads it beside the one serving and swaps when it is
loaded (walsmf.versions), so no request fails; a version that fails to load
is reported (its state END with the error) and the old one goes on serving.

Without --model-dir the model is $AIP_STORAGE_URI (a gs:// copy of the export,
copied to local disk by each worker); the port is $AIP_HTTP_PORT (8080).
"""
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from walsmf import flags
from walsmf.errors import DEBUG_ENV, DataError, loads_json, run_cli, shortened
from walsmf.instances import KEYS, SIGNATURES
from walsmf.memory import check_available
from walsmf.versions import BadRequest, Snapshots, Versions, poll_forever

DEFAULT_PORT = 8080
# Vertex AI's shared public endpoints take at most 1.5 MB a request.
MAX_REQUEST_BYTES = 1536 * 1024
MAX_REQUEST_BYTES_CEILING = 64 * 2 ** 20
MODEL_NAME = "walsmf"
# How often a worker looks for a newer export version (TF Serving polls its base path every second by default).
POLL_SECONDS = 2.0
MIN_POLL_SECONDS, MAX_POLL_SECONDS = 0.1, 86400.0  # shorter is a busy loop; longer, use 0 and restart
# A worker's threads for requests of many instances (a few instances are answered on its event loop).
THREADS = 2
# A worker's memory: TensorFlow, uvicorn and a model (measured: 0.52 GB with the lab's 14 MB export).
WORKER_BYTES = 0.6e9


def routes(environ):
    """(model name for TF Serving, health route, predict route) from Vertex's variables and the defaults."""
    return (environ.get("WALSMF_MODEL_NAME", MODEL_NAME), environ.get("AIP_HEALTH_ROUTE", "/health"),
            environ.get("AIP_PREDICT_ROUTE", "/predict"))


def application(versions, max_request_bytes=MAX_REQUEST_BYTES, environ=os.environ, threads=THREADS):
    """The ASGI application serving ``versions`` (a Versions): a request of a few instances is answered on the
    event loop (a tenth of a millisecond each), a larger one on one of ``threads`` threads, so that /health and
    small requests keep being answered meanwhile.  Each request is answered by one version, the one serving
    when it came."""
    name, health_route, predict_route = routes(environ)
    base = "/v1/models/" + name
    versioned = re.compile(re.escape(base) + r"/versions/([0-9]+)(.*)")
    pool = ThreadPoolExecutor(threads, thread_name_prefix="walsmf-answer")

    def metadata(model):
        return {"model_spec": {"name": name, "version": model.version},
                "metadata": {"inputs": list(KEYS), "serving_info": model.info}}

    def tf_serving_predict(model, body):
        if body.get("signature_name", SIGNATURES[0]) not in SIGNATURES:
            raise BadRequest(400, "signature_name {!r} is not the export's: give {} or leave it out".format(
                body["signature_name"], " or ".join(SIGNATURES)))
        if "instances" in body and "inputs" in body:
            raise BadRequest(400, 'the body holds both "instances" and "inputs": give one')
        if "instances" in body:
            return {"predictions": model.answer(body["instances"])}
        if "inputs" in body and isinstance(body["inputs"], dict) and body["inputs"]:
            columns = body["inputs"]
            lengths = {len(v) if isinstance(v, list) else -1 for v in columns.values()}
            if len(lengths) != 1 or -1 in lengths:
                raise BadRequest(400, "inputs must map each key to a list, one entry per instance, all as long")
            rows = [{key: values[n] for key, values in columns.items()} for n in range(lengths.pop())]
            answers = model.answer(rows)
            return {"outputs": {key: [a[key] for a in answers] for key in answers[0]}}
        raise BadRequest(400, 'the body must hold "instances" (a list) or "inputs" (a map of lists)')

    gets = {base: lambda model: versions.status(), base + "/metadata": metadata,
            health_route: lambda model: {"status": "ok", "version": model.version}}
    posts = {base + ":predict": tf_serving_predict,
             predict_route: lambda model, body: {"predictions": model.answer(body.get("instances"),
                                                                             body.get("parameters"))}}

    async def respond(scope, receive):
        path, method, model = scope["path"], scope["method"], versions.model
        asked = versioned.fullmatch(path)
        if asked and asked.group(2) in ("", "/metadata", ":predict"):
            if asked.group(1) != model.version:
                raise BadRequest(404, "version {} of {} is not served: version {} is (GET {})".format(
                    asked.group(1), name, model.version, base))
            path = base + asked.group(2)
        if method in ("GET", "HEAD") and path in gets:
            return 200, gets[path](model)
        if method == "POST" and path in posts:
            body = await _json_body(scope, receive, max_request_bytes)
            if _instance_count(body) <= INLINE_INSTANCES:
                return 200, posts[path](model, body)
            answering = asyncio.get_event_loop().run_in_executor(pool, posts[path], model, body)
            try:
                return 200, await asyncio.wait_for(asyncio.shield(answering), REQUEST_SECONDS)
            except asyncio.TimeoutError:
                raise BadRequest(503, "the request took over {} s: send fewer instances or a smaller k a "
                                      "request".format(REQUEST_SECONDS))
        if path in gets or path in posts:
            raise BadRequest(405, "{} takes {}, not {}".format(path, "GET" if path in gets else "POST", method))
        raise BadRequest(404, "no route {} (see /v1/models/{} and {})".format(path, name, predict_route))

    async def app(scope, receive, send):
        if scope["type"] != "http":  # lifespan: nothing to start, the model is loaded
            return
        try:
            status, payload = await respond(scope, receive)
        except BadRequest as err:
            status, payload = err.status, {"error": shortened(str(err))}
        body = json.dumps(payload).encode("utf-8")
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status in (408, 413):  # the body may not have been read to its end: this connection is done
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
    return app


# Requests of at most this many instances are answered on the event loop; larger ones on a thread.
INLINE_INSTANCES = 8
# A request's time limit (a 503 past it; the bounds of walsmf.versions keep a lab-size one under 3 s), and
# SIGTERM's drain: in-flight requests may run that long, then the workers go.
REQUEST_SECONDS = 25
GRACEFUL_SECONDS = REQUEST_SECONDS + 5


def _instance_count(body):
    """How many instances a request body holds (what decides where it is answered)."""
    rows = body.get("instances")
    if isinstance(rows, list):
        return len(rows)
    columns = body.get("inputs")
    return max((len(v) for v in columns.values() if isinstance(v, list)), default=0) if isinstance(columns, dict) \
        else 0


# Most clients send the whole body before reading the answer: closing with the body unread gives them a reset
# instead of the 413, so a body up to this many times the limit is read and dropped first.
OVERSIZE_DRAINED = 8


# A request's body must arrive within this long (its headers within walsmf.http_deadlines.HEADER_SECONDS).
BODY_SECONDS = 30.0


def late(what, seconds):
    """The 408's line: the request's ``what`` did not arrive within ``seconds``."""
    return "the request's {} did not arrive within {:g} s: send the whole request at once".format(what, seconds)


async def _json_body(scope, receive, max_request_bytes):
    """The request's JSON object, read only up to the limit, within BODY_SECONDS (else a 408)."""
    finish = asyncio.get_event_loop().time() + BODY_SECONDS
    length = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
    if length.isdigit() and int(length) > max_request_bytes:
        await _drain(receive, min(int(length), OVERSIZE_DRAINED * max_request_bytes), finish)
        raise BadRequest(413, "the request holds {} bytes, over this server's {}: send fewer instances per "
                              "request".format(length, max_request_bytes))
    chunks, size, more = [], 0, True
    while more and size <= max_request_bytes:
        message = await _received_by(receive, finish)
        if message is None:
            raise BadRequest(408, late("body", BODY_SECONDS))
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False)
    if size > max_request_bytes:
        await _drain(receive, OVERSIZE_DRAINED * max_request_bytes - size, finish)
        raise BadRequest(413, "the request is over this server's {} bytes: send fewer instances per request".format(
            max_request_bytes))
    try:
        body = loads_json(b"".join(chunks).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise BadRequest(400, "the body is not JSON: {}".format(str(err).splitlines()[0]))
    except RecursionError:
        raise BadRequest(400, "the body nests JSON too deeply: an instance is a flat object")
    if not isinstance(body, dict):
        raise BadRequest(400, "the body must be a JSON object")
    return body


async def _received_by(receive, finish):
    """The body's next message, or None when the event loop's clock passes ``finish`` first."""
    try:
        return await asyncio.wait_for(receive(), max(0.0, finish - asyncio.get_event_loop().time()))
    except asyncio.TimeoutError:
        return None


async def _drain(receive, most, finish):
    """Read and drop up to ``most`` bytes of the request body, until ``finish`` at the latest."""
    while most > 0:
        message = await _received_by(receive, finish)
        if message is None:
            return
        most -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def environment_port(environ):
    """The port $AIP_HTTP_PORT names (Vertex AI sets it), or DEFAULT_PORT without it; a DataError naming the
    variable when it is no TCP port."""
    text = environ.get("AIP_HTTP_PORT")
    if text is None:
        return DEFAULT_PORT
    if not (text.strip().isdigit() and 1 <= int(text) <= 65535):
        raise DataError("AIP_HTTP_PORT={!r} is not a TCP port: set it to 1..65535, or unset it for {}".format(
            text, DEFAULT_PORT))
    return int(text)


def check_port_free(host, port):
    """Refuse a port something already listens on, in one line (gunicorn would retry, then log and exit)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise DataError("cannot listen on {}:{} ({}): stop what listens there, or give another --port".format(
                host, port, err.strerror or err))


def check_model(model_dir):
    """Load the model once in a process of its own and refuse it in one line if it fails, so that the server's
    master never imports TensorFlow (each worker loads after the fork) and a bad model is not a worker crash."""
    load = "import sys; from walsmf import versions; versions.load_model(sys.argv[1])"
    check = subprocess.run([sys.executable, "-c", load, model_dir], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True,
                           env=dict(os.environ, **{DEBUG_ENV: ""}))
    if check.returncode:
        lines = check.stderr.strip().splitlines() or ["the model's check exited {}".format(check.returncode)]
        raise DataError(lines[-1].split("DataError: ", 1)[-1])


def default_workers():
    """Worker processes when --workers is not given: one per core."""
    return os.cpu_count() or 1


def serve(model_dir, host="0.0.0.0", port=DEFAULT_PORT, workers=None, max_request_bytes=MAX_REQUEST_BYTES,
          threads=THREADS, poll_seconds=POLL_SECONDS, verbosity="info"):
    """Run gunicorn with ``workers`` uvicorn processes (default: one per core), each loading the model after the
    fork (a local ``model_dir`` from the master's Snapshots), answering large requests on ``threads`` threads and
    looking for a newer version every ``poll_seconds`` (0: never); gunicorn logs at ``verbosity``, uvicorn's
    start-up lines only with debug."""
    import logging

    from gunicorn.app.base import BaseApplication

    from walsmf.http_deadlines import worker_class

    class Server(BaseApplication):
        def load_config(self):
            settings = {"bind": "{}:{}".format(host, port), "workers": workers or default_workers(),
                        "worker_class": worker_class(), "timeout": 60, "graceful_timeout": GRACEFUL_SECONDS,
                        "preload_app": False, "accesslog": None, "loglevel": verbosity}
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self):
            uvicorn_log = logging.getLogger("uvicorn.error")
            if verbosity != "debug":  # each worker's "Started server process", "Waiting for ...", "... complete"
                uvicorn_log.setLevel(max(logging.WARNING, uvicorn_log.level))
            versions = Versions(served)
            if poll_seconds and versions.base:
                poll_forever(versions, poll_seconds)
            return application(versions, max_request_bytes, threads=threads)

    snapshots = Snapshots(model_dir) if "://" not in model_dir else None
    served = snapshots.root if snapshots else model_dir
    if snapshots and snapshots.base and poll_seconds:
        poll_forever(snapshots, poll_seconds)  # in this master process: the workers poll its copies
    Server().run()


def main(argv=None):
    """CLI: serve an export over HTTP until SIGTERM or Ctrl-C."""
    parser = flags.Parser(prog="python -m walsmf.serve", description=__doc__.split("\n\n")[0])
    flags.add_model_dir(parser, "an export or a directory of exports, local or gs:// (default: $AIP_STORAGE_URI)",
                        default=os.environ.get("AIP_STORAGE_URI"))
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=flags.integer, help="port (default: $AIP_HTTP_PORT or 8080)")
    parser.add_argument("--workers", type=flags.integer,
                        help="worker processes, each with the model (default: one per core)")
    parser.add_argument("--threads", type=flags.integer, default=THREADS,
                        help="threads per worker for requests of more than {} instances (default {}; smaller ones are "
                             "answered on the worker's event loop)".format(INLINE_INSTANCES, THREADS))
    parser.add_argument("--poll_seconds", type=float, default=POLL_SECONDS,
                        help="how often each worker looks for a newer export version under --model-dir and moves to "
                             "it (TF Serving's file_system_poll_wait_seconds; 0: never; default {:g})".format(
                                 POLL_SECONDS))
    parser.add_argument("--max_request_bytes", type=flags.integer, default=MAX_REQUEST_BYTES,
                        help="largest request body answered; larger is a 413 (default: Vertex's 1.5 MB)")
    flags.add_verbosity(parser)
    args = parser.parse_args(argv)
    if not args.model_dir:
        raise DataError("no model: give --model-dir DIR (an export, or export/Servo) or set AIP_STORAGE_URI")
    if "://" not in args.model_dir and not os.path.isdir(args.model_dir):
        raise DataError("--model-dir {} is not a directory: give an export (export/Servo/<timestamp>) or the "
                        "directory of exports".format(args.model_dir))
    if args.workers is not None and args.workers < 1:
        raise DataError("--workers {} is not a number of processes: give 1 or more".format(args.workers))
    workers = args.workers or default_workers()
    check_available(workers * WORKER_BYTES, "{} worker processes".format(workers),
                    "(TensorFlow and the model in each)", "give fewer --workers (default: one per core, {})".format(
                        default_workers()))
    if args.threads < 1:
        raise DataError("--threads {} is not a number of threads: give 1 or more".format(args.threads))
    if args.port is None:
        args.port = environment_port(os.environ)
    elif not 1 <= args.port <= 65535:
        raise DataError("--port {} is not a TCP port: give 1 to 65535".format(args.port))
    if not 1 <= args.max_request_bytes <= MAX_REQUEST_BYTES_CEILING:
        raise DataError("--max_request_bytes {} {}: give 1 to {} (a body is held and parsed in memory, about ten "
                        "times its size, for each request in flight)".format(
                            args.max_request_bytes, "answers no request" if args.max_request_bytes < 1 else
                            "is more than a worker should hold", MAX_REQUEST_BYTES_CEILING))
    if not (args.poll_seconds == 0 or MIN_POLL_SECONDS <= args.poll_seconds <= MAX_POLL_SECONDS):
        raise DataError("--poll_seconds {} is not a polling interval: give 0 (never) or {:g} to {:g} seconds".format(
            args.poll_seconds, MIN_POLL_SECONDS, MAX_POLL_SECONDS))
    check_port_free(args.host, args.port)
    check_model(args.model_dir)
    serve(args.model_dir, args.host, args.port, args.workers, args.max_request_bytes, args.threads,
          args.poll_seconds, args.verbosity)


if __name__ == "__main__":
    run_cli(main)
