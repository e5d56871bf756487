"""walsmf.serve on loopback, on both runtimes (TensorFlow 1.15 / Python 3.7 and the serving environment's TensorFlow
2.21 / Python 3.12; the second in make test-slow, but for the answers compared across them): TF Serving's REST
API and Vertex's contract answer what walsmf.predict answers; bad requests are 4xx and the server goes on;
SIGTERM lets in-flight requests finish and exits 0."""
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
from helpers import ROOT, assert_same_answers, call, free_ports, run_module, runtime_python, start

from walsmf import datadir, http_deadlines, modeldir, predict, serve
from walsmf.errors import DataError


@pytest.fixture(scope="module", params=["tf1", pytest.param("tf2", marks=pytest.mark.slow)])
def runtime(request):
    """The runtime a test's server runs on."""
    return request.param


@pytest.fixture(scope="module")
def served(trained, runtime):
    """A walsmf.serve of the small trained model on a free port: (port, export dir, trained settings)."""
    export = os.path.join(trained.output_dir, "export", "Servo")
    port = free_ports(1)[0]
    process = start(export, port, runtime=runtime)
    yield port, export, trained
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)


@pytest.mark.subprocess
@pytest.mark.training
def test_tf_serving_rows_and_columns_answer_what_walsmf_predict_answers(served):
    port, export, trained = served
    visitors = datadir.read_id_map(os.path.join(trained.input_path, datadir.USERS_FILE))
    contents = datadir.read_id_map(os.path.join(trained.input_path, datadir.ITEMS_FILE))
    instances = [{"userId": 4, "itemId": -1}, {"userId": -1, "itemId": 3}, {"visitorId": visitors[7], "k": 5},
                 {"visitorId": "new", "contentIds": [contents[1], contents[2], "unknown"],
                  "durations": [900, 40000, 1]},
                 {"items": [1, 2], "ratings": [0.5, 1.0]}]
    expected = predict.predict(export, instances)
    status, rows = call(port, "/v1/models/walsmf:predict", {"instances": instances})
    assert status == 200
    assert_same_answers(rows["predictions"], expected)
    columns = {"userId": [4, 5], "itemId": [-1, -1]}
    status, answer = call(port, "/v1/models/walsmf:predict", {"inputs": columns})
    by_row = predict.predict(export, [{"userId": 4, "itemId": -1}, {"userId": 5, "itemId": -1}])
    assert status == 200 and answer["outputs"]["top_k_ids"] == [p["top_k_ids"] for p in by_row]
    status, model = call(port, "/v1/models/walsmf")
    assert status == 200 and model["model_version_status"][0]["state"] == "AVAILABLE"
    assert_same_answers(call(port, "/v1/models/walsmf/versions/{}:predict".format(
        model["model_version_status"][0]["version"]), {"instances": instances[:1]})[1]["predictions"], expected[:1])


def _answers(port, instances, per_request=400):
    """The server's predictions for ``instances``, sent ``per_request`` at a time."""
    answers = []
    for start_at in range(0, len(instances), per_request):
        status, body = call(port, "/predict", {"instances": instances[start_at:start_at + per_request]})
        assert status == 200, body
        answers.extend(body["predictions"])
    return answers


