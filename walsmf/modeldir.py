"""The model directory's contract: what a training writes beside its checkpoints, and its exports.

A model directory (``walsmf.task --output_dir``) holds the checkpoints,
training_settings.json (the settings its factors depend on, and the data
directory and reads it was trained on), batch_pred.txt,
batch_pred_original_ids.txt, serving_info.json and the exports
``export/Servo/<version>/`` (a SavedModel each, the version a
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
import binascii
import collections
import csv
import io
import json
import os
import re
import shutil
import time
from typing import List, Optional

import numpy as np
import tensorflow as tf

from walsmf import datadir
from walsmf.errors import DataError, json_object
from walsmf.fileio import LOCK_FILE, atomic_write_text

BATCH_PRED_FILE = "batch_pred.txt"
# One line per user: visitorId TAB contentIds joined by ",", each part quoted as CSV
# only where an id holds a tab, comma, quote or line break (original_ids_lines).
ORIGINAL_IDS_PRED_FILE = "batch_pred_original_ids.txt"
# Copied into each export's assets.extra/: what a client must know of the model.
SERVING_INFO_FILE = "serving_info.json"
# Where the lab's export strategy writes the SavedModels, one timestamped version each.
EXPORTS_DIR = os.path.join("export", "Servo")

# The export's asset files: one per side and CSR array, e.g. by_user.indices.int64, the popularity and the id maps.
CSR_PARTS = (("offsets", np.dtype("<i8")), ("indices", np.dtype("<i8")), ("values", np.dtype("<f4")))
POPULARITY_FILE = "item_popularity.float32"
# 1 for an item fresh enough to recommend, 0 for one too old (--max_age_days); an older export has none: all fresh
FRESH_FILE = "item_fresh.float32"
ID_FILES = {"user": "visitor_ids.b64", "item": "content_ids.b64"}
# An internal id with no original id (a --nusers beyond users.csv): a line base64 never produces
NO_ORIGINAL = "!"


def csr_asset_name(side: str, part: str, dtype: np.dtype) -> str:
    """The asset file of one CSR array, e.g. ``by_user.indices.int64``."""
    return "{}.{}.{}".format(side, part, dtype.name)


# base64's alphabet to base64url's: "+" and "/" (no other character of an asset line) become "-" and "_"
_URL_SAFE = bytes.maketrans(b"+/", b"-_")


def encoded_originals(originals) -> bytes:
    """The asset file of original ids by internal id: a line each, base64url (one line whatever the id holds),
    or for an id without one (None) a line no id matches."""
    originals = list(originals)
    if None not in originals:  # (mapped over C functions: 0.7 µs an id against 2.2 with a Python loop)
        return b"".join(map(binascii.b2a_base64, map(str.encode, map(str, originals)))).translate(_URL_SAFE)
    lines = (binascii.b2a_base64(str(original).encode()) if original is not None else
             "{}{}\n".format(NO_ORIGINAL, n).encode() for n, original in enumerate(originals))
    return b"".join(lines).translate(_URL_SAFE)


def _csv_line(values, delimiter=","):
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\n").writerow(values)
    return out.getvalue()


# What CSV quotes in an id: the delimiters of either level, the quote, line breaks.
_QUOTED = re.compile('[,"\t\r\n]')


def plain_ids(ids):
    """Whether no id holds a character CSV would quote: lines of such ids are written as they are."""
    return _QUOTED.search("".join(ids)) is None


def original_ids_lines(visitors, contents, plain=False):
    """batch_pred_original_ids.txt's lines for visitorIds and their contentId lists (ids with any characters;
    ``plain``: plain_ids holds for all of them, and the lines are joined without the csv module)."""
    if plain:
        return "".join(visitor + "\t" + ",".join(items) + "\n" for visitor, items in zip(visitors, contents))
    return "".join(_csv_line([visitor, _csv_line(items).rstrip("\n")], "\t")
                   for visitor, items in zip(visitors, contents))


def read_original_ids_pred(path):
    """batch_pred_original_ids.txt as [(visitorId, [contentId, ...])]."""
    with tf.io.gfile.GFile(path) as f:
        return [(visitor, next(csv.reader([items]))) for visitor, items in csv.reader(f, delimiter="\t")]


def export_versions(path: str) -> List[str]:
    """The numeric version directories under ``path`` (an export/Servo), oldest first."""
    if not tf.io.gfile.isdir(path):
        return []
    return sorted((name.rstrip("/") for name in tf.io.gfile.listdir(path) if name.rstrip("/").isdigit()), key=int)


def latest_export(path: str) -> str:
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


def serving_info(directory: str) -> dict:
    """What an export (its assets.extra/serving_info.json) or a model directory (its serving_info.json) says of
    the model (nusers, nitems, topk, ...), if it says it."""
    path = next((p for p in (os.path.join(directory, "assets.extra", SERVING_INFO_FILE),
                             os.path.join(directory, SERVING_INFO_FILE)) if tf.io.gfile.exists(p)), None)
    if path is None:
        return {}
    with tf.io.gfile.GFile(path) as f:
        return json_object(f.read(), path, "export the model again with python -m walsmf.task")


def load_shards(checkpoint: str, prefix: str) -> np.ndarray:
    """Every shard ``prefix<i>`` of a checkpoint's sharded variable, concatenated in id order."""
    reader = tf.train.load_checkpoint(checkpoint)
    names = sorted((name for name in reader.get_variable_to_shape_map() if name.startswith(prefix)),
                   key=lambda name: int(name.rsplit("_", 1)[1]))
    if not names:
        raise DataError("{} holds no variable {}*: export the model again with python -m walsmf.task".format(
            checkpoint, prefix))
    return np.concatenate([reader.get_tensor(name) for name in names])


