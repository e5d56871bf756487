"""An export answered in numpy: what walsmf.serve runs for an export that says how it folds in new visitors.

The SavedModel's graph (walsmf.export_graph) answers every instance through ten
optional inputs, a map over the batch and three branches: about 1.5 ms for
one known visitor on the lab-size model, where the scores and their top-k
take 0.08 ms.  ``ExportAnswers`` reads the same export (its factors,
weights, reads, popularity and id maps) once and answers each checked
instance (walsmf.instances) with the graph's rules, ranking with the one
top-k of batch prediction (walsmf.topk), so a known visitor's answer is their
batch_pred.txt line.  tests/test_export_numpy.py holds it to the graph on
every instance form.
"""
import os
import threading
from typing import List, Optional

import numpy as np

from walsmf import instances, modeldir
from walsmf.errors import DataError
from walsmf.ratings import MEDIAN_READ_RATING, rating_of
from walsmf.topk import cold_start_scores, item_offsets, recommendable_items, top_of_block

# What serving_info.json must hold for the numpy answers: the fold-in's settings (older exports lack them and
# are answered by their graph).
FOLD_IN_KEYS = ("unobserved_weight", "regularization", "target", "median_duration_ms")


def answers_in_numpy(info: dict) -> bool:
    """Whether an export with this serving_info.json can be answered by ExportAnswers."""
    return all(key in info for key in FOLD_IN_KEYS + ("nusers", "nitems", "topk", "popularity_weight"))


def fold_in(other_factors: np.ndarray, gramian: np.ndarray, ids: np.ndarray, values: np.ndarray,
            other_weights: np.ndarray, own_weight: float, unobserved_weight: float,
            regularization: Optional[float]) -> np.ndarray:
    """One id's factor by the closed-form WALS solve against the other side's factors (walsmf.solve's
    solve_projection, in numpy and float64): minimizes Σ_read (w0 + o·c_j)(a_j − x·v_j)² + w0 Σ_unread (x·v_j)²
    + λ|x|² over the reads ``ids`` with ``values`` a_j, own weight o, the other side's weights c_j and
    ``gramian`` = Σ_all v_j v_jᵀ (float64)."""
    products, target = _read_sums(other_factors, other_weights, np.float32(own_weight), ids, values,
                                  unobserved_weight)
    return np.linalg.solve(_unread_part(gramian, unobserved_weight, regularization) + products,
                           target).astype(np.float32)


def _unread_part(gramian, unobserved_weight, regularization):
    """The left side's part every id shares: w0·Σ_all v_j v_jᵀ + λ·I."""
    return unobserved_weight * gramian + (regularization or 0.0) * np.eye(gramian.shape[0])


def _read_sums(other_factors, other_weights, own_weight, ids, values, unobserved_weight):
    """One id's sums over its reads: Σ o·c_j v_j v_jᵀ (the left side's) and Σ (w0 + o·c_j) a_j v_j (the right)."""
    v = other_factors[ids].astype(np.float64)
    observed_weight = (own_weight * other_weights[ids]).astype(np.float64)
    return ((v * observed_weight[:, None]).T @ v,
            v.T @ ((unobserved_weight + observed_weight) * np.asarray(values, np.float64)))


# Reads summed at a time by fold_in_many: a d×d product each (800 bytes at 10 factors).
_FOLD_IN_BLOCK = 65536
# An id with this many reads or more has its sums as two matrix products of its own (BLAS), not in the blocks.
_OWN_PRODUCT_READS = 256


def fold_in_many(other_factors: np.ndarray, gramian: np.ndarray, offsets: np.ndarray, ids: np.ndarray,
                 values: np.ndarray, other_weights: np.ndarray, own_weights: np.ndarray, unobserved_weight: float,
                 regularization: Optional[float]) -> np.ndarray:
    """fold_in of many ids at once: id n's reads are ``ids``/``values`` [offsets[n]:offsets[n+1]] and its own weight
    ``own_weights[n]``; the sums of ids with few reads are taken a block of reads at a time, the solves batched."""
    n = len(offsets) - 1
    lhs = np.repeat(_unread_part(gramian, unobserved_weight, regularization)[None], n, axis=0)
    rhs = np.zeros((n, gramian.shape[0]))
    counts = np.diff(offsets)
    own_weights = np.asarray(own_weights, np.float32)
    values = np.asarray(values, np.float64)
    for own in np.flatnonzero(counts >= _OWN_PRODUCT_READS):
        reads = slice(offsets[own], offsets[own + 1])
        products, target = _read_sums(other_factors, other_weights, own_weights[own], ids[reads], values[reads],
                                      unobserved_weight)
        lhs[own] += products
        rhs[own] += target
    owners = np.repeat(np.arange(n), counts)
    few = np.flatnonzero(counts[owners] < _OWN_PRODUCT_READS)
    for start in range(0, len(few), _FOLD_IN_BLOCK):
        reads = few[start:start + _FOLD_IN_BLOCK]
        v = other_factors[ids[reads]].astype(np.float64)
        observed_weight = (own_weights[owners[reads]] * other_weights[ids[reads]]).astype(np.float64)
        firsts = np.flatnonzero(np.diff(owners[reads], prepend=-1))
        who = owners[reads][firsts]
        lhs[who] += np.add.reduceat(np.einsum("ni,nj->nij", v * observed_weight[:, None], v), firsts)
        rhs[who] += np.add.reduceat(v * ((unobserved_weight + observed_weight) * values[reads])[:, None], firsts)
    return np.linalg.solve(lhs, rhs[..., None])[..., 0].astype(np.float32)


