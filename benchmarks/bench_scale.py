"""How walsmf scales: seconds and peak memory of every stage at 1x, 10x, 30x and 100x the lab's data.

    .venv/bin/python benchmarks/bench_scale.py [--scales 1 10 30 100] [--workdir DIR] [--beam_max_scale 1]

Each stage runs in its own process, so its peak RSS is its own: generate the
sample, extract (DuckDB), preprocess in-process (extract included) and with
Beam's DirectRunner, one training sweep (the lab's 10 factors, batch 16,384),
batch prediction of every user's top 3 (above 10x: timed on the first
``--predict_users`` and projected), and the export (seconds to export;
saved_model.pb size, assets size, load seconds).  The data's shape: ``walsmf.sample`` grows
visitors with the scale and articles with its square root (a news site's
catalogue grows more slowly than its readers).  Beam's DirectRunner is
slow by design (it checks the model, in one process); past
``--beam_max_scale`` its row says so instead of running for hours.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

STAGES = ("generate", "extract", "preprocess", "beam", "sweep", "batch_predict", "export")


def peak_rss_gb():
    """This process's peak resident memory (children included: DuckDB and Beam run in it)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024 ** 2


def run_stage(stage, scale, workdir, predict_users=None):
    """Run one stage at ``scale`` in this process; return its figures."""
    sample = os.path.join(workdir, "sample.parquet")
    data_dir, model_dir = os.path.join(workdir, "data"), os.path.join(workdir, "model")
    start = time.perf_counter()
    out = {}
    if stage == "generate":
        from walsmf.sample import write_sample
        write_sample(sample, scale=scale, seed=0)
    elif stage == "extract":
        from walsmf.extract import extract
        out["rows"] = len(extract(sessions_file=sample))
    elif stage == "preprocess":
        from walsmf.preprocess import main
        main(["--sessions_file", sample, "--data_dir", data_dir])
    elif stage == "beam":
        from walsmf.preprocess import main
        main(["--sessions_file", sample, "--data_dir", os.path.join(workdir, "beam"), "--runner", "DirectRunner"])
    elif stage == "sweep":
        import tensorflow as tf

        from walsmf import model, settings, trainer
        tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
        args = trainer.resolve(settings.make(input_path=data_dir, output_dir=model_dir, batch_size=16384, seed=0))
        shutil.rmtree(model_dir, ignore_errors=True)
        model.fit(args, model.steps_per_sweep(args))
    elif stage == "batch_predict" and predict_users and scale > 10:
        # every user's top 3 of 8.3 M users x 57 k items takes tens of minutes on 2 cores: time the
        # first ``predict_users`` and project (the work per user is the same for every user)
        from walsmf import recommend
        u, v = recommend.load_factors(model_dir, "row"), recommend.load_factors(model_dir, "col")
        for _ in recommend.top_k_blocks(u, v, 3, users=np.arange(min(predict_users, len(u)))):
            pass
        measured = time.perf_counter() - start
        out.update(users=min(predict_users, len(u)), of_users=len(u), measured_s=measured,
                   seconds=measured * len(u) / min(predict_users, len(u)))
    elif stage == "batch_predict":
        from walsmf import recommend, settings, trainer
        args = trainer.resolve(settings.make(input_path=data_dir, output_dir=model_dir))
        out["users"] = recommend.batch_predict(args, log=lambda _: None)
    elif stage == "export":
        import tensorflow as tf
        from tensorflow.contrib import predictor

        from walsmf import model, serving, settings, trainer
        tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
        args = trainer.resolve(settings.make(input_path=data_dir, output_dir=model_dir, batch_size=16384, seed=0))
        _, col_weights = model.prepare_training(args)
        export = model.build_estimator(args, col_weights).export_savedmodel(
            os.path.join(model_dir, "export"), serving.create_serving_input_fn(args)).decode()
        out["seconds"] = time.perf_counter() - start
        out["pb_mb"] = os.path.getsize(os.path.join(export, "saved_model.pb")) / 1e6
        out["assets_mb"] = sum(os.path.getsize(os.path.join(export, "assets", name))
                               for name in os.listdir(os.path.join(export, "assets"))) / 1e6
        start = time.perf_counter()
        predictor.from_saved_model(export)
        out["load_s"] = time.perf_counter() - start
    out.setdefault("seconds", time.perf_counter() - start)
    out["peak_gb"] = peak_rss_gb()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 10, 30, 100])
    parser.add_argument("--workdir", help="keep data here (default: a temporary directory per scale)")
    parser.add_argument("--beam_max_scale", type=float, default=1.0,
                        help="largest scale to run Beam's DirectRunner at")
    parser.add_argument("--predict_users", type=int, default=1000000,
                        help="above 10x, time batch prediction on this many users and project it to all "
                             "(its 'seconds' is then the projection; 0: predict for every user)")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.scale, args.workdir, args.predict_users)))
        return
    print("{:>5}  {:<14}{:>9}{:>9}   {}".format("scale", "stage", "seconds", "peak_GB", "figures"), flush=True)
    for scale in args.scales:
        workdir = os.path.join(args.workdir, "scale{:g}".format(scale)) if args.workdir else \
            tempfile.mkdtemp(prefix="walsmf-scale-")
        os.makedirs(workdir, exist_ok=True)
        for stage in STAGES:
            if stage == "beam" and scale > args.beam_max_scale:
                print("{:>5g}  {:<14}{:>9}{:>9}   not run: DirectRunner past --beam_max_scale {:g} "
                      "(use DataflowRunner)".format(scale, stage, "-", "-", args.beam_max_scale), flush=True)
                continue
            result = subprocess.run([sys.executable, __file__, "--stage", stage, "--scale", str(scale),
                                     "--workdir", workdir, "--predict_users", str(args.predict_users)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    universal_newlines=True)
            if result.returncode != 0:
                last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
                print("{:>5g}  {:<14}{:>9}{:>9}   failed: {}".format(scale, stage, "-", "-", last), flush=True)
                break
            figures = json.loads(result.stdout.strip().splitlines()[-1])
            seconds, peak = figures.pop("seconds"), figures.pop("peak_gb")
            print("{:>5g}  {:<14}{:>9.1f}{:>9.2f}   {}".format(
                scale, stage, seconds, peak, " ".join("{}={:.3g}".format(k, v) if isinstance(v, float) else
                                                       "{}={}".format(k, v) for k, v in figures.items())),
                flush=True)
        if not args.workdir:
            shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
