"""Ranking metrics of recommendations on held-out reads, and their report to tuning services.

Metrics at k (default 10), over held-out users only, each user's training
items left out of the ranking: precision, recall, MAP, NDCG, and catalogue
coverage (share of items recommended to anyone).
"""
import os

import numpy as np
import tensorflow as tf

from walsmf import datadir, modeldir
from walsmf.datadir import CSR, HELDOUT_FILE
from walsmf.errors import DataError
from walsmf.recency import data_popularity
from walsmf.recommend import load_factors, top_k_items
from walsmf.splits import read_mapped

METRIC_NAMES = ["precision", "recall", "map", "ndcg", "coverage"]
# The summary tag hyperparameter tuning reads (hptuning_config.yaml).
HPTUNING_TAG = "recall_at_10"


def by_user(rows, nusers):
    """userId,itemId,rating rows as a CSR by user over users 0..nusers−1."""
    return CSR.from_triples(rows["userId"].values, rows["itemId"].values, rows["rating"].values, nusers)


def ranking_metrics(top, users, test, nitems):
    """precision, recall, MAP, NDCG at k = top.shape[1], and catalogue coverage, for ``users``; with the
    standard errors of recall and NDCG (their per-user spread over √users)."""
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
    recall, ndcg = hits / n_held, (relevant * discount).sum(axis=1) / ideal
    return {
        "precision": float(np.mean(hits / k)),
        "recall": float(np.mean(recall)),
        "map": float(np.mean(average_precision)),
        "ndcg": float(np.mean(ndcg)),
        "coverage": float(len(np.unique(top)) / nitems),
        "recall_se": _standard_error(recall),
        "ndcg_se": _standard_error(ndcg),
    }


def _standard_error(per_user):
    """The standard error of a mean over users."""
    return float(np.std(per_user, ddof=1) / np.sqrt(len(per_user))) if len(per_user) > 1 else 0.0


def evaluate_factors(user_factors, item_factors, train, test, nusers, k=10, popularity_weights=(0.0,),
                     popularity=None):
    """Metrics at k of a factorization (score = user factor · item factor, plus β·log(1 + readers)) on the
    held-out users, at each β of ``popularity_weights``: one metrics dict, or a list of them for several.
    ``popularity``: the blend's counts, if not the training readers (recency.data_popularity).

    Every method is ranked alike: training items left out, a user without
    training reads gets the most read items, an item without one is not ranked.
    """
    users = np.unique(test["userId"].values)
    reads = datadir.interactions_of(train, nusers, item_factors.shape[0])
    answers = [ranking_metrics(top_k_items(user_factors, item_factors, k, seen=reads.by_user, users=users,
                                           reads=reads, popularity_weight=beta, popularity=popularity), users, test,
                               item_factors.shape[0])
               for beta in popularity_weights]
    return answers[0] if len(answers) == 1 else answers


def choose(results):
    """The index of the result the rule picks: the best NDCG@k among those within one standard error of the
    best recall@k (recall first, as the held-out reads are what a list must find; NDCG among the ties, as a
    site shows the top of the list first); the earliest of equals."""
    best = max(range(len(results)), key=lambda n: (results[n]["recall"], -n))
    floor = results[best]["recall"] - results[best]["recall_se"]
    tied = [n for n in range(len(results)) if results[n]["recall"] >= floor]
    return max(tied, key=lambda n: (results[n]["ndcg"], results[n]["recall"], -n))


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
    """Metrics at k of the WALS model in ``model_dir`` (with its popularity blend) on the held-out part of
    ``data_dir``."""
    train, test = read_mapped(data_dir), read_mapped(data_dir, HELDOUT_FILE)
    user_factors, item_factors = load_factors(model_dir, "row"), load_factors(model_dir, "col")
    if user_factors.shape[0] != datadir.data_counts(data_dir)["nusers"] or \
            item_factors.shape[0] != datadir.data_counts(data_dir)["nitems"]:
        raise DataError("{} is a model of {} users x {} items, and {} a split of {} x {}: score a model trained on "
                        "this split".format(model_dir, user_factors.shape[0], item_factors.shape[0], data_dir,
                                            *datadir.data_counts(data_dir).values()))
    check_trained_on(model_dir, data_dir)
    info = modeldir.serving_info(model_dir)
    popularity = data_popularity(data_dir, item_factors.shape[0], info.get("popularity_days"),
                                 bool(info.get("popularity_rate")))
    return evaluate_factors(user_factors, item_factors, train, test, user_factors.shape[0], k,
                            (float(info.get("popularity_weight", 0.0)),), popularity)


def check_trained_on(model_dir, data_dir):
    """Refuse to score a model on a split whose training reads are not the ones it was trained on: a model
    trained on the whole data (or another split) has seen held-out reads, and its scores would flatter it."""
    trained = modeldir.training_record(model_dir).get("reads_fingerprint")
    if trained is None:  # a model from before walsmf recorded its reads: nothing to compare
        return
    counts = datadir.data_counts(data_dir)
    if trained != datadir.reads_fingerprint(datadir.read_interactions(data_dir, counts["nusers"], counts["nitems"])):
        raise DataError("{} was trained on {}, not on the training reads of the split {}: it may have seen the "
                        "held-out reads; train on the split (python -m walsmf.task --input_path {}) and score that "
                        "model".format(model_dir, modeldir.training_record(model_dir).get("data_dir"), data_dir,
                                       data_dir))


def format_table(rows, k):
    """Rows of (name, metrics) as a fixed-width table, with the standard errors of recall and NDCG."""
    columns = METRIC_NAMES + ["recall_se", "ndcg_se"]
    names = {"coverage": "coverage", "recall_se": "±recall", "ndcg_se": "±ndcg"}
    header = "{:<28}".format("method") + "".join("{:>12}".format(names.get(m, "{}@{}".format(m, k)))
                                                 for m in columns)
    lines = [header] + ["{:<28}".format(name) + "".join("{:12.4f}".format(metrics[m]) for m in columns)
                        for name, metrics in rows]
    return "\n".join(lines)
