"""Which part of a training cluster this process is, from what gcloud, AI Platform or Vertex AI set.

WALS (tf.contrib.factorization) trains on one worker replica, the primary;
its factor shards and Gramians can live on parameter servers.  The cluster
a user is handed says so in several dialects:

* ``gcloud ai-platform local train --distributed`` and AI Platform: TF_CONFIG
  with a ``master``, ``ps`` and ``worker`` list (``"worker": []`` with
  ``--worker-count 0``), ``"environment": "cloud"``;
* Vertex AI: TF_CONFIG with a ``chief`` (contrib.learn treats only ``master``
  as chief and would wait forever), and CLUSTER_SPEC with worker pools
  ``workerpool0`` (primary), ``workerpool1`` (workers), ``workerpool2`` (PS),
  ``workerpool3`` (evaluators).

:func:`role` reads them, and :func:`estimator_tf_config` writes the TF_CONFIG
contrib.learn understands: the primary as ``master`` and the PS tasks only.
Workers and evaluators have nothing to do for WALS: they say so and end.
"""

import tensorflow as tf

from walsmf.errors import DataError, first_line, json_object

PRIMARY, PS, WORKER, EVALUATOR, SINGLE = "master", "ps", "worker", "evaluator", "single"
_ALIASES = {"master": PRIMARY, "chief": PRIMARY, "ps": PS, "worker": WORKER, "evaluator": EVALUATOR,
            "workerpool0": PRIMARY, "workerpool1": WORKER, "workerpool2": PS, "workerpool3": EVALUATOR}


class Role:
    """This process's part: ``kind`` (master, ps, worker, evaluator or single), its ``index``,
    the cluster's ``primary`` and ``ps`` addresses, and a tuning ``trial`` id if any."""

    def __init__(self, kind, index=0, primary=(), ps=(), trial=""):
        self.kind, self.index, self.primary, self.ps, self.trial = kind, index, list(primary), list(ps), trial

    def estimator_tf_config(self):
        """TF_CONFIG for contrib.learn: the primary as ``master``, the PS tasks, nothing else ({} when alone)."""
        if self.kind == SINGLE or not self.ps:
            return {}
        return {"cluster": {PRIMARY: self.primary, PS: self.ps}, "task": {"type": self.kind, "index": self.index},
                "environment": "cloud"}

    def describe(self):
        """One line for the log."""
        if self.kind == SINGLE:
            return "one process"
        return "{} {} of a cluster with {} parameter server(s)".format(self.kind, self.index, len(self.ps))


def role(environ):
    """This process's Role, from TF_CONFIG (or Vertex AI's CLUSTER_SPEC) in ``environ``."""
    config = _json_env(environ, "TF_CONFIG") or _json_env(environ, "CLUSTER_SPEC")
    task = config.get("task") or {}
    # AI Platform names the trial in TF_CONFIG; cloudml-hypertune (Vertex AI) reads CLOUD_ML_TRIAL_ID
    trial = str(task.get("trial") or environ.get("CLOUD_ML_TRIAL_ID") or "")
    cluster = {}
    for name, addresses in (config.get("cluster") or {}).items():
        kind = _ALIASES.get(name)
        if kind is None:
            raise DataError("the cluster has tasks of type {!r}: walsmf knows master/chief, ps, worker and "
                            "evaluator; remove that pool".format(name))
        cluster.setdefault(kind, []).extend(addresses or [])
    if not task.get("type") or not cluster:
        return Role(SINGLE, trial=trial)
    kind = _ALIASES.get(task["type"])
    if kind is None:
        raise DataError("this process's task type {!r} is not master/chief, ps, worker or evaluator".format(
            task["type"]))
    primary = cluster.get(PRIMARY, [])
    if len(primary) != 1:
        raise DataError("WALS trains on one primary replica and the cluster has {}: give the primary (chief/master) "
                        "pool exactly 1 replica".format(len(primary)))
    index = int(task.get("index", 0))
    if not 0 <= index < len(cluster.get(kind, [])) and kind in (PRIMARY, PS):
        raise DataError("task {} {} is not in the cluster's {} list of {}: fix TF_CONFIG".format(
            task["type"], index, task["type"], len(cluster.get(kind, []))))
    return Role(kind, index, primary, cluster.get(PS, []), trial)


def _json_env(environ, name):
    text = environ.get(name) or ""
    if not text.strip():
        return {}
    return json_object(text, name, "unset it, or give a JSON object with 'cluster' and 'task'")


def serve_parameters(role):
    """Run this parameter server until the job ends (gcloud and Vertex AI end it when the primary is done)."""
    cluster = tf.train.ClusterSpec(role.estimator_tf_config()["cluster"])
    tf.compat.v1.logging.info("walsmf: parameter server %d of %d serving the factor shards at %s", role.index,
                              len(role.ps), role.ps[role.index])
    try:
        server = tf.distribute.Server(cluster, job_name=PS, task_index=role.index, protocol="grpc")
    except tf.errors.UnknownError as err:  # gRPC's "Could not start gRPC server": the port is taken
        raise DataError("parameter server {} cannot listen at {} ({}): free that port, or start the job on other "
                        "ports (gcloud's --start-port)".format(role.index, role.ps[role.index],
                                                               first_line(err.message)))
    server.join()
