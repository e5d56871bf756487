"""walsmf tuned by walsmf.tune against implicit's ALS tuned by a grid, on the embedded sample and on data
shaped unlike it.

    .venv/bin/python benchmarks/bench_quality.py [--datasets sample dense head-heavy long-tail heavy-readers]
                                                 [--ratings_csv movielens.csv] [--max_trials 12] [--seeds 0]

For each data set (the embedded sample at lab size; the generated shapes of
benchmarks/shapes.py; a public ratings file, its ratings ≥ 4 as reads — docs/quality.md
says where to get MovieLens without a download): a test split (one read held out per user with at
least three, walsmf.evaluate's split, seed 0: a random read, or the user's latest where the ratings
file has a timestamp column); on its training part, the
validation split walsmf.tune carves (the same function and seed), on which
walsmf.tune searches walsmf.task's settings and a grid searches implicit's
(factors x regularization x alpha).  Then each method trains on the whole
training part with its chosen settings and ranks the test reads (items read
in training left out): recall, NDCG and MAP at 10, training seconds.  Also
the lab's settings and the most popular items.  Prints a line per stage and
trial, then one table.
"""
import argparse
import itertools
import json
import os
import shutil
import tempfile
import time

import pandas as pd
from shapes import SHAPES, generate, generate_news

from walsmf import baselines, metrics, splits, tune
from walsmf.datadir import HELDOUT_FILE, read_metadata
from walsmf.errors import run_cli
from walsmf.extract import extract
from walsmf.preprocess import write_data_dir
from walsmf.sample import write_sample

METRICS = ("recall", "ndcg", "map", "recall_se", "ndcg_se")
IMPLICIT_GRID = list(itertools.product((10, 20, 40), (0.1, 1.0, 10.0), (10.0, 40.0, 100.0)))
IMPLICIT_ITERATIONS = 15
# A data set's read times, where it has them: its test split then holds out each user's latest read.
TIMES_FILE = "times.csv"


def split_data(split_dir):
    """(metadata, training rows, held-out rows) of a split directory."""
    return read_metadata(split_dir), splits.read_mapped(split_dir), splits.read_mapped(split_dir, HELDOUT_FILE)


def rated_reads(ratings_csv, min_rating=4.0):
    """Extracted rows of a public ratings file (userId, movieId or itemId, rating[, timestamp]): each rating
    of at least ``min_rating`` a read, its rating standing in for the session duration; and the reads'
    times (visitorId, contentId, time) if the file has them, else None."""
    ratings = pd.read_csv(ratings_csv)
    item = "movieId" if "movieId" in ratings.columns else "itemId"
    reads = ratings[ratings["rating"] >= min_rating]
    rows = pd.DataFrame({"visitorId": reads["userId"].map("u{}".format), "contentId": reads[item].map("m{}".format),
                         "session_duration": reads["rating"]})
    times = rows[["visitorId", "contentId"]].assign(time=reads["timestamp"]) if "timestamp" in reads else None
    return rows, times


def write_dataset(name, directory, scale, log, ratings_csv=None):
    """The data directory of a data set: the embedded sample (``sample``), a SHAPES entry at ``scale``, or
    the reads of ``ratings_csv`` (``ratings``, and TIMES_FILE beside it where the file has times)."""
    if name == "sample":
        rows = extract(sessions_file=write_sample(os.path.join(directory, "sample.parquet"), scale=scale, seed=0))
    elif name == "news":
        rows = generate_news(seed=0, scale=scale)  # with read_time: the data directory gets times.csv
    elif name == "ratings":
        rows, times = rated_reads(ratings_csv)
        if times is not None:
            os.makedirs(directory, exist_ok=True)
            times.to_csv(os.path.join(directory, TIMES_FILE), index=False)
    else:
        rows = generate(name, seed=0, scale=scale)
    return write_data_dir(rows, os.path.join(directory, "data"), log=log)


def run_wals(split_dir, params, seed, workdir):
    """walsmf trained on the split's training part with ``params`` (flag: value), as a walsmf.tune trial is."""
    result = tune.run_trial(split_dir, params, read_metadata(split_dir), seed, workdir)
    return dict(result, train_s=result["train_seconds"])


def run_implicit(split_dir, factors, regularization, alpha, seed):
    """implicit's ALS on the split's training part; metrics, seconds."""
    metadata, train, test = split_data(split_dir)
    start = time.perf_counter()
    u, v = baselines.implicit_als(train, metadata["nusers"], metadata["nitems"], factors, regularization, alpha,
                                 IMPLICIT_ITERATIONS, seed)
    seconds = time.perf_counter() - start
    return dict(metrics.evaluate_factors(u, v, train, test, metadata["nusers"]), train_s=seconds)


def best_implicit(val_dir, log):
    """(factors, regularization, alpha) of IMPLICIT_GRID chosen on the validation split by walsmf.tune's rule
    (metrics.choose: the best NDCG@10 within one standard error of the best recall@10)."""
    results = [run_implicit(val_dir, *point, seed=0) for point in IMPLICIT_GRID]
    chosen = metrics.choose(results)
    log("implicit grid ({} points): chose factors={} regularization={} alpha={} (validation recall@10 {:.4f}, "
        "NDCG@10 {:.4f})".format(len(IMPLICIT_GRID), *IMPLICIT_GRID[chosen], results[chosen]["recall"],
                                 results[chosen]["ndcg"]))
    return IMPLICIT_GRID[chosen]


