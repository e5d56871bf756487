"""Extract (visitorId, contentId, session_duration) from GA360 sessions.

One SQL text, the lab's standard SQL, runs on two engines:

* BigQuery (``--source bigquery --project P``), through google-cloud-bigquery;
* DuckDB (``--source local``, the default), over a local file in the GA360
  export schema -- the embedded sample from :mod:`walsmf.sample` unless the
  user names another file.  The SQL is transpiled with sqlglot and then
  rewritten on its syntax tree where DuckDB's reading of BigQuery's UNNEST
  differs (see :func:`to_duckdb_sql`).
"""
import argparse
import os
import re
import shutil
import sys

import numpy as np
import pandas as pd

from walsmf.errors import DataError, run_cli
from walsmf.fileio import atomic_output, temporary_directory
from walsmf.sample import ensure_sample

DEFAULT_TABLE = "cloud-training-demos.GA360_test.ga_sessions_sample"
COLUMNS = ["visitorId", "contentId", "session_duration"]

# The lab's query.  Its only parameter is the table: ``{table}``.
SQL_TEMPLATE = """
WITH visitor_page_content AS (
  SELECT
    fullVisitorID,
    (SELECT MAX(IF(index = 10, value, NULL)) FROM UNNEST(hits.customDimensions)) AS latestContentId,
    (LEAD(hits.time, 1) OVER (PARTITION BY fullVisitorId ORDER BY hits.time ASC) - hits.time) AS session_duration
  FROM `{table}`, UNNEST(hits) AS hits
  WHERE
    # only include hits on pages
    hits.type = "PAGE"
  GROUP BY
    fullVisitorId, latestContentId, hits.time
)
-- aggregate web stats
SELECT
  fullVisitorID AS visitorId,
  latestContentId AS contentId,
  SUM(session_duration) AS session_duration
FROM visitor_page_content
WHERE latestContentId IS NOT NULL
GROUP BY fullVisitorID, latestContentId
HAVING session_duration > 0
ORDER BY latestContentId
"""

LOCAL_VIEW = "ga_sessions"
DUCKDB_MEMORY_SHARE = 0.3
# Memory the in-process preprocessing of one extracted row takes at its peak, with a margin (ids as
# categoricals, two CSRs, the sorts' temporaries; benchmarks/bench_scale.py measures it): what
# check_fits_in_memory expects a run to need.
PREPROCESS_BYTES_PER_ROW = 350
# Names the DuckDB rewrite gives to what BigQuery leaves implicit.
_HIT_ALIAS = "hit"
_DIMENSION_ALIAS = "dimension"


# project.dataset.table: a project id (optionally domain-scoped, "example.com:project"), a dataset
# and a table of letters, digits and underscores; GA360's daily tables may be read as ga_sessions_*.
_TABLE_REFERENCE = re.compile(r"(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{0,62}\.[A-Za-z0-9_]{1,1024}\.[A-Za-z0-9_$-]{1,1024}\*?",
                              re.ASCII)


def lab_sql(table=DEFAULT_TABLE):
    """Return the lab's standard SQL reading ``table`` (project.dataset.table)."""
    if not _TABLE_REFERENCE.fullmatch(table):
        raise DataError("--table {!r} is not a BigQuery table reference: give project.dataset.table "
                        "(letters, digits, _ and -; e.g. {})".format(table, DEFAULT_TABLE))
    return SQL_TEMPLATE.format(table=table)


