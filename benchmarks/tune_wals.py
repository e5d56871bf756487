"""The search behind `--preset tuned`: WALS settings scored on a validation split.

    .venv/bin/python benchmarks/tune_wals.py [--scale 1] [--workdir DIR]

Holds out a test split (seed 0, never looked at here) and a validation split
of its training part (seed 1); trains WALS for each setting of the grid on
the validation split's training part and prints recall@10, NDCG@10 and
coverage, best first.  About 15 minutes at lab size on 2 cores.
"""
import argparse
import itertools
import os
import shutil
import tempfile
import time

import tensorflow as tf

from common import prepare
from walsmf import evaluate, model, settings
from walsmf.datadir import HELDOUT_FILE, read_metadata
from walsmf.recommend import load_factors

GRID = {
    "target": ["rating", "read"],
    "unobserved_weight": [0.03, 0.1, 0.3],
    "regularization": [0.1, 1.0, 3.0],
    "col_weight_exp": [0.0, 0.5, 1.0],
    "n_embeds": [10, 30],
}
SWEEPS = 10
BATCH_SIZE = 16384


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--workdir", help="keep data and models here (default: a temporary directory)")
    args = parser.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="walsmf-tune-")
    prepare(workdir, args.scale, log=print)
    val = os.path.join(workdir, "val")
    metadata = read_metadata(val)
    train, test = evaluate.read_mapped(val), evaluate.read_mapped(val, HELDOUT_FILE)
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
    results = []
    for values in itertools.product(*GRID.values()):
        setting = dict(zip(GRID, values))
        output_dir = os.path.join(workdir, "model")
        shutil.rmtree(output_dir, ignore_errors=True)
        run = settings.make(input_path=val, output_dir=output_dir, nusers=metadata["nusers"],
                            nitems=metadata["nitems"], batch_size=BATCH_SIZE, seed=0, **setting)
        start = time.perf_counter()
        model.fit(run, SWEEPS * model.steps_per_sweep(run))
        seconds = time.perf_counter() - start
        metrics = evaluate.evaluate_factors(load_factors(output_dir, "row"), load_factors(output_dir, "col"), train,
                                            test, metadata["nusers"])
        results.append((metrics["recall"], metrics["ndcg"], metrics["coverage"], seconds, setting))
        print("recall@10 {:.4f} NDCG@10 {:.4f} coverage {:.3f} {:5.1f}s {}".format(*results[-1]), flush=True)
    print("\nbest first:")
    for row in sorted(results, key=lambda r: -r[0])[:10]:
        print("recall@10 {:.4f} NDCG@10 {:.4f} coverage {:.3f} {:5.1f}s {}".format(*row))
    if not args.workdir:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
