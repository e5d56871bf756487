"""walsmf.refresh of one hour's reads beside a full retrain of the same data, at each scale of the sample.

    .venv/bin/python benchmarks/bench_refresh.py [--scales 1 10] [--workdir DIR]

At each scale: the embedded sample (three days of reads) is generated and
preprocessed, and walsmf.task trains on it (the lab's settings, 5 epochs);
then one hour's reads (1/72 of the sample's reads: a fifth by new visitors,
a tenth on new articles, the rest known visitors reading known articles as
often as they are read) are refreshed into the model, and walsmf.task
retrains the grown data from scratch.  Each command runs in its own process:
its seconds, peak memory and its stages; then the refresh's time over the
retrain's, and two floors no refresh that stages its data directory beside the
old one and swaps it in can go below: copying that directory whole (cp -r) and
scoring the hour's visitors against every article (no top-k).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_scale import TASK_PARTS, timed_command  # noqa: E402 (a sibling script)

from walsmf import datadir, modeldir  # noqa: E402

REFRESH_PARTS = (("read", " new reads\n"), ("check", "checked"), ("merge", "merged:"), ("fold-in", "folded in"),
                 ("checkpoint+export", "checkpoint and export"), ("batch_predict", "batch prediction of"))
SAMPLE_HOURS = 72


def hour_of_reads(data_dir, path, seed=0):
    """Write one hour's reads of ``data_dir``'s site (see the module's docstring) as an extracted CSV."""
    rng = np.random.default_rng(seed)
    metadata = datadir.read_metadata(data_dir)
    visitors = datadir.read_id_map(os.path.join(data_dir, datadir.USERS_FILE))
    contents = datadir.read_id_map(os.path.join(data_dir, datadir.ITEMS_FILE))
    readers = datadir.read_interactions(data_dir, metadata["nusers"], metadata["nitems"]).by_item.counts
    n = max(10, metadata["interactions"] // SAMPLE_HOURS)
    new_visitors, new_articles = max(2, n // 10), max(3, metadata["nitems"] // 300)
    kind = rng.choice(3, n, p=[0.2, 0.1, 0.7])
    visitor = np.where(kind == 0, ["bench-visitor-{}".format(i) for i in rng.integers(0, new_visitors, n)],
                       visitors[rng.integers(0, len(visitors), n)])
    content = np.where(kind == 1, ["bench-article-{}".format(i) for i in rng.integers(0, new_articles, n)],
                       contents[rng.choice(len(contents), n, p=readers / readers.sum())])
    times = pd.read_csv(os.path.join(data_dir, datadir.TIMES_FILE))["time"]
    pd.DataFrame({"visitorId": visitor, "contentId": content,
                  "session_duration": np.maximum(1, rng.lognormal(np.log(metadata["median_duration_ms"]), 1, n)
                                                 ).astype(np.int64),
                  "read_time": int(times.max()) + np.sort(rng.integers(0, 3600 * 1000, n))}).to_csv(path, index=False)
    return n


def show(scale, name, figures, parts):
    """One row: the command's seconds and peak memory, then its parts."""
    seconds, gb, timed, _ = figures
    print("{:>5g}  {:<22}{:>9.1f}{:>9.2f}   {}".format(scale, name, seconds, gb, " ".join(
        "{}={:.1f}s".format(part, timed[part]) for part, _ in parts if part in timed)), flush=True)


def run_scale(scale, workdir):
    """Prepare, train, refresh an hour and retrain at ``scale`` in ``workdir``; print each command's row."""
    sample, data_dir = os.path.join(workdir, "sample.parquet"), os.path.join(workdir, "data")
    model_dir, retrained = os.path.join(workdir, "model"), os.path.join(workdir, "retrained")
    for command in (["walsmf.sample", "--scale", str(scale), "--output", sample],
                    ["walsmf.preprocess", "--sessions_file", sample, "--data_dir", data_dir],
                    ["walsmf.task", "--input_path", data_dir, "--output_dir", model_dir, "--seed", "0"]):
        timed_command([sys.executable, "-m"] + command, ())
    reads = os.path.join(workdir, "hour.csv")
    n = hour_of_reads(data_dir, reads)
    refreshed = timed_command([sys.executable, "-m", "walsmf.refresh", "--model_dir", model_dir, "--extracted_csv",
                               reads], REFRESH_PARTS)
    show(scale, "refresh ({:,} reads)".format(n), refreshed, REFRESH_PARTS)
    retrain = timed_command([sys.executable, "-m", "walsmf.task", "--input_path", data_dir, "--output_dir",
                             retrained, "--seed", "0"], TASK_PARTS)
    show(scale, "full retrain", retrain, TASK_PARTS)
    print("{:>5g}  refresh / full retrain = {:.3f}".format(scale, refreshed[0] / retrain[0]), flush=True)
    visitors = pd.read_csv(reads, usecols=["visitorId"], dtype=str)["visitorId"].nunique()
    copied, scored = floors(data_dir, model_dir, visitors)
    print("{:>5g}  floors of a staged refresh: cp -r of the data directory {:.1f}s, scoring its {:,} visitors "
          "against every article {:.1f}s; a tenth of the retrain {:.1f}s".format(scale, copied, visitors, scored,
                                                                                   retrain[0] / 10), flush=True)


def floors(data_dir, model_dir, visitors):
    """(seconds to copy ``data_dir`` whole beside itself with cp -r, seconds to score ``visitors`` of
    ``model_dir``'s visitors against every article: float32 products in blocks, no top-k)."""
    copy = tempfile.mkdtemp(prefix="floor-copy-", dir=os.path.dirname(data_dir))  # on the data's disk
    try:
        start = time.perf_counter()
        subprocess.run(["cp", "-r", data_dir, os.path.join(copy, "data")], check=True)
        copied = time.perf_counter() - start
    finally:
        shutil.rmtree(copy)
    factors = modeldir.trained_factors(model_dir, modeldir.recorded_checkpoint(model_dir))
    rows = factors.rows[np.random.default_rng(0).choice(len(factors.rows), visitors)]
    start = time.perf_counter()
    for block in range(0, visitors, 2048):
        np.matmul(rows[block:block + 2048], factors.cols.T)
    return copied, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 10])
    parser.add_argument("--workdir", help="keep each scale's files under this directory (default: temporary)")
    args = parser.parse_args()
    print("scale  command                 seconds  peak GB   parts", flush=True)
    for scale in args.scales:
        workdir = os.path.join(args.workdir, "scale{:g}".format(scale)) if args.workdir else tempfile.mkdtemp(
            prefix="walsmf-refresh-")
        os.makedirs(workdir, exist_ok=True)
        try:
            run_scale(scale, workdir)
        finally:
            if not args.workdir:
                shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
