"""The model directory's contract: what a training writes beside its checkpoints, and its exports.

A model directory (``walsmf.task --output_dir``) holds the checkpoints,
batch_pred.txt, batch_pred_original_ids.txt, serving_info.json and the
exports ``export/Servo/<version>/`` (a SavedModel each, the version a
timestamp).  An export carries, besides the SavedModel's graph and
variables, asset files a server reads without the graph:

    assets/by_user.{offsets,indices}.int64, by_user.values.float32   each side's reads (CSR, little-endian)
    assets/by_item.{offsets,indices}.int64, by_item.values.float32
    assets/item_popularity.float32     what the popularity blend adds per item
    assets/visitor_ids.b64, content_ids.b64   original ids by internal id, one base64url line each
    assets.extra/serving_info.json     what a client must know of the model

This module imports nothing of training (no tf.contrib, no pandas): the
server and walsmf.predict run on current TensorFlow with it.  Every file is
read through ``tf.io.gfile``, so directories may be ``gs://`` paths.
"""
import base64
import os

import numpy as np
import tensorflow as tf

from walsmf.errors import DataError, json_object

BATCH_PRED_FILE = "batch_pred.txt"
# One line per user: visitorId TAB contentIds joined by ",", each part quoted as CSV
# only where an id holds a tab, comma, quote or line break (datadir.original_ids_lines).
ORIGINAL_IDS_PRED_FILE = "batch_pred_original_ids.txt"
# Copied into each export's assets.extra/: what a client must know of the model.
SERVING_INFO_FILE = "serving_info.json"
# Where the lab's export strategy writes the SavedModels, one timestamped version each.
EXPORTS_DIR = os.path.join("export", "Servo")

# The export's asset files: one per side and CSR array, e.g. by_user.indices.int64, the popularity and the id maps.
CSR_PARTS = (("offsets", np.dtype("<i8")), ("indices", np.dtype("<i8")), ("values", np.dtype("<f4")))
POPULARITY_FILE = "item_popularity.float32"
ID_FILES = {"user": "visitor_ids.b64", "item": "content_ids.b64"}
# An internal id with no original id (a --nusers beyond users.csv): a line base64 never produces
NO_ORIGINAL = "!"


def csr_asset_name(side, part, dtype):
    """The asset file of one CSR array, e.g. ``by_user.indices.int64``."""
    return "{}.{}.{}".format(side, part, dtype.name)


def encode_original(original, n):
    """An original id as its asset line: base64url (one line whatever the id holds), or a line no id matches."""
    if original is None:
        return "{}{}".format(NO_ORIGINAL, n)
    return base64.urlsafe_b64encode(str(original).encode("utf-8")).decode("ascii")


def export_versions(path):
    """The numeric version directories under ``path`` (an export/Servo), oldest first."""
    if not tf.io.gfile.isdir(path):
        return []
    return sorted((name.rstrip("/") for name in tf.io.gfile.listdir(path) if name.rstrip("/").isdigit()), key=int)


def latest_export(path):
    """``path`` itself if it holds a saved_model.pb, else its newest timestamped export; a training's
    output_dir stands for its export/Servo."""
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return path
    versions = export_versions(path)
    if not versions:
        servo = os.path.join(path, EXPORTS_DIR)
        if tf.io.gfile.isdir(servo):
            return latest_export(servo)
        raise DataError("{} is not an exported model (no saved_model.pb, no timestamped export in it): give "
                        "export/Servo of a walsmf.task --output_dir, or one of its exports".format(path))
    return os.path.join(path, versions[-1])


def serving_info(export_dir):
    """What the export says of itself (nusers, nitems, topk, ...), if it says it."""
    path = os.path.join(export_dir, "assets.extra", SERVING_INFO_FILE)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return json_object(f.read(), path, "export the model again with python -m walsmf.task")


def load_shards(checkpoint, prefix):
    """Every shard ``prefix<i>`` of a checkpoint's sharded variable, concatenated in id order."""
    reader = tf.train.load_checkpoint(checkpoint)
    names = sorted((name for name in reader.get_variable_to_shape_map() if name.startswith(prefix)),
                   key=lambda name: int(name.rsplit("_", 1)[1]))
    if not names:
        raise DataError("{} holds no variable {}*: export the model again with python -m walsmf.task".format(
            checkpoint, prefix))
    return np.concatenate([reader.get_tensor(name) for name in names])


def read_asset(export_dir, name, dtype):
    """One raw little-endian asset file of an export as a numpy vector."""
    with tf.io.gfile.GFile(os.path.join(export_dir, "assets", name), "rb") as f:
        return np.frombuffer(f.read(), dtype)


def read_original_ids(export_dir, side):
    """One side's original ids by internal id from the export's asset (None where an id has none)."""
    with tf.io.gfile.GFile(os.path.join(export_dir, "assets", ID_FILES[side]), "rb") as f:
        lines = f.read().decode("ascii").splitlines()
    return [None if line.startswith(NO_ORIGINAL) else base64.urlsafe_b64decode(line).decode("utf-8")
            for line in lines]
