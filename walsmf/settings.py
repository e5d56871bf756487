"""The trainer's settings: one typed object, one set of defaults, the flags made from it.

Precedence, lowest first: the defaults below (the lab's), a ``--preset``, a
``--params_file`` (JSON {flag name: value}, e.g. a tuning result), then the
flags given on the command line.  ``nusers``/``nitems`` left unset are read
from the data's metadata.json by :func:`with_data_counts`.

This module imports no TensorFlow, so ``python -m walsmf.task --help`` and
flag errors answer at once.
"""
import argparse
import dataclasses
import math
from typing import Optional

from walsmf import flags
from walsmf.errors import DataError, loads_json
from walsmf.flags import integer
from walsmf.memory import check_available

PRESETS = {
    # The lab's settings: contrib's defaults, no regularization.
    "lab": {},
    # Searched on a validation split of the lab-sized embedded sample (docs/quality.md): fit reads rather
    # than durations, 30 factors, popular items weighted down, large batches; 20 epochs of batch 16,384
    # are about 14 sweeps.
    "tuned": {"target": "read", "n_embeds": 30, "regularization": 1.0, "unobserved_weight": 0.1,
              "col_weight_exp": 0.5, "batch_size": 16384, "num_epochs": 20.0},
}


def _flag(default, help, type=None, choices=None, required=False):
    return dataclasses.field(default=default, metadata={"help": help, "type": type, "choices": choices,
                                                        "required": required})


@dataclasses.dataclass(frozen=True)
class Settings:
    """What walsmf.task trains: the lab's flags, then what the lab left at contrib's defaults."""
    input_path: str = _flag(None, "directory (local or gs://) with items_for_user, users_for_item (and "
                                  "metadata.json, users.csv, items.csv) from walsmf.preprocess", str, required=True)
    output_dir: str = _flag(None, "model directory (local or gs://): checkpoints, export/Servo, batch_pred.txt",
                            str, required=True)
    num_epochs: float = _flag(5.0, "training length: train_steps = num_epochs·nusers/batch_size row batches; "
                                   "each step is one batch of a sweep, so one epoch is about one row sweep plus "
                                   "one column sweep when nitems is much smaller than nusers", float)
    batch_size: int = _flag(512, "rows (or columns) per training step", integer)
    n_embeds: int = _flag(10, "embedding dimension (latent factors)", integer)
    nusers: Optional[int] = _flag(None, flags.USERS_HELP, integer)
    nitems: Optional[int] = _flag(None, flags.ITEMS_HELP, integer)
    topk: int = _flag(3, "recommendations per user in batch_pred.txt", integer)
    job_dir: Optional[str] = _flag(None, "accepted (AI Platform and Vertex AI pass it); unused", str)
    regularization: Optional[float] = _flag(None, "L2 regularization of the factors (lab: none)", float)
    unobserved_weight: float = _flag(0.1, "weight of every unobserved (user, item) entry (contrib default 0.1)",
                                     float)
    row_weight: float = _flag(1.0, "observed-entry weight factor of every user (contrib default 1)", float)
    col_weight: float = _flag(1.0, "observed-entry weight factor of an item of average popularity "
                                   "(contrib default 1)", float)
    col_weight_exp: float = _flag(0.0, "item weight = col_weight·(popularity/mean popularity)^-exp; "
                                       "0 = uniform (lab)", float)
    popularity_weight: float = _flag(0.0, "β of the blend with popularity: every item's score gains "
                                           "β·log(1 + its readers), in batch_pred.txt, the export and evaluation "
                                           "(0: the factors alone)", float)
    popularity_days: Optional[float] = _flag(None, "with --popularity_weight: the blend's popularity is the reads "
                                                   "of the data's last N days (its times.csv), not all reads",
                                             float)
    popularity_rate: bool = _flag(False, "with --popularity_days: an article first read within those days counts "
                                         "at its rate since, reads × the window's hours / (its hours + 1), so an "
                                         "hour-old article is not outranked for being young", bool)
    max_age_days: Optional[float] = _flag(None, "fresh first: an article first read more than N days before the "
                                                "data's newest read (its times.csv) is not recommended, in "
                                                "batch_pred.txt, the export and so serving (default: any age)",
                                          float)
    target: str = _flag("rating", "what WALS fits for an observed (user, item): the lab's duration-based rating, "
                                  "or 1 for every read (implicit feedback; finds held-out reads better: "
                                  "docs/quality.md)",
                        str, ["rating", "read"])
    num_row_shards: int = _flag(1, "shards of the user factors (spread over parameter servers)", integer)
    num_col_shards: int = _flag(1, "shards of the item factors", integer)
    exclude_seen: bool = _flag(False, "leave items a user already read out of batch_pred.txt (lab: kept)", bool)
    seed: Optional[int] = _flag(None, "random seed of the factors' initialization; the same seed gives the "
                                      "same model for any shard count (default: a fresh seed, logged)", integer)
    preset: str = _flag("lab", "named set of the settings above; --params_file and explicit flags override it",
                        str, sorted(PRESETS))
    params_file: Optional[str] = _flag(None, "JSON object {flag name: value} applied over the preset "
                                             "(explicit flags override it)", str)
    verbosity: str = _flag("info", flags.VERBOSITY_HELP, str, list(flags.VERBOSITIES))

    def replace(self, **changes):
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)


