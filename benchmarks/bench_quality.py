"""walsmf against baselines, side by side: quality and speed, measured in one run.

    .venv/bin/python benchmarks/bench_quality.py [--scale 1] [--seeds 0 1 2]

On the embedded sample (lab size by default): a held-out split (seed 0),
then for the lab's WALS defaults, the tuned WALS (--preset tuned),
most-popular, and implicit's ALS (10 factors; its regularization and alpha
chosen on a validation split carved from the training part, and the same
at the tuned WALS's dimension): recall@10, NDCG@10, MAP@10 (mean and
spread max−min over the seeds of the factors' initialization), training
seconds, seconds per sweep (iteration), all-users top-10 seconds; and the
ratios tuned WALS / implicit ALS (at 10 factors and at the tuned dimension).
"""
import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from common import StepTimer, prepare
from walsmf import evaluate, model, settings, trainer
from walsmf.datadir import HELDOUT_FILE, read_metadata
from walsmf.errors import run_cli
from walsmf.recommend import load_factors, top_k_items

METRICS = ("recall", "ndcg", "map")
IMPLICIT_GRID = [(regularization, alpha) for regularization in (0.1, 1.0, 10.0) for alpha in (10.0, 40.0, 100.0)]


def split_data(split_dir):
    """(metadata, training rows, held-out rows) of a split directory."""
    return read_metadata(split_dir), evaluate.read_mapped(split_dir), evaluate.read_mapped(split_dir, HELDOUT_FILE)


