"""Prepare the lab's WALS input files from GA360 sessions.

    python -m walsmf.preprocess [--source local|bigquery] [--data_dir data]

Steps (each a function, so the notebook can show each step's table):
extract -> ratings (collab_raw.csv) -> id mapping (users.csv, items.csv,
collab_mapped.csv) -> TFRecords (items_for_user, users_for_item,
items_for_user_subset) -> metadata.json (nusers, nitems, interactions).

The data directory is built beside the old one and swapped in only when
complete: a failed run leaves an earlier data directory as it was.
"""
import argparse
import json
import os
import shutil
import time

import numpy as np
import pandas as pd

from walsmf import extract as extract_stage
from walsmf.errors import DataError, run_cli
from walsmf.fileio import replace_directory, staging_directory

RATING_SCALE = 0.3
MAX_RATING = 1.0
SUBSET_USERS = 20
METADATA_FILE = "metadata.json"
OUTPUT_FILES = ("collab_raw.csv", "users.csv", "items.csv", "collab_mapped.csv",
                "items_for_user", "users_for_item", "items_for_user_subset", METADATA_FILE)


def add_ratings(df):
    """Scale session_duration to a rating: 0.3·(1 + (d − median)/median), capped at 1.

    Returns (visitorId, contentId, rating) rows and the median duration.
    """
    median = float(df["session_duration"].median())
    rating = RATING_SCALE * (1 + (df["session_duration"] - median) / median)
    out = df[["visitorId", "contentId"]].copy()
    out["rating"] = np.minimum(rating.values.astype(np.float64), MAX_RATING)
    return out, median


def map_ids(raw):
    """Map visitorId and contentId to 0..N−1 in order of appearance, as the lab does.

    Returns (users, items, mapped): users has visitorId,userId; items has
    contentId,itemId; mapped has userId,itemId,rating (rounded to 2 decimals).
    """
    visitor_ids = pd.unique(raw["visitorId"])
    content_ids = pd.unique(raw["contentId"])
    users = pd.DataFrame({"visitorId": visitor_ids, "userId": np.arange(len(visitor_ids))})
    items = pd.DataFrame({"contentId": content_ids, "itemId": np.arange(len(content_ids))})
    mapped = pd.DataFrame({
        "userId": pd.Index(visitor_ids).get_indexer(raw["visitorId"]),
        "itemId": pd.Index(content_ids).get_indexer(raw["contentId"]),
        "rating": raw["rating"].round(2).values,
    })
    return users, items, mapped


def counts(mapped):
    """NITEMS, NUSERS (max id + 1) and the interaction count, as the lab computes them."""
    return {"nitems": int(mapped["itemId"].max()) + 1,
            "nusers": int(mapped["userId"].max()) + 1,
            "interactions": int(len(mapped))}


def grouped(mapped, key, indices):
    """Yield (key, indices, values) per distinct ``key`` of ``mapped``, keys ascending."""
    ordered = mapped.sort_values([key, indices], kind="mergesort")
    keys = ordered[key].values
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(keys)]
    idx = ordered[indices].values.astype(np.int64)
    vals = ordered["rating"].values.astype(np.float32)
    for s, e in zip(starts, ends):
        yield int(keys[s]), idx[s:e], vals[s:e]


def write_tfrecord(path, groups):
    """Write one tf.train.Example (key, indices, values) per group to ``path``."""
    import tensorflow as tf

    feature = tf.train.Feature
    with tf.io.TFRecordWriter(path) as writer:
        for key, indices, values in groups:
            example = tf.train.Example(features=tf.train.Features(feature={
                "key": feature(int64_list=tf.train.Int64List(value=[key])),
                "indices": feature(int64_list=tf.train.Int64List(value=indices)),
                "values": feature(float_list=tf.train.FloatList(value=values)),
            }))
            # deterministic: Features is a proto map, whose order otherwise varies per process
            writer.write(example.SerializeToString(deterministic=True))


def write_tfrecords(mapped, data_dir):
    """Write items_for_user, users_for_item and items_for_user_subset (first 20 users)."""
    write_tfrecord(os.path.join(data_dir, "users_for_item"), grouped(mapped, "itemId", "userId"))
    write_tfrecord(os.path.join(data_dir, "items_for_user"), grouped(mapped, "userId", "itemId"))
    subset = mapped[mapped["userId"] < SUBSET_USERS]
    write_tfrecord(os.path.join(data_dir, "items_for_user_subset"), grouped(subset, "userId", "itemId"))


def read_metadata(data_dir):
    """The counts the data pipeline saved beside the data (nusers, nitems, ...)."""
    import tensorflow as tf

    path = os.path.join(data_dir, METADATA_FILE)
    if not tf.io.gfile.exists(path):
        raise DataError("{} does not exist: run 'python -m walsmf.preprocess --data_dir {}' first, "
                        "or pass --nusers and --nitems".format(path, data_dir))
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def write_data_dir(extracted, data_dir, source="local", log=print):
    """Write every file of the lab's data directory from the extracted rows.

    Everything is written into a staging directory which then replaces
    ``data_dir``.  Returns the metadata (counts and the median duration).
    """
    staged = staging_directory(data_dir)
    try:
        raw, median = add_ratings(extracted)
        raw.to_csv(os.path.join(staged, "collab_raw.csv"), index=False, header=False)
        users, items, mapped = map_ids(raw)
        users.to_csv(os.path.join(staged, "users.csv"), index=False, header=False)
        items.to_csv(os.path.join(staged, "items.csv"), index=False, header=False)
        mapped.to_csv(os.path.join(staged, "collab_mapped.csv"), index=False, header=False)
        metadata = dict(counts(mapped), median_duration_ms=median, source=source)
        log("{nitems} items, {nusers} users, {interactions} interactions".format(**metadata))
        write_tfrecords(mapped, staged)
        with open(os.path.join(staged, METADATA_FILE), "w") as f:
            json.dump(metadata, f, indent=2, sort_keys=True)
        replace_directory(staged, data_dir)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return metadata


def build_parser():
    """The CLI's flags."""
    parser = argparse.ArgumentParser(
        prog="python -m walsmf.preprocess",
        description="Extract GA360 sessions with the lab's SQL and write the WALS input files "
                    "(collab_raw.csv, users.csv, items.csv, collab_mapped.csv, items_for_user, "
                    "users_for_item, items_for_user_subset, metadata.json).")
    extract_stage.add_source_arguments(parser)
    parser.add_argument("--data_dir", default="data",
                        help="directory to write (replaced whole, only when every file is written)")
    return parser


def main(argv=None):
    """CLI: extract, then write the data directory, printing a line per stage."""
    args = build_parser().parse_args(argv)
    start = time.time()
    print("[1/2] extract: lab SQL on {}".format(
        "BigQuery project " + str(args.project) if args.source == "bigquery" else "DuckDB (local)"), flush=True)
    extracted = extract_stage.extract(args.source, args.project, args.table, args.sessions_file,
                                      args.scale, args.seed)
    print("      {} rows in {:.1f}s".format(len(extracted), time.time() - start), flush=True)
    print("[2/2] preprocess -> {}".format(args.data_dir), flush=True)
    write_data_dir(extracted, args.data_dir, args.source, log=lambda m: print("      " + m, flush=True))
    print("      done in {:.1f}s".format(time.time() - start), flush=True)


if __name__ == "__main__":
    run_cli(main)
