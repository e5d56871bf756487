"""topk.Ranking against a numpy reference: every score computed, each row sorted by (score desc, itemId asc)."""
import numpy as np
import pytest

from walsmf import datadir, topk


def reference_top(users, items, k, offsets=None, read=None):
    scores = users @ items.T
    if offsets is not None:
        scores = scores + offsets
    if read is not None:
        scores = np.where(read, -np.inf, scores)
    ids = np.broadcast_to(np.arange(len(items)), scores.shape)
    return np.lexsort((ids, -scores), axis=1)[:, :k]


def news_like(rng, n_users=3000, n_items=900, dim=8):
    """Factors shaped as WALS's on news: item norms spread over two orders of magnitude (the popular
    articles' largest), a few visitors with all-zero factors (reads all rated 0), items sharing a factor
    (equal scores, broken by itemId), a few items never recommended."""
    items = (rng.standard_normal((n_items, dim)) * rng.lognormal(0, 1.2, (n_items, 1))).astype(np.float32)
    items[1::97] = items[0]  # equal scores for every user: the lower itemId first
    users = rng.standard_normal((n_users, dim)).astype(np.float32)
    users[::250] = 0
    read = rng.random((n_users, n_items)) < 3.0 / n_items
    read[7, :] = True  # read everything: only −inf scores are left, ranked by itemId
    read[8, np.argsort(-np.linalg.norm(items, axis=1))[:40]] = True  # read the whole head
    offsets = (0.3 * np.log1p(rng.poisson(5, n_items))).astype(np.float32)
    offsets[rng.random(n_items) < 0.05] = -np.inf
    return users, items, read, offsets


@pytest.mark.parametrize("k", [1, 3, 10])
def test_ranking_equals_every_score_sorted(k, monkeypatch):
    rng = np.random.default_rng(k)
    users, items, read, offsets = news_like(rng)
    rows, cols = np.nonzero(read)
    by_user = datadir.CSR.from_triples(rows, cols, np.ones(len(rows)), len(users))
    scored = []
    scores_of = topk.Ranking._scores
    monkeypatch.setattr(topk.Ranking, "_scores",
                        lambda self, *args: scored.append(len(args[1])) or scores_of(self, *args))
    for offs in (None, offsets):
        for seen, mask in ((None, None), ((by_user.offsets, by_user.indices), read)):
            scored.clear()
            got = topk.Ranking(items, k, offs).top(users, seen)
            np.testing.assert_array_equal(got, reference_top(users, items, k, offs, mask))
            # the users were scored on a small part of the items, not on all of them
            head = max(topk.HEAD_ITEMS, k)
            assert np.median(scored[1:]) < len(items) / 4 and scored[0] == head


def test_skipped_rows_are_left_to_the_caller():
    rng = np.random.default_rng(0)
    users, items, _, _ = news_like(rng, n_users=300)
    skip = np.zeros(len(users), bool)
    skip[::3] = True
    got = topk.Ranking(items, 4).top(users, skip=skip)
    np.testing.assert_array_equal(got[~skip], reference_top(users[~skip], items, 4))
    assert not got[skip].any()


def test_an_item_below_the_bound_by_less_than_rounding_is_still_ranked():
    """Users whose k-th score is exactly an item's |u|·|v| (parallel factors): the slack keeps it a candidate."""
    items = np.array([[3, 0], [2, 0], [1, 0], [0.5, 0]] + [[0, 0.01 * i] for i in range(80)], np.float32)
    users = np.array([[1, 0], [2, 0], [1, 1e-7]], np.float32)
    for k in (1, 2, 3, 4):
        np.testing.assert_array_equal(topk.Ranking(items, k).top(users), reference_top(users, items, k))
