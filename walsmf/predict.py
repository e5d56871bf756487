"""Local prediction with an exported walsmf model, as `gcloud ai-platform local predict` does it.

    python -m walsmf.predict --model-dir wals_trained/export/Servo/<timestamp> --json-instances input.json

Each line of the instances file is one JSON instance: {"userId": 4, "itemId": -1}
asks for user 4's top-k items; {"userId": -1, "itemId": 4} for item 4's top-k
users; {"visitorId": "1323869757724419136", "contentIds": ["299965853"]} for a
visitor in the site's own ids (a new one: from the articles read); the keys
and their rules are walsmf.instances'.  Output: a table with a column per
output key (gcloud's default) or ``--format json``: {"predictions": [...]}.
"""
import contextlib
import itertools
import json
import os
import shutil
import sys
import tempfile
import textwrap

import numpy as np
import tensorflow as tf

from walsmf import flags
from walsmf.errors import DataError, loads_json, run_cli
from walsmf.fileio import check_input_file
from walsmf.instances import check_instance, feed
from walsmf.modeldir import latest_export, serving_info

# Instances the export answers in one run: their scores and padded lists stay small.
BATCH_INSTANCES = 512


def iter_instances(path, info=None, name=None):
    """Yield the instances of a newline-delimited JSON file one line at a time, each checked (``info``: the
    export's serving_info.json); a bad one is an error naming its line (of ``name``, default ``path``)."""
    name = name or path
    check_input_file(path, "instances file", "give a file of JSON instances, one per line")
    given = False
    with tf.io.gfile.GFile(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            where = "{} line {}".format(name, number)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError("{} is not UTF-8 text (byte {} of the line): save the file as UTF-8 JSON, one "
                                "instance per line".format(where, err.start + 1))
            if not line.strip():
                continue
            try:
                instance = loads_json(line)
            except ValueError as err:
                raise DataError("{}: not JSON ({})".format(where, err))
            except RecursionError:
                raise DataError("{}: JSON nested too deeply: an instance is a flat object".format(where))
            given = True
            yield check_instance(instance, where, info)
    if not given:
        raise DataError("instances file {} holds no instance".format(name))


def read_instances(path, info=None):
    """Every instance of a newline-delimited JSON file, checked (iter_instances as a list)."""
    return list(iter_instances(path, info))


def predict(model_dir, instances):
    """Run the export on instances (dicts as in an instances file, or (userId, itemId) pairs); one dict each."""
    export_dir = latest_export(model_dir)
    info = serving_info(export_dir)
    checked = [check_instance(dict(zip(("userId", "itemId"), i)) if isinstance(i, tuple) else i,
                              "instance {}".format(number), info) for number, i in enumerate(instances, 1)]
    return list(predictions(load(export_dir), checked, info))


def predictions(predict_fn, checked, info, batch_size=BATCH_INSTANCES):
    """Yield the export's answer to each of the checked instances (any iterable), ``batch_size`` at a time:
    memory holds one batch, padded to its own longest list, whatever the number of instances."""
    batch = []
    for instance in itertools.chain(checked, [None]):
        if instance is not None:
            batch.append(instance)
        if batch and (len(batch) == batch_size or instance is None):
            yield from run(predict_fn, batch, info)
            batch = []


class ExportSession:
    """A SavedModel's serving signature in a session of its own, called with a feed of some of its inputs (the
    others keep their defaults) and returning every output: as gcloud and TF Serving load it, on TensorFlow 1.15
    and 2.x alike."""

    def __init__(self, export_dir):
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            meta = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], export_dir)
        signature = meta.signature_def["serving_default"]
        self.inputs = {key: self.graph.get_tensor_by_name(info.name) for key, info in signature.inputs.items()}
        self.outputs = {key: self.graph.get_tensor_by_name(info.name) for key, info in signature.outputs.items()}

    def __call__(self, feed):
        return self.session.run(self.outputs, {self.inputs[key]: value for key, value in feed.items()})


