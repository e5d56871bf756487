"""Helpers the tests import: hand-built export tables, running a module, small matrices, gcloud's environment."""
import contextlib
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def session_schema():
    """The GA360 export schema subset the lab's query reads."""
    import pyarrow as pa

    dimension = pa.struct([("index", pa.int64()), ("value", pa.string())])
    hit = pa.struct([("hitNumber", pa.int64()), ("time", pa.int64()), ("type", pa.string()),
                     ("customDimensions", pa.list_(dimension))])
    return pa.schema([("fullVisitorId", pa.string()), ("visitNumber", pa.int64()),
                      ("visitStartTime", pa.int64()), ("hits", pa.list_(hit))])


def page(time, content=None, kind="PAGE", extra=()):
    """One hit; ``content`` becomes custom dimension 10."""
    dims = [{"index": 4, "value": "news"}] + list(extra)
    if content is not None:
        dims.append({"index": 10, "value": content})
    return {"hitNumber": 0, "time": time, "type": kind, "customDimensions": dims}


def write_sessions(path, visitors):
    """Write {visitorId: [hits]} as a GA360-shaped Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for visitor, hits in visitors.items():
        for number, hit in enumerate(hits, 1):
            hit["hitNumber"] = number
        rows.append({"fullVisitorId": visitor, "visitNumber": 1, "visitStartTime": 1500000000, "hits": hits})
    pq.write_table(pa.Table.from_pylist(rows, schema=session_schema()), str(path))
    return str(path)


# The hand-built table and the rows the lab's query must return for it.
HAND_SESSIONS = {
    "1": [page(0, "100"), page(500, "100", kind="EVENT"), page(1000, "200", extra=[{"index": 3, "value": "x"}]),
          page(3000, "100"), page(3500), page(4000, "300")],
    "2": [page(10, "400"), page(10, "400"), page(70, "500"), page(100)],
    # ties at one time: one row gets duration 0, the other none: both dropped
    "3": [page(0, "800"), page(0, "900")],
    # a single page: no next hit, no duration
    "4": [page(0, "100")],
}
HAND_EXPECTED = [("1", "100", 1500), ("1", "200", 2000), ("2", "400", 60), ("2", "500", 30)]


# The two runtimes walsmf.serve and walsmf.predict run on: the lab's (TensorFlow 1.15, Python 3.7: .venv) and the
# serving environment's (TensorFlow 2.21, Python 3.12: .venv-serve, made by `make serve-env`).
RUNTIMES = {"tf1": sys.executable, "tf2": os.path.join(ROOT, ".venv-serve", "bin", "python")}


def runtime_python(runtime):
    """The interpreter of a runtime; the serving environment must have been made (make test does)."""
    python = RUNTIMES[runtime]
    if not os.path.exists(python):
        pytest.fail("{} is missing: run `make serve-env` (make test does) to make the serving environment".format(
            python))
    return python


def run_module(module, *args, env=None, cwd=None, runtime="tf1"):
    """Run ``python -m module args`` in a runtime's interpreter (the project's); return the CompletedProcess."""
    return subprocess.run([runtime_python(runtime), "-m", module] + [str(a) for a in args], cwd=cwd or ROOT,
                          env=dict(os.environ, **(env or {})), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True)


def run_in_process(module, *args):
    """Run ``python -m module args`` in this process, through walsmf.errors.run_cli as the command runs (a
    subprocess costs seconds of imports); return its CompletedProcess (exit code, stdout and stderr)."""
    from walsmf.errors import run_cli
    argv, err, out, code = [str(a) for a in args], io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            run_cli(importlib.import_module(module).main, argv)
        except SystemExit as exit:
            code = exit.code
    return subprocess.CompletedProcess([module] + argv, code or 0, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def held_for_writing(directory):
    """Another process holding ``directory`` for writing (walsmf.fileio.writing_directory, as a preprocess or a
    refresh into it does) while the block runs; yields that process's id."""
    holder = subprocess.Popen([runtime_python("tf1"), "-c", "import sys\nfrom walsmf.fileio import writing_directory\n"
                               "with writing_directory(sys.argv[1]):\n    print('held', flush=True)\n"
                               "    sys.stdin.read()\n", str(directory)], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, universal_newlines=True)
    try:
        assert holder.stdout.readline() == "held\n"
        yield holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