def load_factors(model_dir: str, side: str) -> np.ndarray:
    """Every shard of the trained ``side`` ('row' or 'col') factors of a model directory's latest checkpoint,
    concatenated in id order.

    (The lab read only the first shard.)
    """
    return load_shards(latest_checkpoint(model_dir), side + "_factors_shard_")


def latest_checkpoint(model_dir: str) -> str:
    """The model directory's latest checkpoint, or a DataError saying to train first."""
    checkpoint = tf.train.latest_checkpoint(model_dir)
    if checkpoint is None:
        raise DataError("no checkpoint in {}: train first (python -m walsmf.task)".format(model_dir))
    return checkpoint


# The training record's key naming the checkpoint that holds the model as trained or last refreshed.
CHECKPOINT_KEY = "checkpoint"
# A trained model: both sides' factors and WALS's observed-entry weights, each whole (every shard, in id order).
Factors = collections.namedtuple("Factors", "rows cols row_weights col_weights")


def trained_factors(model_dir: str, checkpoint: str = None) -> Factors:
    """The Factors of a model directory's ``checkpoint`` (default: its latest)."""
    checkpoint = checkpoint or latest_checkpoint(model_dir)
    return Factors(*(load_shards(checkpoint, "{}_{}_shard_".format(side, kind))
                     for kind, side in (("factors", "row"), ("factors", "col"), ("weights", "row"),
                                        ("weights", "col"))))


def new_version_dir(exports_dir: str) -> str:
    """A version directory under ``exports_dir`` for a new export: the time in seconds, as SavedModel's exporter
    names it, later than every version there (two exports in one second get two versions)."""
    versions = export_versions(exports_dir)
    version = max([int(time.time())] + [int(v) + 1 for v in versions[-1:]])
    return os.path.join(exports_dir, str(version))


# ---------------------------------------------------------------- guards --

# What a training writes into its output_dir (beside TRAINING_SETTINGS_FILE, the marker of a walsmf model): the
# estimator's checkpoints, graph and summaries, the evaluations, the export, the files of batch prediction; and
# what any run leaves while it writes (a lock, a file's temporary name).
_WRITTEN = {"checkpoint", "graph.pbtxt", "eval", "export", "serving_assets", datadir.HELDOUT_SUMMARY_DIR}
# A write not finished (a run killed, a disk full): walsmf's atomic outputs' <name>.tmp-<pid>, TensorFlow's
# <name>.tmp<uuid> (graph.pbtxt, the checkpoint state) and a checkpoint's <name>_temp_<uuid>/ staging.
_UNFINISHED = r".*\.tmp-[0-9]+|.+\.tmp[0-9a-f]{32}|.+_temp_[0-9a-f]{32}|graph\.pbtxt\.tmp.*"
_WRITTEN_PATTERN = re.compile(r"model\.ckpt-[0-9]+\..*|events\.out\.tfevents\..*|" + _UNFINISHED)
# Tolerated in a directory without the marker: a run's lock, a temporary file, a killed run's staging.
_TRANSIENT_PATTERN = re.compile(re.escape(LOCK_FILE) + "|" + _UNFINISHED)