FLAGS = [field.name for field in dataclasses.fields(Settings)]
# Each number flag's range, (low, high, whether low itself is allowed): WALS solves in float32, where a weight of
# 1e40, λ 1e39 or an item-weight exponent of 1000 overflow into a NaN loss.
RANGES = {"num_epochs": (0, 1e6, False), "unobserved_weight": (0, 1e6, False), "row_weight": (0, 1e6, False),
          "col_weight": (0, 1e6, False), "col_weight_exp": (-4, 4, True), "regularization": (0, 1e6, True),
          "popularity_weight": (0, 1e3, True), "popularity_days": (0, 36500, False), "max_age_days": (0, 36500, False)}
RANGE_REASONS = {"unobserved_weight": "a weight of 0 leaves WALS's solve singular",
                 "row_weight": "a weight of 0 leaves WALS's solve singular",
                 "col_weight": "a weight of 0 leaves WALS's solve singular",
                 "popularity_days": "days of reads", "max_age_days": "days"}
# A float32 Gramian of n² entries stays under protobuf's 2 GB while n² · 4 bytes < 2^31.
MAX_EMBEDS = 23170
# float32 copies of the factors a training holds at its peak, with a margin: the variables, a sweep's new values,
# the export's and batch_pred's read-back.
FACTOR_COPIES = 4
DEFAULTS = {field.name: field.default for field in dataclasses.fields(Settings)}


# Flags whose names are not their field's: gcloud's --job-dir, and the data directory's two names.
_OPTION_NAMES = {"job_dir": ("--job-dir",), "input_path": flags.DATA_DIR_FLAGS[::-1]}


# What `walsmf.task --help` ends with: the lab's defaults lose to "most popular" on a site's own data; this wins.
RECIPE = """The defaults are the lab's. On your own data, tune first, on the training part only:
  python -m walsmf.evaluate --split_from data --data_dir data_split     # hold out each visitor's latest reads
  python -m walsmf.tune --input_path data_split --output_dir tuned      # settings chosen without the held-out reads
  python -m walsmf.task --input_path data_split --output_dir model_split --params_file tuned/best_params.json
  python -m walsmf.evaluate --data_dir data_split --model_dir model_split   # WALS against the baselines
  python -m walsmf.task --input_path data --output_dir wals_trained --params_file tuned/best_params.json"""


def build_parser(prog="python -m walsmf.task", description=None):
    """The trainer's flags, one per Settings field; unset flags stay out of the parsed namespace."""
    parser = flags.Parser(prog=prog, description=description, argument_default=argparse.SUPPRESS, epilog=RECIPE)
    for field in dataclasses.fields(Settings):
        meta = field.metadata
        names = _OPTION_NAMES.get(field.name, ("--" + field.name,))
        if meta["type"] is bool:
            parser.add_argument(*names, dest=field.name, action="store_true", help=meta["help"])
            continue
        default = "" if field.default is None else " (default: {})".format(field.default)
        parser.add_argument(*names, dest=field.name, type=meta["type"], choices=meta["choices"],
                            required=meta["required"], help=meta["help"] + ("" if meta["required"] else default))
    return parser


def make(**values):
    """Settings from the defaults, a preset (``preset=``), and ``values`` (tests, benchmarks, the notebook)."""
    preset = values.get("preset", DEFAULTS["preset"])
    unknown = sorted(set(values) - set(FLAGS))
    if unknown:
        raise TypeError("not a walsmf.task setting: {}".format(", ".join(unknown)))
    return Settings(**dict(PRESETS[preset], **values))


def parse(argv=None):
    """Settings from command-line flags: defaults < --preset < --params_file < explicit flags."""
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    values = dict(PRESETS[given.get("preset", DEFAULTS["preset"])])
    if given.get("params_file"):
        values.update(params_as_settings(read_params_file(given["params_file"]), given["params_file"]))
    values.update(given)
    return Settings(**values)


