"""How good are the recommendations? A held-out split, ranking metrics and baselines.

    python -m walsmf.evaluate --split_from data --data_dir data_split     # write the split
    python -m walsmf.task --input_path data_split --output_dir wals_split  # train on it, unchanged
    python -m walsmf.evaluate --data_dir data_split --model_dir wals_split [--implicit]

The split holds out, for each user with at least 3 interactions, a fixed
number of them (default 1, at most a fifth of the user's): random ones
(chosen with a seed), or with ``--latest_from TIMES.csv`` (visitorId,
contentId, time: a number or a date) each user's latest.  Any read may be
held out, an item's only one included: walsmf trains with ids left unread.
The training part is written in the lab's formats (TFRecords,
collab_mapped.csv, metadata.json); the held-out part as heldout.csv.

Metrics at k (default 10), over held-out users only, each user's training
items left out of the ranking: precision, recall, MAP, NDCG, and catalogue
coverage (share of items recommended to anyone).
"""
import argparse
import os

import numpy as np
import pandas as pd
import tensorflow as tf

from walsmf import datadir
from walsmf.datadir import CSR, HELDOUT_FILE, MAPPED_FILE, read_metadata
from walsmf.errors import DataError, run_cli
from walsmf.fileio import staged_directory
from walsmf.recommend import load_factors, top_k_items

MAPPED_COLUMNS = ["userId", "itemId", "rating"]
METRIC_NAMES = ["precision", "recall", "map", "ndcg", "coverage"]
# The summary tag hyperparameter tuning reads (hptuning_config.yaml).
HPTUNING_TAG = "recall_at_10"
# Users with fewer interactions than this are not evaluated: none of theirs is held out.
MIN_INTERACTIONS = 3


# ---------------------------------------------------------------- split --

