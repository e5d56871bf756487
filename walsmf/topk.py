"""The one top-k of walsmf: ranking scores with ties by lower id, and the items' score offsets.

Batch prediction (walsmf.recommend), evaluation and the server's answers
(walsmf.export_numpy) rank with these; numpy only, so the server imports them
on any runtime.
"""
from typing import Optional

import numpy as np


def recommendable_items(readers: np.ndarray, fresh: Optional[np.ndarray] = None) -> np.ndarray:
    """Which items may be recommended: those someone read and, with ``fresh`` (--max_age_days), fresh."""
    return readers > 0 if fresh is None else (readers > 0) & fresh


def item_offsets(readers: np.ndarray, popularity_weight: float = 0.0, popularity: Optional[np.ndarray] = None,
                 fresh: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """The offset of each item's score: β·log(1 + popularity) (the blend; popularity: ``readers`` unless given),
    −inf for an item no one read or not ``fresh`` (never recommended); None when every offset is 0."""
    recommendable = recommendable_items(readers, fresh)
    if not popularity_weight and recommendable.all():
        return None
    popularity = readers if popularity is None else popularity
    blend = np.float32(popularity_weight) * np.log1p(np.asarray(popularity, np.float32))
    return np.where(recommendable, blend, -np.inf).astype(np.float32)


def cold_start_scores(readers: np.ndarray, popularity_weight: float = 0.0,
                      popularity: Optional[np.ndarray] = None) -> np.ndarray:
    """What ranks the items for a visitor without reads: the blend's popularity where there is a blend (the
    recent reads with --popularity_days: a news site's "most read" now), else the readers."""
    chosen = popularity if popularity_weight and popularity is not None else readers
    return np.asarray(chosen, np.float32)


def top_of_block(scores: np.ndarray, k: int) -> np.ndarray:
    """Top-k column ids of each row of ``scores`` [b, width] (width a multiple of 8), best first, equal scores
    by lower id (tf.nn.top_k's order).

    A bound first: split a row in k chunks; the least of the chunks' maxima is at most the row's k-th score
    (it and the other maxima are k scores at least as large).  Only the scores at or above it (a few per
    row) are ranked, with every tie at the k-th score among them.
    """
    rows, width = scores.shape
    chunk = width // k
    bound = scores[:, :chunk * k].reshape(rows, k, chunk).max(axis=2).min(axis=1)
    above = scores >= bound[:, None]
    # the candidates' positions: the 8-byte words of the mask holding one, then their set bytes (numpy finds
    # the nonzero of a bool array ~9× faster than of the uint64 words themselves)
    words = np.flatnonzero(above.view(np.uint64) != 0)
    flat = (words[:, None] * 8 + np.arange(8)).ravel()
    flat = flat[above.ravel()[flat]]
    row, column = np.divmod(flat, width)
    order = np.lexsort((column, -scores.ravel()[flat], row))
    firsts = np.searchsorted(row, np.arange(rows))  # rows ascending: the mask was read in order
    return column[order][firsts[:, None] + np.arange(k)]


def rows_items(offsets: np.ndarray, indices: np.ndarray, rows: np.ndarray):
    """The (position in ``rows``, item) pairs of ``rows`` of a CSR (``offsets``, ``indices``), rows in any order."""
    begins, ends = offsets[rows], offsets[rows + 1]
    lengths = ends - begins
    positions = np.repeat(ends - np.cumsum(lengths), lengths) + np.arange(lengths.sum())
    return np.repeat(np.arange(len(rows)), lengths), indices[positions]


# The items every user is scored on first (the largest factors): their k-th score bounds the user's k-th from below.
HEAD_ITEMS = 64
# Users scored together on their candidates, in order of their bound: similar users, few candidates.
BLOCK_USERS = 128
# The bound's slack against float32's rounding: a d-term dot product rounds within about d·6e-8 of |u|·|v|.
BOUND_SLACK = 1e-4


class Ranking:
    """Top-k of many users among the same items, scoring each user only on the items that can reach their top k.

    A score u·v + offset is at most |u|·|v| + offset (Cauchy–Schwarz).  Each
    user is scored first on the HEAD_ITEMS items of largest factors; their
    k-th score s bounds the user's k-th best from below, so an item with
    |u|·|v| + offset < s (less a slack for float32's rounding) can be neither
    in the top k nor tied with it.  Users are then scored in blocks of similar
    bound on the items no user of the block rules out — in news, a few percent
    of the articles — in ascending itemId, so equal scores still rank the lower
    itemId first.  The answer is top_of_block's over all items, exactly.
    """

    def __init__(self, item_factors: np.ndarray, k: int, offsets: Optional[np.ndarray] = None):
        self.k, self.offsets = k, offsets
        self.n_items = item_factors.shape[0]
        self.items_t = np.ascontiguousarray(np.asarray(item_factors, np.float32).T)
        self.norms = np.linalg.norm(self.items_t.astype(np.float64), axis=0)
        finite = np.zeros(self.n_items) if offsets is None else np.where(np.isfinite(offsets), offsets, 0.0)
        self.offset_slack = BOUND_SLACK * np.abs(finite).max(initial=0.0)
        # the offsets are a popularity blend (≥ 0) or −inf: the head ranks by |v| and offset at a typical |u| of 1
        potential = self.norms if offsets is None else self.norms + offsets
        self.head = np.sort(np.argsort(-potential, kind="stable")[:max(HEAD_ITEMS, k)])

    def _scores(self, factors, items, seen, rows):
        """Scores of ``rows`` of ``factors`` on ``items`` (ascending ids), seen pairs −inf, padded to 8 columns."""
        width = len(items) + (-len(items)) % 8
        scores = np.full((len(rows), width), -np.inf, np.float32)
        np.matmul(factors[rows], self.items_t[:, items], out=scores[:, :len(items)])
        if self.offsets is not None:
            scores[:, :len(items)] += self.offsets[items]
        if seen is not None:
            self._leave_out(scores, items, seen, rows)
        return scores

    def _top_of_zero_rows(self, rows, seen):
        """Top-k of rows whose factors are all zero (a visitor whose reads all rated 0): their scores are the
        offsets (or 0), the same for all but their seen items, so only the best k plus their seen count are
        ranked; returns (top, rows whose top holds a −inf score: to rank over all items)."""
        base = np.zeros(self.n_items, np.float32) if self.offsets is None else self.offsets
        most_seen = 0 if seen is None else int((seen[0][rows + 1] - seen[0][rows]).max(initial=0))
        items = np.sort(np.argsort(-base, kind="stable")[:self.k + most_seen])
        scores = np.full((len(rows), len(items) + (-len(items)) % 8), -np.inf, np.float32)
        scores[:, :len(items)] = base[items]
        if seen is not None:
            self._leave_out(scores, items, seen, rows)
        columns = top_of_block(scores, self.k)
        return items[np.minimum(columns, len(items) - 1)], ~np.isfinite(
            np.take_along_axis(scores, columns, axis=1)).any(axis=1)

    def _leave_out(self, scores, items, seen, rows):
        """Set the scores of ``rows``' seen items among ``items`` (the columns) to −inf."""
        column = np.full(self.n_items, -1, np.int64)
        column[items] = np.arange(len(items))
        at, read = rows_items(seen[0], seen[1], rows)
        keep = column[read] >= 0
        scores[at[keep], column[read[keep]]] = -np.inf

    def top(self, factors: np.ndarray, seen=None, skip: Optional[np.ndarray] = None) -> np.ndarray:
        """Top-k item ids of each row of ``factors`` [n, d] (float32), best first.

        ``seen``: optional (offsets, indices) CSR of each row's items to leave out.
        ``skip``: optional [n] bool, rows answered otherwise (left 0 here).
        """
        n, k = len(factors), self.k
        top = np.zeros((n, k), np.int64)
        rows = np.arange(n) if skip is None else np.flatnonzero(~skip)
        user_norms = np.linalg.norm(factors[rows].astype(np.float64), axis=1)
        zero = rows[user_norms == 0]
        if len(zero):
            top[zero], unsure = self._top_of_zero_rows(zero, seen)
            keep = (user_norms > 0) | np.isin(rows, zero[unsure])
            rows, user_norms = rows[keep], user_norms[keep]
        if not len(rows):
            return top
        head_scores = self._scores(factors, self.head, seen, rows)[:, :len(self.head)]
        bound = np.partition(head_scores, len(self.head) - k, axis=1)[:, len(self.head) - k].astype(np.float64)
        slack = BOUND_SLACK * (user_norms * self.norms.max(initial=0.0) + np.abs(bound)) + self.offset_slack
        with np.errstate(invalid="ignore", divide="ignore"):
            cut = np.where(np.isfinite(bound) & (user_norms > 0), (bound - slack) / user_norms, -np.inf)
        order = np.argsort(-cut, kind="stable")
        for start in range(0, len(rows), BLOCK_USERS):
            block = order[start:start + BLOCK_USERS]
            lowest = cut[block].min()
            if np.isfinite(lowest):
                reach = self.norms if self.offsets is None else \
                    self.norms + self.offsets / user_norms[block].min()  # offsets ≥ 0: largest at the least |u|
                items = np.flatnonzero(reach >= lowest)
            if not np.isfinite(lowest) or len(items) < k:
                items = np.arange(self.n_items)
            scores = self._scores(factors, items, seen, rows[block])
            top[rows[block]] = items[top_of_block(scores, k)]
        return top
