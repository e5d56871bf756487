"""Prediction instances: the checks a client's JSON gets before the export runs, and the batch fed to it.

walsmf.predict and walsmf.serve read instances through this module; the
export checks what it can see itself (ids in range), so gcloud's and TF
Serving's clients get the same verdicts for those.  The keys are SCHEMA's
(the export's inputs, walsmf.export_graph, are made from it); their rules are
check_instance's: ids −1 or known ones, k ≥ 1, durations ≥ 0, one rating or
duration per read.
"""
import collections
import numbers
from typing import Dict, List, Optional

import numpy as np

from walsmf.errors import DataError
from walsmf.ratings import MEDIAN_READ_RATING

# The export's inputs (every one optional) and outputs
USER_ID, ITEM_ID, K = "userId", "itemId", "k"
VISITOR_ID, EXCLUDE_READ = "visitorId", "excludeRead"
READ_ITEMS, CONTENT_IDS, EXCLUDE = "items", "contentIds", "exclude"
READ_RATINGS, DURATIONS = "ratings", "durations"
PROJECTION, TOP_K_IDS, TOP_K_SCORES = "projection", "top_k_ids", "top_k_scores"
TOP_K_CONTENT_IDS, TOP_K_VISITOR_IDS = "top_k_content_ids", "top_k_visitor_ids"
UNKNOWN_CONTENT_IDS, KNOWN_VISITOR = "unknown_content_ids", "known_visitor"

# The export's signatures, one function under two names: TF Serving's default, and the one contrib's export
# strategy wrote (clients that name it keep working).
SIGNATURES = ("serving_default", "default_input_alternative:default_output_alternative")
# The instance schema: each key an instance may give (every one optional), its kind ("int", "string", "bool" or
# "number"), whether it is one value or a list, what a batch fills in where an instance leaves it out (None: the
# model's own default, serving_info.json's), and its meaning.  The export's inputs (walsmf.export_graph), the
# checks and feeds here, and docs/serving.md's table (schema_table) are made from it.
Key = collections.namedtuple("Key", "name kind is_list fill meaning")
SCHEMA = (
    Key(USER_ID, "int", False, -1, "the lab's: `userId ≥ 0` a user, `userId −1, itemId i` item i's top users"),
    Key(ITEM_ID, "int", False, -1, "see `userId`"),
    Key(K, "int", False, None, "the answer's length (default: the trainer's `--topk`)"),
    Key(VISITOR_ID, "string", False, "", "the site's visitor id (GA's); one the model has never seen is a new "
                                         "visitor"),
    Key(EXCLUDE_READ, "bool", False, None, "leave the visitor's reads out (default: the trainer's "
                                           "`--exclude_seen`)"),
    Key(READ_ITEMS, "int", True, -1, "a new visitor's reads in internal ids (0..nitems−1)"),
    Key(CONTENT_IDS, "string", True, "", "a new visitor's reads in the site's article ids; unknown ones are "
                                         "skipped and counted"),
    Key(EXCLUDE, "string", True, "", "contentIds to leave out (the article on screen)"),
    Key(READ_RATINGS, "number", True, MEDIAN_READ_RATING, "one per read, instead of durations (default: a read of "
                                                          "median length, 0.3)"),
    Key(DURATIONS, "number", True, -1.0, "ms read, one per read: rated by the lab's rule with the training median"),
)
DTYPES = {"int": np.int64, "string": object, "bool": bool, "number": np.float32}
KEYS = tuple(key.name for key in SCHEMA)
INT_KEYS = tuple(key.name for key in SCHEMA if key.kind == "int" and not key.is_list)
ID_LISTS = {key.name: int if key.kind == "int" else str for key in SCHEMA if key.is_list and key.kind != "number"}
PER_READ = tuple(key.name for key in SCHEMA if key.kind == "number")
_FILL = {key.name: key.fill for key in SCHEMA if key.fill is not None}
_DTYPES = {key.name: DTYPES[key.kind] for key in SCHEMA}


def schema_table() -> str:
    """docs/serving.md's table of the instance keys, made from SCHEMA."""
    rows = ["| key | type | meaning |", "|---|---|---|"]
    rows += ["| `{}` | {}{} | {} |".format(key.name, key.kind, "s" if key.is_list else "", key.meaning)
             for key in SCHEMA]
    return "\n".join(rows)


# What the export takes: 64-bit ids, and k as a 32-bit count (its graph ranks in int32).
_INT64 = (-2 ** 63, 2 ** 63 - 1)
MAX_K = 2 ** 31 - 1


def _integer(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and _INT64[0] <= value <= _INT64[1]


def _text(value):
    """Whether ``value`` is a string TensorFlow can take: UTF-8 encodable (JSON lets a lone surrogate through)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# A read's rating or duration is a float32 in the graph: past this a fold-in's solve overflows (ratings are 0..1)
MAX_RATING = 1e6
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _number(value, bound=FLOAT32_MAX):
    """A JSON number (not a boolean) within ±``bound`` (default: what float32 holds)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value) and \
        abs(value) <= bound


