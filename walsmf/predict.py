"""Local prediction with an exported walsmf model, as `gcloud ai-platform local predict` does it.

    python -m walsmf.predict --model-dir wals_trained/export/Servo/<timestamp> --json-instances input.json

Each line of the instances file is one JSON instance: {"userId": 4, "itemId": -1}
asks for user 4's top-k items; {"userId": -1, "itemId": 4} for item 4's top-k
users; {"visitorId": "1323869757724419136", "contentIds": ["299965853"]} for a
visitor in the site's own ids (a new one: from the articles read); the keys
and their rules are walsmf.instances'.  Output: a table with a column per
output key (gcloud's default) or ``--format json``: {"predictions": [...]}.
"""
import json
import os

import numpy as np
import tensorflow as tf
from tensorflow.contrib import predictor

from walsmf import flags
from walsmf.datadir import SERVING_INFO_FILE
from walsmf.errors import DataError, json_object, run_cli
from walsmf.instances import check_instance, feed


def latest_export(path):
    """``path`` itself if it holds a saved_model.pb, else its newest timestamped export."""
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return path
    versions = sorted((name.rstrip("/") for name in tf.io.gfile.listdir(path) if name.rstrip("/").isdigit()),
                      key=int) if tf.io.gfile.isdir(path) else []
    if not versions:
        raise DataError("{} is not an exported model (no saved_model.pb, no timestamped export in it)".format(path))
    return os.path.join(path, versions[-1])


def read_instances(path):
    """Parse newline-delimited JSON instances; a bad one is an error naming its line."""
    if not tf.io.gfile.exists(path):
        raise DataError("instances file {} does not exist".format(path))
    instances = []
    with tf.io.gfile.GFile(path, "rb") as f:
        try:
            lines = f.read().decode("utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise DataError("instances file {} is not UTF-8 text (byte {}): save it as UTF-8 JSON, one instance "
                            "per line".format(path, err.start))
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            instance = json.loads(line)
        except ValueError as err:
            raise DataError("{} line {}: not JSON ({})".format(path, number, err))
        instances.append(check_instance(instance, "{} line {}".format(path, number)))
    if not instances:
        raise DataError("instances file {} holds no instance".format(path))
    return instances


def serving_info(export_dir):
    """What the export says of itself (nusers, nitems, topk), if it says it."""
    path = os.path.join(export_dir, "assets.extra", SERVING_INFO_FILE)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return json_object(f.read(), path, "export the model again with python -m walsmf.task")


def predict(model_dir, instances):
    """Run the export on instances (dicts as in an instances file, or (userId, itemId) pairs); one dict each."""
    export_dir = latest_export(model_dir)
    info = serving_info(export_dir)
    checked = [check_instance(dict(zip(("userId", "itemId"), i)) if isinstance(i, tuple) else i,
                              "instance {}".format(number), info) for number, i in enumerate(instances, 1)]
    return run(load(export_dir), checked, info)


def load(export_dir):
    """The export's predict function (contrib's predictor), or a DataError saying the export is unreadable."""
    try:
        return predictor.from_saved_model(export_dir)
    except (IOError, ValueError, RuntimeError, tf.errors.OpError) as err:
        raise DataError("{} is not a readable SavedModel ({}): export it again with python -m walsmf.task".format(
            export_dir, str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__))


def run(predict_fn, checked, info):
    """The export's answers to checked instances, one dict of JSON values each (strings decoded), each top-k
    list as long as its instance's k (the export pads a batch's lists to its longest)."""
    outputs = predict_fn(feed(checked, info))
    answers = []
    for n, instance in enumerate(checked):
        k = instance.get("k", info.get("topk"))
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
    keys = sorted(predictions[0])
    rows = [[key.upper() for key in keys]] + [[json.dumps(p[key]) for key in keys] for p in predictions]
    widths = [max(len(row[c]) for row in rows) for c in range(len(keys))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def main(argv=None):
    """CLI: predict for the instances of a file."""
    parser = flags.Parser(prog="python -m walsmf.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", dest="model_dir", required=True,
                        help="an export (export/Servo/<timestamp>) or the directory of exports (newest is used)")
    parser.add_argument("--json-instances", dest="json_instances", required=True,
                        help="newline-delimited JSON instances, e.g. {\"userId\": 4, \"itemId\": -1}")
    parser.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    args = parser.parse_args(argv)
    predictions = predict(args.model_dir, read_instances(args.json_instances))
    if args.format == "json":
        print(json.dumps({"predictions": predictions}, indent=2))
    else:
        print(format_table(predictions))


if __name__ == "__main__":
    run_cli(main)
