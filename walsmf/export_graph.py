"""The serving export: the lab's {"userId": u, "itemId": i} instances, visitors in the site's own ids, new visitors.

Every input is optional (docs/serving.md lists them); an instance asks about

* a known user: ``userId`` ≥ 0, or a ``visitorId`` the model knows: their
  trained factor (the one batch_pred.txt ranks with) and their top-k items;
* an item: ``userId`` −1 and ``itemId`` ≥ 0 (the lab's targeting): its trained
  factor and its top-k users;
* a visitor the model has never seen (no userId, an unknown or no
  visitorId): the articles they read, as ``contentIds`` (unknown ones skipped
  and counted) or internal ``items``, optionally with ``durations`` (ms, rated
  by the lab's rule with the training median) or ``ratings``; their factor is
  the closed-form WALS solve against the item factors (fold-in).

``k`` sets an instance's answer length (default: the trainer's --topk), and
``exclude`` (contentIds) and ``excludeRead`` (the visitor's reads; default:
the trainer's --exclude_seen) leave articles out.  Answers carry internal
ids (``top_k_ids``) and original ones (``top_k_content_ids`` for a visitor,
``top_k_visitor_ids`` for an item).  An id without interactions is answered
with the other side's most read ids, and is never in anyone's answer.  The
lab fed its tf.cond a row of rating 0.1 over every item; contrib's projection
ignores row indices, so every userId got the same answer.

The interactions and the id maps travel with the export as asset files (CSR
arrays, raw little-endian; the original ids one per line, base64url so any
id fits on one), read when the model is loaded: the graph (saved_model.pb)
stays the same size at any scale, where graph constants would pass
protobuf's 2 GB limit near 190x the lab's data.
"""
import os

import numpy as np
import tensorflow as tf
from tensorflow.contrib.factorization import WALSMatrixFactorization
from tensorflow.contrib.learn.python.learn.utils import input_fn_utils

from walsmf.datadir import CSR
from walsmf.fileio import atomic_output
from walsmf.inputs import INPUT_COLS, INPUT_ROWS, PROJECT_ROW
from walsmf.instances import (
    CONTENT_IDS,
    DURATIONS,
    EXCLUDE,
    EXCLUDE_READ,
    ITEM_ID,
    KNOWN_VISITOR,
    PROJECTION,
    READ_ITEMS,
    READ_RATINGS,
    SCHEMA,
    TOP_K_CONTENT_IDS,
    TOP_K_IDS,
    TOP_K_SCORES,
    TOP_K_VISITOR_IDS,
    UNKNOWN_CONTENT_IDS,
    USER_ID,
    VISITOR_ID,
    K,
)
from walsmf.modeldir import (
    CSR_PARTS,
    FRESH_FILE,
    ID_FILES,
    NO_ORIGINAL,
    POPULARITY_FILE,
    csr_asset_name,
    encoded_originals,
)
from walsmf.ratings import MEDIAN_READ_RATING, rating_of
from walsmf.solve import solve_projection

assert PROJECTION == WALSMatrixFactorization.PROJECTION_RESULT  # the key contrib's estimator predicts under
# Features the serving input passes the model_fn besides the inputs: the ids as given (checked), the maps back
GIVEN_IDS, ORIGINAL_USER_IDS, ORIGINAL_ITEM_IDS = "given_ids", "original_user_ids", "original_item_ids"
# the items' popularity the blend adds (readers, or the recent reads with --popularity_days)
POPULARITY = "item_popularity"
# 1 for the items fresh enough to recommend (--max_age_days), 0 for the others
FRESH = "item_fresh"
# Where a training stages the export's asset files (modeldir names them) before the export copies them
SERVING_ASSETS_DIR = "serving_assets"
_TF_DTYPES = {"int64": tf.int64, "float32": tf.float32}
# The TensorFlow type of each kind of instance key (walsmf.instances.SCHEMA)
_TF_KINDS = {"int": tf.int64, "string": tf.string, "bool": tf.bool, "number": tf.float32}