def to_duckdb_sql(sql, local_table=LOCAL_VIEW):
    """Transpile the lab's BigQuery SQL to DuckDB, reading ``local_table``.

    sqlglot translates the dialect; three things it cannot know are fixed on
    the syntax tree:

    * every table reference is remapped to ``local_table``;
    * ``UNNEST(hits) AS hits`` gives a column the same name as the table's
      ``hits`` column, which DuckDB calls ambiguous: the unnested column is
      renamed and the references through it follow;
    * an unaliased ``UNNEST(array of struct)`` exposes the struct's fields
      as columns in BigQuery but not in DuckDB: it gets an alias and the
      bare field names in its SELECT are qualified with it.
    """
    import sqlglot
    from sqlglot import exp

    tree = sqlglot.parse_one(sql, read="bigquery")
    cte_names = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    for table in list(tree.find_all(exp.Table)):
        if table.name in cte_names and not table.args.get("db"):
            continue
        table.replace(exp.to_table(local_table))

    for unnest in list(tree.find_all(exp.Unnest)):
        alias = unnest.args.get("alias")
        if alias is not None and alias.columns:
            _rename_unnested_column(tree, alias)
        elif alias is None:
            _alias_struct_unnest(unnest)
    return tree.sql(dialect="duckdb")


def _rename_unnested_column(tree, alias):
    from sqlglot import exp

    old = alias.columns[0].name
    alias.set("columns", [exp.to_identifier(_HIT_ALIAS)])
    for column in tree.find_all(exp.Column):
        if column.table == old:
            column.set("table", exp.to_identifier(_HIT_ALIAS))


def _alias_struct_unnest(unnest):
    from sqlglot import exp

    unnest.set("alias", exp.TableAlias(
        this=exp.to_identifier("_" + _DIMENSION_ALIAS),
        columns=[exp.to_identifier(_DIMENSION_ALIAS)]))
    select = unnest.find_ancestor(exp.Select)
    for column in select.find_all(exp.Column):
        if not column.table and column.find_ancestor(exp.Select) is select:
            column.set("table", exp.to_identifier(_DIMENSION_ALIAS))


def run_bigquery(sql, project, client=None):
    """Run ``sql`` on BigQuery as ``project``; return the rows as a DataFrame.

    Credentials come from the environment as google-cloud-bigquery finds
    them.  Failures become one-line DataErrors that say what to do.
    """
    from google.api_core import exceptions as api_errors
    from google.auth import exceptions as auth_errors
    from google.cloud import bigquery

    try:
        client = client or bigquery.Client(project=project)
        rows = client.query(sql).result()
        check_fits_in_memory(rows.total_rows or 0)
        return rows.to_dataframe(create_bqstorage_client=False)
    except auth_errors.DefaultCredentialsError:
        raise DataError("no Google credentials for BigQuery project {!r}: run "
                        "'gcloud auth application-default login' or set "
                        "GOOGLE_APPLICATION_CREDENTIALS".format(project))
    except api_errors.NotFound as err:
        raise DataError("BigQuery project {!r}: not found: {} (check --project and --table)".format(
            project, _first_line(err.message)))
    except api_errors.Forbidden as err:
        raise DataError("BigQuery project {!r}: access denied: {} (check the account's "
                        "BigQuery roles and that billing is enabled)".format(project, _first_line(err.message)))
    except api_errors.GoogleAPICallError as err:
        raise DataError("BigQuery project {!r}: query failed: {}".format(project, _first_line(err.message)))


def _first_line(text):
    return str(text).strip().splitlines()[0] if str(text).strip() else "no message"


