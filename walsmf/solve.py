"""A WALS half-sweep's exact solves, cheap for ids with few reads (the Woodbury identity).

WALS solves, for every id of the side being swept (a user in a row sweep),
the normal equations of its factor x given the other side's factors v_j:

    A x = b,   A = B + Σ_j d_j v_j v_jᵀ,   B = w0·G + λI,
               b = Σ_j (w0 + d_j) a_j v_j

over the id's reads j (value a_j, extra weight d_j = row weight · column
weight), G the Gramian of the other side.  contrib builds every id's k×k A
and solves it: k² numbers written and ~k³ operations per id, on one core —
at 30 factors and lab size, 0.9 s of a row sweep.  But a visitor reads a few
articles, and A is the shared B plus a matrix of rank r = their reads.  With
B⁻¹ computed once, the Woodbury identity needs only an r×r solve:

    y = B⁻¹ b,   X = diag(√d) V,   W = X B⁻¹   (V: the r read factors)
    x = y − Wᵀ (I + X Wᵀ)⁻¹ X y

It is computed in factors whitened once per half-sweep by B's Cholesky
factor (B = L Lᵀ, h = L⁻¹ v, H the read ones, S = diag(√d)), where B⁻¹ is
the identity and each id gathers one r×k block instead of two:

    ŷ = Hᵀ a,   ŵ = ŷ − Hᵀ S (I + S H Hᵀ S)⁻¹ S H ŷ,   x = L⁻ᵀ ŵ

and, with G = H Hᵀ (r×r), ŵ = Hᵀ (a − S z), z = (I + S G S)⁻¹ S G a: the
r×k block is read twice, everything else is r-sized.

Ids are grouped by reads into padded buckets of 1, 2, 3, 4, 6, 8, 12, …
reads up to k (a pad row of zeros adds an identity row to
I + X Wᵀ and nothing to x); ids with more reads, where the identity saves
nothing, take contrib's path (its kernel and solve).  The light path runs in
float64: it subtracts a correction from y, and B is ill-conditioned when λ
and w0 are small (in float32 it was 4× less accurate than contrib's solve
there).  The factors equal contrib's up to float rounding: tests/test_solve.py
checks every bucket against numpy's float64 solve (within 1e-5, or as close
as contrib's own float32 solve), and the loss against contrib's.

``solve_projection`` is the same equation for one id not in the model (a new
visitor's fold-in in the export's graph), solved directly.
"""
import tensorflow as tf
from tensorflow.contrib.factorization.python.ops import gen_factorization_ops
from tensorflow.contrib.factorization.python.ops.factorization_ops import WALSModel

# The ids solved by contrib's kernel are split in this many parts, solved in parallel (the kernel and
# its solve use one core each).
HEAVY_PARTS = 2


def _lookup(shards, ids):
    """Rows ``ids`` of a sharded variable (contrib's "div" sharding)."""
    return tf.nn.embedding_lookup(shards, ids, partition_strategy="div")


def _table(shards):
    """The whole of a sharded variable, as one tensor."""
    return tf.concat(shards, axis=0) if len(shards) > 1 else tf.identity(shards[0])


def _times(rows, square, block=64):
    """``rows`` [n, k] times ``square`` [k, k], as products of ``block`` rows at a time.

    (A float64 MatMul of a tall [n, k] by [k, k] crashed TensorFlow 1.15's
    threaded Eigen contraction with a segmentation fault, about one
    lab-size training in five; the batched form runs another kernel.)
    """
    n, dim = tf.shape(rows)[0], tf.shape(rows)[1]
    blocks = (n + block - 1) // block
    padded = tf.pad(rows, [[0, blocks * block - n], [0, 0]])
    product = tf.matmul(tf.reshape(padded, [blocks, block, dim]), square[None])
    return tf.reshape(product, [-1, dim])[:n]


