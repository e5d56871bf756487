"""The cloud recipes: the Vertex AI job and tuning specs, the container, and the sdist a job installs."""
import http.server
import json
import os
import re
import subprocess
import sys
import threading

import pytest
import yaml
from helpers import ROOT, free_ports, needs_gcloud

from walsmf import tune
from walsmf.settings import FLAGS


def load(name):
    with open(os.path.join(ROOT, name)) as f:
        return yaml.safe_load(f)


def flag_names(args):
    return {re.match(r"--([A-Za-z_-]+)", arg).group(1).replace("-", "_") for arg in args}


def lock():
    with open(os.path.join(ROOT, "requirements.lock")) as f:
        return dict(line.strip().lower().split("==") for line in f if "==" in line)


def test_cloud_tuning_specs_search_what_walsmf_tune_searches():
    vertex = load("cloud/vertex_hptuning.yaml")
    legacy = load("hptuning_config.yaml")["trainingInput"]["hyperparameters"]
    assert vertex["studySpec"]["metrics"] == [{"metricId": legacy["hyperparameterMetricTag"], "goal": "MAXIMIZE"}]
    scales = {"UNIT_LOG_SCALE": "log", "UNIT_LINEAR_SCALE": "linear", None: "choice"}
    ranges = {}
    for p in vertex["studySpec"]["parameters"]:
        spec = p.get("doubleValueSpec") or p.get("discreteValueSpec") or p.get("categoricalValueSpec")
        ranges[p["parameterId"]] = (scales[p.get("scaleType")],
                                    spec.get("values") or [spec["minValue"], spec["maxValue"]])
    assert ranges == {p["parameterName"]: (scales[p.get("scaleType")], p.get("discreteValues") or
                                           p.get("categoricalValues") or [p["minValue"], p["maxValue"]])
                      for p in legacy["params"]}
    # the blend walsmf.tune ranks each trial with is a parameter of a cloud trial
    assert ranges == dict({flag: (kind, values) for flag, (kind, values) in tune.SEARCH_SPACE.items()},
                          popularity_weight=("choice", list(tune.POPULARITY_WEIGHTS)))
    assert set(ranges) <= set(FLAGS)
    (pool,) = vertex["trialJobSpec"]["workerPoolSpecs"]
    assert flag_names(pool["containerSpec"]["args"]) <= set(FLAGS)


def test_dataflow_workers_install_the_locks_pins():
    with open(os.path.join(ROOT, "cloud", "dataflow-requirements.txt")) as f:
        pins = dict(line.strip().lower().split("==") for line in f if "==" in line and not line.startswith("#"))
    assert "tensorflow" in pins and all(lock()[name] == version for name, version in pins.items())


@pytest.mark.subprocess
def test_sdist_asks_for_the_protobuf_tensorflow_1_15_imports(tmp_path):
    """The fast check of what the slow install test proves: protobuf 4.x is kept out."""
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)], cwd=ROOT, check=True,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    (requires,) = tmp_path.glob("*.egg-info/requires.txt")
    # on Python 3.7 (TensorFlow 1.15's): a current Python serves with today's protobuf
    assert requires.read_text().split("\n")[1:3] == ['[:python_version < "3.8"]', "protobuf<4,>=3.6.1"]


@pytest.mark.training
def test_container_installs_the_trainer_with_the_locks_pins():
    with open(os.path.join(ROOT, "cloud", "Dockerfile")) as f:
        dockerfile = f.read()
    assert re.search(r"^FROM python:3\.7", dockerfile, re.M)
    install = re.search(r"pip install (.*?)(&&|$)", dockerfile.replace("\\\n", " "), re.M | re.S).group(1)
    assert "-c requirements.lock" in install
    pinned = dict(re.findall(r"([A-Za-z0-9_.-]+)==([0-9][^\s]*)", install))
    assert pinned and all(lock()[name.lower()] == version for name, version in pinned.items())
    for name in ("tensorflow", "pandas", "cloudml-hypertune"):
        assert name in install and name in lock()
    assert 'ENTRYPOINT ["python", "-m", "walsmf.task"]' in dockerfile


