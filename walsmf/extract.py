"""Extract (visitorId, contentId, session_duration) from GA360 sessions or GA4 events.

One SQL text, the lab's standard SQL (walsmf.queries), runs on two engines:

* BigQuery (``--source bigquery --project P``), through google-cloud-bigquery
  (walsmf.bigquery);
* DuckDB (``--source local``, the default), over a local export in the
  GA360 or GA4 export schema -- the embedded sample from :mod:`walsmf.sample`
  unless the user names another file (walsmf.local_export).  The SQL is
  transpiled with sqlglot and then rewritten on its syntax tree where DuckDB's
  reading of BigQuery's UNNEST differs (walsmf.duckdb_sql).

This module runs the query and checks its rows (or an extracted CSV's).
"""
import datetime
import os
import sys
import time

import numpy as np
import pandas as pd

from walsmf import flags
from walsmf.bigquery import run_bigquery
from walsmf.duckdb_sql import to_duckdb_sql
from walsmf.errors import DataError, first_line, run_cli
from walsmf.fileio import atomic_output, check_writable, starts_with
from walsmf.local_export import local_files, run_local
from walsmf.queries import COLUMNS, TIME_COLUMN, Query, add_source_arguments, not_numeric, query_of
from walsmf.sample import ensure_sample
from walsmf.splits import in_milliseconds


def read_extracted_csv(path):
    """Rows of a CSV of visitorId,contentId,session_duration (as ``--output`` writes them), checked."""
    if os.path.isdir(path):
        raise DataError("--extracted_csv {} is a directory: give the CSV file 'python -m walsmf.extract --output "
                        "FILE' wrote".format(path))
    if not os.path.exists(path):  # a pipe is read once, as a file
        raise DataError("extracted CSV {} does not exist (write one with 'python -m walsmf.extract "
                        "--output FILE')".format(path))
    try:
        df = pd.read_csv(path, dtype={"visitorId": str, "contentId": str})
    except (ValueError, pd.errors.ParserError) as err:
        raise DataError("{} is not a CSV of {}: {}".format(path, ",".join(COLUMNS), first_line(err)))
    return normalize_extracted(df, path)