def write_matrix(data_dir, ratings):
    """Write a dense ratings matrix (0 = unobserved) as the lab's TFRecords and metadata."""
    from walsmf import datadir

    os.makedirs(data_dir, exist_ok=True)
    users, items = np.nonzero(ratings)
    datadir.write_interactions(data_dir, datadir.Interactions(
        datadir.CSR.from_triples(users, items, ratings[users, items], ratings.shape[0]),
        datadir.CSR.from_triples(items, users, ratings[users, items], ratings.shape[1])))
    datadir.write_metadata(data_dir, {"nusers": ratings.shape[0], "nitems": ratings.shape[1],
                                      "interactions": len(users)})


def low_rank_ratings(rng, nusers=120, nitems=40, clusters=3, density=0.5):
    """Users of a cluster read about half of its items, nothing else."""
    user_cluster = rng.integers(0, clusters, nusers)
    item_cluster = np.arange(nitems) % clusters
    reads = (user_cluster[:, None] == item_cluster[None, :]) & (rng.random((nusers, nitems)) < density)
    reads[np.arange(nusers), np.flatnonzero(item_cluster == 0)[0]] |= user_cluster == 0
    for c in range(clusters):  # every user reads at least one item
        empty = (user_cluster == c) & ~reads.any(axis=1)
        reads[empty, np.flatnonzero(item_cluster == c)[0]] = True
    return np.where(reads, np.round(rng.uniform(0.3, 1.0, reads.shape), 2), 0.0)


def closed_form(ratings, other, w0, own_weights, other_weights, reg=None, observed=None):
    """numpy WALS solve of every row of ``ratings`` given the other side's factors.

    ``observed`` marks the observed entries (default: the non-zero ones).
    """
    gram = other.T @ other
    observed = ratings != 0 if observed is None else observed
    out = np.zeros((ratings.shape[0], other.shape[1]))
    for r, row in enumerate(ratings):
        j = np.flatnonzero(observed[r])
        c = own_weights[r] * other_weights[j]
        lhs = w0 * gram + (other[j] * c[:, None]).T @ other[j] + (reg or 0) * np.eye(other.shape[1])
        out[r] = np.linalg.solve(lhs, other[j].T @ ((w0 + c) * row[j]))
    return out


def free_ports(n):
    """``n`` distinct TCP ports free on the loopback interface now."""
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def free_port_run(n):
    """The first of ``n`` consecutive TCP ports free on loopback now, below the kernel's ephemeral range: gcloud's
    --start-port takes the next ones too, and a port of that range may be taken meanwhile by any connection or
    bind to port 0 (a ps of a local distributed training failed to start on one)."""
    import random
    import socket

    with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
        ephemeral = int(ranges.read().split()[0])
    for start in random.Random().sample(range(10000, ephemeral - n), 200):
        try:
            for port in range(start, start + n):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
    raise RuntimeError("no {} consecutive free ports below {}".format(n, ephemeral))


def gcloud_env(tmp_path):
    """gcloud with its own config directory, running this project's Python first on PATH."""
    return dict(os.environ, CLOUDSDK_CONFIG=str(tmp_path / "gcloud-config"),
                PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])


def needs_gcloud(test):
    """Mark ``test`` as driving the real gcloud CLI: the gcloud marker, and skipped with a reason where it is not
    installed."""
    return pytest.mark.gcloud(pytest.mark.skipif(
        shutil.which("gcloud") is None, reason="gcloud is not installed; walsmf.predict and python -m walsmf.task "
                                               "are the offline equivalents tested here")(test))


def batch_pred(output_dir):
    """batch_pred.txt of a model directory as an array [users, k]."""
    with open(os.path.join(str(output_dir), "batch_pred.txt")) as f:
        return np.array([[int(x) for x in line.split(",")] for line in f.read().splitlines()])


def events_schema():
    """The GA4 export schema subset the GA4 query reads."""
    import pyarrow as pa

    value = pa.struct([("string_value", pa.string()), ("int_value", pa.int64()), ("float_value", pa.float64()),
                       ("double_value", pa.float64())])
    return pa.schema([("event_date", pa.string()), ("event_timestamp", pa.int64()), ("event_name", pa.string()),
                      ("event_params", pa.list_(pa.struct([("key", pa.string()), ("value", value)]))),
                      ("user_pseudo_id", pa.string()), ("user_id", pa.string())])


def event(visitor, time_us, name, date="20240101", session=1, user_id=None, **params):
    """One GA4 event: ``params`` by key, an int as int_value and a str as string_value; session None: no
    ga_session_id."""
    if session is not None:
        params["ga_session_id"] = session
    return {"event_date": date, "event_timestamp": time_us, "event_name": name, "user_pseudo_id": visitor,
            "user_id": user_id,
            "event_params": [{"key": key, "value": {"string_value": value if isinstance(value, str) else None,
                                                    "int_value": value if isinstance(value, int) else None,
                                                    "float_value": None, "double_value": None}}
                             for key, value in params.items()]}