def written_here(name: str) -> bool:
    """Whether ``name`` is an entry a walsmf training writes into its output_dir."""
    return (name in _WRITTEN or name in (TRAINING_SETTINGS_FILE, SERVING_INFO_FILE, BATCH_PRED_FILE,
                                         ORIGINAL_IDS_PRED_FILE) or bool(_WRITTEN_PATTERN.fullmatch(name)))


def check_output_dir(output_dir: str) -> None:
    """Refuse, before any work, an output_dir holding what a walsmf training did not write there: files of the
    user's (any name, or a walsmf file name in a directory no training marked), which training would overwrite."""
    if "://" in output_dir or not os.path.isdir(output_dir):
        return
    names = sorted(os.listdir(output_dir))
    marked = TRAINING_SETTINGS_FILE in names
    foreign = [name for name in names
               if not (_TRANSIENT_PATTERN.fullmatch(name) or (marked and written_here(name)))]
    if foreign:
        raise DataError("--output_dir {} holds {} that no walsmf training wrote there{}, and training writes into it: "
                        "give a new --output_dir, or move {} out".format(
                            output_dir, ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else ""),
                            "" if marked else " (it has no {})".format(TRAINING_SETTINGS_FILE),
                            "it" if len(foreign) == 1 else "them"))

def check_existing_model(settings) -> None:
    """Refuse an output_dir whose checkpoint has factors of another shape (training would crash restoring it)."""
    checkpoint = tf.train.latest_checkpoint(settings.output_dir)
    if checkpoint is None:
        return
    shapes = dict(tf.train.list_variables(checkpoint))
    found = [sum(shape[0] for name, shape in shapes.items() if name.startswith(side + "_factors_shard_"))
             for side in ("row", "col")]
    dims = {shape[1] for name, shape in shapes.items() if "_factors_shard_" in name}
    if found != [settings.nusers, settings.nitems] or dims != {settings.n_embeds}:
        raise DataError("{} holds a model of {} users x {} items x {} factors, not {} x {} x {}: choose another "
                        "--output_dir or delete it".format(settings.output_dir, found[0], found[1],
                                                           "/".join(map(str, sorted(dims))), settings.nusers,
                                                           settings.nitems, settings.n_embeds))


# What a model's factors depend on: another value of any of these is another model, which a checkpoint of
# the first must not continue (num_epochs may grow: training goes on; the rest only ranks).
TRAINING_SETTINGS = ("nusers", "nitems", "n_embeds", "batch_size", "regularization", "unobserved_weight",
                     "row_weight", "col_weight", "col_weight_exp", "target", "num_row_shards", "num_col_shards",
                     "seed")
TRAINING_SETTINGS_FILE = "training_settings.json"


def check_same_training(settings) -> None:
    """Refuse to continue a checkpoint trained with other settings: it would be kept, not retrained, and
    re-exported as if it were this one."""
    mine = _training_settings(settings)
    theirs = training_record(settings.output_dir)
    if tf.train.latest_checkpoint(settings.output_dir) is not None and theirs:
        changed = ["{} {!r} (now {!r})".format(name, theirs.get(name), mine[name]) for name in TRAINING_SETTINGS
                   if theirs.get(name) != mine[name]]
        if changed:
            raise DataError("{} holds a model trained with other settings: {}; choose another --output_dir or "
                            "delete it to train these".format(settings.output_dir, ", ".join(changed)))


def _training_settings(settings):
    return {name: getattr(settings, name) for name in TRAINING_SETTINGS}


def record_training(settings, interactions: datadir.Interactions, checkpoint: str = None) -> None:
    """Write what check_same_training compares, and what the model is trained on (the data directory and a
    fingerprint of its reads: evaluation can tell a model that saw other reads), to the output_dir once the
    data is known to be good; with ``checkpoint``, the checkpoint that holds the model so trained."""
    tf.io.gfile.makedirs(settings.output_dir)
    record = dict(_training_settings(settings), **trained_on(settings.input_path, interactions))
    if checkpoint:
        record[CHECKPOINT_KEY] = os.path.basename(checkpoint)
    _write_record(settings.output_dir, record)


