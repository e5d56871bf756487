"""How walsmf scales: seconds and peak memory of every stage at 1x, 10x, 30x and 100x the lab's data.

    .venv/bin/python benchmarks/bench_scale.py [--scales 1 10 30 100] [--workdir DIR] [--beam_max_scale 1]
    .venv/bin/python benchmarks/bench_scale.py --end_to_end --scales 100

With ``--end_to_end``, what a user runs instead, each command timed with its
peak memory: ``walsmf.sample``, ``walsmf.preprocess``, then ``walsmf.task``
for 16 epochs at batch 16,384 (its training, export and batch prediction of
every user, split at the lines it logs), and the sum.

Each stage runs in its own process, so its peak RSS is its own: generate the
sample, extract (DuckDB; beside its floor, DuckDB's scan of the page hits
alone), preprocess in-process (extract included; beside its floor, the data
directory's bytes written to disk) and with Beam's DirectRunner, one training
sweep (the lab's 10 factors, batch 16,384), batch prediction of every user's top 3 as walsmf.task runs it, read
articles kept and left out (beside implicit's recommend() in both modes on the same factors and the bare matrix
product of all the scores), and the export (seconds to export;
saved_model.pb size, assets size, load seconds).  The data's shape: ``walsmf.sample`` grows
visitors with the scale and articles with its square root (a news site's
catalogue grows more slowly than its readers).  Beam's DirectRunner is
slow by design (it checks the model, in one process); past
``--beam_max_scale`` its row says so instead of running for hours.
"""
import argparse
import json
import os
import re
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


# Users a block of the bare matrix product: the fastest of these counts the floor.
FLOOR_BLOCKS = (64, 256, 1024)


def batch_prediction_figures(data_dir, model_dir, k=3):
    """walsmf's batch prediction of every user's top ``k`` as walsmf.task runs it after training (the factors
    read, both files written), with read articles kept (the lab's default) and left out, against its peers on the
    same factors: implicit's recommend() for every user in the same two modes, and the bare matrix product of all
    the scores (the floor: the fastest of FLOOR_BLOCKS users a block, BLAS on every core)."""
    import scipy.sparse
    import threadpoolctl
    from implicit.cpu.als import AlternatingLeastSquares

    from walsmf import model, recommend, settings, trainer
    out = {}
    u, v = recommend.load_factors(model_dir, "row"), recommend.load_factors(model_dir, "col")
    for mode, exclude_seen in (("kept", False), ("left_out", True)):
        args = trainer.resolve(settings.make(input_path=data_dir, output_dir=model_dir, topk=k,
                                             exclude_seen=exclude_seen))
        data = model.load_data(args)  # read before training, as walsmf.task does
        start = time.perf_counter()
        out["users"] = recommend.batch_predict(args, data, log=lambda _: None)
        out["walsmf_" + mode] = time.perf_counter() - start
        seen = data.interactions.by_user
        user_items = scipy.sparse.csr_matrix((np.ones(len(seen.indices), np.float32), seen.indices, seen.offsets),
                                             shape=(args.nusers, args.nitems))
        peer = AlternatingLeastSquares(factors=u.shape[1])
        peer.user_factors, peer.item_factors = u, v
        with threadpoolctl.threadpool_limits(1, "blas"):  # implicit's own advice: its threads use the cores
            start = time.perf_counter()
            for first in range(0, len(u), 100000):
                chunk = np.arange(first, min(first + 100000, len(u)))
                peer.recommend(chunk, user_items[chunk], N=k, filter_already_liked_items=exclude_seen)
            out["implicit_" + mode] = time.perf_counter() - start
    floors = []
    items_t = np.ascontiguousarray(v.T)
    for block_users in FLOOR_BLOCKS:
        buffer = np.empty((block_users, len(v)), np.float32)
        start = time.perf_counter()
        for first in range(0, len(u), block_users):
            block = u[first:first + block_users]
            np.matmul(block, items_t, out=buffer[:len(block)])
        floors.append(time.perf_counter() - start)
    out["matmul_s"] = min(floors)
    out["matmul_gflops"] = 2.0 * len(u) * len(v) * u.shape[1] / out["matmul_s"] / 1e9
    for mode in ("kept", "left_out"):
        out["vs_implicit_" + mode] = out["walsmf_" + mode] / out["implicit_" + mode]
        out["vs_matmul_" + mode] = out["walsmf_" + mode] / out["matmul_s"]
    out["seconds"] = out["walsmf_kept"]
    return out