class _Side:
    """One side's factors, transposed and padded to a multiple of 8 columns for top_of_block, its reads and its
    original ids."""

    def __init__(self, factors, offsets, indices, originals):
        self.factors = factors
        self.count = len(factors)
        self.width = self.count + (-self.count) % 8
        self.transposed = np.zeros((factors.shape[1], self.width), np.float32)
        self.transposed[:, :self.count] = factors.T
        self.offsets, self.indices = offsets, indices
        self.readers = np.diff(offsets).astype(np.float32)
        self.unread = np.flatnonzero(self.readers == 0)
        self.originals = np.array(["" if o is None else o for o in originals] + [""], dtype=object)  # [-1] → ""
        self.index = {o: n for n, o in enumerate(originals) if o is not None}

    def reads_of(self, own_id):
        return self.indices[self.offsets[own_id]:self.offsets[own_id + 1]]


class ExportAnswers:
    """An export's answers to checked instances, computed in numpy (see the module's docstring)."""

    def __init__(self, export_dir: str, info: dict):
        if not answers_in_numpy(info):
            raise DataError("{}'s serving_info.json lacks the fold-in settings: export the model again with "
                            "python -m walsmf.task".format(export_dir))
        variables = os.path.join(export_dir, "variables", "variables")
        users, items = (modeldir.load_shards(variables, side + "_factors_shard_") for side in ("row", "col"))
        csr = {side: [modeldir.read_asset(export_dir, modeldir.csr_asset_name(side, part, dtype), dtype)
                      for part, dtype in modeldir.CSR_PARTS[:2]] for side in ("by_user", "by_item")}
        self.users = _Side(users, *csr["by_user"], modeldir.read_original_ids(export_dir, "user"))
        self.items = _Side(items, *csr["by_item"], modeldir.read_original_ids(export_dir, "item"))
        if (self.users.count, self.items.count) != (info["nusers"], info["nitems"]):
            raise DataError("{} holds {} users and {} items, its serving_info.json says {} and {}: export the model "
                            "again".format(export_dir, self.users.count, self.items.count, info["nusers"],
                                           info["nitems"]))
        self.info = info
        self.item_weights = modeldir.load_shards(variables, "col_weights_shard_")
        self.user_weight = np.mean(modeldir.load_shards(variables, "row_weights_shard_"), dtype=np.float32)
        self.items_gramian = items.astype(np.float64).T @ items.astype(np.float64)
        popularity = modeldir.read_asset(export_dir, modeldir.POPULARITY_FILE, np.dtype("<f4"))
        fresh = modeldir.read_asset(export_dir, modeldir.FRESH_FILE, np.dtype("<f4"), optional=True)
        self.fresh = None if fresh is None else fresh > 0
        if fresh is not None:  # an item too old to recommend (--max_age_days) is ranked as one nobody read
            self.items.unread = np.flatnonzero(~recommendable_items(self.items.readers, self.fresh))
        self.popularity = popularity
        self.blend(info["popularity_weight"], popularity)
        self._buffers = threading.local()

    def blend(self, popularity_weight: float, popularity: np.ndarray):
        """Rank the items with this blend: β = ``popularity_weight`` times log(1 + ``popularity``) added to each
        score, and a visitor without reads answered by ``popularity`` where β > 0 (topk.cold_start_scores)."""
        self.item_offsets = item_offsets(self.items.readers, popularity_weight, popularity, self.fresh)
        self.item_cold_start = cold_start_scores(self.items.readers, popularity_weight, popularity)

    def answer(self, checked: List[dict]) -> List[dict]:
        """One dict of JSON values per checked instance, as walsmf.predict answers them from the graph."""
        return [self._answer(instance) for instance in checked]

    def _answer(self, instance):
        info = self.info
        k = instance.get(instances.K, info["topk"])
        exclude_read = instance.get(instances.EXCLUDE_READ, bool(info.get("exclude_seen", False)))
        user_id = instance.get(instances.USER_ID, -1)
        if user_id < 0:
            user_id = self.users.index.get(instance.get(instances.VISITOR_ID, ""), -1)
        item_id = instance.get(instances.ITEM_ID, -1)
        contents = instance.get(instances.CONTENT_IDS, [])
        given = [c for c in contents if c != ""]
        reads = [self.items.index.get(c, -1) for c in contents] if given else instance.get(instances.READ_ITEMS, [])
        ratings = self._ratings(instance, len(reads))
        visitor_items = np.array([i for i in reads if i >= 0], np.int64)
        visitor_ratings = np.array([r for i, r in zip(reads, ratings) if i >= 0], np.float32)
        left_out = [self.items.index[c] for c in instance.get(instances.EXCLUDE, []) if c in self.items.index]
        if user_id >= 0:
            factor = self.users.factors[user_id]
            dropped = left_out + (list(self.users.reads_of(user_id)) + list(visitor_items) if exclude_read else [])
            top = self._rank(factor, self.users.readers[user_id] > 0, self.items, dropped, k, self.item_offsets,
                             self.item_cold_start)
        elif item_id >= 0:
            factor = self.items.factors[item_id]
            dropped = list(self.items.reads_of(item_id)) if exclude_read else []
            top = self._rank(factor, self.items.readers[item_id] > 0, self.users, dropped, k, None,
                             self.users.readers)
        else:
            factor = self._fold_in(visitor_items, visitor_ratings)
            dropped = left_out + (list(visitor_items) if exclude_read else [])
            top = self._rank(factor, len(visitor_items) > 0, self.items, dropped, k, self.item_offsets,
                             self.item_cold_start)
        ids, scores = top
        asks_item = user_id < 0 <= item_id
        originals = (self.users if asks_item else self.items).originals[ids]
        nothing = [""] * len(ids)
        unknown = sum(1 for c, i in zip(contents, reads) if c != "" and i < 0) if given else 0
        return {instances.KNOWN_VISITOR: bool(user_id >= 0), instances.PROJECTION: factor.tolist(),
                instances.TOP_K_CONTENT_IDS: nothing if asks_item else originals.tolist(),
                instances.TOP_K_IDS: ids.tolist(), instances.TOP_K_SCORES: scores.tolist(),
                instances.TOP_K_VISITOR_IDS: originals.tolist() if asks_item else nothing,
                instances.UNKNOWN_CONTENT_IDS: unknown}

    def _ratings(self, instance, n):
        """A new visitor's ratings, one per read: given, else rated from durations (those ≥ 0), else a median
        read's; 1 for every read where the model fits reads (--target read)."""
        if self.info["target"] == "read":
            return np.ones(n, np.float32)
        ratings = np.array(instance.get(instances.READ_RATINGS, [MEDIAN_READ_RATING] * n), np.float32)
        median = self.info["median_duration_ms"]
        if median and instances.DURATIONS in instance:  # in float32, as the graph rates them
            durations = np.array(instance[instances.DURATIONS], np.float32)
            ratings = np.where(durations >= 0, rating_of(durations, np.float32(median)), ratings)
        return ratings

    def _fold_in(self, items, ratings):
        """A new visitor's factor: the closed-form WALS solve against the item factors."""
        info = self.info
        return fold_in(self.items.factors, self.items_gramian, items, ratings, self.item_weights, self.user_weight,
                       info["unobserved_weight"], info["regularization"])

    def _rank(self, factor, has_reads, others, dropped, k, offsets, cold_start):
        """The other side's top-k ids and scores for ``factor``, padded with −1 and 0 to the answer's length:
        without reads by ``cold_start`` (the most read); never what has no reader or is ``dropped``."""
        scores = self._scores_buffer(others.width)
        if has_reads:
            np.matmul(factor[None, :], others.transposed, out=scores)
            if offsets is not None:
                scores[0, :others.count] += offsets
        else:
            scores[0, :others.count] = cold_start
        scores[0, others.count:] = -np.inf
        scores[0, others.unread] = -np.inf
        if dropped:
            scores[0, np.asarray(dropped, np.int64)] = -np.inf
        length = min(k, others.count)  # at most the other side's ids, never padded past them
        top = top_of_block(scores, min(length, others.count))[0]
        top_scores = scores[0, top]
        answered = np.isfinite(top_scores)
        ids = np.full(length, -1, np.int64)
        values = np.zeros(length, np.float32)
        ids[:len(top)] = np.where(answered, top, -1)
        values[:len(top)] = np.where(answered, top_scores, 0)
        return ids, values

    def _scores_buffer(self, width):
        """This thread's row of scores for a side of ``width`` columns (allocated once per thread and side)."""
        buffers = self._buffers.__dict__
        if width not in buffers:
            buffers[width] = np.empty((1, width), np.float32)
        return buffers[width]