@pytest.mark.subprocess
def test_both_runtimes_answer_every_known_visitor_as_batch_pred_says_and_new_visitors_alike(trained, tmp_path):
    export = os.path.join(trained.output_dir, "export", "Servo")
    visitors = datadir.read_id_map(os.path.join(trained.input_path, datadir.USERS_FILE))
    contents = datadir.read_id_map(os.path.join(trained.input_path, datadir.ITEMS_FILE))
    batch_pred = modeldir.read_original_ids_pred(os.path.join(trained.output_dir, modeldir.ORIGINAL_IDS_PRED_FILE))
    rng = np.random.RandomState(5)
    new_visitors = [{"visitorId": "new-{}".format(n), "k": int(rng.randint(1, 8)),
                     "contentIds": [str(contents[i]) for i in rng.randint(0, len(contents), rng.randint(1, 6))]}
                    for n in range(60)]
    ports = free_ports(2)
    servers = [start(export, port, runtime=runtime) for port, runtime in zip(ports, ("tf1", "tf2"))]
    try:
        known = [{"visitorId": visitor} for visitor in visitors]
        answers = [_answers(port, known + new_visitors) for port in ports]
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    for answer in answers:
        assert [(v, a["top_k_content_ids"]) for v, a in zip(visitors, answer)] == batch_pred
    assert_same_answers(answers[1], answers[0])
    # walsmf.predict runs the export's graph on TensorFlow 2.21 as on 1.15
    instances = [{"userId": 4, "itemId": -1}, {"userId": -1, "itemId": 3, "excludeRead": True}] + new_visitors[:20]
    (tmp_path / "instances.json").write_text("\n".join(json.dumps(i) for i in instances))
    tf2 = run_module("walsmf.predict", "--model-dir", export, "--json-instances", tmp_path / "instances.json",
                     "--format", "json", runtime="tf2")
    assert tf2.returncode == 0 and tf2.stderr == "", tf2.stderr
    assert_same_answers(json.loads(tf2.stdout)["predictions"], predict.predict(export, instances))


@pytest.mark.subprocess
@pytest.mark.training
@pytest.mark.parametrize("path, body, raw, status, message", [
    ("/v1/models/walsmf:predict", {"instances": [{"userId": 1}, {"userId": "4"}]}, None, 400,
     "instance 2: userId must be an integer of 64 bits, got '4'"),
    ("/predict", {"instances": [{"userId": 1, "k": 2 ** 63}]}, None, 400, "instance 1: k must be an integer of 64"),
    ("/predict", None, b'{"instances": [{"visitorId": "\\ud800"}]}', 400, "visitorId must be a string of UTF-8"),
    ("/predict", None, b"[" * 100000 + b"]" * 100000, 400, "nests JSON too deeply"),
    ("/v1/models/walsmf:predict", {"instances": [{"contentIds": "abc"}]}, None, 400,
     "instance 1: contentIds must be a list of contentIds"),
    ("/predict", {"instances": [{"userId": 1}], "parameters": {"kk": 3}}, None, 400, "parameters may hold k"),
    ("/v1/models/walsmf:predict", {"inputs": {"userId": [1, 2], "k": [3]}}, None, 400, "all as long"),
    ("/v1/models/walsmf:predict", {"rows": []}, None, 400, 'must hold "instances"'),
    ("/v1/models/walsmf:predict", None, b"{not json", 400, "the body is not JSON"),
    ("/predict", None, b"x" * (3 * serve.MAX_REQUEST_BYTES), 413, "over this server's"),
    # bounds: 250,000 empty instances in a 1 MB body; 1,300 instances each asking for every id
    ("/predict", None, b'{"instances": [' + b",".join([b"{}"] * 250000) + b"]}", 413,
     "a request holds at most 10,000 instances, this one 250,000"),
    ("/predict", {"instances": [{"userId": 1, "k": 10 ** 6}] * 1300}, None, 413,
     "the request asks for 1,076,400 ids (each instance's k, at most the model's 828 ids), a request at most "
     "1,000,000"),
    ("/predict", None, b'{"instances": [{"userId": 1, "userId": -1, "itemId": 2}]}', 400,
     "the key 'userId' appears twice in one object"),
    ("/v1/models/walsmf:predict", {"signature_name": "classify", "instances": [{"userId": 1}]}, None, 400,
     "signature_name 'classify' is not the export's"),
    ("/v1/models/walsmf:predict", {"instances": [{"userId": 1}], "inputs": {"userId": [2]}}, None, 400,
     'both "instances" and "inputs"'),
    ("/v1/models/other:predict", {"instances": []}, None, 404, "no route"),
    ("/v1/models/walsmf", {"instances": []}, None, 405, "takes GET"),
], ids=["userId-not-integer", "k-over-64-bits", "lone-surrogate", "nested-deep",
        "contentIds-not-list", "unknown-parameter", "columns-of-unequal-length",
        "no-instances", "not-json", "key-twice", "other-signature",
        "instances-and-inputs", "body-too-large", "too-many-instances", "too-many-ids", "unknown-model",
        "model-status-takes-GET-only"])
