"""Prepare the lab's WALS input files from GA360 sessions.

    python -m walsmf.preprocess [--source local|bigquery] [--data_dir data]

Steps (each a function, so the notebook can show each step's table):
extract -> ratings (collab_raw.csv) -> id mapping (users.csv, items.csv,
collab_mapped.csv) -> TFRecords (items_for_user, users_for_item,
items_for_user_subset) -> metadata.json (nusers, nitems, interactions).

The data directory is built beside the old one and swapped in only when
complete: a failed run leaves an earlier data directory as it was.
"""
import os
import time

import numpy as np
import pandas as pd

from walsmf import datadir, flags, growth, progress
from walsmf import extract as extract_stage
from walsmf.errors import DataError, run_cli
from walsmf.fileio import check_regular, check_replaceable, inside, staged_directory
from walsmf.ratings import add_ratings


def map_ids(raw):
    """Map visitorId and contentId to 0..N−1 in order of appearance, as the lab does.

    Returns (users, items, mapped): users has visitorId,userId; items has
    contentId,itemId; mapped has userId,itemId,rating (rounded to 2 decimals).
    """
    visitor_ids, user_ids = _appearance_ids(raw["visitorId"])
    content_ids, item_ids = _appearance_ids(raw["contentId"])
    users = pd.DataFrame({"visitorId": visitor_ids, "userId": np.arange(len(visitor_ids))})
    items = pd.DataFrame({"contentId": content_ids, "itemId": np.arange(len(content_ids))})
    mapped = pd.DataFrame({"userId": user_ids, "itemId": item_ids, "rating": raw["rating"].round(2).values})
    return users, items, mapped


def _appearance_ids(column):
    """(distinct values in order of first appearance, each row's 0-based number among them)."""
    categorical = pd.Categorical(column)
    codes = categorical.codes.astype(np.int64)
    first = pd.unique(codes)
    number = np.empty(len(categorical.categories), np.int64)
    number[first] = np.arange(len(first))
    return np.asarray(categorical.categories)[first], number[codes]


def _rate(rows, seconds):
    """A stage's progress line: its rows, seconds and rows/s."""
    return "{:,} rows in {:.1f}s ({:,.0f} rows/s)".format(rows, seconds, rows / max(seconds, 1e-6))


def write_data_dir(extracted, data_dir, source="local", log=progress.say):
    """Write every file of the lab's data directory from the extracted rows.

    Everything is written into a staging directory which then replaces
    ``data_dir``.  Returns the metadata (counts and the median duration).
    """
    rows, start = len(extracted), time.time()

    def done(stage):
        nonlocal start
        seconds, start = time.time() - start, time.time()
        log("{}: {}".format(stage, _rate(rows, seconds)))
    with staged_directory(data_dir, datadir.METADATA_FILE, datadir.written_here) as staged:
        raw, median = add_ratings(extracted)
        # ids as object arrays of the categories' own strings: to_csv would rebuild all categories per chunk
        raw.assign(**{c: np.asarray(raw[c]) for c in ("visitorId", "contentId")}).to_csv(
            os.path.join(staged, datadir.RAW_FILE), index=False, header=False)
        done("ratings, " + datadir.RAW_FILE)
        users, items, mapped = map_ids(raw)
        if extract_stage.TIME_COLUMN in extracted:
            datadir.write_times(staged, raw["visitorId"], raw["contentId"], extracted[extract_stage.TIME_COLUMN])
        users.to_csv(os.path.join(staged, datadir.USERS_FILE), index=False, header=False)
        items.to_csv(os.path.join(staged, datadir.ITEMS_FILE), index=False, header=False)
        mapped.to_csv(os.path.join(staged, datadir.MAPPED_FILE), index=False, header=False)
        metadata = dict(datadir.counts(mapped), median_duration_ms=median, source=source)
        done("ids, the id maps, " + datadir.MAPPED_FILE)
        log("{nitems} items, {nusers} users, {interactions} interactions".format(**metadata))
        records = datadir.write_interactions(staged, datadir.interactions_of(mapped))
        datadir.write_metadata(staged, metadata)
        times = extracted[extract_stage.TIME_COLUMN].values if extract_stage.TIME_COLUMN in extracted else None
        growth.write_ledger(staged, growth.Ledger(mapped["userId"].values, mapped["itemId"].values,
                                                  raw["rating"].values, times, records))
        done("TFRecords")
    return metadata


def build_parser():
    """The CLI's flags."""
    parser = flags.Parser(
        prog="python -m walsmf.preprocess",
        description="Extract (visitor, article, reading time) from a GA360 or GA4 export with the lab's SQL "
                    "and write the WALS input files "
                    "({}).".format(", ".join(datadir.DATA_FILES)),
        epilog="With --runner, options the runner takes (--region, --temp_location, --setup_file, "
               "--num_workers, ...) pass through to Beam.")
    extract_stage.add_source_arguments(parser)
    parser.add_argument("--extracted_csv",
                        help="a CSV of visitorId,contentId,session_duration[,read_time] (what 'walsmf.extract "
                             "--output' writes) to use instead of running the query")
    parser.add_argument("--data_dir", default="data",
                        help="directory to write (replaced whole, only when every file is written)")
    parser.add_argument("--runner", choices=["DirectRunner", "DataflowRunner"],
                        help="preprocess with Apache Beam on this runner (default: in this process); "
                             "DataflowRunner for data that does not fit one machine")
    return parser


def main(argv=None):
    """CLI: extract, then write the data directory, printing a line per stage."""
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    if beam_args and not args.runner:
        parser.error("unrecognized arguments: {} (runner options need --runner)".format(" ".join(beam_args)))
    query = extract_stage.query_of(args)
    for flag, source in (("--extracted_csv", args.extracted_csv), ("--sessions_file", args.sessions_file)):
        if source and inside(source, args.data_dir):
            raise DataError("{} {} is inside --data_dir {}, which this run replaces whole: move it out, or write "
                            "the data to another directory".format(flag, source, args.data_dir))
    check_regular(args.data_dir, "--data_dir", directory=True)  # refused before the query, not after
    check_replaceable(args.data_dir, datadir.METADATA_FILE, datadir.written_here)

    def log(message):
        print("      " + message, flush=True)
    start = time.time()
    if args.runner:
        from walsmf import beam_pipeline  # Apache Beam: an optional extra

        print("[1/1] Beam pipeline on {} -> {}".format(args.runner, args.data_dir), flush=True)
        beam_pipeline.preprocess(query, args.data_dir, args.runner, beam_args, args.extracted_csv, log)
        print("      done in {:.1f}s".format(time.time() - start), flush=True)
        return
    if args.extracted_csv:
        print("[1/2] extract: read {}".format(args.extracted_csv), flush=True)
        extracted = extract_stage.read_extracted_csv(args.extracted_csv)
    else:
        print("[1/2] extract: {}".format(query.describe()), flush=True)
        extracted = extract_stage.extract(query)
    extract_stage.check_times_past(extracted, args.extracted_csv or query.describe())
    log("{}; most read: {}".format(_rate(len(extracted), time.time() - start), extract_stage.most_read(extracted)))
    print("[2/2] preprocess -> {}".format(args.data_dir), flush=True)
    write_data_dir(extracted, args.data_dir, query.source, log=log)


if __name__ == "__main__":
    run_cli(main)