def read_params_file(path):
    """The JSON object of a params file (local or gs://)."""
    import tensorflow as tf  # only here: parsing flags otherwise needs no TensorFlow

    from walsmf.fileio import check_input_file

    check_input_file(path, "--params_file", "give a JSON file of {flag name: value} (best_params.json)")
    with tf.io.gfile.GFile(path, "rb") as f:
        try:
            return loads_json(f.read().decode("utf-8"))
        except (ValueError, RecursionError) as err:
            raise DataError("--params_file {} is not JSON: {}".format(path, str(err).splitlines()[0] if str(err)
                                                                       else "nested too deeply"))


def params_as_settings(params, where):
    """Check a params object {flag name: value} and convert each value as its flag would."""
    if not isinstance(params, dict):
        raise DataError("{}: expected a JSON object {{flag name: value}}".format(where))
    types = {field.name: field.metadata for field in dataclasses.fields(Settings)}
    out = {}
    for name, value in params.items():
        name = name.lstrip("-").replace("-", "_")
        if name not in types or name in ("input_path", "output_dir", "params_file", "preset"):
            raise DataError("{}: {!r} is not a walsmf.task setting it can hold".format(where, name))
        meta = types[name]
        if value is None and DEFAULTS[name] is not None:
            raise DataError("{}: {} is null: give a value (its default is {!r}) or leave the key out".format(
                where, name, DEFAULTS[name]))
        if meta["type"] is bool and not isinstance(value, bool):
            raise DataError("{}: {} = {!r} is not a boolean: give true or false (JSON, unquoted)".format(
                where, name, value))
        try:
            out[name] = value if value is None or meta["type"] is bool else meta["type"](str(value))
        except (argparse.ArgumentTypeError, ValueError):
            raise DataError("{}: {} = {!r} is not a valid value".format(where, name, value))
        if meta["choices"] and out[name] not in meta["choices"]:
            raise DataError("{}: {} must be one of {}".format(where, name, ", ".join(meta["choices"])))
    return out



def training_schedule(settings):
    """(train_steps, steps_in_epoch) as the lab computes them: row batches, not sweeps."""
    train_steps = int(0.5 + (1.0 * settings.num_epochs * settings.nusers) / settings.batch_size)
    steps_in_epoch = max(1, int(0.5 + settings.nusers / settings.batch_size))
    return train_steps, steps_in_epoch


def validate(settings):
    """Refuse settings WALS cannot train, each in one line saying what to give; nusers/nitems must be set.

    (What depends on the data itself, such as more factors than ids with reads, is checked when the
    data is read: walsmf.model.prepare_training.)
    """
    for flag in ("nusers", "nitems", "batch_size", "n_embeds", "topk", "num_row_shards", "num_col_shards"):
        if getattr(settings, flag) < 1:
            raise DataError("--{} must be a positive integer, got {}".format(flag, getattr(settings, flag)))
    if settings.n_embeds > MAX_EMBEDS:
        raise DataError("--n_embeds {} is more factors than a graph holds: contrib keeps an n_embeds² Gramian, "
                        "which past {} passes protobuf's 2 GB; use fewer factors".format(settings.n_embeds,
                                                                                           MAX_EMBEDS))
    if settings.topk > settings.nitems:
        raise DataError("--topk {} is more recommendations than the {} items: give at most {}".format(
            settings.topk, settings.nitems, settings.nitems))
    check_available(4.0 * FACTOR_COPIES * settings.n_embeds * (settings.nusers + settings.nitems),
                    "{:,} users' and {:,} items' factors of {}".format(settings.nusers, settings.nitems,
                                                                     settings.n_embeds),
                    "to train", "give fewer ids (leave --nusers and --nitems out: the data's counts) or --n_embeds")
    for flag, ids in (("num_row_shards", "nusers"), ("num_col_shards", "nitems")):
        if getattr(settings, flag) > getattr(settings, ids):
            raise DataError("--{} {} is more shards than the {} {} ids: use at most {}".format(
                flag, getattr(settings, flag), getattr(settings, ids), ids[1:], getattr(settings, ids)))
    for flag, (low, high, low_allowed) in RANGES.items():
        value = getattr(settings, flag)
        if value is not None and not (math.isfinite(value) and (value >= low if low_allowed else value > low)
                                      and value <= high):
            raise DataError("--{} {:g} is outside {}{:g}, {:g}]: give a value in that range ({})".format(
                flag, value, "[" if low_allowed else "(", low, high, RANGE_REASONS.get(flag, "WALS solves in float32, "
                                                                                         "where more overflows")))
    if settings.popularity_rate and settings.popularity_days is None:
        raise DataError("--popularity_rate scales the reads of --popularity_days' window, and none is given: give "
                        "--popularity_days N, or leave --popularity_rate out")
    if training_schedule(settings)[0] < 1:
        raise DataError("--num_epochs {} is less than one training step ({} users in batches of {}): use at "
                        "least {:.3g}".format(settings.num_epochs, settings.nusers, settings.batch_size,
                                              0.5 * settings.batch_size / settings.nusers))
