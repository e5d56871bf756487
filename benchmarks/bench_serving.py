"""walsmf.serve under load on loopback, on both runtimes, beside the compute floor of the same answers.

    .venv/bin/python benchmarks/bench_serving.py [--model_dir wals_trained/export/Servo --data_dir data]
        [--requests 20000] [--concurrency 1 8 32] [--runtimes tf1 tf2]

The floor: one visitor's answer in numpy on one thread, the dot product of
their factor with every article's and the top-k (k=10), as the median of
2,000.  Then, on each runtime (tf1: TensorFlow 1.15 / Python 3.7, .venv;
tf2: TensorFlow 2.21 / Python 3.12, .venv-serve from `make serve-env`), it
starts walsmf.serve (a worker per core) on a free loopback port, checks that
it answers every known visitor as batch_pred_original_ids.txt says, and with
hey (Debian's package: `apt-get install hey`) sends ``--requests``
single-instance requests at each concurrency for a known visitor (k=10) and a
new visitor with 5 articles (k=10): requests/s, p50/p99 latency and errors;
the workers' memory after the first request and after all of them.  Ratios
against the targets (docs/serving.md): p50 at concurrency 1 over the floor
(≤ 10), requests/s per core at 8 over the floor's answers/s on one core
(≥ 1/15), p99 at 32 over p50 at 1 (≤ 10).
"""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import threadpoolctl

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from helpers import call, free_ports, start  # noqa: E402 (the tests' server starter)

from walsmf import datadir, modeldir  # noqa: E402

K = 10


def hey(url, body, requests, concurrency):
    """hey's figures for ``requests`` POSTs of ``body`` over ``concurrency`` connections: requests/s, p50/p99
    (ms), answered and failed requests."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(body, f)
    try:
        out = subprocess.run(["hey", "-n", str(max(requests, concurrency)), "-c", str(concurrency), "-m", "POST",
                              "-T", "application/json", "-D", f.name, url], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, universal_newlines=True, check=True).stdout
    finally:
        os.remove(f.name)
    percentile = {int(p): float(s) * 1000 for p, s in re.findall(r"(\d+)% in ([0-9.]+) secs", out)}
    # hey sends requests // concurrency per connection: count what came back, not what was asked
    answered = {int(code): int(n) for code, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    errors = out.split("Error distribution:")[1] if "Error distribution:" in out else ""
    failed = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]\s+\S", errors, re.M))
    return {"rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)), "p50": percentile.get(50, np.nan),
            "p99": percentile.get(99, np.nan), "sent": sum(answered.values()) + failed,
            "errors": sum(n for code, n in answered.items() if code != 200) + failed}


def floor_seconds(export, users, runs=2000):
    """Median seconds of one visitor's scores (dot product with every item's factor) and top-k in numpy, one
    thread: the compute an answer cannot go below."""
    variables = os.path.join(export, "variables", "variables")
    user_factors = modeldir.load_shards(variables, "row_factors_shard_")
    item_factors = modeldir.load_shards(variables, "col_factors_shard_")
    times = []
    with threadpoolctl.threadpool_limits(1):
        for user in np.resize(users, runs):
            started = time.perf_counter()
            scores = item_factors @ user_factors[user]
            top = np.argpartition(-scores, K)[:K]
            top[np.argsort(-scores[top], kind="stable")]
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def worker_memory(master):
    """RSS (MB) of the server's master and each of its workers."""
    children = subprocess.run(["pgrep", "-P", str(master.pid)], stdout=subprocess.PIPE,
                              universal_newlines=True).stdout.split()
    sizes = []
    for pid in [master.pid] + [int(c) for c in children]:
        with open("/proc/{}/status".format(pid)) as f:
            sizes.append(int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024)
    return sizes


def check_known_visitors(port, visitors, expected, per_request=400):
    """How many known visitors the server answers with their batch_pred_original_ids.txt line (k = the model's)."""
    same = 0
    for begin in range(0, len(visitors), per_request):
        status, body = call(port, "/predict", {"instances": [{"visitorId": v} for v in
                                                             visitors[begin:begin + per_request]]})
        assert status == 200, body
        same += sum(p["top_k_content_ids"] == line for p, (_, line) in
                    zip(body["predictions"], expected[begin:begin + per_request]))
    return same