def test_a_bad_request_is_a_4xx_with_one_line_and_the_server_goes_on(served, path, body, raw, status, message):
    port = served[0]
    got, answer = call(port, path, body, raw)
    assert got == status and message in answer["error"] and "\n" not in answer["error"], answer
    assert call(port, "/predict", {"instances": [{"userId": 1}]})[0] == 200


@pytest.mark.subprocess
def test_vertex_contract_routes_port_storage_uri_and_parameters(trained, runtime):
    export = modeldir.latest_export(os.path.join(trained.output_dir, "export", "Servo"))
    port = free_ports(1)[0]
    env = {"AIP_HTTP_PORT": str(port), "AIP_HEALTH_ROUTE": "/v1/endpoints/e/deployedModels/m",
           "AIP_PREDICT_ROUTE": "/v1/endpoints/e/deployedModels/m:predict", "AIP_STORAGE_URI": export}
    process = start(None, port, env, runtime=runtime)
    try:
        status, answer = call(port, env["AIP_PREDICT_ROUTE"], {"instances": [{"userId": 4}, {"userId": 5, "k": 1}],
                                                               "parameters": {"k": 2, "excludeRead": True}})
        expected = predict.predict(export, [{"userId": 4, "k": 2, "excludeRead": True},
                                            {"userId": 5, "k": 1, "excludeRead": True}])
        assert status == 200
        assert_same_answers(answer["predictions"], expected)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0


