"""Recommendations from trained factors: every shard read, top-k per user, batch_pred.txt.

``find_top_k`` and ``batch_predict`` keep the lab's names; ``top_k_items``
is the one top-k of walsmf (batch prediction and evaluation both use it).
"""
import collections
import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf
import threadpoolctl

from walsmf import progress
from walsmf.errors import check_interrupted
from walsmf.fileio import atomic_output, line_ends
from walsmf.modeldir import BATCH_PRED_FILE, ORIGINAL_IDS_PRED_FILE, load_factors, original_ids_lines, plain_ids
from walsmf.topk import Ranking, cold_start_scores, item_offsets, recommendable_items, rows_items

# Users ranked at a time (topk.Ranking's unit): about four per thread over the users, within these bounds
# (more users rank in tighter blocks of similar bound; fewer keep the threads busy to the end).
MIN_WINDOW_USERS = 4096
MAX_WINDOW_USERS = 65536


def users_per_window(n_users, threads=None):
    """Users ranked at a time among ``n_users``: a quarter of a thread's share, 4,096 to 65,536."""
    threads = threads or os.cpu_count() or 1
    return int(np.clip(-(-n_users // (4 * threads)), MIN_WINDOW_USERS, MAX_WINDOW_USERS))


def find_top_k(user, item_factors, k, excluded=None, item_offsets=None):
    """Top-k item ids of one user factor [d] or of a block of them [B, d] (the lab's function, batched).

    ``excluded``: optional (row of the block, itemId) pairs to leave out.
    ``item_offsets``: optional [items] added to every score (−inf: never recommended).
    Equal scores rank the lower itemId first (tf.nn.top_k's order).
    """
    users = tf.expand_dims(user, 0) if user.shape.ndims == 1 else user
    scores = tf.matmul(users, item_factors, transpose_b=True)
    if item_offsets is not None:
        scores += item_offsets
    if excluded is not None:  # (a scatter copies the whole block: only when needed)
        scores = tf.tensor_scatter_nd_update(scores, excluded, tf.fill(tf.shape(excluded)[:1], np.float32(-np.inf)))
    top_items = tf.cast(tf.nn.top_k(scores, k=k).indices, tf.int64)
    return top_items[0] if user.shape.ndims == 1 else top_items


def cold_start(reads, popularity_weight=0.0, popularity=None, fresh=None):
    """What ids without interactions get, from the training ``reads`` (datadir.Interactions): (users without
    reads, the items for them best first (topk.cold_start_scores; those with readers and ``fresh`` first),
    offsets added to every item's score: β·log(1 + popularity) with β = ``popularity_weight`` and ``popularity``
    the readers (default) or the recent reads, −inf for an item without readers or not ``fresh``; None where all
    would be 0)."""
    readers = reads.by_item.counts
    ranked = np.where(recommendable_items(readers, fresh), cold_start_scores(readers, popularity_weight, popularity),
                      -1)
    return (reads.by_user.counts == 0, np.argsort(-ranked, kind="stable"),
            item_offsets(readers, popularity_weight, popularity, fresh))


def _in_order(work, items, threads):
    """``work(item)`` for each item, by ``threads`` threads a few items ahead, yielded in the items' order;
    what is not started when the consumer stops (or is interrupted) is cancelled."""
    with ThreadPoolExecutor(threads) as pool:
        pending = collections.deque()
        try:
            for item in items:
                pending.append(pool.submit(work, item))
                if len(pending) > 2 * threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def top_k_blocks(user_factors, item_factors, k, seen=None, users=None, block_size=None, reads=None,
                 popularity_weight=0.0, popularity=None, fresh=None):
    """Yield (users of the block, their top-k item ids best first), a block of users at a time.

    ``users``: which rows of ``user_factors`` to rank (default: all), ``block_size`` at a time (default:
    users_per_window).
    ``seen``: optional CSR by user (datadir.CSR) of items to leave out.
    ``reads``: the training Interactions, if some ids have none: a user
    without reads gets the most read items (the blend's popularity), an item without readers is never
    recommended (``cold_start``); ``popularity_weight`` β adds β·log(1 + readers) to every item's score
    (``popularity``: other counts than the readers, such as the recent reads); an item not ``fresh``
    (--max_age_days) is never recommended.
    Equal scores rank the lower itemId first (find_top_k's order).  A block
    is ranked by topk.Ranking (each user scored only on the items that can
    reach their top k); the blocks run on every core.
    """
    users = np.arange(user_factors.shape[0]) if users is None else np.asarray(users)
    k = min(k, item_factors.shape[0])
    threads = os.cpu_count() or 1
    block_size = block_size or users_per_window(len(users), threads)
    no_reads, most_read, offsets = (cold_start(reads, popularity_weight, popularity, fresh) if reads is not None
                                    else (None, None, None))
    ranking = Ranking(item_factors, k, offsets)

    def rank(block_users):
        block_seen = None
        if seen is not None:
            lengths = seen.offsets[block_users + 1] - seen.offsets[block_users]
            block_seen = (np.concatenate([[0], np.cumsum(lengths)]),
                          rows_items(seen.offsets, seen.indices, block_users)[1])
        skip = None if no_reads is None else no_reads[block_users]
        top = ranking.top(np.asarray(user_factors[block_users], np.float32), block_seen, skip)
        if skip is not None:
            top[skip] = most_read[:k]
        return top

    blocks = [users[start:start + block_size] for start in range(0, len(users), block_size)]
    # one BLAS thread per block: the blocks themselves use the cores
    with threadpoolctl.threadpool_limits(1, "blas"):
        for block_users, top in zip(blocks, _in_order(rank, blocks, threads)):
            check_interrupted()
            yield block_users, top


def top_k_items(user_factors, item_factors, k, seen=None, users=None, block_size=None, reads=None,
                popularity_weight=0.0, popularity=None):
    """Top-k item ids per user (rows of ``users``, default all), best first: top_k_blocks gathered."""
    blocks = [top for _, top in top_k_blocks(user_factors, item_factors, k, seen, users, block_size, reads,
                                             popularity_weight, popularity)]
    return np.concatenate(blocks) if blocks else np.empty((0, min(k, item_factors.shape[0])), np.int64)


def _padded(original):
    """Original ids by internal id as an array, "" where an id has none."""
    return np.array(["" if o is None else o for o in original], dtype=object)


def qualifying(users, top, offsets=None, seen=None):
    """Whether each of the ``users``' ``top`` [users, k] items may be recommended: an item with a finite offset
    (read by someone, fresh: cold_start's) and, with ``seen`` (a CSR by user), not read by the user.  Only where
    fewer than k items qualify does a top-k hold others (the −inf scores, by itemId)."""
    ok = np.ones(top.shape, bool) if offsets is None else np.isfinite(offsets[top])
    if seen is not None:
        at, read = rows_items(seen.offsets, seen.indices, np.asarray(users))
        n_items = max(int(top.max(initial=0)), int(read.max(initial=0))) + 1
        ok &= ~np.isin(np.arange(len(top))[:, None] * n_items + top, at * n_items + read)
    return ok


def _kept(names, qualifies):
    """Rows of ``names`` [users, k] as lists, each without its entries that do not qualify."""
    rows = names.tolist()
    for row in np.flatnonzero(~qualifies.all(axis=1)):
        rows[row] = [name for name, ok in zip(rows[row], qualifies[row]) if ok]
    return rows


def batch_predict(settings, data, log=progress.say, users=None):
    """Write batch_pred.txt (top-k itemIds per userId 0..nusers−1) and the same in original ids.

    Streams: each block of users goes straight to the files (written under
    temporary names, renamed when complete), so memory holds the factors and
    one block, whatever the number of users; a progress line every ``progress.PROGRESS_SECONDS`` and one at the end.
    With ``settings.exclude_seen``, items a user already read are left out (the
    lab kept them).  A user without reads gets the most read items; an item
    without readers is never recommended.  ``data``: the training run's
    datadir.TrainingData.  Where fewer than k items qualify (``qualifying``), a line lists only those.
    ``users``: rank only these (ascending; a refresh's visitors whose factors moved) and keep the other lines as
    the files hold them, where the files hold a line for each user below the new ones; else every user.
    Returns the number of users ranked.
    """
    user_factors = load_factors(settings.output_dir, "row")
    item_factors = load_factors(settings.output_dir, "col")
    paths = [os.path.join(settings.output_dir, name) for name in (BATCH_PRED_FILE, ORIGINAL_IDS_PRED_FILE)]
    paths = paths if data.visitor_ids is not None else paths[:1]
    olds = _line_per_user(paths, users, user_factors.shape[0]) if users is not None else None
    users = np.arange(user_factors.shape[0]) if olds is None else np.asarray(users)
    log("[batch_pred] top {} of {:,} items for {} -> {}".format(
        settings.topk, item_factors.shape[0], "each of {:,} users".format(len(users)) if olds is None else
        "{:,} of {:,} users (the other lines kept)".format(len(users), user_factors.shape[0]), paths[0]))
    started = reported = time.time()
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(tf.io.gfile.GFile(stack.enter_context(atomic_output(path)), "wb"))
                 for path in paths]
        done, ranked = 0, [[] for _ in paths]  # with olds: each file's new lines, a text per user
        for block, texts in _prediction_lines(settings, data, user_factors, item_factors, users, olds is None):
            for f, new_lines, text in zip(files, ranked, texts):
                if olds is None:
                    f.write(text.encode())
                else:
                    new_lines.extend(text)
            done += len(block)
            if time.time() - reported >= progress.PROGRESS_SECONDS or done == len(users):
                reported = time.time()
                log("      {:,} of {:,} users: {:.1f} s".format(done, len(users), reported - started))
        for f, old, new in zip(files, olds or (), ranked):
            f.write(b"".join(_spliced(*old, users, new)))
    return done


def _line_per_user(paths, users, n_users):
    """Each batch prediction file's (bytes, line ends) where each holds a line for every one of ``n_users`` users
    not among ``users``; None if any does not (absent, from fewer users, or with an id holding a line break)."""
    olds = []
    for path in paths:
        if not tf.io.gfile.exists(path):
            return None
        with tf.io.gfile.GFile(path, "rb") as f:
            text = f.read()
        olds.append((text, line_ends(text)))
    lines = {len(ends) for _, ends in olds}
    held = lines.pop() if len(lines) == 1 else n_users + 1
    if held > n_users or not np.isin(np.arange(held, n_users), users).all():
        return None
    return olds


def _spliced(old, ends, users, lines):
    """The pieces of a file of a line per user: ``old``'s lines (ending at ``ends``) with those of ``users``
    replaced by ``lines`` (one per user, ascending), users beyond them appended."""
    view, pieces, at = memoryview(old), [], 0
    for user, line in zip(users.tolist(), lines):
        if user < len(ends):
            pieces += [view[at:ends[user - 1] if user else 0], line.encode()]
            at = ends[user]
        else:
            pieces += [view[at:], line.encode()]
            at = len(old)
    return pieces + [view[at:]]


def _prediction_lines(settings, data, user_factors, item_factors, users, joined):
    """Yield (a block of ``users``, (its batch_pred.txt lines, its original ids' lines)) in order: each as one text
    (``joined``) or a text per user."""
    interactions = data.interactions
    seen = interactions.by_user if settings.exclude_seen else None
    originals = data.visitor_ids is not None
    # ids beyond users.csv / items.csv (--nusers larger than the data): no original id, an empty one
    visitors, contents = ((_padded(data.visitor_ids), _padded(data.content_ids)) if originals else (None, None))
    plain = originals and plain_ids(visitors) and plain_ids(contents)
    item_names = np.array([str(item) for item in range(item_factors.shape[0])], dtype=object)
    offsets = cold_start(interactions, settings.popularity_weight, data.popularity, data.fresh)[2]
    for block, top in top_k_blocks(user_factors, item_factors, settings.topk, seen, users, reads=interactions,
                                   popularity_weight=settings.popularity_weight, popularity=data.popularity,
                                   fresh=data.fresh):
        qualifies = qualifying(block, top, offsets, seen)
        pred = [",".join(row) + "\n" for row in _kept(item_names[top], qualifies)]
        texts = ("".join(pred),) if joined else (pred,)
        if originals:
            rows = _kept(contents[top], qualifies)
            texts += ((original_ids_lines(visitors[block], rows, plain),) if joined else
                      ([original_ids_lines([visitor], [row], plain) for visitor, row in zip(visitors[block], rows)],))
        yield block, texts