def duckdb_scan_seconds(sample):
    """The extraction's floor: DuckDB reading the page hits the lab's query reads, and nothing else."""
    import duckdb
    start = time.perf_counter()
    duckdb.connect().execute("SELECT count(*), max(hit.time), max(length(hit.customDimensions)) FROM "
                             "read_parquet('{}'), UNNEST(hits) AS _t(hit) WHERE hit.type = 'PAGE'".format(
                                 sample)).fetchall()
    return time.perf_counter() - start


def disk_write_seconds(data_dir, workdir):
    """The preprocessing's floor for its writes: (GB of the data directory, seconds to write as many bytes in
    1 MB blocks to a file, synced)."""
    size = sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(data_dir) for name in names)
    block, path = os.urandom(1 << 20), os.path.join(workdir, "disk-floor.bin")
    start = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(-(-size // len(block))):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    seconds = time.perf_counter() - start
    os.remove(path)
    return size / 1e9, seconds


def run_stage(stage, scale, workdir, n_embeds=10):
    """Run one stage at ``scale`` in this process (the model of ``n_embeds`` factors); return its figures."""
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
        out["seconds"] = time.perf_counter() - start
        out["duckdb_scan_s"] = duckdb_scan_seconds(sample)
    elif stage == "preprocess":
        from walsmf.preprocess import main
        main(["--sessions_file", sample, "--data_dir", data_dir])
        out["seconds"] = time.perf_counter() - start
        out["data_gb"], out["disk_write_s"] = disk_write_seconds(data_dir, workdir)
    elif stage == "beam":
        from walsmf.preprocess import main
        main(["--sessions_file", sample, "--data_dir", os.path.join(workdir, "beam"), "--runner", "DirectRunner"])
    elif stage == "sweep":
        import tensorflow as tf

        from walsmf import model, settings, trainer
        tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
        args = trainer.resolve(settings.make(input_path=data_dir, output_dir=model_dir, batch_size=16384, seed=0,
                                                   n_embeds=n_embeds))
        shutil.rmtree(model_dir, ignore_errors=True)
        model.fit(args, model.steps_per_sweep(args))
    elif stage == "batch_predict":
        out.update(batch_prediction_figures(data_dir, model_dir))
    elif stage == "export":
        import tensorflow as tf

        from walsmf import model, modeldir, predict, settings, trainer
        tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
        args = trainer.resolve(settings.make(input_path=data_dir, output_dir=model_dir, batch_size=16384, seed=0,
                                                   n_embeds=n_embeds))
        data, _ = model.prepare_training(args)
        export = model.export(modeldir.trained_factors(model_dir), data, args)
        out["seconds"] = time.perf_counter() - start
        out["pb_mb"] = os.path.getsize(os.path.join(export, "saved_model.pb")) / 1e6
        out["assets_mb"] = sum(os.path.getsize(os.path.join(export, "assets", name))
                               for name in os.listdir(os.path.join(export, "assets"))) / 1e6
        start = time.perf_counter()
        predict.load(export)
        out["load_s"] = time.perf_counter() - start
    out.setdefault("seconds", time.perf_counter() - start)
    out["peak_gb"] = peak_rss_gb()
    return out


# walsmf.task's lines (regular expressions) that end its start, its training (the last step's progress line)
# and its export (what follows each is the next part).
TASK_PARTS = (("start", r"^\[train\] "), ("train", r"\(step ([\d,]+) of \1\)"), ("export", r"^\[export\] "),
              ("batch_predict", None))


def timed_command(command, task_parts=TASK_PARTS):
    """Run ``command``; return (wall seconds, peak RSS GB, {part: seconds} split at ``task_parts``' lines (regular
    expressions: a part ends at its line; the last, without one, at the exit), the lines it printed of its own
    stages' rows/s)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    parts, part, since, tail, stage_lines = {}, 0, start, [], []
    for line in process.stdout:
        tail = (tail + [line])[-5:]
        if " rows/s)" in line:
            stage_lines.append(line.strip())
        marker = task_parts[part][1] if part < len(task_parts) else None
        if marker and re.search(marker, line):
            now = time.perf_counter()
            parts[task_parts[part][0]], part, since = now - since, part + 1, now
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit("{} failed: {}".format(" ".join(command[:3]), "".join(tail).strip()))
    if part == len(task_parts) - 1:
        parts[task_parts[part][0]] = time.perf_counter() - since
    return seconds, usage.ru_maxrss / 1024 ** 2, parts, stage_lines


def end_to_end(scale, workdir, epochs=16, batch_size=16384):
    """Generate, preprocess and train/export/batch-predict at ``scale`` as a user would; print each command."""
    sample, data_dir = os.path.join(workdir, "sample.parquet"), os.path.join(workdir, "data")
    commands = (("generate", ["walsmf.sample", "--scale", str(scale), "--output", sample]),
                ("preprocess", ["walsmf.preprocess", "--sessions_file", sample, "--data_dir", data_dir]),
                ("task", ["walsmf.task", "--input_path", data_dir, "--output_dir", os.path.join(workdir, "model"),
                          "--num_epochs", str(epochs), "--batch_size", str(batch_size)]))
    total, peak = 0.0, 0.0
    for name, command in commands:
        seconds, gb, parts, stage_lines = timed_command([sys.executable, "-m"] + command)
        total, peak = total + seconds, max(peak, gb)
        print("{:>5g}  {:<14}{:>9.1f}{:>9.2f}   {}".format(scale, name, seconds, gb, " ".join(
            "{}={:.1f}s".format(part, value) for part, value in parts.items())), flush=True)
        for line in stage_lines:
            print("{:>7}{}".format("", line), flush=True)
    print("{:>5g}  {:<14}{:>9.1f}{:>9.2f}   ({:.1f} min)".format(scale, "end to end", total, peak, total / 60),
          flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 10, 30, 100])
    parser.add_argument("--workdir", help="keep data here (default: a temporary directory per scale)")
    parser.add_argument("--beam_max_scale", type=float, default=1.0,
                        help="largest scale to run Beam's DirectRunner at")
    parser.add_argument("--end_to_end", action="store_true",
                        help="time the commands a user runs (sample, preprocess, task) instead of each stage")
    parser.add_argument("--n_embeds", type=int, default=10, help="factors of the model trained and batch-predicted")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.scale, args.workdir, args.n_embeds)))
        return
    print("{:>5}  {:<14}{:>9}{:>9}   {}".format("scale", "stage", "seconds", "peak_GB", "figures"), flush=True)
    for scale in args.scales:
        workdir = os.path.join(args.workdir, "scale{:g}".format(scale)) if args.workdir else \
            tempfile.mkdtemp(prefix="walsmf-scale-")
        os.makedirs(workdir, exist_ok=True)
        for stage in () if args.end_to_end else STAGES:
            if stage == "beam" and scale > args.beam_max_scale:
                print("{:>5g}  {:<14}{:>9}{:>9}   not run: DirectRunner past --beam_max_scale {:g} "
                      "(use DataflowRunner)".format(scale, stage, "-", "-", args.beam_max_scale), flush=True)
                continue
            result = subprocess.run([sys.executable, __file__, "--stage", stage, "--scale", str(scale),
                                     "--n_embeds", str(args.n_embeds),
                                     "--workdir", workdir],
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
        if args.end_to_end:
            end_to_end(scale, workdir)
        if not args.workdir:
            shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