def check_instance(instance: dict, where: str, info: Optional[dict] = None) -> dict:
    """Return one instance with only the keys it gives, checked; or raise a DataError naming ``where`` and the
    field.  ``info`` (the export's serving_info.json) bounds the ids and says whether durations are rated."""
    info = info or {}
    nusers, nitems = info.get("nusers"), info.get("nitems")
    if not isinstance(instance, dict):
        raise DataError("{}: an instance must be a JSON object like {{\"userId\": 4, \"itemId\": -1}} or "
                        "{{\"visitorId\": \"...\", \"contentIds\": [...]}}".format(where))
    unknown = sorted(set(instance) - set(KEYS))
    if unknown:
        raise DataError("{}: unknown key {!r} (an instance has {})".format(where, unknown[0], ", ".join(KEYS)))
    for key in INT_KEYS:
        if key in instance and not _integer(instance[key]):
            raise DataError("{}: {} must be an integer of 64 bits, got {!r}".format(where, key, instance[key]))
    user_id, item_id = instance.get("userId", -1), instance.get("itemId", -1)
    if user_id < -1 or (nusers is not None and user_id >= nusers):
        raise DataError("{}: userId {} out of range: -1, or a user the model knows (0..{})".format(
            where, user_id, "N-1" if nusers is None else nusers - 1))
    if item_id < -1 or (nitems is not None and item_id >= nitems):
        raise DataError("{}: itemId {} out of range: -1, or an item the model knows (0..{})".format(
            where, item_id, "N-1" if nitems is None else nitems - 1))
    if "k" in instance and not 1 <= instance["k"] <= MAX_K:
        raise DataError("{}: k must be 1 to {}, got {}".format(where, MAX_K, instance["k"]))
    if "visitorId" in instance and not _text(instance["visitorId"]):
        raise DataError("{}: visitorId must be a string of UTF-8 text, got {!r}".format(where, instance["visitorId"]))
    if "visitorId" in instance and user_id >= 0:
        raise DataError("{}: name the visitor once: userId or visitorId".format(where))
    if "excludeRead" in instance and not isinstance(instance["excludeRead"], bool):
        raise DataError("{}: excludeRead must be true or false, got {!r}".format(where, instance["excludeRead"]))
    for key, kind in ID_LISTS.items():
        values = instance.get(key, [])
        listed = isinstance(values, list)
        bounded = listed and kind is int and all(_integer(i) and i >= 0 and (nitems is None or i < nitems)
                                                 for i in values)
        if not (bounded or (listed and kind is str and all(_text(i) for i in values))):
            raise DataError("{}: {} must be a list of {}, got {!r}".format(
                where, key, "itemIds the model knows (0..{})".format("N-1" if nitems is None else nitems - 1)
                if kind is int else "contentIds (strings)", values))
    if instance.get("items") and instance.get("contentIds"):
        raise DataError("{}: give a new visitor's reads once: contentIds or items".format(where))
    reads = _reads(instance)
    if reads and (user_id >= 0 or item_id >= 0):
        raise DataError("{}: {} describe a new visitor's reads, {} {} asks for {}: give one or the other".format(
            where, "items" if "items" in instance else "contentIds", "userId" if user_id >= 0 else "itemId",
            max(user_id, item_id), "a known user's articles" if user_id >= 0 else "an item's readers"))
    if instance.get(VISITOR_ID) and item_id >= 0:
        raise DataError("{}: visitorId asks for a visitor's articles, itemId {} for an item's readers: give one or "
                        "the other".format(where, item_id))
    if "ratings" in instance and "durations" in instance:
        raise DataError("{}: give ratings or durations, not both".format(where))
    for key in PER_READ:
        if key in instance:
            values = instance[key]
            bound = MAX_RATING if key == READ_RATINGS else FLOAT32_MAX
            if not (isinstance(values, list) and len(values) == len(reads) and all(_number(v, bound) for v in values)):
                raise DataError("{}: {} must be a list of numbers within ±{:g}, one per item read, got {!r}".format(
                    where, key, bound, values))
    if instance.get("durations"):
        if any(v < 0 for v in instance["durations"]):
            raise DataError("{}: durations are milliseconds, 0 or more".format(where))
        if info.get("rates_durations") is False:
            raise DataError("{}: this model was trained without a median read time (no metadata.json): give "
                            "ratings instead of durations".format(where))
    return dict(instance)


def _reads(instance):
    """A new visitor's reads: contentIds, else items (an instance gives one of them)."""
    return instance.get("contentIds") or instance.get("items") or []


def feed(instances: List[dict], info: Optional[dict] = None) -> Dict[str, np.ndarray]:
    """The export's feed for checked instances: each key any instance gives, lists padded to one length."""
    info = info or {}
    defaults = dict(_FILL, k=info.get("topk", 10), excludeRead=bool(info.get("exclude_seen", False)))
    # userId always: the batch is as long as the instances, even when each is {} (a new visitor, no reads)
    given = sorted({key for instance in instances for key in instance} | {"userId"})
    out = {}
    for key in given:
        if key in ID_LISTS or key in PER_READ:
            width = max(len(_reads(i) if key in PER_READ else i.get(key, [])) for i in instances)
            array = np.full((len(instances), width), _FILL[key], _DTYPES[key])
            for row, instance in enumerate(instances):
                values = instance.get(key, [])
                if key in PER_READ and key not in instance:  # one per read: the default for each
                    values = [defaults[key]] * len(_reads(instance))
                array[row, :len(values)] = values
        else:
            array = np.array([i.get(key, defaults[key]) for i in instances], _DTYPES[key])
        out[key] = array
    return out