def trained_on(data_dir: str, interactions: datadir.Interactions) -> dict:
    """What a model trained on ``data_dir``'s ``interactions`` records of its data: the directory (absolute where
    local), the fingerprint of its reads (datadir.reads_fingerprint) and of its id maps (datadir.id_maps_digest)."""
    return {"data_dir": data_dir if "://" in data_dir else os.path.abspath(data_dir),
            "reads_fingerprint": datadir.reads_fingerprint(interactions), "id_maps": datadir.id_maps_digest(data_dir)}


def record_checkpoint(model_dir: str) -> None:
    """Name the latest checkpoint in the training record: the model as trained, which a refresh starts from
    whatever a refresh killed later left beside it."""
    _write_record(model_dir, dict(training_record(model_dir),
                                  **{CHECKPOINT_KEY: os.path.basename(latest_checkpoint(model_dir))}))


def _write_record(model_dir: str, record: dict) -> None:
    """Write the training record (training_settings.json), whole or not at all."""
    atomic_write_text(os.path.join(model_dir, TRAINING_SETTINGS_FILE), json.dumps(record, sort_keys=True))


def recorded_checkpoint(model_dir: str) -> str:
    """The checkpoint the training record names (record_checkpoint), else the latest."""
    name = training_record(model_dir).get(CHECKPOINT_KEY)
    return os.path.join(model_dir, name) if name else latest_checkpoint(model_dir)


def training_record(model_dir: str) -> dict:
    """What a model directory records of its training (training_settings.json), or {} for a model without it."""
    path = os.path.join(model_dir, TRAINING_SETTINGS_FILE)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return json_object(f.read(), path, "train the model again with python -m walsmf.task")


def remove_unfinished_writes(model_dir: str) -> None:
    """Remove what writes that never finished left in a model directory the caller holds (exclusive_directory):
    temporary files and checkpoint staging (_UNFINISHED: a disk-full or killed run's), and export/Servo/temp-<version>
    directories (an export's staging); nothing else (a temp-anything of the user's stays)."""
    if "://" not in model_dir and os.path.isdir(model_dir):
        for name in os.listdir(model_dir):
            if re.fullmatch(_UNFINISHED, name):
                path = os.path.join(model_dir, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    servo = os.path.join(model_dir, EXPORTS_DIR)
    for stale in tf.io.gfile.glob(os.path.join(servo, "temp-*")) if tf.io.gfile.isdir(servo) else ():
        if re.fullmatch(r"temp-[0-9]+", os.path.basename(stale.rstrip("/"))):
            tf.io.gfile.rmtree(stale)


def serving_info_of(settings) -> dict:
    """What a client of the export must know of the model (serving_info.json): its shape and the defaults
    of an instance's k and excludeRead; whether it rates durations (a median read time); and what a new
    visitor's fold-in solves with (walsmf.export_numpy answers from these and the export's arrays)."""
    median = datadir.median_duration(settings.input_path)
    return {"nusers": settings.nusers, "nitems": settings.nitems, "topk": settings.topk,
            "n_embeds": settings.n_embeds, "exclude_seen": bool(settings.exclude_seen),
            "popularity_weight": settings.popularity_weight, "popularity_days": settings.popularity_days,
            "popularity_rate": bool(settings.popularity_rate), "max_age_days": settings.max_age_days,
            "rates_durations": median is not None, "median_duration_ms": median,
            "unobserved_weight": settings.unobserved_weight, "regularization": settings.regularization,
            "target": settings.target}


def read_asset(export_dir: str, name: str, dtype: np.dtype, optional: bool = False) -> Optional[np.ndarray]:
    """One raw little-endian asset file of an export as a numpy vector (``optional``: None where an older export
    has no such asset)."""
    path = os.path.join(export_dir, "assets", name)
    if optional and not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "rb") as f:
        return np.frombuffer(f.read(), dtype)


def read_original_ids(export_dir: str, side: str) -> List[Optional[str]]:
    """One side's original ids by internal id from the export's asset (None where an id has none)."""
    with tf.io.gfile.GFile(os.path.join(export_dir, "assets", ID_FILES[side]), "rb") as f:
        lines = f.read().decode("ascii").splitlines()
    return [None if line.startswith(NO_ORIGINAL) else base64.urlsafe_b64decode(line).decode("utf-8")
            for line in lines]
