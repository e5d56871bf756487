"""Time the data pipeline: sample generation, extraction (DuckDB), preprocessing; peak memory.

    .venv/bin/python benchmarks/bench_pipeline.py [--scales 1 10]

Each scale runs in its own process so its peak RSS is its own.  Targets
(issue 2): 1x end to end under 15 s on 2 cores; 10x under 150 s and 4 GB.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from walsmf.extract import extract
from walsmf.preprocess import write_data_dir
from walsmf.sample import write_sample


def measure(scale, workdir):
    """Run the three stages at ``scale`` in this process; return seconds and peak RSS."""
    times = {}
    start = time.time()
    sample = write_sample(os.path.join(workdir, "sample.parquet"), scale=scale, seed=0)
    times["generate_s"] = time.time() - start
    start = time.time()
    extracted = extract(sessions_file=sample)
    times["extract_s"] = time.time() - start
    start = time.time()
    metadata = write_data_dir(extracted, os.path.join(workdir, "data"), log=lambda _: None)
    times["preprocess_s"] = time.time() - start
    times["total_s"] = sum(times.values())
    times["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    times.update(metadata)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 10])
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        with tempfile.TemporaryDirectory() as workdir:
            print(json.dumps(measure(args.one, workdir)))
        return
    print("scale  generate_s  extract_s  preprocess_s  total_s  peak_rss_GB     users   items  interactions")
    for scale in args.scales:
        out = subprocess.run([sys.executable, __file__, "--one", str(scale)], stdout=subprocess.PIPE,
                             universal_newlines=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print("{:5g}  {:10.2f}  {:9.2f}  {:12.2f}  {:7.2f}  {:11.2f}  {:8d}  {:6d}  {:12d}".format(
            scale, r["generate_s"], r["extract_s"], r["preprocess_s"], r["total_s"], r["peak_rss_gb"],
            r["nusers"], r["nitems"], r["interactions"]), flush=True)


if __name__ == "__main__":
    main()
