"""What a recommender must beat: most popular, most read recently, and implicit's ALS, as factor models ranked
like WALS's."""
import os

import numpy as np

from walsmf.recency import RECENT_DAYS, recent_counts
from walsmf.splits import in_milliseconds


def popularity_factors(train, nusers, nitems):
    """Most popular as a one-factor model: every user scores the items by their readers in training."""
    popularity = np.bincount(train["itemId"].values, minlength=nitems).astype(np.float32)
    return np.ones((nusers, 1), np.float32), popularity[:, None]


def implicit_als(train, nusers, nitems, factors=10, regularization=0.1, alpha=40.0, iterations=10, seed=0):
    """implicit's AlternatingLeastSquares on the training ratings; returns (user, item) factors.

    implicit weighs an entry by its value: confidence 1 + alpha·rating keeps
    every observed entry above the unobserved ones' weight of 1.
    """
    import scipy.sparse as sp
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    matrix = sp.csr_matrix((1 + alpha * train["rating"].values, (train["userId"].values, train["itemId"].values)),
                           shape=(nusers, nitems))
    # implicit runs its own threads; a multi-threaded BLAS under them oversubscribes the cores
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=factors, regularization=regularization, iterations=iterations,
                                        random_state=seed, calculate_training_loss=False)
        model.fit(matrix, show_progress=False)
    return np.asarray(model.user_factors), np.asarray(model.item_factors)


def recent_popularity_factors(train, times, nusers, nitems, days):
    """Most read in the last ``days`` of the training reads (``times``, ms, one per row; None: all of them) as
    a one-factor model; an item with no read in the window ranks by its reads before it, below those in it."""
    counts = recent_counts(train["itemId"].values, times, nitems, None)
    if days is not None:  # ties in the window broken by all reads
        counts = recent_counts(train["itemId"].values, times, nitems, days) + counts / (counts.max() + 1)
    return np.ones((nusers, 1), np.float32), counts.astype(np.float32)[:, None]


def most_read_recently(train, times, nusers, nitems, evaluate, seed=0):
    """(factors, days): "most read recently", its window chosen among RECENT_DAYS on a validation split of the
    training reads (each user's latest held out), by ``evaluate(factors, train, test)``'s metrics and
    metrics.choose's rule; then counted over all the training reads.  ``times``: one per row, any unit."""
    from walsmf import metrics, splits

    times = in_milliseconds(times)
    fit, check, _ = splits.holdout_split(train.assign(time=times), seed=seed, times=times)
    results = [evaluate(recent_popularity_factors(fit, fit["time"].values, nusers, nitems, days), fit, check)
               for days in RECENT_DAYS]
    days = RECENT_DAYS[metrics.choose(results)]
    return recent_popularity_factors(train, times, nusers, nitems, days), days


def most_read_recently_of(data_dir, train, nusers, nitems, k=10, seed=0):
    """most_read_recently for the ``train`` rows of ``data_dir`` (a split), by its times.csv, its window chosen
    by metrics at ``k``: (factors, days)."""
    from walsmf import datadir, metrics, splits

    times = splits.read_times(os.path.join(data_dir, datadir.TIMES_FILE), data_dir, train)

    def score(factors, fit, check):
        return metrics.evaluate_factors(*factors, fit, check, nusers, k)
    return most_read_recently(train, times, nusers, nitems, score, seed)