def write_events(path, events):
    """Write GA4 events (dicts of :func:`event`) as a GA4-export-shaped Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(list(events), schema=events_schema()), str(path))
    return str(path)


def json_reply(handler, body, status=200):
    """Answer an http.server request with ``body`` as JSON (the loopback fakes' one reply)."""
    payload = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


class FakeBigQuery(BaseHTTPRequestHandler):
    """Answers jobs.insert (refusing SQL that does not parse as BigQuery's) and jobs.getQueryResults in
    BigQuery's REST JSON."""

    rows = []
    requests = []
    fail_with = None

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        json_reply(self, body, status)

    def do_POST(self):
        import sqlglot

        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(("POST", self.path, body))
        try:  # what BigQuery would refuse, the fake refuses: the SQL must parse as standard SQL
            sqlglot.parse_one(body["configuration"]["query"]["query"], read="bigquery")
        except sqlglot.errors.ParseError as err:
            return self.reply(400, {"error": {"code": 400, "message": str(err), "errors": [
                {"reason": "invalidQuery", "message": str(err)}]}})
        if self.fail_with:
            return self.reply(self.fail_with[0], {"error": {"code": self.fail_with[0], "message": self.fail_with[1],
                                                            "errors": [{"reason": "notFound",
                                                                        "message": self.fail_with[1]}]}})
        job = dict(body, status={"state": "DONE"}, statistics={"creationTime": "1", "startTime": "1", "endTime": "2"})
        job["jobReference"] = dict(body["jobReference"], location="US")
        self.reply(200, job)

    def do_GET(self):
        self.requests.append(("GET", self.path, None))
        job_id = self.path.split("/queries/")[1].split("?")[0]
        result = {
            "kind": "bigquery#getQueryResultsResponse", "jobComplete": True,
            "jobReference": {"projectId": "p", "jobId": job_id, "location": "US"},
            "schema": {"fields": [{"name": "visitorId", "type": "STRING", "mode": "NULLABLE"},
                                  {"name": "contentId", "type": "STRING", "mode": "NULLABLE"},
                                  {"name": "session_duration", "type": "INTEGER", "mode": "NULLABLE"}]},
            "totalRows": str(len(self.rows)),
        }
        if "maxResults=0" not in self.path:
            result["rows"] = [{"f": [{"v": v}, {"v": c}, {"v": str(d)}]} for v, c, d in self.rows]
        self.reply(200, result)


def client_for(server):
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(project="p", credentials=AnonymousCredentials(), client_options=ClientOptions(
        api_endpoint="http://127.0.0.1:{}".format(server.server_address[1])))


def start(model_dir, port, env=None, *args, runtime="tf1"):
    """``python -m walsmf.serve`` on loopback in ``runtime``; returns the process once /health (or
    AIP_HEALTH_ROUTE) answers."""
    env = dict(os.environ, **(env or {}))
    command = [runtime_python(runtime), "-m", "walsmf.serve", "--host", "127.0.0.1", "--port", str(port), "--workers",
               "2"] + (["--model-dir", model_dir] if model_dir else []) + list(args)
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    health = env.get("AIP_HEALTH_ROUTE", "/health")
    deadline = time.time() + 120
    while time.time() < deadline:
        assert process.poll() is None, process.stdout.read().decode()[-3000:]
        try:
            if call(port, health)[0] == 200:
                return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise AssertionError("walsmf.serve did not become healthy in 120 s")


def call(port, path, body=None, raw=None):
    """(status, JSON answer) of a GET, or a POST of ``body`` (JSON) or ``raw`` bytes."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request("http://127.0.0.1:{}{}".format(port, path), data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def assert_same_answers(got, expected):
    """Two lists of prediction dicts agree: ids, strings, flags and counts exactly, the factors and scores to float32's
    last digits (two runtimes, or numpy and TensorFlow, may sum a dot product in another order)."""
    assert len(got) == len(expected)
    for number, (answer, truth) in enumerate(zip(got, expected)):
        assert set(answer) == set(truth), number
        for key, value in truth.items():
            if key in ("projection", "top_k_scores"):
                np.testing.assert_allclose(answer[key], value, rtol=1e-5, atol=1e-6, err_msg=str((number, key)))
            else:
                assert answer[key] == value, (number, key, answer[key], value)
