"""walsmf.solve: each id's exact WALS solve against numpy's, for every read count (light buckets and heavy ids)."""
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.contrib.factorization.python.ops.factorization_ops import WALSModel

from walsmf import solve

DIM = 6  # light buckets of 1, 2, 3, 4 and 6 reads; 7 reads and more take contrib's path


def random_problem(rng, nusers, nitems, max_reads):
    """Ratings where user i reads i % (max_reads + 1) items: every bucket, ids absent from the input,
    heavy ids if max_reads > DIM."""
    rows, cols = [], []
    for user in range(nusers):
        items = rng.choice(nitems, size=user % (max_reads + 1), replace=False)
        rows += [user] * len(items)
        cols += list(items)
    values = rng.uniform(0.1, 1.0, len(rows)).astype(np.float32)
    return np.array(rows), np.array(cols), values


def numpy_solve(ids, others, values, n, other_factors, other_weights, id_weights, w0, regularization):
    """x_i = (w0·G + λI + Σ_j d_ij v_j v_jᵀ)⁻¹ Σ_j (w0 + d_ij) a_ij v_j in float64, for each id with reads."""
    v = other_factors.astype(np.float64)
    base = w0 * v.T @ v + (regularization or 0.0) * np.eye(v.shape[1])
    solved = {}
    for i in np.unique(ids):
        mine = ids == i
        vj = v[others[mine]]
        d = (np.zeros(mine.sum()) if id_weights is None else id_weights[i] * other_weights[others[mine]])
        lhs = base + (vj * d[:, None]).T @ vj
        solved[i] = np.linalg.solve(lhs, ((w0 + d) * values[mine]) @ vj)
    return solved


@pytest.mark.parametrize("weighted, regularization, max_reads, shuffled", [
    (True, 0.5, 12, False), (True, None, 12, False), (False, 0.2, 12, False), (True, 0.5, 4, False),
    (True, 0.5, 12, True), (True, 0.01, 12, False)],
    ids=["weights, regularization", "weights, no regularization", "plain ALS", "no heavy id", "reads not by id",
         "ill-conditioned"])
@pytest.mark.parametrize("row_side", [True, False], ids=["rows", "columns"])
def test_each_id_gets_the_exact_solution_and_contribs_loss(weighted, regularization, max_reads, shuffled, row_side):
    rng = np.random.default_rng(7)
    nusers, nitems = 40, 25 if max_reads > DIM else 400
    rows, cols, values = random_problem(rng, nusers, nitems, max_reads)
    if shuffled:
        order = rng.permutation(len(rows))
        rows, cols, values = rows[order], cols[order], values[order]
    row_weights = rng.uniform(0.5, 2.0, nusers).astype(np.float32)
    col_weights = rng.uniform(0.5, 3.0, nitems).astype(np.float32)
    row_init = rng.normal(size=(nusers, DIM)).astype(np.float32)
    col_init = rng.normal(size=(nitems, DIM)).astype(np.float32)
    w0 = 0.003 if regularization == 0.01 else 0.3  # the search space's least conditioned corner, with weights ×30
    if regularization == 0.01:
        col_weights *= 30
    with tf.Graph().as_default():
        model = WALSModel(nusers, nitems, DIM, unobserved_weight=w0, regularization=regularization,
                          row_init=[row_init[:20], row_init[20:]], col_init=np.array_split(col_init, 3),
                          num_row_shards=2, num_col_shards=3,
                          row_weights=[row_weights[:20], row_weights[20:]] if weighted else None,
                          col_weights=np.array_split(col_weights, 3) if weighted else None,
                          use_factors_weights_cache=False, use_gramian_cache=False)
        if row_side:
            keys = rows
            sp_input = tf.SparseTensor(np.stack([rows, cols], 1), values, [nusers, nitems])
            contrib_values, _, *expected = model.update_row_factors(sp_input=sp_input)
            left = model.row_factors
        else:
            order = rng.permutation(len(rows)) if shuffled else np.lexsort((rows, cols))
            keys = cols[order]
            sp_input = tf.SparseTensor(np.stack([keys, rows[order]], 1), values[order], [nitems, nusers])
            contrib_values, _, *expected = model.update_col_factors(sp_input=sp_input, transpose_input=True)
            left = model.col_factors
        update, *got = solve.update_factors(model, sp_input, row_side)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run([model.row_update_prep_gramian_op, model.col_update_prep_gramian_op])
            contrib_new, expected_loss = session.run([contrib_values, expected])
            got_loss = session.run([update] + got)[1:]
            new = np.concatenate(session.run(left))
    if row_side:
        reference = numpy_solve(rows, cols, values, nusers, col_init, col_weights, row_weights if weighted else None,
                                w0, regularization)
        start = row_init
    else:
        reference = numpy_solve(cols, rows, values, nitems, row_init, row_weights, col_weights if weighted else None,
                                w0, regularization)
        start = col_init
    _, first_seen = np.unique(keys, return_index=True)
    contrib_new = dict(zip(keys[np.sort(first_seen)], contrib_new))  # contrib's rows: ids in order of appearance
    for i in range(len(start)):
        if i in reference:  # float32 against float64: as close as contrib's own float32 solve, or within 1e-5
            error = np.linalg.norm(new[i] - reference[i])
            assert error <= max(1e-5 * np.linalg.norm(reference[i]), 3 * np.linalg.norm(contrib_new[i] - reference[i]))
        else:  # not in the input: untouched
            np.testing.assert_array_equal(new[i], start[i])
    # the loss, its regularization and the sum of weights as contrib defines them (of factors that agree
    # to 1e-4 where ill-conditioned)
    np.testing.assert_allclose(got_loss, expected_loss, rtol=1e-4)


def test_bucket_sizes_step_by_a_half_or_a_third_up_to_the_dimension():
    assert solve._bucket_sizes(6) == [1, 2, 3, 4, 6]
    assert solve._bucket_sizes(30) == [1, 2, 3, 4, 6, 8, 12, 16, 24]
    assert solve._bucket_sizes(1) == [1]
