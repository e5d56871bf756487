"""cloud/vertex_deploy.sh through the real gcloud against a loopback fake of Vertex AI, whose endpoint's predict
calls a running walsmf.serve: `gcloud ai endpoints predict` returns real recommendations end to end."""
import http.server
import json
import os
import signal
import subprocess
import threading
import urllib.request

import pytest
from helpers import ROOT, batch_pred, free_ports, json_reply, needs_gcloud, start

from walsmf import datadir, modeldir, predict

LOCATION = "/v1/projects/p/locations/us-central1"


class FakeVertex(http.server.BaseHTTPRequestHandler):
    """Models, endpoints and deployments on loopback; a deployed model's predictions come from ``container``
    (a walsmf.serve started as Vertex would start the uploaded container)."""
    requests, models, container = [], {}, None

    def log_message(self, *args):
        pass

    def reply(self, payload, status=200):
        json_reply(self, payload, status)

    def operation(self, name, response):
        self.reply({"name": name + "/operations/1", "done": True, "response": response})

    def do_GET(self):
        path = self.path.split("?")[0]
        self.requests.append(("GET", path, None))
        model = self.models.get(path[len(LOCATION) + 1:])
        if model is None:
            return self.reply({"error": {"code": 404, "message": "not found: " + path}}, 404)
        self.reply(dict(model, supportedDeploymentResourcesTypes=["DEDICATED_RESOURCES"]))

    def do_POST(self):
        path = self.path.split("?")[0]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(("POST", path, body))
        if path == LOCATION + "/models:upload":
            name = "models/456"
            self.models[name] = dict(body["model"], name=LOCATION[4:] + "/" + name)
            return self.operation(LOCATION[4:] + "/" + name, {"model": LOCATION[4:] + "/" + name})
        if path == LOCATION + "/endpoints":
            return self.operation(LOCATION[4:] + "/endpoints/789", dict(body, name=LOCATION[4:] + "/endpoints/789"))
        if path == LOCATION + "/endpoints/789:deployModel":
            return self.operation(LOCATION[4:] + "/endpoints/789",
                                  {"deployedModel": dict(body["deployedModel"], id="111")})
        if path == LOCATION + "/endpoints/789:predict":
            port, route = self.container
            request = urllib.request.Request("http://127.0.0.1:{}{}".format(port, route),
                                             data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as answer:
                return self.reply(dict(json.loads(answer.read()), deployedModelId="111"))
        self.reply({"error": {"code": 404, "message": "no such call: " + path}}, 404)


@pytest.fixture
def vertex(tmp_path):
    """gcloud's environment pointed at the fake, without credentials."""
    port = free_ports(1)[0]
    server = http.server.HTTPServer(("127.0.0.1", port), FakeVertex)
    FakeVertex.requests, FakeVertex.models, FakeVertex.container = [], {}, None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield dict(os.environ, CLOUDSDK_CONFIG=str(tmp_path / "gcloud"), CLOUDSDK_CORE_PROJECT="p",
               CLOUDSDK_AUTH_DISABLE_CREDENTIALS="true",
               CLOUDSDK_API_ENDPOINT_OVERRIDES_AIPLATFORM="http://127.0.0.1:{}/".format(port))
    server.shutdown()


def run(env, *args):
    result = subprocess.run(list(args), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.subprocess
@needs_gcloud
def test_deploy_to_an_endpoint_and_gcloud_predict_returns_walsmf_serves_recommendations(vertex, trained, tmp_path):
    export = modeldir.latest_export(os.path.join(trained.output_dir, "export", "Servo"))
    image = "us-central1-docker.pkg.dev/p/walsmf/serve:1"
    endpoint = run(dict(vertex, EXPORT="gs://b/wals/model/export/Servo/1", REGION="us-central1", IMAGE=image),
                   "bash", "cloud/vertex_deploy.sh").strip()
    assert endpoint == "789"
    upload = [body for method, path, body in FakeVertex.requests if path.endswith("models:upload")][0]["model"]
    spec = upload["containerSpec"]
    assert upload["artifactUri"] == "gs://b/wals/model/export/Servo/1" and spec["imageUri"] == image
    assert spec["ports"] == [{"containerPort": 8080}]
    deploy = [body for method, path, body in FakeVertex.requests if path.endswith(":deployModel")][0]
    assert deploy["deployedModel"]["model"].endswith("/models/456")
    assert deploy["deployedModel"]["dedicatedResources"]["machineSpec"]["machineType"] == "n1-standard-2"

    # Vertex starts the uploaded container with its routes, its port and a copy of the artifacts
    port = free_ports(1)[0]
    container = start(None, port, {"AIP_HTTP_PORT": str(port), "AIP_HEALTH_ROUTE": spec["healthRoute"],
                                   "AIP_PREDICT_ROUTE": spec["predictRoute"], "AIP_STORAGE_URI": export})
    FakeVertex.container = (port, spec["predictRoute"])
    try:
        visitors = datadir.read_id_map(os.path.join(trained.input_path, datadir.USERS_FILE))
        contents = datadir.read_id_map(os.path.join(trained.input_path, datadir.ITEMS_FILE))
        request = tmp_path / "request.json"
        request.write_text(json.dumps({"instances": [
            {"visitorId": visitors[4]},
            {"visitorId": "a visitor never seen", "contentIds": [contents[2], contents[5]]}]}))
        answer = json.loads(run(vertex, "gcloud", "ai", "endpoints", "predict", "789", "--region", "us-central1",
                                "--json-request", str(request), "--format", "json"))
    finally:
        container.send_signal(signal.SIGTERM)
        container.wait(timeout=60)
    known, new = answer["predictions"]
    assert known["top_k_content_ids"] == [contents[i] for i in batch_pred(trained.output_dir)[4]]
    expected = predict.predict(export, [{"contentIds": [contents[2], contents[5]]}])[0]
    assert new["top_k_content_ids"] == expected["top_k_content_ids"] and not new["known_visitor"]


@needs_gcloud
def test_the_prebuilt_tf_serving_container_is_uploaded_with_the_export(vertex):
    run(dict(vertex, EXPORT="gs://b/e/1", REGION="us-central1"), "bash", "cloud/vertex_deploy.sh", "prebuilt")
    upload = [body for method, path, body in FakeVertex.requests if path.endswith("models:upload")][0]["model"]
    assert upload["containerSpec"] == {"imageUri": "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"}
    assert upload["artifactUri"] == "gs://b/e/1"


def test_the_serving_container_is_the_serving_environment_on_a_supported_python():
    with open(os.path.join(ROOT, "cloud", "Dockerfile.serve")) as f:
        dockerfile = f.read()
    with open(os.path.join(ROOT, "requirements-serve.lock")) as f:
        lock = dict(line.strip().lower().replace("_", "-").split("==") for line in f if "==" in line)
    assert "FROM python:3.12-" in dockerfile
    install = dockerfile.split("RUN pip install", 1)[1].split("&&")[0]
    assert "-r requirements-serve.lock" in install
    assert lock["tensorflow-cpu"] == "2.21.0" and all(name in lock for name in ("gunicorn", "uvicorn", "numpy"))
    assert "tensorflow" not in lock and "pandas" not in lock  # nothing of training
    assert 'ENTRYPOINT ["python", "-m", "walsmf.serve"]' in dockerfile and "EXPOSE 8080" in dockerfile