@pytest.mark.subprocess
@pytest.mark.training
@pytest.mark.slow
def test_sdist_installs_beside_tensorflow_alone_and_trains(tmp_path, small_data):
    """`pip install tensorflow==1.15.5 pandas numpy <sdist>` in a fresh Python 3.7 venv, as a job would."""
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(tmp_path)], cwd=ROOT, check=True,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    (sdist,) = tmp_path.glob("walsmf-*.tar.gz")
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", "tensorflow==1.15.5", "pandas", "numpy",
                              str(sdist)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert install.returncode == 0, install.stderr[-3000:]
    help_run = subprocess.run([python, "-m", "walsmf.task", "--help"], cwd=str(tmp_path), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True)
    assert help_run.returncode == 0 and "--input_path" in help_run.stdout, help_run.stderr[-2000:]
    train = subprocess.run([python, "-m", "walsmf.task", "--input_path", small_data[0], "--output_dir",
                            str(tmp_path / "model"), "--num_epochs", "1", "--batch_size", "256"], cwd=str(tmp_path),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (tmp_path / "model" / "batch_pred.txt").read_text().count("\n") == small_data[1]["nusers"]


class FakeVertex(http.server.BaseHTTPRequestHandler):
    """Vertex AI's create calls on loopback: records each request, answers it as a created job."""
    requests = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append((self.path, body))
        collection = self.path.split("?")[0].lstrip("/").split("/", 1)[1]
        answer = json.dumps(dict(body, name=collection + "/123", state="JOB_STATE_PENDING")).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def vertex(tmp_path):
    """gcloud pointed at a loopback fake of Vertex AI, without credentials; yields (env, requests)."""
    port = free_ports(1)[0]
    server = http.server.HTTPServer(("127.0.0.1", port), FakeVertex)
    FakeVertex.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = dict(os.environ, CLOUDSDK_CONFIG=str(tmp_path / "gcloud"), CLOUDSDK_CORE_PROJECT="p",
               CLOUDSDK_AUTH_DISABLE_CREDENTIALS="true",
               CLOUDSDK_API_ENDPOINT_OVERRIDES_AIPLATFORM="http://127.0.0.1:{}/".format(port),
               IMAGE="us-docker.pkg.dev/p/walsmf/trainer:1", BUCKET="b", REGION="us-central1")
    yield env, FakeVertex.requests
    server.shutdown()


def filled(name, tmp_path):
    """A YAML recipe with its placeholders filled as its header says."""
    with open(os.path.join(ROOT, name)) as f:
        text = f.read().replace("IMAGE_URI", "us-docker.pkg.dev/p/walsmf/trainer:1").replace("BUCKET", "b")
    path = tmp_path / os.path.basename(name)
    path.write_text(text)
    return str(path)


def gcloud(env, *args):
    result = subprocess.run(list(args), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


@needs_gcloud
def test_vertex_train_script_sends_primary_empty_workers_and_parameter_servers(vertex):
    env, requests = vertex
    gcloud(env, "bash", "cloud/vertex_train.sh", "--num_row_shards=4", "--num_col_shards=2", "--seed=1")
    ((path, body),) = requests
    assert path.startswith("/v1/projects/p/locations/us-central1/customJobs")
    primary, workers, ps = body["jobSpec"]["workerPoolSpecs"]
    assert int(primary["replicaCount"]) == 1 and workers == {} and int(ps["replicaCount"]) == 2
    assert primary["containerSpec"] == ps["containerSpec"]
    args = primary["containerSpec"]["args"]
    assert flag_names(args) <= set(FLAGS) and "--output_dir=gs://b/wals/model" in args


@needs_gcloud
def test_vertex_single_machine_job_config_is_accepted_by_gcloud(vertex, tmp_path):
    env, requests = vertex
    gcloud(env, "gcloud", "ai", "custom-jobs", "create", "--region", "us-central1", "--display-name", "wals",
           "--config", filled("cloud/vertex_job.yaml", tmp_path))
    ((_, body),) = requests
    (primary,) = body["jobSpec"]["workerPoolSpecs"]
    assert flag_names(primary["containerSpec"]["args"]) <= set(FLAGS)


@pytest.mark.training
@needs_gcloud
def test_vertex_tuning_job_is_accepted_by_gcloud(vertex, tmp_path):
    env, requests = vertex
    gcloud(env, "gcloud", "ai", "hp-tuning-jobs", "create", "--region", "us-central1", "--display-name", "wals_hp",
           "--config", filled("cloud/vertex_hptuning.yaml", tmp_path), "--max-trial-count", "4",
           "--parallel-trial-count", "2")
    ((path, body),) = requests
    assert "hyperparameterTuningJobs" in path
    assert body["studySpec"]["metrics"] == [{"goal": "MAXIMIZE", "metricId": "recall_at_10"}]
    # discrete values arrive as floats (20.0): walsmf.task's integer flags take them
    discrete = [v for p in body["studySpec"]["parameters"] for v in p.get("discreteValueSpec", {}).get("values", [])]
    assert 20.0 in discrete
