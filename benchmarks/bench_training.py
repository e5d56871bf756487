"""What a user pays per extra sweep of ``python -m walsmf.task``, against implicit's ALS per extra iteration.

    .venv/bin/python benchmarks/bench_training.py [--data_dir data] [--short 5] [--long 65]

For each configuration (10 factors at batch 512, the lab's; 30 factors at
batch 16,384, the tuned preset's), two whole ``python -m walsmf.task`` runs
(seed 1) of ``--short`` and ``--long`` epochs: the difference of their
wall times over the sweeps between them is the cost of a sweep as a user
meets it, everything the Experiment does around the steps included
(evaluations, checkpoints); beside it the same of their training windows
(the ``[train]`` line to the ``[export]`` line: a run's start, which varies
by seconds here, left out); then a sweep's steps alone (model.fit), of
which reading the input alone, and what computing the loss on every step
(contrib's way) would add.  implicit's ALS at the same dimension on the
same matrix: (35 − 5 iterations) / 30.  Each time is the best of
``--repeats`` interleaved runs.  Prints one line per run, then the ratios
(whole runs' seconds per sweep over implicit's per iteration) side by side.
"""
import argparse
import collections
import os
import shutil
import sys
import tempfile
import time

import tensorflow as tf
from bench_scale import timed_command

from walsmf import baselines, inputs, model, settings, splits
from walsmf import sweeps as sweeps_module
from walsmf.datadir import METADATA_FILE, read_metadata

CONFIGURATIONS = ((10, 512), (30, 16384))
# A run's training window: from walsmf's [train] line to its [export] line (the final evaluation and the export,
# the same in both runs, included).
TRAINING_PARTS = (("start", r"^\[train\] "), ("training", r"^\[export\] "), ("end", None))
# implicit's fits whose difference is timed: as many iterations apart as walsmf.task's runs are sweeps apart
IMPLICIT_ITERATIONS = (5, 35)


class RunTimer(tf.estimator.SessionRunHook):
    """Wall seconds of the Estimator's runs (with every hook's work) from the ``first`` on."""

    def __init__(self, first=1):
        self.first, self.runs, self.seconds = first, 0, 0.0

    def before_run(self, run_context):
        self.runs += 1
        self.start = time.perf_counter()

    def after_run(self, run_context, run_values):
        if self.runs >= self.first:
            self.seconds += time.perf_counter() - self.start


def sweep_seconds(args, sweeps):
    """Seconds per sweep of model.fit's runs after two sweeps (the first parses the TFRecords into the input
    cache; the second's first step, ending that pass, took another second at lab size)."""
    per_sweep = model.steps_per_sweep(args)
    first = RunTimer()
    model.fit(args, 2 * per_sweep, hooks=[first])
    shutil.rmtree(args.output_dir)
    timer = RunTimer(first=first.runs + 1)
    model.fit(args, per_sweep * (2 + sweeps), hooks=[timer])
    shutil.rmtree(args.output_dir)
    return timer.seconds / sweeps


