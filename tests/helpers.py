"""Helpers the tests import: hand-built export tables, running a module, small matrices, gcloud's environment."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def session_schema():
    """The GA360 export schema subset the lab's query reads."""
    import pyarrow as pa

    dimension = pa.struct([("index", pa.int64()), ("value", pa.string())])
    hit = pa.struct([("hitNumber", pa.int64()), ("time", pa.int64()), ("type", pa.string()),
                     ("customDimensions", pa.list_(dimension))])
    return pa.schema([("fullVisitorId", pa.string()), ("visitNumber", pa.int64()),
                      ("visitStartTime", pa.int64()), ("hits", pa.list_(hit))])


def page(time, content=None, kind="PAGE", extra=()):
    """One hit; ``content`` becomes custom dimension 10."""
    dims = [{"index": 4, "value": "news"}] + list(extra)
    if content is not None:
        dims.append({"index": 10, "value": content})
    return {"hitNumber": 0, "time": time, "type": kind, "customDimensions": dims}


def write_sessions(path, visitors):
    """Write {visitorId: [hits]} as a GA360-shaped Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for visitor, hits in visitors.items():
        for number, hit in enumerate(hits, 1):
            hit["hitNumber"] = number
        rows.append({"fullVisitorId": visitor, "visitNumber": 1, "visitStartTime": 1500000000, "hits": hits})
    pq.write_table(pa.Table.from_pylist(rows, schema=session_schema()), str(path))
    return str(path)


# The hand-built table and the rows the lab's query must return for it.
HAND_SESSIONS = {
    "1": [page(0, "100"), page(500, "100", kind="EVENT"), page(1000, "200", extra=[{"index": 3, "value": "x"}]),
          page(3000, "100"), page(3500), page(4000, "300")],
    "2": [page(10, "400"), page(10, "400"), page(70, "500"), page(100)],
    # ties at one time: one row gets duration 0, the other none: both dropped
    "3": [page(0, "800"), page(0, "900")],
    # a single page: no next hit, no duration
    "4": [page(0, "100")],
}
HAND_EXPECTED = [("1", "100", 1500), ("1", "200", 2000), ("2", "400", 60), ("2", "500", 30)]


def run_module(module, *args, env=None, cwd=None):
    """Run ``python -m module args`` in the project's interpreter; return the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", module] + [str(a) for a in args], cwd=cwd or ROOT,
                          env=dict(os.environ, **(env or {})), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True)


def write_matrix(data_dir, ratings):
    """Write a dense ratings matrix (0 = unobserved) as the lab's TFRecords and metadata."""
    from walsmf import datadir

    os.makedirs(data_dir, exist_ok=True)
    users, items = np.nonzero(ratings)
    datadir.write_interactions(data_dir, datadir.Interactions(
        datadir.CSR.from_triples(users, items, ratings[users, items], ratings.shape[0]),
        datadir.CSR.from_triples(items, users, ratings[users, items], ratings.shape[1])))
    datadir.write_metadata(data_dir, {"nusers": ratings.shape[0], "nitems": ratings.shape[1],
                                      "interactions": len(users)})


def low_rank_ratings(rng, nusers=120, nitems=40, clusters=3, density=0.5):
    """Users of a cluster read about half of its items, nothing else."""
    user_cluster = rng.integers(0, clusters, nusers)
    item_cluster = np.arange(nitems) % clusters
    reads = (user_cluster[:, None] == item_cluster[None, :]) & (rng.random((nusers, nitems)) < density)
    reads[np.arange(nusers), np.flatnonzero(item_cluster == 0)[0]] |= user_cluster == 0
    for c in range(clusters):  # every user reads at least one item
        empty = (user_cluster == c) & ~reads.any(axis=1)
        reads[empty, np.flatnonzero(item_cluster == c)[0]] = True
    return np.where(reads, np.round(rng.uniform(0.3, 1.0, reads.shape), 2), 0.0)


def closed_form(ratings, other, w0, own_weights, other_weights, reg=None, observed=None):
    """numpy WALS solve of every row of ``ratings`` given the other side's factors.

    ``observed`` marks the observed entries (default: the non-zero ones).
    """
    gram = other.T @ other
    observed = ratings != 0 if observed is None else observed
    out = np.zeros((ratings.shape[0], other.shape[1]))
    for r, row in enumerate(ratings):
        j = np.flatnonzero(observed[r])
        c = own_weights[r] * other_weights[j]
        lhs = w0 * gram + (other[j] * c[:, None]).T @ other[j] + (reg or 0) * np.eye(other.shape[1])
        out[r] = np.linalg.solve(lhs, other[j].T @ ((w0 + c) * row[j]))
    return out


def free_ports(n):
    """``n`` distinct TCP ports free on the loopback interface now."""
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def gcloud_env(tmp_path):
    """gcloud with its own config directory, running this project's Python first on PATH."""
    return dict(os.environ, CLOUDSDK_CONFIG=str(tmp_path / "gcloud-config"),
                PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])


needs_gcloud = pytest.mark.skipif(shutil.which("gcloud") is None,
                                  reason="gcloud is not installed; walsmf.predict and python -m walsmf.task "
                                         "are the offline equivalents tested here")


def batch_pred(output_dir):
    """batch_pred.txt of a model directory as an array [users, k]."""
    with open(os.path.join(str(output_dir), "batch_pred.txt")) as f:
        return np.array([[int(x) for x in line.split(",")] for line in f.read().splitlines()])
