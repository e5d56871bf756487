"""The one top-k of walsmf: ranking scores with ties by lower id, and the items' score offsets.

Batch prediction (walsmf.recommend), evaluation and the server's answers
(walsmf.export_numpy) rank with these; numpy only, so the server imports them
on any runtime.
"""
from typing import Optional

import numpy as np


def item_offsets(readers: np.ndarray, popularity_weight: float = 0.0, popularity: Optional[np.ndarray] = None,
                 fresh: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """The offset of each item's score: β·log(1 + popularity) (the blend; popularity: ``readers`` unless given),
    −inf for an item no one read or not ``fresh`` (never recommended); None when every offset is 0."""
    recommendable = readers > 0 if fresh is None else (readers > 0) & fresh
    if not popularity_weight and recommendable.all():
        return None
    popularity = readers if popularity is None else popularity
    blend = np.float32(popularity_weight) * np.log1p(np.asarray(popularity, np.float32))
    return np.where(recommendable, blend, -np.inf).astype(np.float32)


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
