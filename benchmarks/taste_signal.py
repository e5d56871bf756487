"""How much of a news stream's topical taste its reads let a model learn: for each visitor, how well a score ranks
the articles of their topic above the others (AUC: 0.5 is chance, 1 every article of their topic first).

    .venv/bin/python benchmarks/taste_signal.py [--seed 0] [--days 4] [--visitors 5000] [--params_file P.json]

The stream is news_stream.py's (a visitor reads articles of their topic 6× as often as any other); all its reads
are preprocessed and walsmf.task trains on them.  Scores, each with an article's mean over visitors taken off
(the taste, not the popularity, that the popularity blend adds anyway):

* walsmf: the trained factors' x_u·y_i;
* co-reads: Σ over the visitor's articles j of co-readers(i, j)/√(readers(i)·readers(j));
* true topics: the posterior of the visitor's topic from the topics of what they read (which no model is given),
  the ceiling of what their reads say.

Each AUC over every article, and over the articles published in the stream's last 24 hours (the newest a refresh
adds: the taste that can lift a fresh recommendation above the most read).
"""
import argparse
import os
import sys
import tempfile

import numpy as np
import pandas as pd
from scipy import sparse, stats

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from news_stream import DAY_MS, news_site, news_stream  # noqa: E402 (a sibling script)

from walsmf import datadir, model, modeldir, preprocess, settings  # noqa: E402
from walsmf.errors import json_object  # noqa: E402

TASTE = 6.0  # news_stream's weight of a visitor's own topic
EVERY_NTH_VISITOR = 5  # visitors scored (the AUC is a mean over them)


def auc(scores, own_topic):
    """The mean over visitors (rows) of the AUC of ``scores`` ranking ``own_topic``'s True articles first."""
    out = []
    for row, positive in zip(scores, own_topic):
        ranks, n1 = stats.rankdata(row), positive.sum()
        if 0 < n1 < len(row):
            out.append((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * (len(row) - n1)))
    return float(np.mean(out)), float(np.std(out) / np.sqrt(len(out)))


def taste_only(scores):
    """``scores`` less each article's mean over the visitors."""
    return scores - scores.mean(axis=0, keepdims=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--visitors", type=int, default=5000)
    parser.add_argument("--params_file", help="walsmf.task settings (JSON) over the lab's")
    args = parser.parse_args()
    params = {}
    if args.params_file:
        with open(args.params_file) as f:
            params = json_object(f.read(), args.params_file, "give a JSON object of settings")
    site = news_site(np.random.default_rng(args.seed), args.days, args.visitors)
    reads = news_stream(args.days, args.visitors, seed=args.seed)
    with tempfile.TemporaryDirectory() as work:
        data_dir = os.path.join(work, "data")
        preprocess.write_data_dir(reads, data_dir, log=lambda _: None)
        metadata = datadir.read_metadata(data_dir)
        trained = settings.make(**dict(dict(seed=0), **params, input_path=data_dir, output_dir=os.path.join(
            work, "model"), nusers=metadata["nusers"], nitems=metadata["nitems"]))
        model.train_and_evaluate(trained)
        factors = modeldir.trained_factors(trained.output_dir)
        visitors = datadir.read_id_map(os.path.join(data_dir, datadir.USERS_FILE))
        contents = datadir.read_id_map(os.path.join(data_dir, datadir.ITEMS_FILE))
        mapped = pd.read_csv(os.path.join(data_dir, datadir.MAPPED_FILE), header=None, names=["user", "item", "r"])
    user_topic = site.taste[[int(v[1:]) for v in visitors]]
    item_topic = site.article_topic[[int(c[1:]) for c in contents]]
    scored = np.arange(0, len(visitors), EVERY_NTH_VISITOR)
    own = user_topic[scored, None] == item_topic[None, :]
    read = sparse.csr_matrix((np.ones(len(mapped)), (mapped["user"], mapped["item"])),
                             shape=(len(visitors), len(contents)))
    co_reads = (read.T @ read).toarray()
    np.fill_diagonal(co_reads, 0)
    readers = np.asarray(read.sum(axis=0)).ravel()
    cosine = co_reads / np.sqrt(np.maximum(np.outer(readers, readers), 1))
    topic_reads = np.zeros((len(visitors), item_topic.max() + 1))
    np.add.at(topic_reads, (mapped["user"].values, item_topic[mapped["item"].values]), 1)
    posterior = TASTE ** topic_reads
    posterior /= posterior.sum(axis=1, keepdims=True)
    rows = {"walsmf": taste_only(factors.rows[scored] @ factors.cols.T),
            "co-reads": taste_only(np.asarray(read[scored] @ cosine)),
            "true topics": posterior[scored][:, item_topic]}
    print("seed {}: {:,} reads by {:,} visitors ({:.1f} each) of {:,} articles; AUC over {:,} visitors".format(
        args.seed, len(mapped), len(visitors), len(mapped) / len(visitors), len(contents), len(scored)))
    published = site.published[[int(c[1:]) for c in contents]]
    last_day = published >= published.max() - DAY_MS
    for name, scores in rows.items():
        print("  {:<12} AUC {:.3f} ± {:.3f}; among the last 24 hours' {:,} articles {:.3f} ± {:.3f}".format(
            name, *auc(scores, own), last_day.sum(), *auc(scores[:, last_day], own[:, last_day])))


if __name__ == "__main__":
    main()
