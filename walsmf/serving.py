"""The serving export: the lab's {"userId": u, "itemId": i} instances, answered per id; new visitors too.

As in the lab, userId < 0 asks about item itemId, otherwise about user
userId (a tf.cond per instance).  {"userId": -1, "itemId": -1, "items": [...],
"ratings": [...]} asks about a visitor the model has never seen, from the
articles they read (itemIds; -1 pads a list to the batch's longest) and,
optionally, their ratings (default: what a read of median length gets, or 1
with --target read): their projection is the same closed-form solve a known
user's is.  An id without interactions is answered with the other side's
most read ids, and is never in anyone's answer.  The lab fed its tf.cond a
row of rating 0.1 over every item; contrib's projection ignores row indices, so every
userId got the same answer.  Here each instance projects that id's own
interactions with Gramians computed from the exported factors, which gives
the learned factor after a final row solve, and ranks the other side.

The interactions travel with the export as asset files (CSR arrays by user
and by item, raw little-endian), read into local variables when the model is
loaded: the graph (saved_model.pb) stays the same size at any scale, where
graph constants would pass protobuf's 2 GB limit near 190x the lab's data.
"""
import os

import numpy as np
import tensorflow as tf
from tensorflow.contrib.factorization import WALSMatrixFactorization
from tensorflow.contrib.learn.python.learn.utils import input_fn_utils

from walsmf.datadir import CSR, read_interactions
from walsmf.fileio import atomic_output
from walsmf.inputs import INPUT_COLS, INPUT_ROWS, PROJECT_ROW
from walsmf.ratings import MEDIAN_READ_RATING

PROJECTION = WALSMatrixFactorization.PROJECTION_RESULT   # "projection"
TOP_K_IDS, TOP_K_SCORES = "top_k_ids", "top_k_scores"
USER_ID, ITEM_ID = "userId", "itemId"
READ_ITEMS, READ_RATINGS = "items", "ratings"
# The export's asset files: one per side and CSR array, e.g. by_user.indices.int64
SERVING_ASSETS_DIR = "serving_assets"
_PARTS = (("offsets", np.dtype("<i8"), tf.int64), ("indices", np.dtype("<i8"), tf.int64),
          ("values", np.dtype("<f4"), tf.float32))


def solve_projection(factors, gramian, ids, ratings, weights, own_weight, unobserved_weight,
                     regularization):
    """Closed-form WALS solve of one row from the other side's factors.

    Minimizes Σ_obs (w0 + r·c_j)(a_j − x·v_j)² + w0 Σ_unobs (x·v_j)² + λ|x|²:
    x = (w0·G + λI + Σ_obs r·c_j v_j v_jᵀ)⁻¹ Σ_obs (w0 + r·c_j) a_j v_j,
    with G = VᵀV over every column (``gramian``, float64).
    """
    # In float64: without regularization the system can be ill-conditioned
    # enough for float32 to lose whole percents.
    dim = tf.shape(gramian)[0]
    v = tf.cast(tf.gather(factors, ids), tf.float64)
    observed_weight = tf.cast(own_weight * tf.gather(weights, ids), tf.float64)
    lhs = unobserved_weight * gramian + tf.matmul(v * observed_weight[:, None], v, transpose_a=True)
    if regularization:
        lhs += regularization * tf.eye(dim, dtype=tf.float64)
    rhs = tf.matmul(v, ((unobserved_weight + observed_weight) * tf.cast(ratings, tf.float64))[:, None],
                    transpose_a=True)
    return tf.cast(tf.linalg.solve(lhs, rhs)[:, 0], tf.float32)


