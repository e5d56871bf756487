"""Local prediction with an exported walsmf model, as `gcloud ai-platform local predict` does it.

    python -m walsmf.predict --model-dir wals_trained/export/Servo/<timestamp> --json-instances input.json

Each line of the instances file is one JSON instance: {"userId": 4, "itemId": -1}
asks for user 4's top-k items; {"userId": -1, "itemId": 4} for item 4's top-k
users.  Output: a table with a column per output key (gcloud's default) or
``--format json``: {"predictions": [...]}.
"""
import argparse
import json
import os

import numpy as np
import tensorflow as tf
from tensorflow.contrib import predictor

from walsmf.datadir import SERVING_INFO_FILE
from walsmf.errors import DataError, run_cli

INSTANCE_KEYS = ("userId", "itemId")


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
    with tf.io.gfile.GFile(path) as f:
        for number, line in enumerate(f, 1):
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


def check_instance(instance, where, nusers=None, nitems=None):
    """Return (userId, itemId) of one instance, or raise a DataError saying what is wrong."""
    if not isinstance(instance, dict):
        raise DataError("{}: an instance must be a JSON object like {{\"userId\": 4, \"itemId\": -1}}".format(where))
    ids = []
    for key in INSTANCE_KEYS:
        if key not in instance:
            raise DataError("{}: missing key {!r} (give both userId and itemId; -1 for the one not asked)".format(
                where, key))
        value = instance[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise DataError("{}: {} must be an integer, got {!r}".format(where, key, value))
        ids.append(value)
    user_id, item_id = ids
    if nusers is not None and user_id >= nusers:
        raise DataError("{}: userId {} out of range: the model knows users 0..{}".format(where, user_id, nusers - 1))
    if user_id < 0 and nitems is not None and not 0 <= item_id < nitems:
        raise DataError("{}: itemId {} out of range (userId < 0 asks about an item): the model knows "
                        "items 0..{}".format(where, item_id, nitems - 1))
    return user_id, item_id


def serving_info(export_dir):
    """What the export says of itself (nusers, nitems, topk), if it says it."""
    path = os.path.join(export_dir, "assets.extra", SERVING_INFO_FILE)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def predict(model_dir, instances):
    """Run the export on (userId, itemId) pairs; return one dict of outputs per instance."""
    export_dir = latest_export(model_dir)
    info = serving_info(export_dir)
    for number, (user_id, item_id) in enumerate(instances, 1):
        check_instance({"userId": user_id, "itemId": item_id}, "instance {}".format(number),
                       info.get("nusers"), info.get("nitems"))
    predict_fn = predictor.from_saved_model(export_dir)
    outputs = predict_fn({"userId": np.array([u for u, _ in instances], np.int64),
                          "itemId": np.array([i for _, i in instances], np.int64)})
    return [{key: value[n].tolist() for key, value in sorted(outputs.items())} for n in range(len(instances))]


def format_table(predictions):
    """gcloud's default output: a column per output key, headed in capitals."""
    keys = sorted(predictions[0])
    rows = [[key.upper() for key in keys]] + [[json.dumps(p[key]) for key in keys] for p in predictions]
    widths = [max(len(row[c]) for row in rows) for c in range(len(keys))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def main(argv=None):
    """CLI: predict for the instances of a file."""
    parser = argparse.ArgumentParser(prog="python -m walsmf.predict", description=__doc__.split("\n\n")[0])
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