def run_local(sql, sessions_file, csv_path=None):
    """Run the lab's BigQuery ``sql`` with DuckDB over a local GA360 export file.

    ``sessions_file`` is Parquet, or newline-delimited JSON as BigQuery
    exports it (``.json``/``.ndjson``/``.jsonl``).  Returns the rows as a
    DataFrame, or with ``csv_path`` streams them into that CSV (with a
    header; DuckDB spills to disk, so nothing needs to fit in memory) and
    returns the path.
    """
    import duckdb

    if not os.path.isfile(sessions_file):
        raise DataError("sessions file {} does not exist (run 'python -m walsmf.sample' "
                        "or leave --sessions_file out to use the embedded sample)".format(sessions_file))
    reader = "read_json_auto" if sessions_file.endswith((".json", ".ndjson", ".jsonl")) else "read_parquet"
    con = duckdb.connect()
    spill = temporary_directory("walsmf-duckdb-")
    try:
        # DuckDB spills past its limit: leave most of the memory to the preprocessing that follows
        con.execute("SET memory_limit='{}MB'".format(max(512, int(DUCKDB_MEMORY_SHARE * _total_memory_mb()))))
        con.execute("SET temp_directory='{}'".format(spill.replace("'", "''")))
        con.execute("SET preserve_insertion_order=false")  # the rows are ordered after the query
        con.execute("CREATE VIEW {} AS SELECT * FROM {}('{}')".format(
            LOCAL_VIEW, reader, sessions_file.replace("'", "''")))
        if csv_path is None:
            table = con.execute(to_duckdb_sql(sql)).arrow()
            con.close()  # DuckDB's buffers go before the rows are preprocessed
            check_fits_in_memory(table.num_rows)
            return _rows_frame(table)
        con.execute("COPY ({}) TO '{}' (HEADER, DELIMITER ',')".format(to_duckdb_sql(sql),
                                                                      csv_path.replace("'", "''")))
        return csv_path
    except duckdb.Error as err:
        raise DataError("{} is not a GA360 sessions export the lab's query can read: {}".format(
            sessions_file, _first_line(err)))
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)


def check_fits_in_memory(n_rows):
    """Stop before preprocessing ``n_rows`` in this process would exhaust the memory (and be killed)."""
    needed = n_rows * PREPROCESS_BYTES_PER_ROW
    available = _available_memory_bytes()
    if needed > available:
        raise DataError("{:,} extracted rows need about {:.1f} GB to preprocess in one process and this machine has "
                        "{:.1f} GB available: run the Beam pipeline instead (--runner DataflowRunner on Google "
                        "Cloud; --runner DirectRunner here, slowly)".format(n_rows, needed / 1e9, available / 1e9))


def _available_memory_bytes():
    """Memory available to this process now (Linux's MemAvailable), else the physical memory."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return _total_memory_mb() * 2 ** 20


def _total_memory_mb():
    """This machine's physical memory in MB."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2 ** 20


def _rows_frame(table):
    """DuckDB's Arrow result as a DataFrame: ids dictionary-encoded (one string per distinct id, not per row)
    and the duration, a SUM DuckDB types as a 128-bit decimal, as int64."""
    import pyarrow as pa

    durations = table.column("session_duration")
    try:
        table = table.set_column(table.schema.get_field_index("session_duration"), "session_duration",
                                 durations.cast(pa.int64()))
    except pa.ArrowInvalid:
        raise DataError("a visitor's summed session_duration does not fit in 64 bits: the sessions table holds "
                        "hit times that are not milliseconds since the session start")
    return table.to_pandas(strings_to_categorical=True)


def read_extracted_csv(path):
    """Rows of a CSV of visitorId,contentId,session_duration (as ``--output`` writes them), checked."""
    if not os.path.isfile(path):
        raise DataError("extracted CSV {} does not exist (write one with 'python -m walsmf.extract "
                        "--output FILE')".format(path))
    try:
        df = pd.read_csv(path, dtype={"visitorId": str, "contentId": str})
    except (ValueError, pd.errors.ParserError) as err:
        raise DataError("{} is not a CSV of {}: {}".format(path, ",".join(COLUMNS), _first_line(err)))
    return normalize_extracted(df)