def normalize_extracted(df, source=None):
    """Check the extracted rows and give them the lab's types.

    Keeps what the query guarantees (contentId not null, duration
    > 0) true for any engine: such rows are dropped as the lab does; a
    missing column, an empty result or a non-numeric duration is an error.
    A ``read_time`` column (the pair's latest time) is kept as ms and checked: a query gives ms; a file may
    hold seconds or µs as well, as splits.in_milliseconds tells them apart.
    ``source``: the file the rows come from, named in errors (None: a query's result).
    Rows of one (visitor, article) pair are summed, as the lab's GROUP BY
    sums them (their latest time kept); fractional durations stay fractional.
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError("{} {} no column{} {} (expected {})".format(
            source or "the query's result", "has" if source else "had", "s" if len(missing) > 1 else "",
            ", ".join(missing), ", ".join(COLUMNS)))
    duration = _numbers(df, "session_duration", source)
    if not np.isfinite(duration.fillna(0)).all() or (duration.abs() >= 2.0 ** 63).any():
        bad = duration[~np.isfinite(duration.fillna(0)) | (duration.abs() >= 2.0 ** 63)].iloc[0]
        raise DataError("{}session_duration {!r} is not a reading time: durations are milliseconds, finite and "
                        "below 2^63 (check the export's units)".format("{}: ".format(source) if source else "", bad))
    keep = (df["contentId"].notna() & df["visitorId"].notna() & (duration > 0)).fillna(False).to_numpy(bool)
    if not keep.any():
        raise DataError("{} holds no (visitor, article) row with both ids and a positive duration".format(source)
                        if source else "the query returned no (visitor, article) rows with a positive duration")
    visitors, contents = (_sorted_categories(df[column][keep].values) for column in ("visitorId", "contentId"))
    # The query orders by contentId only and engines return ties in any
    # order, which would change the lab's ids (order of appearance) from run
    # to run: order fully so the same input always gives the same files.
    order = np.lexsort((visitors.codes, contents.codes))
    kept = duration[keep].to_numpy()
    integral = bool((kept == np.floor(kept)).all())
    out = pd.DataFrame({
        "visitorId": visitors[order],
        "contentId": contents[order],
        "session_duration": (kept.astype("int64") if integral else kept)[order],
    })
    if TIME_COLUMN in df.columns:
        times = _numbers(df, TIME_COLUMN, source)[keep]
        if times.isna().any():
            raise DataError("{} is blank for visitor {} and content {}: give every row its time, or drop the "
                            "column".format(TIME_COLUMN, *df[keep][times.isna().to_numpy()].iloc[0][COLUMNS[:2]]))
        times = times.to_numpy()
        out[TIME_COLUMN] = np.rint(in_milliseconds(times) if source else times).astype("int64")[order]
    # (codes are int8/16/32 as the categories need: widen before the product)
    pair = pd.Series(visitors.codes[order].astype(np.int64) * len(contents.categories) +
                     contents.codes[order].astype(np.int64))
    if pair.duplicated().any():
        summed = {"session_duration": "sum"}
        summed.update({TIME_COLUMN: "max"} if TIME_COLUMN in out else {})
        groups = pair.to_numpy()
        # each pair's ids from its first row (the numbers' group-by: "first" of categoricals runs in Python)
        first = pd.Series(np.arange(len(out))).groupby(groups, sort=False).first().to_numpy()
        out = pd.concat([out[["visitorId", "contentId"]].iloc[first].reset_index(drop=True),
                         out.groupby(groups, sort=False).agg(summed).reset_index(drop=True)], axis=1)
    return out


# A read dated this far past the machine's clock is a wrong clock or unit, not news: walsmf measures freshness
# from the newest read, and a refresh takes only reads after it, so one such read would stale every article and
# refuse every later refresh.
FUTURE_SLACK_MS = 24 * 3600 * 1000


def check_times_past(extracted, where, now_ms=None):
    """Refuse reads (checked rows) whose read_time is over a day past now, naming the first and what to check."""
    if TIME_COLUMN not in extracted or not len(extracted):
        return
    now_ms = time.time() * 1000 if now_ms is None else now_ms
    late = extracted[extracted[TIME_COLUMN] > now_ms + FUTURE_SLACK_MS]
    if len(late):
        first = late.iloc[0]
        raise DataError("{}: {:,} read(s) are dated after now, e.g. visitor {} and content {} at {} ({} ms): check "
                        "the export's clock and that read_time is ms since the epoch".format(
                            where, len(late), first["visitorId"], first["contentId"],
                            utc_text(first[TIME_COLUMN]), first[TIME_COLUMN]))


def utc_text(ms):
    """ms since the epoch as a UTC date and time, for messages."""
    return datetime.datetime.fromtimestamp(ms / 1000.0, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") \
        if -6.2e13 < ms < 2.5e14 else "a year past 9999"


def _numbers(df, column, source):
    """``df[column]`` as numbers (blank cells NaN); a value that is not a number is an error naming ``source``."""
    values = pd.to_numeric(df[column], errors="coerce")
    bad = values.isna() & df[column].notna()
    if bad.any():
        raise not_numeric(column, df[column][bad].iloc[0], source)
    return values


def _sorted_categories(values):
    """``values`` as strings without surrounding spaces in a pandas Categorical whose categories are in string
    order.

    Ids repeat (a visitor reads several articles): one string per distinct
    id, not per row, keeps 100x the lab's data in memory.
    """
    categorical = pd.Categorical(values)
    # spaces around an id are an export's (or a spreadsheet's), not the site's: " 12" is article 12
    names = np.array([name.strip() for name in categorical.categories.astype(str)], dtype=object)
    if (names == "").any():
        raise DataError("an id is blank ({!r}): every row needs its visitorId and contentId".format(
            categorical.categories[np.flatnonzero(names == "")[0]]))
    unique, inverse = np.unique(names, return_inverse=True)  # in string order, "12" and " 12" one id
    return pd.Categorical.from_codes(inverse[categorical.codes], categories=unique)


def extract(query=None, **fields):
    """Run ``query`` (a Query, or one made of ``fields``) on its source; return the checked rows."""
    query = (query or Query(**fields)).check()
    if query.source == "bigquery":
        df = run_bigquery(query.sql(), query.project)
        if len(df) == 0:
            raise DataError("BigQuery returned no (visitor, article) rows with a positive duration from {}: check "
                            "the date window against the tables' dates and that --{} names what the pages carry{}"
                            .format(query.bigquery_table(),
                                    "content_param" if query.schema == "ga4" else "content_index",
                                    " (and --content_pattern matches it)" if query.content_pattern else ""))
    else:
        df = run_local(query, query.sessions_file or ensure_sample(scale=query.scale, seed=query.seed,
                                                                     schema=query.schema))
    return normalize_extracted(df)


def most_read(extracted, n=3, width=48):
    """The ``n`` most read contents of extracted rows and their readers, for a progress line: a glance tells
    whether they are articles or the site's fronts and search pages (then see --content_pattern)."""
    counts = extracted["contentId"].value_counts().head(n)
    return ", ".join("{} ({:,})".format(c if len(c) <= width else c[:width - 1] + "…", k)
                     for c, k in zip(counts.index.astype(str), counts.values))


def main(argv=None):
    """CLI: print the query, or run it and write the rows as CSV."""
    parser = flags.Parser(prog="python -m walsmf.extract",
                                     description="Run the lab's query on a GA360 or GA4 export; write visitorId,"
                                                 "contentId,session_duration,read_time as CSV.")
    add_source_arguments(parser)
    parser.add_argument("--print_sql", action="store_true", help="print the SQL (and its DuckDB form) and stop")
    parser.add_argument("--output", default="-", help="CSV file to write (default: stdout)")
    args = parser.parse_args(argv)
    query = query_of(args)
    if args.print_sql:
        print(query.shown_sql())
        print("-- DuckDB form:\n" + to_duckdb_sql(query.sql(local=True)))
        return
    if args.output != "-":
        check_writable(args.output, "--output", replaces=("an extracted CSV", starts_with(",".join(COLUMNS).encode())),
                       inputs=local_files(query.sessions_file) if query.sessions_file and query.source == "local"
                       else ())
    df = extract(query)
    check_times_past(df, query.describe())
    if args.output == "-":
        df.to_csv(sys.stdout, index=False)
    else:
        with atomic_output(args.output) as tmp:
            df.to_csv(tmp, index=False)


if __name__ == "__main__":
    run_cli(main)