@pytest.mark.subprocess
def test_sigterm_finishes_in_flight_requests_and_exits_0(trained, runtime):
    export = os.path.join(trained.output_dir, "export", "Servo")
    port = free_ports(1)[0]
    process = start(export, port, runtime=runtime)
    answers = []
    many = {"instances": [{"userId": u % trained.nusers, "k": 10} for u in range(3000)]}
    threads = [threading.Thread(target=lambda: answers.append(call(port, "/predict", many))) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # the requests are being answered
    process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(timeout=120)
    assert process.wait(timeout=60) == 0
    assert [status for status, _ in answers] == [200] * 4
    assert all(len(answer["predictions"]) == 3000 for _, answer in answers)
    # a line per worker as it boots, not uvicorn's three more (those with --verbosity debug)
    log = process.stdout.read().decode()
    assert log.count("Booting worker") == 2 and "Application startup complete" not in log, log


def test_no_model_is_one_line_naming_what_to_give(monkeypatch, tmp_path):
    monkeypatch.delenv("AIP_STORAGE_URI", raising=False)
    with pytest.raises(DataError, match="give --model-dir DIR"):
        serve.main([])
    with pytest.raises(DataError, match="is not a directory"):
        serve.main(["--model-dir", str(tmp_path / "none")])


@pytest.mark.subprocess
def test_an_export_that_cannot_load_is_one_error_line_and_exit_1(trained, runtime, tmp_path):
    export = modeldir.latest_export(os.path.join(trained.output_dir, "export", "Servo"))
    damaged = tmp_path / "Servo" / "1500000000"
    shutil.copytree(export, str(damaged))
    (data,) = (damaged / "variables").glob("variables.data-*")
    data.write_bytes(data.read_bytes()[:100])
    served = run_module("walsmf.serve", "--model-dir", tmp_path / "Servo", "--port", free_ports(1)[0],
                        runtime=runtime)
    assert served.returncode == 1 and served.stdout == ""
    assert served.stderr.startswith("error: ") and served.stderr.count("\n") == 1, served.stderr
    assert "is not a readable walsmf export" in served.stderr and "export it again" in served.stderr


@pytest.mark.subprocess
def test_a_new_version_is_swapped_in_under_load_and_a_broken_one_reported(trained, runtime, tmp_path):
    export = modeldir.latest_export(os.path.join(trained.output_dir, "export", "Servo"))
    servo = tmp_path / "Servo"
    shutil.copytree(export, str(servo / "1500000000"))
    port = free_ports(1)[0]
    process = start(str(servo), port, None, "--poll_seconds", "0.3", runtime=runtime)
    statuses, stop = [], threading.Event()

    def load():
        while not stop.is_set() and len(statuses) < 20000:  # bounded: loopback only, stops by itself
            try:
                statuses.append(call(port, "/predict", {"instances": [{"userId": len(statuses) % trained.nusers}]})[0])
            except OSError as err:  # a refused or reset connection is a failed request too
                statuses.append(repr(err))
    threads = [threading.Thread(target=load) for _ in range(3)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1)
        # an exporter writes the version beside and renames it in
        shutil.copytree(export, str(servo / "temp-1500000001"))
        os.rename(str(servo / "temp-1500000001"), str(servo / "1500000001"))
        deadline = time.time() + 60
        while time.time() < deadline and {call(port, "/health")[1]["version"] for _ in range(20)} != {"1500000001"}:
            time.sleep(0.3)
        broken = servo / "1500000002"
        shutil.copytree(export, str(broken))
        (data,) = (broken / "variables").glob("variables.data-*")
        data.write_bytes(data.read_bytes()[:100])
        time.sleep(3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    states = {v["version"]: (v["state"], v["status"]["error_code"])
              for v in call(port, "/v1/models/walsmf")[1]["model_version_status"]}
    versions_served = {call(port, "/health")[1]["version"] for _ in range(20)}
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert len(statuses) > 100 and set(statuses) == {200}
    assert versions_served == {"1500000001"}
    assert states["1500000001"] == ("AVAILABLE", "OK") and states["1500000000"] == ("END", "OK")
    assert states["1500000002"] == ("END", "UNKNOWN")


@pytest.mark.subprocess
@pytest.mark.training
def test_slow_or_broken_clients_do_not_starve_health_or_predictions(served):
    import socket

    port = served[0]
    silent = socket.create_connection(("127.0.0.1", port))  # says nothing: a 408 after the header deadline
    silent.settimeout(http_deadlines.HEADER_SECONDS + 10)
    opened = time.time()
    held = []
    for number in range(40):  # headers a byte at a time, bodies shorter than their length: held open
        connection = socket.create_connection(("127.0.0.1", port))
        connection.sendall(b"GET /hea" if number % 2 else
                           b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"inst")
        held.append(connection)
    started = time.time()
    assert call(port, "/health")[0] == 200 and time.time() - started < 2
    assert call(port, "/predict", {"instances": [{"userId": 1}]})[0] == 200
    # a body whose chunked encoding is broken is a 400, and the server goes on
    broken = socket.create_connection(("127.0.0.1", port))
    broken.settimeout(10)
    broken.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
    assert broken.recv(100).startswith(b"HTTP/1.1 400")
    for connection in held + [broken]:
        connection.close()
    assert call(port, "/health")[0] == 200
    # the server's clock starts as it accepts, a little before the client's
    assert silent.recv(100).startswith(b"HTTP/1.1 408") and time.time() - opened > http_deadlines.HEADER_SECONDS - 1
    silent.close()


def workers_of(process):
    """The worker pids of a walsmf.serve master process."""
    listed = subprocess.run(["ps", "-o", "pid=", "--ppid", str(process.pid)], stdout=subprocess.PIPE,
                            universal_newlines=True).stdout
    return [int(pid) for pid in listed.split()]


def wait_for_workers(process, port, count=2):
    """Until ``count`` workers run and /health answers (a respawned worker loads its model first)."""
    deadline = time.time() + 120
    while time.time() < deadline:
        if len(workers_of(process)) == count:
            try:
                if all(call(port, "/health")[0] == 200 for _ in range(10)):
                    return
            except OSError:
                pass
        time.sleep(0.3)
    raise AssertionError("the server did not come back with {} workers".format(count))


@pytest.mark.subprocess
def test_restarted_workers_load_the_servers_version_even_when_the_export_was_removed(trained, tmp_path):
    export = modeldir.latest_export(os.path.join(trained.output_dir, "export", "Servo"))
    servo = tmp_path / "Servo"
    shutil.copytree(export, str(servo / "1500000000"))
    port = free_ports(1)[0]
    process = start(str(servo), port, None, "--poll_seconds", "0")
    try:
        # a new export lands: without polling the server goes on with its version, a restarted worker too
        shutil.copytree(export, str(servo / "1500000001"))
        os.kill(workers_of(process)[0], signal.SIGKILL)
        wait_for_workers(process, port)
        assert {call(port, "/health")[1]["version"] for _ in range(30)} == {"1500000000"}
        # the served directory removed (as make run does), then every worker restarted (SIGHUP)
        shutil.rmtree(str(servo))
        process.send_signal(signal.SIGHUP)
        time.sleep(2)
        wait_for_workers(process, port)
        assert process.poll() is None
        answers = [call(port, "/predict", {"instances": [{"userId": 3}]}) for _ in range(10)]
        assert {status for status, _ in answers} == {200}
        assert {call(port, "/health")[1]["version"] for _ in range(30)} == {"1500000000"}
    finally:
        process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0


def test_the_port_vertex_sets_is_checked_naming_the_variable():
    from walsmf.errors import DataError

    assert serve.environment_port({}) == serve.DEFAULT_PORT
    assert serve.environment_port({"AIP_HTTP_PORT": "8090"}) == 8090
    for bad in ("abc", "", "70000", "0", "-1"):
        with pytest.raises(DataError, match=r"AIP_HTTP_PORT='{}' is not a TCP port: set it to 1..65535".format(bad)):
            serve.environment_port({"AIP_HTTP_PORT": bad})


def test_a_request_over_the_time_limit_is_a_503_and_the_drain_outlasts_the_limit(monkeypatch):
    import asyncio

    class SlowModel:
        version, info = "1", {}

        def answer(self, instances, parameters=None):
            time.sleep(0.5)
            return [{} for _ in instances]

    class Served:
        model = SlowModel()

    # SIGTERM's drain lets a request run to its limit
    assert serve.GRACEFUL_SECONDS > serve.REQUEST_SECONDS
    monkeypatch.setattr(serve, "REQUEST_SECONDS", 0.1)
    app = serve.application(Served(), environ={})
    body = json.dumps({"instances": [{"userId": 1}] * (serve.INLINE_INSTANCES + 1)}).encode()
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)
    scope = {"type": "http", "path": "/predict", "method": "POST", "headers": [(b"content-length", b"%d" % len(body))]}
    asyncio.get_event_loop().run_until_complete(app(scope, receive, send))
    assert sent[0]["status"] == 503 and "took over 0.1 s" in json.loads(sent[1]["body"])["error"]


@pytest.mark.subprocess
def test_a_number_too_long_for_the_serving_pythons_int_is_named_without_its_advice():
    # Python 3.11+ (the serving environment) refuses over 4,300 digits and tells the reader to raise its limit
    check = "from walsmf.errors import loads_json\ntry:\n    loads_json('[1' + '0' * 5000 + ']')\n" \
            "except ValueError as err:\n    print(err)"
    out = subprocess.run([runtime_python("tf2"), "-c", check], cwd=ROOT, stdout=subprocess.PIPE,
                         universal_newlines=True, check=True).stdout
    assert out.strip() == "a number has more digits than any id or count: 5001 digits"
