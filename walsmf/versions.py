"""The exports a walsmf.serve worker holds: loading one (local or gs://), answering instances with it, and its
versions, moving to a newer one as it appears.

Each worker loads after the fork (TensorFlow does not survive a fork).
"""
import atexit
import contextlib
import json
import os
import shutil
import tempfile
import threading
import time

from walsmf import progress
from walsmf.errors import DataError, signals_held
from walsmf.instances import K, check_instance

# Vertex's parameters that apply to every instance of a request.
PARAMETERS = ("k", "exclude", "excludeRead")


# What one request may ask: its answer stays a few tens of MB and a second or so of a worker's time (1,200
# instances of k 5,668 were a 311 MB answer, 2.3 GB of memory and 45 s; 250,000 empty instances 105 s).
MAX_INSTANCES = 10000
MAX_ANSWERS = 1000000


class BadRequest(Exception):
    """A request the server answers with a 4xx: ``status`` and a one-line message."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Model:
    """A loaded export and what the routes need of it: its answers, serving_info and version.

    An export whose serving_info.json holds the fold-in's settings is answered in numpy
    (walsmf.export_numpy: the graph's answers at about the cost of the scores); an older one by its graph.
    """

    def __init__(self, model_dir):
        import tensorflow as tf  # in the worker, after the fork

        from walsmf import modeldir, predict
        from walsmf.export_numpy import ExportAnswers, answers_in_numpy

        self.export_dir = modeldir.latest_export(model_dir)
        self.version = os.path.basename(self.export_dir.rstrip("/"))
        self.info = modeldir.serving_info(self.export_dir)
        self.invalid = tf.errors.InvalidArgumentError
        try:
            if answers_in_numpy(self.info):
                self._answer = ExportAnswers(self.export_dir, self.info).answer
            else:
                predict_fn = predict.load(self.export_dir)
                self._answer = lambda checked: predict.run(predict_fn, checked, self.info)
        except DataError:
            raise
        except Exception as err:  # whatever the reader of a damaged file raises (it differs between runtimes)
            raise DataError("{} is not a readable walsmf export ({}): export it again with python -m walsmf.task"
                            .format(self.export_dir, (str(err).strip().splitlines() or [type(err).__name__])[0]))

    def answer(self, instances, parameters=None):
        """One prediction dict per JSON instance, or a BadRequest naming the instance and what is wrong."""
        if not isinstance(instances, list) or not instances:
            raise BadRequest(400, "instances must be a non-empty JSON list of instance objects")
        if len(instances) > MAX_INSTANCES:
            raise BadRequest(413, "a request holds at most {:,} instances, this one {:,}: send them in several "
                                  "requests".format(MAX_INSTANCES, len(instances)))
        parameters = parameters or {}
        if not isinstance(parameters, dict) or set(parameters) - set(PARAMETERS):
            raise BadRequest(400, "parameters may hold {} only, got {}".format(
                ", ".join(PARAMETERS), json.dumps(parameters)[:200]))
        checked = []
        for number, instance in enumerate(instances, 1):
            if isinstance(instance, dict):
                instance = dict({k: v for k, v in parameters.items() if k not in instance}, **instance)
            try:
                checked.append(check_instance(instance, "instance {}".format(number), self.info))
            except DataError as err:
                raise BadRequest(400, str(err))
        longest = max(self.info["nusers"], self.info["nitems"])
        asked = sum(min(instance.get(K, self.info["topk"]), longest) for instance in checked)
        if asked > MAX_ANSWERS:
            raise BadRequest(413, "the request asks for {:,} ids (each instance's k, at most the model's {:,} "
                                  "ids), a request at most {:,}: ask a smaller k or fewer instances".format(
                                      asked, longest, MAX_ANSWERS))
        try:
            return self._answer(checked)
        except self.invalid as err:
            raise BadRequest(400, (err.message.strip().splitlines() or ["invalid instance"])[0])


class Versions:
    """The export versions a worker knows and the one it answers with; ``poll`` moves it to a newer version when
    one appears (TF Serving's policy: the newest numeric version of the base path), loading it beside the one
    serving, which keeps answering until the swap and for good if the new one fails to load."""

    def __init__(self, model_dir):
        self.base = versions_dir(model_dir)
        self.model = load_model(model_dir)
        self.states = {self.model.version: ("AVAILABLE", "")}

    def poll(self, log=progress.say):
        """Load the base path's newest version if it is one this worker has not tried; swap to it if it loads."""
        from walsmf import modeldir

        try:
            versions = modeldir.export_versions(self.base) if self.base else []
        except Exception:  # the base path unreadable for now (removed, a network error): keep serving
            return
        if not versions or versions[-1] in self.states or int(versions[-1]) < int(self.model.version):
            return
        version = versions[-1]
        self.states[version] = ("LOADING", "")
        try:
            model = load_model(os.path.join(self.base, version))
        except DataError as err:
            self.states[version] = ("END", str(err))
            log("walsmf.serve: version {} failed to load, version {} goes on serving: {}".format(
                version, self.model.version, err))
            return
        old, self.model = self.model, model
        self.states.update({old.version: ("END", ""), version: ("AVAILABLE", "")})
        log("walsmf.serve: serving version {} (was {})".format(version, old.version))

    def status(self):
        """TF Serving's model status: every version this worker knows, the newest first."""
        return {"model_version_status": [
            {"version": version, "state": state, "status": {"error_code": "UNKNOWN" if error else "OK",
                                                            "error_message": error}}
            for version, (state, error) in sorted(self.states.items(), key=lambda v: -int(v[0]))]}


def versions_dir(model_dir):
    """The directory of versions a --model-dir names (polled for new ones), or None for one export."""
    import tensorflow as tf

    from walsmf import modeldir

    if tf.io.gfile.exists(os.path.join(model_dir, "saved_model.pb")):
        return None
    return model_dir if modeldir.export_versions(model_dir) else os.path.join(model_dir, modeldir.EXPORTS_DIR)


def poll_forever(versions, seconds):
    """Poll ``versions`` (Versions, or the master's Snapshots) every ``seconds`` on a daemon thread of this
    process."""
    def loop():
        while True:
            time.sleep(seconds)
            versions.poll()
    threading.Thread(target=loop, name="walsmf-versions", daemon=True).start()


@contextlib.contextmanager
def local_model_dir(model_dir):
    """Yield a local copy of a gs:// export directory (its newest export), removed when the block ends, or
    ``model_dir`` itself when local."""
    if "://" not in model_dir:
        yield model_dir
        return
    import tensorflow as tf

    from walsmf import modeldir
    from walsmf.fileio import temporary_directory

    source = modeldir.latest_export(model_dir)
    with temporary_directory("walsmf-model-") as target:
        for root, _, files in tf.io.gfile.walk(source):
            relative = os.path.relpath(root, source) if root != source else ""
            os.makedirs(os.path.join(target, relative), exist_ok=True)
            for name in files:
                tf.io.gfile.copy(os.path.join(root, name), os.path.join(target, relative, name), overwrite=True)
        yield target


def local_versions(directory):
    """The versions (numeric names, oldest first) of complete exports in a local directory (TensorFlow-free, for
    the server's master process)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted((n for n in names if n.isdigit() and os.path.isfile(os.path.join(directory, n, "saved_model.pb"))),
                  key=int)


class Snapshots:
    """The server's own copies of the versions it serves from a local --model-dir, kept by the master process in a
    directory of its own: every worker loads from here, so all load the same newest version (one restarted after a
    new export landed too), and a version removed from --model-dir (``rm -rf wals_trained``) still loads in a
    restarted worker.  Copies are hard links where the file system allows (no space, and they outlive the
    source's removal).  ``poll`` copies the base path's newest version here when one appears; the newest KEEP
    stay."""

    KEEP = 2

    def __init__(self, model_dir):
        single = os.path.isfile(os.path.join(model_dir, "saved_model.pb"))
        self.base = None if single else model_dir if local_versions(model_dir) else os.path.join(model_dir,
                                                                                                "export", "Servo")
        with signals_held():  # the copies' root is made and its removal registered before an interrupt lands
            self.root = tempfile.mkdtemp(prefix="walsmf-serve-")
            atexit.register(self._remove, os.getpid())
        if single:
            _copy_export(model_dir, os.path.join(self.root, os.path.basename(model_dir.rstrip("/")) if
                                                 os.path.basename(model_dir.rstrip("/")).isdigit() else "1"))
        elif not self.poll():
            raise DataError("{} holds no export: give an export (export/Servo/<timestamp>) or the directory of "
                            "exports".format(model_dir))

    def poll(self, log=progress.say):
        """Copy the base path's newest version here if newer than every copy (True if one was); drop all but the
        newest KEEP."""
        newest, held = (local_versions(self.base) or [None])[-1], local_versions(self.root)
        if newest is None or (held and int(newest) <= int(held[-1])):
            return False
        try:
            _copy_export(os.path.join(self.base, newest), os.path.join(self.root, newest))
        except OSError as err:  # removed while copied, say: the next poll tries again
            log("walsmf.serve: version {} could not be copied ({}); the served version stays".format(newest, err))
            return False
        for old in local_versions(self.root)[:-self.KEEP]:
            shutil.rmtree(os.path.join(self.root, old), ignore_errors=True)
        return True

    def _remove(self, owner):
        """Remove the copies when the master ends (workers, forked from it, inherit this hook and skip it)."""
        if os.getpid() == owner:
            shutil.rmtree(self.root, ignore_errors=True)


def _copy_export(source, target):
    """Copy the local export directory ``source`` to ``target``, complete before it appears: hard links where it
    can, else copies."""
    staging = target + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    for root, _, files in os.walk(source):
        os.makedirs(os.path.join(staging, os.path.relpath(root, source)), exist_ok=True)
        for name in files:
            origin, copy = os.path.join(root, name), os.path.join(staging, os.path.relpath(root, source), name)
            try:
                os.link(origin, copy)
            except OSError:
                shutil.copy2(origin, copy)
    os.rename(staging, target)


def load_model(model_dir):
    """The Model of ``model_dir`` (local or gs://), a gs:// one copied to local disk for the load."""
    with local_model_dir(model_dir) as copied:
        return Model(copied)  # loaded: the arrays are in memory, the copy can go