def serving_predictions(model, params, features):
    """Per instance: the factor of the user, item or new visitor asked about, and the other side's top-k
    (the model_fn's INFER)."""
    row_factors = tf.concat(model.row_factors, 0)
    col_factors = tf.concat(model.col_factors, 0)
    row_weights = tf.concat(model.row_weights, 0)
    col_weights = tf.concat(model.col_weights, 0)
    col_gramian = _gramian64(col_factors)
    by_user, by_item = features[INPUT_ROWS], features[INPUT_COLS]
    w0, reg, blend = params["unobserved_weight"], params["regularization_coeff"], params["popularity_weight"]
    nusers, nitems = params["num_rows"], params["num_cols"]
    readers = {side: tf.cast(csr.offsets[1:] - csr.offsets[:-1], tf.float32)
               for side, csr in (("user", by_user), ("item", by_item))}
    width = tf.cast(tf.minimum(tf.reduce_max(features[K]), max(nusers, nitems)), tf.int32)

    # what may be recommended: what has a reader, and of the items only the fresh ones (--max_age_days)
    allowed = {"user": readers["user"] > 0, "item": (readers["item"] > 0) & (features[FRESH] > 0)}

    def rank(factor, has_reads, other_factors, other_readers, other_allowed, left_out, k, blend=0.0):
        """The other side's top-k for ``factor``: without reads the most read (by the items' popularity where
        ``blend`` β > 0: topk.cold_start_scores); never what is not ``other_allowed`` nor what is left out;
        ``blend`` β adds β·log(1 + the items' popularity); padded to the batch's width with id −1 and score 0."""
        n_others = tf.shape(other_readers)[0]

        def scored():
            scores = tf.linalg.matvec(other_factors, factor)
            return scores + blend * tf.math.log1p(features[POPULARITY]) if blend else scores

        scores = tf.cond(has_reads, scored, lambda: features[POPULARITY] if blend else other_readers)
        excluded = tf.scatter_nd(left_out[:, None], tf.ones_like(left_out, tf.int32), [n_others]) > 0
        scores = tf.where(other_allowed & ~excluded, scores, tf.fill([n_others], -np.inf))
        top_scores, top_ids = tf.nn.top_k(scores, k=tf.minimum(width, n_others))
        answered = tf.math.is_finite(top_scores) & (tf.range(tf.size(top_ids)) < tf.cast(k, tf.int32))
        pad = width - tf.size(top_ids)
        return (tf.pad(tf.where(answered, tf.cast(top_ids, tf.int64), -tf.ones_like(top_ids, tf.int64)), [[0, pad]],
                       constant_values=-1),
                tf.pad(tf.where(answered, top_scores, tf.zeros_like(top_scores)), [[0, pad]]))

    def reads_of(csr, own_id):
        start, end = csr.offsets[own_id], csr.offsets[own_id + 1]
        return csr.indices[start:end], csr.values[start:end]

    def instance(inputs):
        user_id, item_id, new_items, new_ratings, left_out, exclude_read, k = inputs
        read = new_items >= 0
        visitor_items, visitor_ratings = tf.boolean_mask(new_items, read), tf.boolean_mask(new_ratings, read)
        left_out = tf.boolean_mask(left_out, left_out >= 0)

        def known_user():
            items, _ = reads_of(by_user, user_id)
            dropped = tf.cond(exclude_read, lambda: tf.concat([left_out, items, visitor_items], 0), lambda: left_out)
            top = rank(row_factors[user_id], readers["user"][user_id] > 0, col_factors, readers["item"],
                       allowed["item"], dropped, k, blend)
            return (row_factors[user_id],) + top

        def item():
            users, _ = reads_of(by_item, item_id)
            dropped = tf.cond(exclude_read, lambda: users, lambda: tf.zeros([0], tf.int64))
            top = rank(col_factors[item_id], readers["item"][item_id] > 0, row_factors, readers["user"],
                       allowed["user"], dropped, k)
            return (col_factors[item_id],) + top

        def new_visitor():
            factor = solve_projection(col_factors, col_gramian, visitor_items, visitor_ratings, col_weights,
                                      tf.reduce_mean(row_weights), w0, reg)
            dropped = tf.cond(exclude_read, lambda: tf.concat([left_out, visitor_items], 0), lambda: left_out)
            return (factor,) + rank(factor, tf.size(visitor_items) > 0, col_factors, readers["item"],
                                    allowed["item"], dropped, k, blend)

        return tf.cond(user_id >= 0, known_user, lambda: tf.cond(item_id >= 0, item, new_visitor))

    checks = _id_checks(features[GIVEN_IDS], nusers, nitems)
    with tf.control_dependencies(checks):
        user_ids, item_ids = tf.identity(features[USER_ID]), tf.identity(features[ITEM_ID])
    projection, top_ids, top_scores = tf.map_fn(
        instance, (user_ids, item_ids, features[READ_ITEMS], features[READ_RATINGS], features[EXCLUDE],
                   features[EXCLUDE_READ], features[K]),
        dtype=(tf.float32, tf.int64, tf.float32), back_prop=False)
    asks_item = (user_ids < 0) & (item_ids >= 0)
    none = tf.fill(tf.shape(top_ids), "")
    return {PROJECTION: projection, TOP_K_IDS: top_ids, TOP_K_SCORES: top_scores,
            TOP_K_CONTENT_IDS: tf.where(asks_item, none, _originals(features[ORIGINAL_ITEM_IDS], top_ids)),
            TOP_K_VISITOR_IDS: tf.where(asks_item, _originals(features[ORIGINAL_USER_IDS], top_ids), none),
            UNKNOWN_CONTENT_IDS: features[UNKNOWN_CONTENT_IDS], KNOWN_VISITOR: user_ids >= 0}