def normalize_extracted(df):
    """Check the extracted rows and give them the lab's types.

    Keeps what the query guarantees (contentId not null, duration
    > 0) true for any engine: such rows are dropped as the lab does; a
    missing column, an empty result or a non-numeric duration is an error.
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError("extracted rows lack column(s) {} (expected {})".format(
            ", ".join(missing), ", ".join(COLUMNS)))
    duration = pd.to_numeric(df["session_duration"], errors="coerce")
    bad = duration.isna() & df["session_duration"].notna()
    if bad.any():
        raise DataError("session_duration is not numeric (e.g. {!r})".format(
            df["session_duration"][bad].iloc[0]))
    keep = (df["contentId"].notna() & df["visitorId"].notna() & (duration > 0)).fillna(False).to_numpy(bool)
    if not keep.any():
        raise DataError("the query returned no (visitor, article) rows with a positive duration")
    visitors, contents = (_sorted_categories(df[column][keep].values) for column in ("visitorId", "contentId"))
    # The query orders by contentId only and engines return ties in any
    # order, which would change the lab's ids (order of appearance) from run
    # to run: order fully so the same input always gives the same files.
    order = np.lexsort((visitors.codes, contents.codes))
    return pd.DataFrame({
        "visitorId": visitors[order],
        "contentId": contents[order],
        "session_duration": duration[keep].astype("int64").to_numpy()[order],
    })


def _sorted_categories(values):
    """``values`` as strings in a pandas Categorical whose categories are in string order.

    Ids repeat (a visitor reads several articles): one string per distinct
    id, not per row, keeps 100x the lab's data in memory.
    """
    categorical = pd.Categorical(values)
    names = np.asarray(categorical.categories.astype(str), dtype=object)
    order = np.argsort(names, kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return pd.Categorical.from_codes(rank[categorical.codes], categories=names[order])


def extract(source="local", project=None, table=DEFAULT_TABLE, sessions_file=None,
            scale=1.0, seed=0):
    """Run the lab's query on ``source`` ('bigquery' or 'local'); return checked rows."""
    sql = lab_sql(table)
    if source == "local" and table != DEFAULT_TABLE:
        raise DataError("--table {} names a BigQuery table, but --source local reads --sessions_file or the "
                        "embedded sample: add --source bigquery --project P, or drop --table".format(table))
    if source == "bigquery":
        if not project:
            raise DataError("--source bigquery needs --project (the GCP project billed for the query)")
        df = run_bigquery(sql, project)
    elif source == "local":
        df = run_local(sql, sessions_file or ensure_sample(scale=scale, seed=seed))
    else:
        raise DataError("unknown source {!r}: use 'local' or 'bigquery'".format(source))
    return normalize_extracted(df)


def add_source_arguments(parser):
    """Add the flags that choose where the sessions come from."""
    parser.add_argument("--source", choices=["local", "bigquery"], default="local",
                        help="'local': DuckDB over the embedded GA360-shaped sample (or --sessions_file); "
                             "'bigquery': the lab's table on BigQuery (needs --project)")
    parser.add_argument("--project", help="GCP project that runs (and pays for) the BigQuery query")
    parser.add_argument("--table", default=DEFAULT_TABLE,
                        help="GA360 sessions table, project.dataset.table (default: the lab's)")
    parser.add_argument("--sessions_file",
                        help="local GA360 export (Parquet or newline-delimited JSON) to query "
                             "instead of the embedded sample")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="embedded sample size relative to the lab's data (1 = 82,802 visitors)")
    parser.add_argument("--seed", type=int, default=0, help="embedded sample seed")


def main(argv=None):
    """CLI: print the lab's SQL, or run it and write the rows as CSV."""
    parser = argparse.ArgumentParser(prog="python -m walsmf.extract",
                                     description="Run the lab's GA360 query; write visitorId,contentId,"
                                                 "session_duration as CSV.")
    add_source_arguments(parser)
    parser.add_argument("--print_sql", action="store_true", help="print the SQL (and its DuckDB form) and stop")
    parser.add_argument("--output", default="-", help="CSV file to write (default: stdout)")
    args = parser.parse_args(argv)
    if args.print_sql:
        sql = lab_sql(args.table)
        print(sql)
        print("-- DuckDB form:\n" + to_duckdb_sql(sql))
        return
    df = extract(args.source, args.project, args.table, args.sessions_file, args.scale, args.seed)
    if args.output == "-":
        df.to_csv(sys.stdout, index=False)
    else:
        with atomic_output(args.output) as tmp:
            df.to_csv(tmp, index=False)


if __name__ == "__main__":
    run_cli(main)