def input_seconds(args, sweeps):
    """Seconds per sweep of reading the merged batches a sweep's steps read, alone (after a first pass)."""
    with tf.Graph().as_default():
        features, _ = inputs.read_dataset(tf.estimator.ModeKeys.TRAIN, args)()
        reads = []
        for merged, n in ((inputs.MERGED_ROWS, args.nusers), (inputs.MERGED_COLS, args.nitems)):
            left = -(-n // args.batch_size)
            while left:
                batches = min(left, max(1, sweeps_module.MAX_STEP_IDS // args.batch_size))
                reads.append((features[merged], {features[inputs.MERGED_BATCHES]: batches}))
                left -= batches
        with tf.compat.v1.Session() as session:
            for _ in range(2):  # a first pass parses and fills the cache
                for read, feed in reads:
                    session.run(read, feed)
            start = time.perf_counter()
            for _ in range(sweeps):
                for read, feed in reads:
                    session.run(read, feed)
            return (time.perf_counter() - start) / sweeps


def step_breakdown(data_dir, meta, n_embeds, batch_size, workdir, sweeps=10):
    """A sweep's training steps without the Experiment: total, input, loss if computed every step (seconds)."""
    args = settings.make(input_path=data_dir, output_dir=os.path.join(workdir, "fit"), nusers=meta["nusers"],
                         nitems=meta["nitems"], n_embeds=n_embeds, batch_size=batch_size, seed=1)
    steps_s = sweep_seconds(args, sweeps)
    loss_every, sweeps_module.LOSS_EVERY_STEPS = sweeps_module.LOSS_EVERY_STEPS, 1
    try:
        loss_s = sweep_seconds(args, sweeps) - steps_s
    finally:
        sweeps_module.LOSS_EVERY_STEPS = loss_every
    return steps_s, input_seconds(args, sweeps), loss_s


def task_run(data_dir, epochs, n_embeds, batch_size, workdir):
    """Wall seconds of a whole walsmf.task run, of its training window (TRAINING_PARTS: TensorFlow's start and
    batch prediction left out), and its training steps."""
    output_dir = os.path.join(workdir, "wals-{}-{}-{}".format(n_embeds, batch_size, epochs))
    command = [sys.executable, "-m", "walsmf.task", "--input_path", data_dir, "--output_dir", output_dir,
               "--num_epochs", str(epochs), "--n_embeds", str(n_embeds), "--batch_size", str(batch_size),
               "--seed", "1"]
    seconds, _, parts, _ = timed_command(command, TRAINING_PARTS)
    steps = tf.train.load_variable(tf.train.latest_checkpoint(output_dir), "global_step")
    shutil.rmtree(output_dir)
    return seconds, parts["training"], int(steps)


def implicit_seconds(data_dir, meta, factors, iterations):
    """Wall seconds of implicit's ALS fit at ``factors`` for ``iterations`` on collab_mapped.csv."""
    train = splits.read_mapped(data_dir)
    start = time.perf_counter()
    baselines.implicit_als(train, meta["nusers"], meta["nitems"], factors=factors, iterations=iterations)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default="data", help="lab-sized data (make data); generated if missing")
    parser.add_argument("--short", type=int, default=5, help="epochs of the shorter run")
    parser.add_argument("--long", type=int, default=65, help="epochs of the longer run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of every run; the best counts")
    args = parser.parse_args()
    if not os.path.exists(os.path.join(args.data_dir, METADATA_FILE)):
        from walsmf.preprocess import main as preprocess
        preprocess(["--data_dir", args.data_dir])
    meta = read_metadata(args.data_dir)
    print("data: {nusers} users, {nitems} items, {interactions} interactions".format(**meta), flush=True)
    workdir = tempfile.mkdtemp(prefix="walsmf-bench-")
    # Before implicit has run in this process: its idle threads slowed model.fit's steps here by up to 1.5×.
    breakdowns = [step_breakdown(args.data_dir, meta, n_embeds, batch_size, workdir)
                  for n_embeds, batch_size in CONFIGURATIONS]
    rows = []
    for (n_embeds, batch_size), (steps_s, input_s, loss_s) in zip(CONFIGURATIONS, breakdowns):
        steps = {}
        per_sweep = model.steps_per_sweep(settings.make(nusers=meta["nusers"], nitems=meta["nitems"],
                                                        batch_size=batch_size))
        # Interleaved repeats, best of each: this machine's other load comes and goes.
        best = collections.defaultdict(lambda: float("inf"))
        for _ in range(args.repeats):
            for epochs in (args.short, args.long):
                seconds, training, steps[epochs] = task_run(args.data_dir, epochs, n_embeds, batch_size, workdir)
                best[epochs] = min(best[epochs], seconds)
                best["training", epochs] = min(best["training", epochs], training)
            for iterations in IMPLICIT_ITERATIONS:
                best["implicit", iterations] = min(best["implicit", iterations],
                                                   implicit_seconds(args.data_dir, meta, n_embeds, iterations))
        sweeps_between = (steps[args.long] - steps[args.short]) / per_sweep
        sweep_s = (best["training", args.long] - best["training", args.short]) / sweeps_between
        whole_run_s = (best[args.long] - best[args.short]) / sweeps_between
        fewer, more = IMPLICIT_ITERATIONS
        implicit_s = (best["implicit", more] - best["implicit", fewer]) / (more - fewer)
        print("walsmf.task {} factors, batch {}: {} epochs {:.1f} s, training {:.1f} s ({} steps); {} epochs {:.1f} s, "
              "training {:.1f} s ({} steps); {:.3f} s per extra sweep of whole runs ({:.3f} s of training "
              "windows)".format(n_embeds, batch_size, args.short, best[args.short], best["training", args.short],
                                steps[args.short], args.long, best[args.long], best["training", args.long],
                                steps[args.long], whole_run_s, sweep_s), flush=True)
        print("  a sweep's training steps alone (model.fit, in this process: timed apart, not a part of the above) "
              "{:.3f} s = input {:.3f} s + solve, bookkeeping and hooks {:.3f} s (the loss on every step would add "
              "{:.3f} s)".format(steps_s, input_s, steps_s - input_s, loss_s), flush=True)
        print("implicit ALS {} factors: {:.3f} s per extra iteration".format(n_embeds, implicit_s), flush=True)
        rows.append((n_embeds, batch_size, whole_run_s, sweep_s, implicit_s))
    shutil.rmtree(workdir)
    print("factors  batch  walsmf s/sweep, whole runs (training windows)  implicit s/iteration  ratio")
    for n_embeds, batch_size, whole_run_s, sweep_s, implicit_s in rows:
        print("{:7d}  {:5d}  {:14.3f} ({:.3f})  {:35.3f}  {:5.2f}".format(n_embeds, batch_size, whole_run_s, sweep_s,
                                                                         implicit_s, whole_run_s / implicit_s))


if __name__ == "__main__":
    sys.exit(main())