def _bucket_sizes(dim):
    """Padded read counts of the light buckets: 1, 2, 3, 4, 6, 8, 12, 16, 24, … up to ``dim``.

    Steps of ×1.5 and ×4/3 keep an id's padding under half its reads; past k
    reads the r×r solve costs more than contrib's k×k one.
    """
    return sorted({size for i in range(dim.bit_length()) for size in (2 ** i, 3 * 2 ** i // 2) if size <= dim})


def _light_solve(white_of, read_right, weighted_values, scale, first, reads, size):
    """ŵ = Hᵀ (a − S z), z = (I + S G S)⁻¹ S G a, G = H Hᵀ, for ids with at most ``size`` reads (x = L⁻ᵀ ŵ).

    An id's reads are ``first`` to ``first + reads`` of the per-read
    tensors: ``read_right`` (the other side's id), ``weighted_values``
    (a: (w0 + d_j)·a_j) and ``scale`` (S: √d_j).  ``white_of(ids)``: the
    other side's factors of ``ids`` whitened by B's Cholesky factor L
    (h = L⁻¹ v); H holds the read ones.
    """
    slots = tf.range(size)
    present = slots[None, :] < reads[:, None]
    at = tf.where(present, first[:, None] + slots[None, :], tf.zeros_like(present, tf.int32))
    mask = tf.cast(present, weighted_values.dtype)
    factors = white_of(tf.gather(read_right, at))  # [ids, size, k]: pad slots hold a real one, a and S are 0 there
    a = tf.gather(weighted_values, at) * mask
    scale = tf.gather(scale, at) * mask
    if size == 1:  # G and I + S G S are numbers, a − S z = a / (1 + S G S): no batched linear algebra
        factor = tf.reshape(factors, [-1, factors.shape[-1]])
        return a / (1 + tf.square(scale) * tf.reduce_sum(factor * factor, 1, keepdims=True)) * factor
    gram = tf.matmul(factors, factors, transpose_b=True)
    capacitance = tf.eye(size, dtype=factors.dtype) + scale[:, :, None] * gram * scale[:, None, :]
    z = tf.linalg.cholesky_solve(tf.linalg.cholesky(capacitance), scale[:, :, None] * tf.matmul(gram, a[:, :, None]))
    return tf.squeeze(tf.matmul((a - scale * z[:, :, 0])[:, None, :], factors), 1)


def _heavy_solve(model, gramian, right, right_weights, id_weights, indices, values, n):
    """contrib's solve (its kernel and LU) for ``n`` ids; ``indices`` [0..n−1, the other side's id]."""
    partial_lhs, rhs = gen_factorization_ops.wals_compute_partial_lhs_and_rhs(
        right, right_weights, model._unobserved_weight, id_weights, indices, values, [], tf.cast(n, tf.int64),
        False)
    lhs = model._unobserved_weight * gramian
    if model._regularization_matrix is not None:
        lhs += model._regularization_matrix
    return tf.squeeze(tf.linalg.solve(lhs[None] + partial_lhs, rhs[:, :, None]), 2)


def update_factors(model, sp_input, row_side):
    """The half-sweep step of ``model`` for the ids of ``sp_input``: (update op, loss, regularization, sum_weights).

    ``sp_input``: [id, other side's id] → value, ids of the side being
    swept first (items_for_user for rows, users_for_item for columns).
    Returns what contrib's update_row_factors returns after the new values,
    with its loss normalization; the loss ops run only when fetched.
    """
    # pylint: disable=protected-access  (WALSModel keeps its factors, weights and Gramians private)
    if row_side:
        left, right_shards, gramian = model._row_factors, model._col_factors, model._col_gramian
        left_weights, right_weights = model._row_weights, model._col_weights
        total_left, total_right, num_shards = model._input_rows, model._input_cols, model._num_row_shards
    else:
        left, right_shards, gramian = model._col_factors, model._row_factors, model._row_gramian
        left_weights, right_weights = model._col_weights, model._row_weights
        total_left, total_right, num_shards = model._input_cols, model._input_rows, model._num_col_shards
    w0 = model._unobserved_weight
    dim = model._n_components

    keys = sp_input.indices[:, 0]
    # Reads by id (the TFRecords' order already: then no sort), each id's in input order.
    order = tf.cond(tf.reduce_all(keys[1:] >= keys[:-1]), lambda: tf.range(tf.size(keys)),
                    lambda: tf.argsort(keys, stable=True))
    keys = tf.gather(keys, order)
    values = tf.gather(sp_input.values, order)
    starts = tf.logical_or(tf.not_equal(keys, tf.roll(keys, 1, 0)), tf.equal(tf.range(tf.size(keys)), 0))
    left_ids = tf.boolean_mask(keys, starts)
    local = tf.cumsum(tf.cast(starts, tf.int32)) - 1
    first = tf.cast(tf.squeeze(tf.where(starts), 1), tf.int32)
    reads = tf.concat([first[1:], tf.reshape(tf.size(keys), [1])], axis=0) - first
    n = tf.size(left_ids)
    # The other side's whole table: cheaper than finding the distinct ids read (tf.unique, 48 ms of a
    # 10-factor column sweep at lab size)
    right_ids = tf.cast(tf.gather(sp_input.indices[:, 1], order), tf.int32)

    right = _table(right_shards)
    if left_weights is None or right_weights is None:  # contrib's plain ALS: every observed entry weighs w0
        right_w, left_w = tf.zeros([total_right]), tf.zeros([n])
    else:
        right_w, left_w = _table(right_weights), _lookup(left_weights, left_ids)
    extra = tf.gather(left_w, local) * tf.gather(right_w, right_ids)  # d_j of each read

    precise = tf.float64
    base = w0 * tf.cast(gramian, precise)
    if model._regularization is not None:
        base += model._regularization * tf.eye(dim, dtype=precise)
    weighted_values = tf.cast((w0 + extra) * values, precise)
    scale = tf.sqrt(tf.cast(extra, precise))

    sizes = _bucket_sizes(dim)
    # Bucket of each id: the smallest size holding its reads; len(sizes) for the heavy ids.
    bucket = tf.reduce_sum(tf.cast(reads[:, None] > tf.constant(sizes)[None, :], tf.int32), axis=1)
    id_parts = tf.dynamic_partition(tf.range(n), bucket, len(sizes) + 1)

    # B = L Lᵀ: in the whitened factors h = L⁻¹ v, B⁻¹ is the identity, and x = L⁻ᵀ ŵ
    base_cholesky_inverse = tf.linalg.triangular_solve(tf.linalg.cholesky(base), tf.eye(dim, dtype=precise))

    def whiten(factors):
        return _times(tf.cast(factors, precise), tf.transpose(base_cholesky_inverse))
    # The other side's whole table whitened once, or only the factors the light ids read (a column sweep of
    # news: few articles have few readers, and the visitors are many): whichever is fewer rows.
    light_reads = tf.reduce_sum(tf.where(bucket < len(sizes), reads, tf.zeros_like(reads)))
    whole_table = light_reads >= tf.shape(right)[0]
    white_table = tf.cond(whole_table, lambda: whiten(right), lambda: tf.zeros([0, dim], precise))

    def white_of(other_ids):
        """The whitened factors of the other side's ``other_ids`` (any shape; one more axis of k)."""
        return tf.cond(whole_table, lambda: tf.gather(white_table, other_ids), lambda: tf.reshape(
            whiten(tf.gather(right, tf.reshape(other_ids, [-1]))), tf.concat([tf.shape(other_ids), [dim]], 0)))

    solved = []
    for size, ids in zip(sizes, id_parts):
        with tf.name_scope("reads_up_to_{}".format(size)):
            solved.append(tf.cast(_times(_light_solve(white_of, right_ids, weighted_values, scale,
                                                      tf.gather(first, ids), tf.gather(reads, ids), size),
                                         base_cholesky_inverse), tf.float32))
    # contrib's kernel and solve run on one core: the heavy ids go in HEAVY_PARTS interleaved parts, in parallel
    heavy_reads = tf.dynamic_partition(tf.range(tf.size(local)), tf.gather(bucket, local), len(sizes) + 1)[-1]
    heavy_position = tf.gather(tf.math.unsorted_segment_sum(tf.range(tf.size(id_parts[-1])), id_parts[-1], n),
                               tf.gather(local, heavy_reads))
    heavy_ids = tf.dynamic_partition(id_parts[-1], tf.range(tf.size(id_parts[-1])) % HEAVY_PARTS, HEAVY_PARTS)
    read_parts = tf.dynamic_partition(heavy_reads, heavy_position % HEAVY_PARTS, HEAVY_PARTS)
    position_parts = tf.dynamic_partition(heavy_position // HEAVY_PARTS, heavy_position % HEAVY_PARTS, HEAVY_PARTS)
    for ids, reads_of, positions in zip(heavy_ids, read_parts, position_parts):
        indices = tf.cast(tf.stack([positions, tf.gather(right_ids, reads_of)], axis=1), tf.int64)
        # (contrib's kernel refuses a batch without ids)
        solved.append(tf.cond(tf.size(ids) > 0,
                              lambda ids=ids, reads_of=reads_of, indices=indices: _heavy_solve(
                                  model, gramian, right, right_w, tf.gather(left_w, ids), indices,
                                  tf.gather(values, reads_of), tf.size(ids)),
                              lambda: tf.zeros([0, dim])))
    new_values = tf.dynamic_stitch(id_parts[:-1] + heavy_ids, solved)
    update = model.scatter_update(left, left_ids, new_values, WALSModel._get_sharding_func(total_left, num_shards))

    # contrib's loss of the batch, scaled to the whole side
    approx = tf.reduce_sum(tf.gather(new_values, local) * tf.gather(right, right_ids), axis=1)
    residual_sq = tf.square(values - approx)
    new_gramian = tf.matmul(new_values, new_values, transpose_a=True)
    scale_up = tf.cast(total_left, tf.float32) / tf.cast(n, tf.float32)
    loss = (w0 * (tf.reduce_sum(residual_sq) - tf.reduce_sum(tf.square(approx))
                  + tf.linalg.trace(tf.matmul(new_gramian, gramian)))
            + tf.reduce_sum(extra * residual_sq)) * scale_up
    regularization = (model._regularization * (tf.linalg.trace(new_gramian) * scale_up + tf.linalg.trace(gramian))
                      if model._regularization is not None else tf.constant(0.))
    sum_weights = w0 * float(total_left * total_right) + tf.reduce_sum(extra) * scale_up
    return update, loss, regularization, sum_weights


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