def _originals(original, ids):
    """The original ids of internal ``ids`` of ``original``'s side ("" for −1); ids of the other side (both are
    computed, one kept) are clipped into range."""
    inside = tf.clip_by_value(ids, 0, tf.size(original, out_type=tf.int64) - 1)
    return tf.where(ids >= 0, tf.gather(original, inside), tf.fill(tf.shape(ids), ""))


def _gramian64(factors):
    factors = tf.cast(factors, tf.float64)
    return tf.matmul(factors, factors, transpose_a=True)


def _id_checks(given, nusers, nitems):
    """Assertions that every instance's internal ids (as given) name a known user, a known item, or a new
    visitor's known items."""
    user_id, item_id, read_items = given
    new_visitor = (user_id < 0) & (item_id < 0)
    return [
        tf.debugging.Assert(tf.reduce_all((user_id >= -1) & (user_id < nusers)),
                            ["userId out of range: must be -1 or below", nusers, "got", user_id], summarize=10),
        tf.debugging.Assert(tf.reduce_all((item_id >= -1) & (item_id < nitems)),
                            ["itemId out of range: must be -1 or in [0,", nitems, ") got", item_id], summarize=10),
        tf.debugging.Assert(tf.reduce_all((read_items >= -1) & (read_items < nitems)),
                            ["items out of range: each must be in [0,", nitems, ") (or -1: padding) got",
                             read_items], summarize=10),
        tf.debugging.Assert(tf.reduce_all(new_visitor | tf.reduce_all(read_items < 0, axis=1)),
                            ["items are for a new visitor: give them with userId -1 and itemId -1"]),
    ]


def write_serving_assets(directory, interactions, visitor_ids, content_ids):
    """Write both sides' CSR arrays and the original ids (index = internal id) as the export's asset files in
    ``directory`` (local or gs://)."""
    tf.io.gfile.makedirs(directory)
    for side in interactions._fields:
        for part, dtype in CSR_PARTS:
            with atomic_output(os.path.join(directory, csr_asset_name(side, part, dtype))) as tmp, \
                    tf.io.gfile.GFile(tmp, "wb") as f:
                f.write(np.ascontiguousarray(getattr(interactions, side)._asdict()[part], dtype).tobytes())
    for side, originals in (("user", visitor_ids), ("item", content_ids)):
        with atomic_output(os.path.join(directory, ID_FILES[side])) as tmp, tf.io.gfile.GFile(tmp, "wb") as f:
            f.write(encoded_originals(originals))


