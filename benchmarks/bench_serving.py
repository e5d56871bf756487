"""walsmf.serve under load on loopback: requests/s and latency against the model's own time, with hey.

    .venv/bin/python benchmarks/bench_serving.py [--model_dir wals_trained/export/Servo --data_dir data]
        [--requests 20000] [--concurrency 1 8 32]

Starts walsmf.serve (a worker per core) on a free loopback port, then for a
known visitor and for a new visitor with 5 articles sends ``--requests``
single-instance requests at each concurrency with hey (Debian's package:
`apt-get install hey`), and prints requests/s, p50/p95/p99 latency and errors;
the workers' memory; and the same instance through one in-process
session.run (the model's own time).  Ratios: p50 at concurrency 1 over the
model's time, requests/s at 8 over 1, p99 over p50 at 32.
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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from helpers import call, free_ports, start  # noqa: E402 (the tests' server starter)

from walsmf import datadir, instances, predict  # noqa: E402


def hey(url, body, requests, concurrency):
    """hey's figures for ``requests`` POSTs of ``body``: requests/s, p50/p95/p99 (ms), errors."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(body, f)
    try:
        out = subprocess.run(["hey", "-n", str(requests), "-c", str(concurrency), "-m", "POST", "-T",
                              "application/json", "-D", f.name, url], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, universal_newlines=True, check=True).stdout
    finally:
        os.remove(f.name)
    percentile = {int(p): float(s) * 1000 for p, s in re.findall(r"(\d+)%% in ([0-9.]+) secs".replace("%%", "%"),
                                                               out)}
    # hey sends requests // concurrency per connection: count what came back, not what was asked
    answered = {int(code): int(n) for code, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    failed = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]\s+\S", out.split("Error distribution:")[-1], re.M)) \
        if "Error distribution:" in out else 0
    return {"rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)), "p50": percentile[50],
            "p95": percentile[95], "p99": percentile[99], "sent": sum(answered.values()) + failed,
            "errors": sum(n for code, n in answered.items() if code != 200) + failed}


def model_time(export, instance, runs=2000):
    """Median seconds of one in-process session.run of ``instance`` (the export's own time)."""
    predict_fn = predict.load(predict.latest_export(export))
    info = predict.serving_info(predict.latest_export(export))
    feed = instances.feed([instances.check_instance(instance, "instance", info)], info)
    for _ in range(50):
        predict_fn(feed)
    times = []
    for _ in range(runs):
        start_time = time.perf_counter()
        predict_fn(feed)
        times.append(time.perf_counter() - start_time)
    return statistics.median(times)


def worker_memory(master):
    """RSS (GB) of each of the server's worker processes."""
    children = subprocess.run(["pgrep", "-P", str(master.pid)], stdout=subprocess.PIPE,
                              universal_newlines=True).stdout.split()
    sizes = []
    for pid in children:
        with open("/proc/{}/status".format(pid)) as f:
            sizes.append(int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 2 ** 20)
    return sizes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", default="wals_trained/export/Servo")
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args(argv)
    if shutil.which("hey") is None:
        parser.error("hey is not installed: apt-get install hey (the load generator this benchmark drives)")
    visitors = datadir.read_id_map(os.path.join(args.data_dir, datadir.USERS_FILE))
    contents = datadir.read_id_map(os.path.join(args.data_dir, datadir.ITEMS_FILE))
    cases = {"known visitor": {"visitorId": visitors[len(visitors) // 2]},
             "new visitor, 5 articles": {"visitorId": "bench", "contentIds": list(contents[10:15])}}
    own = {name: model_time(args.model_dir, instance) for name, instance in cases.items()}
    port = free_ports(1)[0]
    server = start(args.model_dir, port)
    try:
        call(port, "/predict", {"instances": [cases["known visitor"]]})
        print("workers' memory: {} GB".format(", ".join("{:.2f}".format(m) for m in worker_memory(server))))
        print("{:<24}{:>6}{:>8}{:>10}{:>9}{:>9}{:>9}{:>8}".format("instance", "conc.", "sent", "req/s", "p50 ms",
                                                                "p95 ms", "p99 ms", "errors"), flush=True)
        figures = {}
        for name, instance in cases.items():
            for concurrency in args.concurrency:
                got = hey("http://127.0.0.1:{}/predict".format(port), {"instances": [instance]}, args.requests,
                          concurrency)
                figures[name, concurrency] = got
                print("{:<24}{:>6}{:>8}{:>10.0f}{:>9.2f}{:>9.2f}{:>9.2f}{:>8}".format(
                    name, concurrency, got["sent"], got["rps"], got["p50"], got["p95"], got["p99"], got["errors"]),
                    flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    for name in cases:
        print("{}: model's own time {:.2f} ms; p50 at 1 / own = {:.2f}; req/s 8 / 1 = {:.2f}; p99 / p50 at 32 = {:.2f}"
              .format(name, own[name] * 1000, figures[name, 1]["p50"] / (own[name] * 1000),
                      figures[name, 8]["rps"] / figures[name, 1]["rps"],
                      figures[name, 32]["p99"] / figures[name, 32]["p50"]))


if __name__ == "__main__":
    main()
