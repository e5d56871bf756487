"""The notebook's tables: the WALS objective against a dense numpy computation."""
import numpy as np

from walsmf import datadir, explore


def test_wals_objective_equals_the_dense_sum():
    rng = np.random.default_rng(0)
    observed = rng.random((7, 5)) < 0.4
    observed[:, 0] = True
    ratings = np.where(observed, rng.random((7, 5)).astype(np.float32), 0.0)  # ratings are stored as float32
    u, v = rng.standard_normal((7, 3)), rng.standard_normal((5, 3))
    r, c = rng.random(7) + 0.5, rng.random(5) + 0.5
    weights = np.where(observed, 0.1 + np.outer(r, c), 0.1)
    dense = np.sum(weights * (ratings - u @ v.T) ** 2) + 0.3 * (np.sum(u ** 2) + np.sum(v ** 2))
    users, items = np.nonzero(observed)
    by_user = datadir.CSR.from_triples(users, items, ratings[users, items], 7)
    got = explore.wals_objective(by_user, u, v, 0.1, r, c, 0.3)
    assert np.isclose(got, dense, rtol=1e-10)


def test_training_lowers_the_objective(trained):
    table = explore.objective_by_checkpoint(trained.output_dir, trained.input_path)
    assert list(table["step"]) == sorted(table["step"]) and len(table) >= 3
    assert table["objective"].iloc[-1] < 0.5 * table["objective"].iloc[0]
