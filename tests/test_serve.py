"""walsmf.serve on loopback: TF Serving's REST API and Vertex's contract answer what walsmf.predict answers;
bad requests are 4xx and the server goes on; SIGTERM lets in-flight requests finish and exits 0."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from helpers import ROOT, free_ports

from walsmf import datadir, predict, serve
from walsmf.errors import DataError


def start(model_dir, port, env=None, *args):
    """``python -m walsmf.serve`` on loopback; returns the process once /health (or AIP_HEALTH_ROUTE) answers."""
    env = dict(os.environ, **(env or {}))
    process = subprocess.Popen([sys.executable, "-m", "walsmf.serve", "--host", "127.0.0.1", "--port", str(port),
                                "--workers", "2"] + (["--model-dir", model_dir] if model_dir else []) + list(args),
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
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


@pytest.fixture(scope="module")
def served(trained):
    """A walsmf.serve of the small trained model on a free port: (port, export dir, trained settings)."""
    export = os.path.join(trained.output_dir, "export", "Servo")
    port = free_ports(1)[0]
    process = start(export, port)
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
    assert status == 200 and rows["predictions"] == expected
    columns = {"userId": [4, 5], "itemId": [-1, -1]}
    status, answer = call(port, "/v1/models/walsmf:predict", {"inputs": columns})
    by_row = predict.predict(export, [{"userId": 4, "itemId": -1}, {"userId": 5, "itemId": -1}])
    assert status == 200 and answer["outputs"]["top_k_ids"] == [p["top_k_ids"] for p in by_row]
    status, model = call(port, "/v1/models/walsmf")
    assert status == 200 and model["model_version_status"][0]["state"] == "AVAILABLE"
    assert call(port, "/v1/models/walsmf/versions/{}:predict".format(model["model_version_status"][0]["version"]),
                {"instances": instances[:1]})[1]["predictions"] == expected[:1]


@pytest.mark.subprocess
@pytest.mark.training
@pytest.mark.parametrize("path, body, raw, status, message", [
    ("/v1/models/walsmf:predict", {"instances": [{"userId": 1}, {"userId": "4"}]}, None, 400,
     "instance 2: userId must be an integer, got '4'"),
    ("/v1/models/walsmf:predict", {"instances": [{"contentIds": "abc"}]}, None, 400,
     "instance 1: contentIds must be a list of contentIds"),
    ("/predict", {"instances": [{"userId": 1}], "parameters": {"kk": 3}}, None, 400, "parameters may hold k"),
    ("/v1/models/walsmf:predict", {"inputs": {"userId": [1, 2], "k": [3]}}, None, 400, "all as long"),
    ("/v1/models/walsmf:predict", {"rows": []}, None, 400, 'must hold "instances"'),
    ("/v1/models/walsmf:predict", None, b"{not json", 400, "the body is not JSON"),
    ("/predict", None, b"x" * (serve.MAX_REQUEST_BYTES + 1), 413, "over this server's"),
    ("/v1/models/other:predict", {"instances": []}, None, 404, "no route"),
    ("/v1/models/walsmf", {"instances": []}, None, 405, "takes GET"),
])
def test_a_bad_request_is_a_4xx_with_one_line_and_the_server_goes_on(served, path, body, raw, status, message):
    port = served[0]
    got, answer = call(port, path, body, raw)
    assert got == status and message in answer["error"] and "\n" not in answer["error"], answer
    assert call(port, "/predict", {"instances": [{"userId": 1}]})[0] == 200


@pytest.mark.subprocess
@pytest.mark.training
def test_vertex_contract_routes_port_storage_uri_and_parameters(trained, tmp_path):
    export = predict.latest_export(os.path.join(trained.output_dir, "export", "Servo"))
    port = free_ports(1)[0]
    env = {"AIP_HTTP_PORT": str(port), "AIP_HEALTH_ROUTE": "/v1/endpoints/e/deployedModels/m",
           "AIP_PREDICT_ROUTE": "/v1/endpoints/e/deployedModels/m:predict", "AIP_STORAGE_URI": export}
    process = start(None, port, env)
    try:
        status, answer = call(port, env["AIP_PREDICT_ROUTE"], {"instances": [{"userId": 4}, {"userId": 5, "k": 1}],
                                                               "parameters": {"k": 2, "excludeRead": True}})
        expected = predict.predict(export, [{"userId": 4, "k": 2, "excludeRead": True},
                                            {"userId": 5, "k": 1, "excludeRead": True}])
        assert status == 200 and answer["predictions"] == expected
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0


@pytest.mark.subprocess
@pytest.mark.training
def test_sigterm_finishes_in_flight_requests_and_exits_0(trained):
    export = os.path.join(trained.output_dir, "export", "Servo")
    port = free_ports(1)[0]
    process = start(export, port)
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


def test_no_model_is_one_line_naming_what_to_give(monkeypatch, tmp_path):
    monkeypatch.delenv("AIP_STORAGE_URI", raising=False)
    with pytest.raises(DataError, match="give --model-dir DIR"):
        serve.main([])
    with pytest.raises(DataError, match="is not a directory"):
        serve.main(["--model-dir", str(tmp_path / "none")])