def serving_predictions(model, params, features):
    """Per instance: the projection of the user (or item) asked for, and its top-k (the model_fn's INFER)."""
    row_factors = tf.concat(model.row_factors, 0)
    col_factors = tf.concat(model.col_factors, 0)
    row_weights = tf.concat(model.row_weights, 0)
    col_weights = tf.concat(model.col_weights, 0)
    row_gramian = _gramian64(row_factors)
    col_gramian = _gramian64(col_factors)
    ratings_by_user, ratings_by_item = features[INPUT_ROWS], features[INPUT_COLS]
    w0, reg, k = params["unobserved_weight"], params["regularization_coeff"], params["serving_top_k"]
    readers = {side: tf.cast(csr.offsets[1:] - csr.offsets[:-1], tf.float32)
               for side, csr in (("user", ratings_by_user), ("item", ratings_by_item))}

    def answer(ids, ratings, own_weight, other_factors, other_weights, gramian, other_readers, n_others):
        """Projection from (ids, ratings) of the other side, and the top-k of the other side."""
        projection = solve_projection(other_factors, gramian, ids, ratings, other_weights, own_weight, w0, reg)
        # without interactions: the most read; never what has no reader
        scores = tf.cond(tf.size(ids) > 0, lambda: tf.linalg.matvec(other_factors, projection),
                         lambda: other_readers)
        scores += tf.where(other_readers > 0, tf.zeros_like(scores), tf.fill(tf.shape(scores), -np.inf))
        top_scores, top_ids = tf.nn.top_k(scores, k=min(k, n_others))
        return projection, tf.cast(top_ids, tf.int64), top_scores

    def known(own_id, own_weights, csr, *other_side):
        start, end = csr.offsets[own_id], csr.offsets[own_id + 1]
        return answer(csr.indices[start:end], csr.values[start:end], tf.gather(own_weights, own_id), *other_side)

    users_side = (col_factors, col_weights, col_gramian, readers["item"], params["num_cols"])
    items_side = (row_factors, row_weights, row_gramian, readers["user"], params["num_rows"])

    def instance(inputs):
        ids, read_items, read_ratings = inputs
        user_id, item_id = ids[0], ids[1]
        read = read_items >= 0
        def new_visitor():
            return answer(tf.boolean_mask(read_items, read), tf.boolean_mask(read_ratings, read),
                                             tf.reduce_mean(row_weights), *users_side)
        return tf.cond(
            user_id < 0,
            lambda: tf.cond(item_id < 0, new_visitor, lambda: known(item_id, col_weights, ratings_by_item,
                                                                      *items_side)),
            lambda: known(user_id, row_weights, ratings_by_user, *users_side))

    pairs = tf.stack([features[USER_ID], features[ITEM_ID]], axis=1)
    pairs, read_items = _checked_ids(pairs, features[READ_ITEMS], params["num_rows"], params["num_cols"])
    projection, top_ids, top_scores = tf.map_fn(
        instance, (pairs, read_items, features[READ_RATINGS]), dtype=(tf.float32, tf.int64, tf.float32),
        back_prop=False)
    return {PROJECTION: projection, TOP_K_IDS: top_ids, TOP_K_SCORES: top_scores}


def _gramian64(factors):
    factors = tf.cast(factors, tf.float64)
    return tf.matmul(factors, factors, transpose_a=True)


