"""Local prediction with an exported walsmf model, as `gcloud ai-platform local predict` does it.

    python -m walsmf.predict --model-dir wals_trained/export/Servo/<timestamp> --json-instances input.json

Each line of the instances file is one JSON instance: {"userId": 4, "itemId": -1}
asks for user 4's top-k items; {"userId": -1, "itemId": 4} for item 4's top-k
users; {"userId": -1, "itemId": -1, "items": [3, 7], "ratings": [0.5, 1.0]}
for a new visitor who read items 3 and 7 (ratings optional).  Output: a
table with a column per output key (gcloud's default) or ``--format json``:
{"predictions": [...]}.
"""
import json
import os

import numpy as np
import tensorflow as tf
from tensorflow.contrib import predictor

from walsmf import flags
from walsmf.datadir import SERVING_INFO_FILE
from walsmf.errors import DataError, run_cli

INSTANCE_KEYS = ("userId", "itemId")
NEW_VISITOR_KEYS = ("items", "ratings")


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


def _integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def check_instance(instance, where, nusers=None, nitems=None):
    """Return one instance as {"userId", "itemId"[, "items"[, "ratings"]]}, or raise a DataError saying what is wrong.

    The same rules as the export's: integer ids, userId below nusers, itemId
    -1 or a known item; items (known itemIds) and ratings (numbers, as many)
    only for a new visitor (userId and itemId -1).
    """
    if not isinstance(instance, dict):
        raise DataError("{}: an instance must be a JSON object like {{\"userId\": 4, \"itemId\": -1}}".format(where))
    unknown = sorted(set(instance) - set(INSTANCE_KEYS + NEW_VISITOR_KEYS))
    if unknown:
        raise DataError("{}: unknown key {!r} (an instance has userId, itemId and, for a new visitor, items and "
                        "ratings)".format(where, unknown[0]))
    for key in INSTANCE_KEYS:
        if key not in instance:
            raise DataError("{}: missing key {!r} (give both userId and itemId; -1 for the one not asked)".format(
                where, key))
        if not _integer(instance[key]):
            raise DataError("{}: {} must be an integer, got {!r}".format(where, key, instance[key]))
    user_id, item_id = instance["userId"], instance["itemId"]
    if nusers is not None and user_id >= nusers:
        raise DataError("{}: userId {} out of range: the model knows users 0..{}".format(where, user_id, nusers - 1))
    if item_id < -1 or (nitems is not None and item_id >= nitems):
        raise DataError("{}: itemId {} out of range: -1, or an item the model knows (0..{})".format(
            where, item_id, "N-1" if nitems is None else nitems - 1))
    checked = {"userId": user_id, "itemId": item_id}
    if "items" in instance or "ratings" in instance:
        if (instance.get("items") or instance.get("ratings")) and (user_id >= 0 or item_id >= 0):
            raise DataError("{}: items and ratings describe a new visitor: give them with userId -1 and "
                            "itemId -1".format(where))
        items = instance.get("items", [])
        if not isinstance(items, list) or not all(_integer(i) and i >= 0 and (nitems is None or i < nitems)
                                                  for i in items):
            raise DataError("{}: items must be a list of itemIds the model knows (0..{}), got {!r}".format(
                where, "N-1" if nitems is None else nitems - 1, items))
        checked["items"] = items
        if "ratings" in instance:
            ratings = instance["ratings"]
            if not (isinstance(ratings, list) and len(ratings) == len(items) and all(
                    isinstance(r, (int, float)) and not isinstance(r, bool) and np.isfinite(r) for r in ratings)):
                raise DataError("{}: ratings must be a list of numbers, one per item, got {!r}".format(
                    where, ratings))
            checked["ratings"] = ratings
    return checked


def serving_info(export_dir):
    """What the export says of itself (nusers, nitems, topk), if it says it."""
    path = os.path.join(export_dir, "assets.extra", SERVING_INFO_FILE)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def predict(model_dir, instances):
    """Run the export on instances (dicts as in an instances file, or (userId, itemId) pairs); one dict each."""
    export_dir = latest_export(model_dir)
    info = serving_info(export_dir)
    instances = [check_instance(dict(zip(INSTANCE_KEYS, i)) if isinstance(i, tuple) else i,
                                "instance {}".format(number), info.get("nusers"), info.get("nitems"))
                 for number, i in enumerate(instances, 1)]
    feed = {key: np.array([i[key] for i in instances], np.int64) for key in INSTANCE_KEYS}
    if any("items" in i for i in instances):
        # a batch of lists: -1 pads them to the longest, as the export expects
        width = max(len(i.get("items", [])) for i in instances)
        feed["items"] = np.full((len(instances), width), -1, np.int64)
        for row, i in enumerate(instances):
            feed["items"][row, :len(i.get("items", []))] = i.get("items", [])
        if any("ratings" in i for i in instances):
            if not all("ratings" in i for i in instances if "items" in i):
                raise DataError("give ratings for every new visitor of a file, or for none")
            feed["ratings"] = np.zeros((len(instances), width), np.float32)
            for row, i in enumerate(instances):
                feed["ratings"][row, :len(i.get("ratings", []))] = i.get("ratings", [])
    try:
        predict_fn = predictor.from_saved_model(export_dir)
    except (IOError, ValueError, RuntimeError, tf.errors.OpError) as err:
        raise DataError("{} is not a readable SavedModel ({}): export it again with python -m walsmf.task".format(
            export_dir, str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__))
    outputs = predict_fn(feed)
    return [{key: value[n].tolist() for key, value in sorted(outputs.items())} for n in range(len(instances))]


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