def mean(results):
    """Each metric and the training seconds averaged over the seeds' results."""
    return {key: sum(r[key] for r in results) / len(results) for key in METRICS + ("train_s",)}


def benchmark(name, workdir, scale, max_trials, seeds, ratings_csv=None):
    """Rows (method, metrics) of one data set."""
    def log(message):
        return print("  [{}] {}".format(name, message), flush=True)
    directory = os.path.join(workdir, name)
    metadata = write_dataset(name, directory, scale, log, ratings_csv)
    split = os.path.join(directory, "split")
    times = os.path.join(directory, TIMES_FILE)
    splits.write_split(os.path.join(directory, "data"), split, seed=0, log=log,
                         times_csv=times if os.path.exists(times) else None)
    trials = tune.tune(split, os.path.join(directory, "tune"), max_trials=max_trials, seed=0, log=log)
    with open(os.path.join(directory, "tune", tune.BEST_PARAMS_FILE)) as f:
        params = json.load(f)
    val = os.path.join(directory, "val")
    tune.write_validation_split(split, val, seed=0, log=lambda _: None)  # the split walsmf.tune searched on
    implicit_point = best_implicit(val, log)
    _, train, test = split_data(split)
    def score(factors, fit=train, check=test):
        return metrics.evaluate_factors(*factors, fit, check, metadata["nusers"])
    popular = score(baselines.popularity_factors(train, metadata["nusers"], metadata["nitems"]))
    rows = [
        ("walsmf tuned ({} trials)".format(len(trials)), mean([run_wals(split, params, s, directory) for s in seeds])),
        ("walsmf, lab settings", mean([run_wals(split, {"popularity_weight": 0.0}, s, directory) for s in seeds])),
        ("implicit ALS, grid-tuned ({}f)".format(implicit_point[0]),
         mean([run_implicit(split, *implicit_point, seed=s) for s in seeds])),
        ("most popular", dict(popular, train_s=0.0)),
    ]
    if splits.has_times(split):
        factors, days = baselines.most_read_recently_of(split, train, metadata["nusers"], metadata["nitems"])
        rows.append(("most read, last {}".format("{} days".format(days) if days else "period"),
                     dict(score(factors), train_s=0.0)))
    for method, result in rows:
        log("{}: recall@10 {:.4f}, NDCG@10 {:.4f}".format(method, result["recall"], result["ndcg"]))
    log("walsmf.tune chose: {}".format(json.dumps(params, sort_keys=True)))
    summary = "{} users, {} items, {} reads".format(metadata["nusers"], metadata["nitems"], metadata["interactions"])
    return summary, rows


def verdict(ours, theirs, metric):
    """"ahead", "behind", or "tie" where the two are within one standard error (the larger of the two)."""
    margin = max(ours[metric + "_se"], theirs[metric + "_se"])
    difference = ours[metric] - theirs[metric]
    return "tie" if abs(difference) <= margin else ("ahead" if difference > 0 else "behind")


def main(argv=None):
    """CLI: every data set, every method, one table."""
    parser = argparse.ArgumentParser(prog="benchmarks/bench_quality.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--datasets", nargs="+", default=["sample"] + sorted(SHAPES) + ["news"],
                        choices=["sample"] + sorted(SHAPES) + ["news", "ratings"])
    parser.add_argument("--ratings_csv", help="a public ratings file (userId,movieId,rating,...; e.g. MovieLens): "
                                              "adds the data set 'ratings', its ratings of 4 and more as reads")
    parser.add_argument("--scale", type=float, default=1.0, help="size of every data set (1 = as SHAPES says, the "
                                                                    "sample at the lab's size)")
    parser.add_argument("--max_trials", type=int, default=12, help="walsmf.tune's trials per data set")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="initialization seeds of the final runs")
    parser.add_argument("--workdir", help="keep the data and models here (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.ratings_csv and "ratings" not in args.datasets:
        args.datasets.append("ratings")
    if "ratings" in args.datasets and not args.ratings_csv:
        parser.error("the data set 'ratings' needs --ratings_csv FILE (docs/quality.md says where to get "
                     "MovieLens)")
    workdir = args.workdir or tempfile.mkdtemp(prefix="walsmf-bench-")
    tables = []
    for number, name in enumerate(args.datasets, 1):
        print("[{}/{}] {}".format(number, len(args.datasets), name), flush=True)
        tables.append((name,) + benchmark(name, workdir, args.scale, args.max_trials, args.seeds, args.ratings_csv))
    print("\n| data set | method | recall@10 ± se | NDCG@10 ± se | MAP@10 | train s |\n|---|---|---|---|---|---|")
    for name, summary, rows in tables:
        for method, r in rows:
            print("| {} ({}) | {} | {:.4f} ± {:.4f} | {:.4f} ± {:.4f} | {:.4f} | {:.1f} |".format(
                name, summary, method, r["recall"], r["recall_se"], r["ndcg"], r["ndcg_se"], r["map"], r["train_s"]))
    for name, _, rows in tables:
        ours = next(r for m, r in rows if m.startswith("walsmf tuned"))
        for method, theirs in rows[2:]:
            print("{}: walsmf tuned / {}: recall@10 {:.2f}x ({}), NDCG@10 {:.2f}x ({})".format(
                name, method, ours["recall"] / theirs["recall"], verdict(ours, theirs, "recall"),
                ours["ndcg"] / theirs["ndcg"], verdict(ours, theirs, "ndcg")))
    if not args.workdir:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    run_cli(main)