def run_runtime(runtime, args, cases, visitors, expected):
    """Start walsmf.serve on ``runtime``, check its answers, load it; the figures by (case, concurrency)."""
    port = free_ports(1)[0]
    server = start(args.model_dir, port, runtime=runtime)
    figures = {}
    try:
        same = check_known_visitors(port, visitors, expected)
        print("[{}] known visitors answered as batch_pred_original_ids.txt says: {:,} of {:,}".format(
            runtime, same, len(visitors)), flush=True)
        before = worker_memory(server)
        for name, instance in cases.items():
            for concurrency in args.concurrency:
                got = hey("http://127.0.0.1:{}/predict".format(port), {"instances": [instance]}, args.requests,
                          concurrency)
                figures[name, concurrency] = got
                print("[{}] {:<24}{:>6}{:>8}{:>10.0f}{:>9.2f}{:>9.2f}{:>8}".format(
                    runtime, name, concurrency, got["sent"], got["rps"], got["p50"], got["p99"], got["errors"]),
                    flush=True)
        after = worker_memory(server)
        sent = sum(f["sent"] for f in figures.values())
        print("[{}] memory (MB): master {:.0f}; workers {} after the first request, {} after {:,} more".format(
            runtime, before[0], ", ".join("{:.0f}".format(m) for m in before[1:]),
            ", ".join("{:.0f}".format(m) for m in after[1:]), sent), flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    return figures


def ratios(runtime, figures, floor, cases, concurrency):
    """The three target ratios of each case, where the run measured the concurrencies they need."""
    cores = os.cpu_count() or 1
    for name in cases:
        parts = []
        if (name, 1) in figures:
            parts.append("p50 at 1 / floor = {:.1f} (target <= 10)".format(figures[name, 1]["p50"] / (floor * 1000)))
        if (name, 8) in figures:
            parts.append("req/s per core at 8 / floor's answers/s = 1/{:.1f} (target >= 1/15)".format(
                (1 / floor) / (figures[name, 8]["rps"] / cores)))
        if (name, 32) in figures and (name, 1) in figures:
            parts.append("p99 at 32 / p50 at 1 = {:.1f} (target <= 10)".format(
                figures[name, 32]["p99"] / figures[name, 1]["p50"]))
        print("[{}] {}: {}".format(runtime, name, "; ".join(parts) or "no ratio: measure at 1, 8 and 32"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", default="wals_trained/export/Servo")
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--requests", type=int, default=20000, help="requests per case and concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--runtimes", nargs="+", choices=["tf1", "tf2"], default=["tf1", "tf2"])
    args = parser.parse_args(argv)
    if shutil.which("hey") is None:
        parser.error("hey is not installed: apt-get install hey (the load generator this benchmark drives)")
    if args.requests < 1 or min(args.concurrency) < 1:
        parser.error("--requests and --concurrency take 1 or more")
    export = modeldir.latest_export(args.model_dir)
    model_dir = os.path.dirname(os.path.dirname(os.path.dirname(export)))
    visitors = [str(v) for v in datadir.read_id_map(os.path.join(args.data_dir, datadir.USERS_FILE))]
    contents = [str(c) for c in datadir.read_id_map(os.path.join(args.data_dir, datadir.ITEMS_FILE))]
    expected = modeldir.read_original_ids_pred(os.path.join(model_dir, modeldir.ORIGINAL_IDS_PRED_FILE))
    cases = {"known visitor": {"visitorId": visitors[len(visitors) // 2], "k": K},
             "new visitor, 5 articles": {"visitorId": "bench", "contentIds": contents[10:15], "k": K}}
    floor = floor_seconds(export, np.arange(0, len(visitors), 41))
    print("floor: {:.1f} µs per answer (numpy, one thread: {:,} articles' scores and the top {}), {:,.0f} answers/s "
          "on one core; {} cores".format(floor * 1e6, len(contents), K, 1 / floor, os.cpu_count()), flush=True)
    print("{:<29}{:>6}{:>8}{:>10}{:>9}{:>9}{:>8}".format("runtime, instance", "conc.", "sent", "req/s", "p50 ms",
                                                       "p99 ms", "errors"), flush=True)
    every = {runtime: run_runtime(runtime, args, cases, visitors, expected) for runtime in args.runtimes}
    for runtime, figures in every.items():
        ratios(runtime, figures, floor, cases, args.concurrency)


if __name__ == "__main__":
    main()