def run_wals(split_dir, preset, seed, workdir):
    """Train walsmf with a task preset on the split; return metrics, timings and factors."""
    metadata, train, test = split_data(split_dir)
    output_dir = os.path.join(workdir, "wals-{}-{}".format(preset, seed))
    shutil.rmtree(output_dir, ignore_errors=True)
    args = trainer.resolve(settings.make(input_path=split_dir, output_dir=output_dir, preset=preset, seed=seed))
    steps = model.training_schedule(args)[0]
    per_sweep = model.steps_per_sweep(args)
    timer = StepTimer()
    start = time.perf_counter()
    model.fit(args, steps, hooks=[timer])
    train_s = time.perf_counter() - start
    u, v = load_factors(output_dir, "row"), load_factors(output_dir, "col")
    metrics = evaluate.evaluate_factors(u, v, train, test, metadata["nusers"])
    return dict(metrics, train_s=train_s, sweeps=steps / per_sweep,
                sweep_s=timer.seconds_per_step(min(per_sweep, steps // 2)) * per_sweep, u=u, v=v)


def run_implicit(split_dir, factors, regularization, alpha, seed, iterations):
    """implicit's ALS on the split; metrics and timings."""
    metadata, train, test = split_data(split_dir)
    start = time.perf_counter()
    u, v = evaluate.implicit_als(train, metadata["nusers"], metadata["nitems"], factors, regularization, alpha,
                                 iterations, seed)
    train_s = time.perf_counter() - start
    metrics = evaluate.evaluate_factors(u, v, train, test, metadata["nusers"])
    return dict(metrics, train_s=train_s, sweeps=iterations, sweep_s=train_s / iterations, u=u, v=v)


def best_implicit(val_dir, factors, iterations):
    """(regularization, alpha) of the grid with the best validation recall@10."""
    scored = [(run_implicit(val_dir, factors, reg, alpha, 0, iterations)["recall"], reg, alpha)
              for reg, alpha in IMPLICIT_GRID]
    return max(scored)[1:]


def top10_seconds(result):
    """All-users top-10 with walsmf's batch prediction, on a method's factors."""
    start = time.perf_counter()
    top_k_items(result["u"], result["v"], 10)
    return time.perf_counter() - start


def summarize(runs):
    """Mean and spread (max − min) of each metric and timing over the seeds' runs."""
    out = {}
    for key in METRICS + ("train_s", "sweep_s", "sweeps", "top10_s"):
        values = np.array([r[key] for r in runs])
        out[key], out[key + "_spread"] = float(values.mean()), float(values.max() - values.min())
    return out


def format_report(rows):
    """The benchmark's table."""
    header = ("{:<34}{:>17}{:>17}{:>17}{:>9}{:>8}{:>9}{:>9}".format(
        "method", "recall@10", "NDCG@10", "MAP@10", "train_s", "sweeps", "sweep_s", "top10_s"))
    lines = [header]
    for name, s in rows:
        cells = ["{:.4f} ±{:.4f}".format(s[m], s[m + "_spread"] / 2) for m in METRICS]
        lines.append("{:<34}{:>17}{:>17}{:>17}{:>9.2f}{:>8.1f}{:>9.3f}{:>9.2f}".format(
            name, *cells, s["train_s"], s["sweeps"], s["sweep_s"], s["top10_s"]))
    return "\n".join(lines)


def main(argv=None):
    """CLI: run every method on the same split and print one table."""
    parser = argparse.ArgumentParser(prog="benchmarks/bench_quality.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--scale", type=float, default=1.0, help="embedded sample size (1 = the lab's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="initialization seeds")
    parser.add_argument("--workdir", help="keep the data and models here (default: a temporary directory)")
    args = parser.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="walsmf-bench-")
    log = lambda message: print("  " + message, flush=True)
    print("[1/3] data at scale {:g} -> {}".format(args.scale, workdir), flush=True)
    prepare(workdir, args.scale, log)
    split, val = os.path.join(workdir, "split"), os.path.join(workdir, "val")
    tuned_dim = settings.PRESETS["tuned"]["n_embeds"]
    print("[2/3] implicit's regularization and alpha on the validation split", flush=True)
    iterations = 15
    choice = {f: best_implicit(val, f, iterations) for f in sorted({10, tuned_dim})}
    for f, (reg, alpha) in choice.items():
        log("{} factors: regularization {}, alpha {}".format(f, reg, alpha))
    print("[3/3] methods x seeds {}".format(args.seeds), flush=True)
    results = {}
    for seed in args.seeds:
        for name, run in (
                ("WALS, lab defaults", lambda: run_wals(split, "lab", seed, workdir)),
                ("WALS, --preset tuned", lambda: run_wals(split, "tuned", seed, workdir)),
                ("implicit ALS, 10 factors", lambda: run_implicit(split, 10, *choice[10], seed, iterations)),
                ("implicit ALS, {} factors".format(tuned_dim),
                 lambda: run_implicit(split, tuned_dim, *choice[tuned_dim], seed, iterations))):
            result = run()
            result["top10_s"] = top10_seconds(result)
            results.setdefault(name, []).append(result)
            log("seed {} {}: recall@10 {:.4f}".format(seed, name, result["recall"]))
    metadata, train, test = split_data(split)
    popularity = evaluate.evaluate_factors(*evaluate.popularity_factors(train, metadata["nusers"], metadata["nitems"]),
                                           train, test, metadata["nusers"])
    rows = [(name, summarize(runs)) for name, runs in results.items()]
    rows.insert(2, ("most popular", dict({m: popularity[m] for m in METRICS},
                                         **{k: 0.0 for k in ("train_s", "sweeps", "sweep_s", "top10_s")},
                                         **{m + "_spread": 0.0 for m in METRICS})))
    print("\n{} users, {} items; {} held-out interactions of {} users; ± is half the spread over seeds {}".format(
        metadata["nusers"], metadata["nitems"], len(test), test["userId"].nunique(), args.seeds))
    print(format_report(rows))
    table = dict(rows)
    tuned = table["WALS, --preset tuned"]
    for name in ("implicit ALS, 10 factors", "implicit ALS, {} factors".format(tuned_dim)):
        other = table[name]
        print("tuned WALS / {}: recall {:.2f}x, NDCG {:.2f}x, seconds per sweep {:.2f}x, training seconds "
              "{:.2f}x".format(name, tuned["recall"] / other["recall"], tuned["ndcg"] / other["ndcg"],
                               tuned["sweep_s"] / other["sweep_s"], tuned["train_s"] / other["train_s"]))
    if not args.workdir:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    run_cli(main)