def original_ids(directory, nusers, nitems):
    """The export's id maps, from its asset files: per side, a function of original ids (strings) to
    internal ones (−1 where unknown), and the original ids as a vector indexed by internal id."""
    to_internal, originals = {}, {}
    for side, n in (("user", nusers), ("item", nitems)):
        path = tf.constant(os.path.join(directory, ID_FILES[side]), name=side + "_ids_path")
        # SavedModel copies the file into the export's assets/ and feeds its new path at load
        tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.ASSET_FILEPATHS, path)
        table = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
            path, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
            vocab_size=n), -1)
        to_internal[side] = lambda ids, table=table: table.lookup(tf.io.encode_base64(ids, pad=True))
        lines = tf.compat.v1.string_split([tf.io.read_file(path)], "\n").values
        decoded = tf.io.decode_base64(tf.strings.regex_replace(lines, "^" + NO_ORIGINAL + ".*$", ""))
        originals[side] = tf.compat.v1.Variable(decoded, trainable=False, validate_shape=False,
                                                name=side + "_original_ids",
                                                collections=[tf.compat.v1.GraphKeys.LOCAL_VARIABLES]).read_value()
    return to_internal, originals


def _asset_array(directory, name, dtype):
    """One raw little-endian asset file as a vector: a local variable the loaded export fills from it."""
    path = tf.constant(os.path.join(directory, name), name=name.replace(".", "_") + "_path")
    # SavedModel copies these files into the export's assets/ and feeds their new path at load
    tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.ASSET_FILEPATHS, path)
    array = tf.compat.v1.Variable(tf.io.decode_raw(tf.io.read_file(path), dtype), trainable=False,
                                  validate_shape=False, name=name.replace(".", "_"),
                                  collections=[tf.compat.v1.GraphKeys.LOCAL_VARIABLES])
    return tf.reshape(array.read_value(), [-1])


def _asset_csr(directory, side):
    """One side's CSR as local variables that the loaded export fills from its asset files, checked whole (a
    truncated asset is an error naming it, not a user answered with no reads)."""
    offsets, indices, values = (_asset_array(directory, csr_asset_name(side, part, dtype), _TF_DTYPES[dtype.name])
                                for part, dtype in CSR_PARTS)
    whole = tf.debugging.Assert(
        tf.equal(offsets[-1], tf.size(indices, out_type=tf.int64)) & tf.equal(tf.size(indices), tf.size(values)),
        ["the export's asset", side, "is truncated or altered: export the model again with python -m walsmf.task"])
    with tf.control_dependencies([whole]):
        return CSR(tf.identity(offsets), tf.identity(indices), tf.identity(values))


def observed_values(interactions, target):
    """The interactions with the values WALS fits: the ratings, or 1 per read (--target read)."""
    if target != "read":
        return interactions
    return type(interactions)(*(side.with_values(np.ones_like(side.values)) for side in interactions))


def _optional(dtype, rank, name):
    """An input an instance may leave out: empty when not fed (gcloud and walsmf.predict feed the keys given)."""
    return tf.compat.v1.placeholder_with_default(tf.zeros([0] * rank, dtype), [None] * rank, name=name)


def _fill_to(tensor, shape, value):
    """``tensor``, or where it was left out (empty), ``value`` in ``shape``."""
    return tf.cond(tf.equal(tf.shape(tensor)[0], 0), lambda: tf.fill(shape, tf.constant(value, tensor.dtype)),
                   lambda: tensor)