def load(export_dir):
    """The export's predict function (an ExportSession), or a DataError saying the export is unreadable."""
    try:
        return ExportSession(export_dir)
    except (IOError, ValueError, RuntimeError, KeyError, tf.errors.OpError) as err:
        raise DataError("{} is not a readable SavedModel ({}): export it again with python -m walsmf.task".format(
            export_dir, str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__))


def run(predict_fn, checked, info):
    """The export's answers to checked instances, one dict of JSON values each (strings decoded), each top-k
    list as long as its instance's k, at most the other side's ids (the export pads a batch's lists to its
    longest)."""
    outputs = predict_fn(feed(checked, info))
    answers = []
    for n, instance in enumerate(checked):
        # at most the other side's ids: a user's articles, an item's readers
        asks_item = instance.get("userId", -1) < 0 <= instance.get("itemId", -1)
        k = min(instance.get("k", info.get("topk")), info["nusers"] if asks_item else info["nitems"])
        answers.append({key: _plain(value[n])[:k] if key.startswith("top_k_") else _plain(value[n])
                        for key, value in sorted(outputs.items())})
    return answers


def _plain(value):
    """An output of one instance as JSON values: lists, numbers, and strings where TensorFlow has bytes."""
    if value.dtype == object:
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(value).tolist()
    return value.tolist()


def format_table(predictions):
    """gcloud's default output: a column per output key, headed in capitals."""
    return "\n".join(table_lines(predictions))


def table_lines(predictions):
    """format_table's lines, one at a time: the cells wait in a temporary file until every column's width is
    known, so memory holds one row."""
    with tempfile.TemporaryFile("w+") as cells:
        keys, widths = None, None
        for prediction in predictions:
            if keys is None:
                keys = sorted(prediction)
                widths = [len(key) for key in keys]
            row = [json.dumps(prediction[key]) for key in keys]
            widths = [max(width, len(cell)) for width, cell in zip(widths, row)]
            cells.write(json.dumps(row) + "\n")
        if keys is None:
            return
        cells.seek(0)
        for row in itertools.chain([[key.upper() for key in keys]], map(json.loads, cells)):
            yield "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()


def write_json(predictions, out):
    """``{"predictions": [...]}`` as json.dumps(..., indent=2) writes it, one prediction at a time."""
    out.write('{\n  "predictions": [')
    written = False
    for prediction in predictions:
        out.write((",\n" if written else "\n") + textwrap.indent(json.dumps(prediction, indent=2), "    "))
        written = True
    out.write("\n  ]\n}\n" if written else "]\n}\n")


def main(argv=None):
    """CLI: predict for the instances of a file."""
    parser = flags.Parser(prog="python -m walsmf.predict", description=__doc__.split("\n\n")[0])
    flags.add_model_dir(parser, "an export (export/Servo/<timestamp>) or the directory of exports (newest is used)",
                        required=True)
    parser.add_argument("--json-instances", dest="json_instances", required=True,
                        help="newline-delimited JSON instances, e.g. {\"userId\": 4, \"itemId\": -1}")
    parser.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    args = parser.parse_args(argv)
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)  # TensorFlow's notices are not the answer
    export_dir = latest_export(args.model_dir)
    info = serving_info(export_dir)
    with readable_twice(args.json_instances) as instances_file:
        for _ in iter_instances(instances_file, info, args.json_instances):  # every line checked before answering
            pass
        answers = predictions(load(export_dir), iter_instances(instances_file, info, args.json_instances), info)
        if args.format == "json":
            write_json(answers, sys.stdout)
        else:
            for line in table_lines(answers):
                print(line)


@contextlib.contextmanager
def readable_twice(path):
    """``path``, or where it is a pipe (``/dev/stdin``, a FIFO) a temporary copy of what it held: the instances
    are read once to check them all, then again to answer them."""
    if "://" in path or not os.path.exists(path) or os.path.isfile(path) or os.path.isdir(path):
        yield path
        return
    with tempfile.NamedTemporaryFile(prefix="walsmf-instances-", suffix=".json") as copy:
        with open(path, "rb") as stream:
            shutil.copyfileobj(stream, copy)
        copy.flush()
        yield copy.name


if __name__ == "__main__":
    run_cli(main)