def _checked_ids(pairs, read_items, nusers, nitems):
    """Assert every instance asks for one known user, one known item, or a new visitor's known items."""
    user_id, item_id = pairs[:, 0], pairs[:, 1]
    new_visitor = (user_id < 0) & (item_id < 0)
    checks = [
        tf.debugging.Assert(tf.reduce_all(user_id < nusers),
                            ["userId out of range: must be below", nusers, "got", user_id], summarize=10),
        tf.debugging.Assert(tf.reduce_all((item_id >= -1) & (item_id < nitems)),
                            ["itemId out of range: must be -1 or in [0,", nitems, ") got", item_id], summarize=10),
        tf.debugging.Assert(tf.reduce_all((read_items >= -1) & (read_items < nitems)),
                            ["items out of range: each must be in [0,", nitems, ") (or -1: padding) got",
                             read_items], summarize=10),
        tf.debugging.Assert(tf.reduce_all(new_visitor | tf.reduce_all(read_items < 0, axis=1)),
                            ["items are for a new visitor: give them with userId -1 and itemId -1"]),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(pairs), tf.identity(read_items)


def write_serving_assets(directory, interactions):
    """Write both sides' CSR arrays as the export's asset files in ``directory`` (local or gs://)."""
    tf.io.gfile.makedirs(directory)
    for side in interactions._fields:
        for part, dtype, _ in _PARTS:
            with atomic_output(os.path.join(directory, "{}.{}.{}".format(side, part, dtype.name))) as tmp, \
                    tf.io.gfile.GFile(tmp, "wb") as f:
                f.write(np.ascontiguousarray(getattr(interactions, side)._asdict()[part], dtype).tobytes())


def _asset_csr(directory, side):
    """One side's CSR as local variables that the loaded export fills from its asset files."""
    parts = []
    for part, dtype, tf_dtype in _PARTS:
        name = "{}.{}.{}".format(side, part, dtype.name)
        path = tf.constant(os.path.join(directory, name), name=name.replace(".", "_") + "_path")
        # SavedModel copies these files into the export's assets/ and feeds their new path at load
        tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.ASSET_FILEPATHS, path)
        array = tf.compat.v1.Variable(tf.io.decode_raw(tf.io.read_file(path), tf_dtype), trainable=False,
                                      validate_shape=False, name=name.replace(".", "_"),
                                      collections=[tf.compat.v1.GraphKeys.LOCAL_VARIABLES])
        parts.append(tf.reshape(array.read_value(), [-1]))
    return CSR(*parts)


def observed_values(interactions, target):
    """The interactions with the values WALS fits: the ratings, or 1 per read (--target read)."""
    if target != "read":
        return interactions
    return type(interactions)(*(side.with_values(np.ones_like(side.values)) for side in interactions))


def create_serving_input_fn(settings, interactions=None):
    """The serving input: JSON {"userId": u, "itemId": i} (and, for a new visitor, "items", "ratings"), batched.

    ``interactions``: the data's Interactions if already read (a training
    run reads each TFRecord set once); read from ``settings.input_path`` otherwise.
    Their CSR arrays are written under ``output_dir/serving_assets`` and
    become the export's assets.
    """
    assets = os.path.join(settings.output_dir, SERVING_ASSETS_DIR)

    def serving_input_fn():
        user_id = tf.compat.v1.placeholder(tf.int64, [None], name=USER_ID)
        item_id = tf.compat.v1.placeholder(tf.int64, [None], name=ITEM_ID)
        # Optional inputs: the lab's instances leave them out (gcloud feeds the keys an instance has).
        read_items = tf.compat.v1.placeholder_with_default(
            tf.fill(tf.stack([tf.shape(user_id)[0], 0]), tf.constant(-1, tf.int64)), [None, None], name=READ_ITEMS)
        read_ratings = tf.compat.v1.placeholder_with_default(
            tf.fill(tf.shape(read_items), MEDIAN_READ_RATING), [None, None], name=READ_RATINGS)
        read = interactions or read_interactions(settings.input_path, settings.nusers, settings.nitems)
        fitted = observed_values(read, settings.target)
        write_serving_assets(assets, fitted)
        features = {
            USER_ID: user_id, ITEM_ID: item_id, READ_ITEMS: read_items,
            # what WALS fits with --target read is 1 for every read
            READ_RATINGS: tf.ones_like(read_ratings) if settings.target == "read" else read_ratings,
            INPUT_ROWS: _asset_csr(assets, "by_user"),
            INPUT_COLS: _asset_csr(assets, "by_item"),
            PROJECT_ROW: user_id >= 0,
        }
        return input_fn_utils.InputFnOps(features, None, {USER_ID: user_id, ITEM_ID: item_id,
                                                          READ_ITEMS: read_items, READ_RATINGS: read_ratings})
    return serving_input_fn