def holdout_split(mapped, holdout=1, min_interactions=MIN_INTERACTIONS, seed=0, times=None):
    """Split collab_mapped rows into (train, test, n_unevaluated_users).

    Users with at least ``min_interactions`` hold out ``holdout`` random
    interactions each — their latest ones if ``times`` (one per row, larger
    is later) is given — at most a fifth of their interactions (one at
    least): any of them, an item's only reader's included (the item then
    has no training read, and walsmf trains without it).
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(mapped))
    if times is not None:
        order = order[np.argsort(-np.asarray(times)[order], kind="stable")]  # latest first, ties at random
    shuffled = mapped.iloc[order]
    per_user = shuffled.groupby("userId").cumcount().values
    user_count = shuffled.groupby("userId")["userId"].transform("size").values
    candidate = (user_count >= min_interactions) & (per_user < np.clip(user_count // 5, 1, holdout))
    held = np.zeros(len(mapped), bool)
    held[order[candidate]] = True
    train, test = mapped[~held].reset_index(drop=True), mapped[held].reset_index(drop=True)
    unevaluated = mapped["userId"].nunique() - test["userId"].nunique()
    return train, test, int(unevaluated)


def read_times(times_csv, data_dir, mapped):
    """The time of each row of ``mapped`` (collab_mapped.csv of ``data_dir``) from a CSV of visitorId,
    contentId, time (a number or a date; a pair's latest time counts), as numbers, larger later."""
    if not tf.io.gfile.exists(times_csv):
        raise DataError("times file {} does not exist: give a CSV of visitorId,contentId,time".format(times_csv))
    with tf.io.gfile.GFile(times_csv) as f:
        try:
            times = pd.read_csv(f, dtype={"visitorId": str, "contentId": str})
        except (ValueError, pd.errors.ParserError) as err:
            raise DataError("{} is not a CSV of visitorId,contentId,time: {}".format(times_csv, err))
    missing = [c for c in ("visitorId", "contentId", "time") if c not in times.columns]
    if missing:
        raise DataError("{} lacks column(s) {}: give a CSV of visitorId,contentId,time".format(
            times_csv, ", ".join(missing)))
    value = pd.to_numeric(times["time"], errors="coerce")
    if value.isna().any():
        try:
            value = pd.to_datetime(times["time"]).astype("int64").astype(float)
        except (ValueError, TypeError):
            raise DataError("{}: time {!r} is neither a number nor a date".format(
                times_csv, times["time"][value.isna()].iloc[0]))
    ids = [pd.Series(np.arange(len(original)), index=original)
           for original in (datadir.read_id_map(os.path.join(data_dir, name))
                            for name in (datadir.USERS_FILE, datadir.ITEMS_FILE))]
    keyed = pd.DataFrame({"userId": times["visitorId"].map(ids[0]), "itemId": times["contentId"].map(ids[1]),
                          "time": value}).dropna().groupby(["userId", "itemId"])["time"].max()
    found = keyed.reindex(pd.MultiIndex.from_arrays([mapped["userId"], mapped["itemId"]])).values
    if np.isnan(found).any():
        raise DataError("{} has no time for {} of {} reads in {} (e.g. user {}, item {}): give every "
                        "visitorId,contentId pair of collab_raw.csv a time".format(
                            times_csv, int(np.isnan(found).sum()), len(mapped), data_dir,
                            *mapped[np.isnan(found)].iloc[0][["userId", "itemId"]]))
    return found


def write_split(data_dir, split_dir, holdout=1, seed=0, log=print, times_csv=None, heldout_reads=None):
    """Write the training part of ``data_dir`` in the lab's formats, and heldout.csv, to ``split_dir``
    (each user's latest reads held out by ``times_csv``'s times, if given; with ``heldout_reads``, more
    than ``holdout`` per user where that many users hold out fewer reads than this)."""
    mapped = read_mapped(data_dir)
    metadata = read_metadata(data_dir)
    if heldout_reads:
        evaluated = max(1, int((mapped["userId"].value_counts() >= MIN_INTERACTIONS).sum()))
        holdout = max(holdout, -(-heldout_reads // evaluated))
    times = read_times(times_csv, data_dir, mapped) if times_csv else None
    train, test, unevaluated = holdout_split(mapped, holdout=holdout, seed=seed, times=times)
    with staged_directory(split_dir, datadir.METADATA_FILE) as staged:
        for name in (datadir.USERS_FILE, datadir.ITEMS_FILE):
            tf.io.gfile.copy(os.path.join(data_dir, name), os.path.join(staged, name))
        train.to_csv(os.path.join(staged, MAPPED_FILE), index=False, header=False)
        test.to_csv(os.path.join(staged, HELDOUT_FILE), index=False, header=False)
        datadir.write_interactions(staged, datadir.interactions_of(train, metadata["nusers"], metadata["nitems"]))
        datadir.write_metadata(staged, dict(metadata, interactions=len(train), heldout=len(test),
                                            unevaluated_users=unevaluated, split_seed=seed,
                                            held_out="latest" if times_csv else "random"))
    log("{} training interactions, {} held out from {} users; {} users have too few interactions "
        "to evaluate".format(len(train), len(test), test["userId"].nunique(), unevaluated))
    return train, test


def has_heldout(data_dir):
    """Whether ``data_dir`` is a split directory (has heldout.csv)."""
    return tf.io.gfile.exists(os.path.join(data_dir, HELDOUT_FILE))


def read_mapped(data_dir, name=MAPPED_FILE):
    """collab_mapped.csv (or heldout.csv) of ``data_dir`` as userId, itemId, rating."""
    path = os.path.join(data_dir, name)
    if not tf.io.gfile.exists(path):
        hint = ("make one with 'python -m walsmf.evaluate --split_from DATA --data_dir {}'".format(data_dir)
                if name == HELDOUT_FILE else "run 'python -m walsmf.preprocess' first")
        raise DataError("{} does not exist: {}".format(path, hint))
    with tf.io.gfile.GFile(path) as f:
        return pd.read_csv(f, header=None, names=MAPPED_COLUMNS)


# -------------------------------------------------------------- metrics --

def by_user(rows, nusers):
    """userId,itemId,rating rows as a CSR by user over users 0..nusers−1."""
    return CSR.from_triples(rows["userId"].values, rows["itemId"].values, rows["rating"].values, nusers)


def ranking_metrics(top, users, test, nitems):
    """precision, recall, MAP, NDCG at k = top.shape[1], and catalogue coverage, for ``users``."""
    k = top.shape[1]
    test_csr = by_user(test, users.max() + 1)
    held = [set(test_csr.row(u)[0]) for u in users]
    relevant = np.array([[item in h for item in row] for row, h in zip(top, held)], dtype=np.float64)
    n_held = np.array([len(h) for h in held], dtype=np.float64)
    hits = relevant.sum(axis=1)
    precision_at = np.cumsum(relevant, axis=1) / np.arange(1, k + 1)
    average_precision = (precision_at * relevant).sum(axis=1) / np.minimum(n_held, k)
    discount = 1 / np.log2(np.arange(2, k + 2))
    ideal = np.array([discount[:int(min(n, k))].sum() for n in n_held])
    return {
        "precision": float(np.mean(hits / k)),
        "recall": float(np.mean(hits / n_held)),
        "map": float(np.mean(average_precision)),
        "ndcg": float(np.mean((relevant * discount).sum(axis=1) / ideal)),
        "coverage": float(len(np.unique(top)) / nitems),
    }


def evaluate_factors(user_factors, item_factors, train, test, nusers, k=10):
    """Metrics at k of a factorization (score = user factor · item factor) on the held-out users.

    Every method is ranked alike: training items left out, a user without
    training reads gets the most read items, an item without one is not ranked.
    """
    users = np.unique(test["userId"].values)
    reads = datadir.interactions_of(train, nusers, item_factors.shape[0])
    top = top_k_items(user_factors, item_factors, k, seen=reads.by_user, users=users, reads=reads)
    return ranking_metrics(top, users, test, item_factors.shape[0])


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


def write_hptuning_metric(output_dir, metrics, step, k=10):
    """Write the metrics at k as scalar summaries; recall@k is what AI Platform's tuning read."""
    writer = tf.compat.v1.summary.FileWriter(os.path.join(output_dir, datadir.HELDOUT_SUMMARY_DIR))
    summary = tf.compat.v1.Summary(value=[
        tf.compat.v1.Summary.Value(tag="{}_at_{}".format(name, k), simple_value=metrics[name])
        for name in METRIC_NAMES])
    writer.add_summary(summary, step)
    writer.close()


def report_hypertune_metric(metrics, step, k=10):
    """Report recall@k to Vertex AI hyperparameter tuning (cloudml-hypertune), when the package is there.

    Vertex reads what the package writes (CLOUD_ML_HP_METRIC_FILE, by default
    /tmp/hypertune/output.metrics), not TensorFlow summaries.  Returns whether it reported.
    """
    try:
        import hypertune
    except ImportError:  # an optional extra: AI Platform's runtime reads the summary instead
        return False
    hypertune.HyperTune().report_hyperparameter_tuning_metric(
        hyperparameter_metric_tag=HPTUNING_TAG, metric_value=metrics["recall"], global_step=step)
    return True


def evaluate_model(model_dir, data_dir, k=10):
    """Metrics at k of the WALS model in ``model_dir`` on the held-out part of ``data_dir``."""
    metadata = read_metadata(data_dir)
    train, test = read_mapped(data_dir), read_mapped(data_dir, HELDOUT_FILE)
    return evaluate_factors(load_factors(model_dir, "row"), load_factors(model_dir, "col"), train, test,
                            metadata["nusers"], k)


def format_table(rows, k):
    """Rows of (name, metrics) as a fixed-width table."""
    header = "{:<28}".format("method") + "".join("{:>12}".format("{}@{}".format(m, k) if m != "coverage"
                                                                 else m) for m in METRIC_NAMES)
    lines = [header] + ["{:<28}".format(name) + "".join("{:12.4f}".format(metrics[m]) for m in METRIC_NAMES)
                        for name, metrics in rows]
    return "\n".join(lines)


def main(argv=None):
    """CLI: write a split, or score a trained model (and baselines) on one."""
    parser = argparse.ArgumentParser(prog="python -m walsmf.evaluate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--data_dir", required=True, help="a split directory (written with --split_from)")
    parser.add_argument("--split_from", help="write a held-out split of this data directory into --data_dir")
    parser.add_argument("--holdout", type=int, default=1, help="interactions held out per user "
                        "(at most a fifth of a user's, one at least)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out choice")
    parser.add_argument("--latest_from", metavar="TIMES_CSV",
                        help="with --split_from: hold out each user's latest reads by this CSV's times "
                             "(visitorId,contentId,time) instead of random ones")
    parser.add_argument("--model_dir", help="a WALS model trained on --data_dir (walsmf.task --output_dir)")
    parser.add_argument("--k", type=int, default=10, help="length of the recommendation lists")
    parser.add_argument("--implicit", action="store_true", help="also score implicit's ALS (10 factors)")
    args = parser.parse_args(argv)
    if args.latest_from and not args.split_from:
        parser.error("--latest_from chooses the held-out reads of a new split: give --split_from DATA too")
    if args.split_from:
        write_split(args.split_from, args.data_dir, args.holdout, args.seed, times_csv=args.latest_from)
        return
    metadata = read_metadata(args.data_dir)
    train, test = read_mapped(args.data_dir), read_mapped(args.data_dir, HELDOUT_FILE)
    nusers, nitems = metadata["nusers"], metadata["nitems"]
    rows = []
    if args.model_dir:
        rows.append(("WALS ({})".format(args.model_dir), evaluate_model(args.model_dir, args.data_dir, args.k)))
    rows.append(("most popular", evaluate_factors(*popularity_factors(train, nusers, nitems), train, test, nusers,
                                                  args.k)))
    if args.implicit:
        rows.append(("implicit ALS", evaluate_factors(*implicit_als(train, nusers, nitems), train, test, nusers,
                                                      args.k)))
    print("{} held-out interactions of {} users; k = {}".format(len(test), test["userId"].nunique(), args.k))
    print(format_table(rows, args.k))


if __name__ == "__main__":
    run_cli(main)