def serving_inputs(settings, to_internal, median_duration):
    """The serving input's placeholders and the features they resolve to (see the module's docstring)."""
    given = {key.name: _optional(_TF_KINDS[key.kind], 2 if key.is_list else 1, key.name) for key in SCHEMA}
    # the batch: as long as the inputs fed; one instance (a new visitor with no reads) if none is
    n = tf.maximum(tf.reduce_max(tf.stack([tf.shape(t)[0] for t in given.values()])), 1)
    given_user, item_id = _fill_to(given[USER_ID], [n], -1), _fill_to(given[ITEM_ID], [n], -1)
    items = _fill_to(given[READ_ITEMS], [n, 0], -1)
    known = to_internal["user"](_fill_to(given[VISITOR_ID], [n], ""))
    contents = _fill_to(given[CONTENT_IDS], [n, 0], "")
    content_items = to_internal["item"](contents)
    # an instance's reads: its contentIds (unknown ones dropped) if it has any, else its items
    width = tf.maximum(tf.shape(items)[1], tf.shape(content_items)[1])
    has_contents = tf.reduce_any(tf.not_equal(contents, ""), axis=1, keepdims=True)
    reads = tf.where(tf.tile(has_contents, [1, width]), _pad_to(content_items, width, -1),
                     _pad_to(items, width, -1))
    ratings = _pad_to(_fill_to(given[READ_RATINGS], [n, width], MEDIAN_READ_RATING), width, MEDIAN_READ_RATING)
    if median_duration:  # without a median (a data directory of the lab's files only) walsmf.predict refuses them
        durations = _pad_to(_fill_to(given[DURATIONS], [n, width], -1.0), width, -1.0)
        ratings = tf.where(durations >= 0, rating_of(durations, median_duration, tf.minimum), ratings)
    features = {
        GIVEN_IDS: (given_user, item_id, items),
        USER_ID: tf.where(given_user >= 0, given_user, known), ITEM_ID: item_id, READ_ITEMS: reads,
        # what WALS fits with --target read is 1 for every read
        READ_RATINGS: tf.ones_like(ratings) if settings.target == "read" else ratings,
        EXCLUDE: to_internal["item"](_fill_to(given[EXCLUDE], [n, 0], "")),
        EXCLUDE_READ: _fill_to(given[EXCLUDE_READ], [n], bool(settings.exclude_seen)),
        K: _fill_to(given[K], [n], settings.topk),
        UNKNOWN_CONTENT_IDS: tf.reduce_sum(tf.cast(tf.not_equal(contents, "") & (content_items < 0), tf.int64),
                                           axis=1),
    }
    return given, features


def _pad_to(tensor, width, value):
    """``tensor`` [n, m] padded on the right to ``width`` columns with ``value``."""
    return tf.pad(tensor, [[0, 0], [0, width - tf.shape(tensor)[1]]], constant_values=value)


def create_serving_input_fn(settings, data):
    """The serving input (every instance form of the module's docstring), batched.

    ``data``: the training run's datadir.TrainingData.  Its CSR arrays, id
    maps (each internal id as a string where the data has none) and
    popularity are written under ``output_dir/serving_assets`` and become
    the export's assets.
    """
    assets = os.path.join(settings.output_dir, SERVING_ASSETS_DIR)

    def serving_input_fn():
        read = data.interactions
        visitors, contents = ((data.visitor_ids, data.content_ids) if data.visitor_ids is not None else
                              ([str(i) for i in range(settings.nusers)], [str(i) for i in range(settings.nitems)]))
        write_serving_assets(assets, observed_values(read, settings.target), visitors, contents)
        with atomic_output(os.path.join(assets, POPULARITY_FILE)) as tmp, tf.io.gfile.GFile(tmp, "wb") as f:
            f.write(np.asarray(read.by_item.counts if data.popularity is None else data.popularity, "<f4").tobytes())
        with atomic_output(os.path.join(assets, FRESH_FILE)) as tmp, tf.io.gfile.GFile(tmp, "wb") as f:
            f.write(np.asarray(np.ones(settings.nitems) if data.fresh is None else data.fresh, "<f4").tobytes())
        to_internal, originals = original_ids(assets, settings.nusers, settings.nitems)
        given, features = serving_inputs(settings, to_internal, data.median_duration_ms)
        features.update({INPUT_ROWS: _asset_csr(assets, "by_user"), INPUT_COLS: _asset_csr(assets, "by_item"),
                         PROJECT_ROW: features[USER_ID] >= 0, ORIGINAL_USER_IDS: originals["user"],
                         ORIGINAL_ITEM_IDS: originals["item"],
                         POPULARITY: _asset_array(assets, POPULARITY_FILE, tf.float32),
                         FRESH: _asset_array(assets, FRESH_FILE, tf.float32)})
        return input_fn_utils.InputFnOps(features, None, given)
    return serving_input_fn
