"""Training clusters: every TF_CONFIG dialect a user is handed, parameter servers, one model for any sharding."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, free_port_run, free_ports, gcloud_env, needs_gcloud, run_module

from walsmf import cluster, modeldir, predict
from walsmf.errors import DataError


def tf_config(cluster_dict, kind, index=0, **extra):
    return {"TF_CONFIG": json.dumps(dict({"cluster": cluster_dict, "task": {"type": kind, "index": index},
                                          "environment": "cloud"}, **extra))}


GCLOUD = {"master": ["localhost:27182"], "ps": ["localhost:27183", "localhost:27184"], "worker": []}


def test_gclouds_distributed_config_with_no_workers_gives_master_and_ps_only():
    me = cluster.role(tf_config(GCLOUD, "master"))
    assert (me.kind, me.index) == (cluster.PRIMARY, 0)
    assert me.estimator_tf_config() == {"cluster": {"master": GCLOUD["master"], "ps": GCLOUD["ps"]},
                                        "task": {"type": "master", "index": 0}, "environment": "cloud"}
    assert cluster.role(tf_config(GCLOUD, "ps", 1)).kind == cluster.PS


def test_vertex_chief_is_contribs_master_and_workers_evaluators_stand_aside():
    vertex = {"chief": ["c:1"], "worker": ["w:1", "w:2"], "ps": ["p:1"]}
    me = cluster.role(tf_config(vertex, "chief"))
    assert me.kind == cluster.PRIMARY
    assert me.estimator_tf_config()["cluster"] == {"master": ["c:1"], "ps": ["p:1"]}
    assert cluster.role(tf_config(vertex, "worker", 1)).kind == cluster.WORKER
    assert cluster.role(tf_config(vertex, "evaluator")).kind == cluster.EVALUATOR


def test_vertex_cluster_spec_worker_pools():
    spec = {"cluster": {"workerpool0": ["c:1"], "workerpool2": ["p:1", "p:2"]}, "environment": "cloud",
            "task": {"type": "workerpool2", "index": 1}}
    me = cluster.role({"CLUSTER_SPEC": json.dumps(spec)})
    assert (me.kind, me.index, me.primary, me.ps) == (cluster.PS, 1, ["c:1"], ["p:1", "p:2"])


@pytest.mark.parametrize("environ", [
    {}, {"TF_CONFIG": ""}, {"TF_CONFIG": json.dumps({"cluster": {}, "task": {}, "job": {"job_name": "walsmf.task"}})},
])
def test_no_cluster_is_one_process(environ):
    assert cluster.role(environ).kind == cluster.SINGLE and cluster.role(environ).estimator_tf_config() == {}


def test_a_lone_vertex_chief_trains_as_one_process_and_keeps_its_trial():
    me = cluster.role(dict(tf_config({"chief": ["localhost:1"]}, "chief"), CLOUD_ML_TRIAL_ID="4"))
    assert me.kind == cluster.PRIMARY and me.estimator_tf_config() == {} and me.trial == "4"


@pytest.mark.parametrize("environ, message", [
    (tf_config({"chief": ["a:1", "b:1"], "ps": ["p:1"]}, "chief"), "give the primary (chief/master) pool exactly 1"),
    (tf_config({"worker": ["a:1"], "ps": ["p:1"]}, "worker"), "the cluster has 0"),
    (tf_config({"master": ["a:1"], "gpu": ["g:1"]}, "master"), "tasks of type 'gpu'"),
    (tf_config({"master": ["a:1"], "ps": ["p:1"]}, "ps", 3), "task ps 3 is not in the cluster's ps list of 1"),
    ({"TF_CONFIG": "{cluster"}, "TF_CONFIG is not JSON"),
])
def test_clusters_wals_cannot_use_say_what_to_change(environ, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cluster.role(environ)


@pytest.mark.subprocess
@pytest.mark.training
def test_the_cli_names_the_cluster_problem_in_one_line(small_data, tmp_path):
    env = tf_config({"chief": ["a:1", "b:1"]}, "chief")
    result = run_module("walsmf.task", "--input_path", small_data[0], "--output_dir", tmp_path / "o", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: WALS trains on one primary replica")


TRAIN = ["--num_epochs", "3", "--batch_size", "128", "--seed", "3", "--topk", "4"]


def task(data_dir, output_dir, *flags, env=None):
    return [sys.executable, "-m", "walsmf.task", "--input_path", data_dir, "--output_dir", str(output_dir)] + \
        TRAIN + list(flags)


@pytest.fixture(scope="module")
def single_process_model(small_data, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("single") / "model"
    result = subprocess.run(task(small_data[0], output_dir), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return output_dir


def predictions(output_dir):
    instances = [(0, -1), (5, -1), (-1, 0), (-1, 3)]
    return predict.predict(os.path.join(str(output_dir), "export", "Servo"), instances)


def assert_same_model(output_dir, reference_dir):
    for name in (modeldir.BATCH_PRED_FILE, modeldir.ORIGINAL_IDS_PRED_FILE):
        assert (output_dir / name).read_text() == (reference_dir / name).read_text(), name
    for ours, theirs in zip(predictions(output_dir), predictions(reference_dir)):
        assert ours["top_k_ids"] == theirs["top_k_ids"]
        np.testing.assert_allclose(ours["projection"], theirs["projection"], rtol=1e-5, atol=1e-6)


@pytest.mark.subprocess
def test_loopback_cluster_trains_exports_and_predicts_what_one_process_does(small_data, single_process_model,
                                                                           tmp_path):
    """Vertex AI's dialect (chief), primary + 2 PS + 1 worker on free loopback ports, factors in 3x2 shards."""
    primary, ps0, ps1, worker = ("localhost:{}".format(p) for p in free_ports(4))
    layout = {"chief": [primary], "ps": [ps0, ps1], "worker": [worker]}
    output_dir = tmp_path / "model"
    command = task(small_data[0], output_dir, "--num_row_shards", "3", "--num_col_shards", "2")
    servers = [subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, **tf_config(layout, "ps", i)),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, universal_newlines=True)
               for i in range(2)]
    try:
        worker_run = subprocess.run(command, cwd=ROOT, env=dict(os.environ, **tf_config(layout, "worker")),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        assert worker_run.returncode == 0 and "WALS trains on the primary replica only" in worker_run.stdout
        chief = subprocess.run(command, cwd=ROOT, env=dict(os.environ, **tf_config(layout, "chief")),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
        assert chief.returncode == 0, chief.stderr[-3000:]
    finally:
        for server in servers:
            server.kill()
    assert all(server.wait() != 0 for server in servers)  # they served until stopped
    # the variables lived on the parameter servers: the checkpoint has a part per server
    assert {path.name.split(".")[-1] for path in output_dir.glob("model.ckpt-*.data-*")} == {
        "data-00000-of-00002", "data-00001-of-00002"}
    assert_same_model(output_dir, single_process_model)


@pytest.mark.subprocess
@pytest.mark.training
@needs_gcloud
@pytest.mark.parametrize("counts", [[], pytest.param(["--worker-count", "0", "--parameter-server-count", "1"],
                                                      marks=pytest.mark.slow)], ids=["default counts", "no workers"])
def test_gcloud_local_distributed_training(small_data, single_process_model, tmp_path, counts):
    output_dir = tmp_path / "job"
    start_port = str(free_port_run(8))  # the master, the ps and the workers take the next ports
    result = subprocess.run(
        ["gcloud", "ai-platform", "local", "train", "--distributed", "--start-port", start_port] + counts +
        ["--module-name", "walsmf.task", "--package-path", "walsmf", "--"] +
        task(small_data[0], output_dir, "--num_row_shards", "2", "--num_col_shards", "2")[3:],
        cwd=ROOT, env=gcloud_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "this process is the master 0 of a cluster with" in result.stdout + result.stderr
    assert_same_model(output_dir, single_process_model)


def test_a_parameter_server_whose_port_is_taken_is_one_line_naming_it():
    import socket

    from walsmf.errors import DataError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        address = "localhost:{}".format(taken.getsockname()[1])
        me = cluster.Role(cluster.PS, 0, primary=["localhost:{}".format(free_ports(1)[0])], ps=[address])
        with pytest.raises(DataError, match="parameter server 0 cannot listen at {} \\(.*\\): free that port, or "
                                            "start the job on other ports".format(address)):
            cluster.serve_parameters(me)
