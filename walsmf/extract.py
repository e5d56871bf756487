"""Extract (visitorId, contentId, session_duration) from GA360 sessions.

One SQL text, the lab's standard SQL, runs on two engines:

* BigQuery (``--source bigquery --project P``), through google-cloud-bigquery;
* DuckDB (``--source local``, the default), over a local file in the GA360
  export schema -- the embedded sample from :mod:`walsmf.sample` unless the
  user names another file.  The SQL is transpiled with sqlglot and then
  rewritten on its syntax tree where DuckDB's reading of BigQuery's UNNEST
  differs (see :func:`to_duckdb_sql`).
"""
import dataclasses
import datetime
import glob
import os
import re
import shutil
import sys
from typing import Optional

import numpy as np
import pandas as pd

from walsmf import flags
from walsmf.errors import DataError, run_cli
from walsmf.fileio import atomic_output, check_writable, temporary_directory
from walsmf.sample import ensure_sample

DEFAULT_TABLE = "cloud-training-demos.GA360_test.ga_sessions_sample"
# What --print_sql shows a GA4 query reading (a property's daily tables) when no --table is given.
EXAMPLE_GA4_TABLE = "your-project.analytics_123456789.events_*"
COLUMNS = ["visitorId", "contentId", "session_duration"]
# Each (visitor, content) pair's latest time, ms since the epoch (UTC): the times file's source.
TIME_COLUMN = "read_time"
SCHEMAS = ("ga360", "ga4")
DEFAULT_CONTENT_INDEX = 10          # the lab's custom dimension holding the article id
DEFAULT_CONTENT_PARAM = "page_location"
VISITOR_FIELDS = ("user_pseudo_id", "user_id")

# The lab's query (its custom dimension, and one column for the pair's latest time, made parameters).
# ``{window}`` is empty or an AND clause restricting the dates read.
SQL_TEMPLATE = """
WITH visitor_page_content AS (
  SELECT
    fullVisitorID,
    (SELECT MAX(IF(index = {content_index}, value, NULL)) FROM UNNEST(hits.customDimensions)) AS latestContentId,
    (LEAD(hits.time, 1) OVER (PARTITION BY fullVisitorId ORDER BY hits.time ASC) - hits.time) AS session_duration,
    MAX(visitStartTime * 1000 + hits.time) AS hit_time
  FROM `{table}`, UNNEST(hits) AS hits
  WHERE
    # only include hits on pages
    hits.type = "PAGE"{window}
  GROUP BY
    fullVisitorId, latestContentId, hits.time
)
-- aggregate web stats
SELECT
  fullVisitorID AS visitorId,
  latestContentId AS contentId,
  SUM(session_duration) AS session_duration,
  MAX(hit_time) AS read_time
FROM visitor_page_content
WHERE latestContentId IS NOT NULL
GROUP BY fullVisitorID, latestContentId
HAVING session_duration > 0
ORDER BY latestContentId
"""

# The same rows from a GA4 export (docs/data.md states the rules).  An event's engaged time is the focus
# time before it, so an event without the content parameter counts for the content its session last
# showed; a page_view without the parameter ends that.  At one timestamp, other events come before the
# page they would otherwise be given to.
GA4_SQL_TEMPLATE = """
WITH events AS (
  SELECT
    {visitor} AS visitorId,
    (SELECT MAX(value.int_value) FROM UNNEST(event_params) WHERE key = 'ga_session_id') AS sessionId,
    event_timestamp,
    event_name = 'page_view' AS isPageView,
    NULLIF({content}, '') AS pageContentId,
    (SELECT MAX(value.int_value) FROM UNNEST(event_params) WHERE key = 'engagement_time_msec') AS engagedMs
  FROM `{table}`
  WHERE {visitor} IS NOT NULL{window}
),
-- each event's content: its own, else the one last seen in its session ('' after a page without one)
carried AS (
  SELECT
    visitorId,
    event_timestamp,
    engagedMs,
    NULLIF(LAST_VALUE(IF(pageContentId IS NULL AND isPageView, '', pageContentId) IGNORE NULLS) OVER (
      PARTITION BY visitorId, sessionId
      ORDER BY event_timestamp, pageContentId IS NOT NULL OR isPageView
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW), '') AS contentId
  FROM events
)
SELECT
  visitorId,
  contentId,
  SUM(engagedMs) AS session_duration,
  DIV(MAX(event_timestamp), 1000) AS read_time
FROM carried
WHERE contentId IS NOT NULL
GROUP BY visitorId, contentId
HAVING session_duration > 0
ORDER BY contentId, visitorId
"""
# A custom event parameter's value: its string, else its integer as a decimal string.
_GA4_PARAM = ("(SELECT MAX(COALESCE(value.string_value, CAST(value.int_value AS STRING))) "
              "FROM UNNEST(event_params) WHERE key = '{name}')")
# page_location without its query string and fragment.
_GA4_PAGE = ("REGEXP_REPLACE((SELECT MAX(value.string_value) FROM UNNEST(event_params) WHERE key = 'page_location'), "
             "r'[?#].*', '')")
# The date field a row of each schema carries (YYYYMMDD), and the columns a local export must have.
_DATE_FIELD = {"ga360": "date", "ga4": "event_date"}
_REQUIRED_FIELDS = {"ga360": ("fullVisitorId", "visitStartTime", "hits"),
                    "ga4": ("event_date", "event_timestamp", "event_name", "event_params", "user_pseudo_id")}

LOCAL_VIEW = "ga_sessions"
# BigQuery's types of the fields the queries read.  Its JSON export writes INT64 values as JSON strings,
# which DuckDB would take for text: a JSON export is read with these types.
_JSON_TYPES = {
    "fullVisitorId": "VARCHAR", "visitStartTime": "BIGINT", "date": "VARCHAR",
    "hits": "STRUCT(time BIGINT, type VARCHAR, customDimensions STRUCT(index BIGINT, value VARCHAR)[])[]",
    "event_date": "VARCHAR", "event_timestamp": "BIGINT", "event_name": "VARCHAR",
    "user_pseudo_id": "VARCHAR", "user_id": "VARCHAR",
    "event_params": "STRUCT(key VARCHAR, value STRUCT(string_value VARCHAR, int_value BIGINT))[]",
}
# What the local form of the query names before the DuckDB rewrite points it at LOCAL_VIEW.
_LOCAL_TABLE = "local.export.sessions"
DUCKDB_MEMORY_SHARE = 0.3
# Memory the in-process preprocessing of one extracted row takes at its peak, with a margin (ids as
# categoricals, two CSRs, the sorts' temporaries; benchmarks/bench_scale.py measures it): what
# check_fits_in_memory expects a run to need.
PREPROCESS_BYTES_PER_ROW = 350
# Names the DuckDB rewrite gives to what BigQuery leaves implicit.
_HIT_ALIAS = "hit"
_DIMENSION_ALIAS = "dimension"


# project.dataset.table: a project id (optionally domain-scoped, "example.com:project"), a dataset
# and a table of letters, digits and underscores; daily tables may be read as ga_sessions_* or events_*.
_TABLE_REFERENCE = re.compile(r"(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{0,62}\.[A-Za-z0-9_]{1,1024}\.[A-Za-z0-9_$-]{1,1024}\*?",
                              re.ASCII)
# A GA4 event parameter's name: letters, digits and underscores, at most 40, starting with a letter.
_PARAM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}", re.ASCII)


@dataclasses.dataclass(frozen=True)
class Query:
    """Where the sessions come from and what the query takes of them: the extraction's settings.

    ``table`` is a BigQuery table (``source='bigquery'``; default: the lab's for GA360); locally the
    query reads ``sessions_file`` (a file or a glob of daily files) or the embedded sample of
    ``scale`` and ``seed``.  ``start_date``/``end_date`` (YYYYMMDD, inclusive) restrict the days read.
    """
    source: str = "local"
    project: Optional[str] = None
    table: Optional[str] = None
    sessions_file: Optional[str] = None
    scale: float = 1.0
    seed: int = 0
    schema: str = "ga360"
    content_index: int = DEFAULT_CONTENT_INDEX
    content_param: str = DEFAULT_CONTENT_PARAM
    visitor: str = VISITOR_FIELDS[0]
    start_date: Optional[str] = None
    end_date: Optional[str] = None

    def bigquery_table(self):
        """The BigQuery table read: ``table``, or the lab's for GA360."""
        if self.table is None and self.schema == "ga4":
            raise DataError("--schema ga4 on BigQuery needs --table: your export's daily tables, "
                            "e.g. PROJECT.analytics_123456789.events_*")
        return DEFAULT_TABLE if self.table is None else self.table

    def sql(self, local=False):
        """The query in BigQuery's standard SQL; ``local``: over one table (the local export), so a date
        window is a filter on the row's date rather than on BigQuery's _TABLE_SUFFIX."""
        table = _LOCAL_TABLE if local else self.bigquery_table()
        if not _TABLE_REFERENCE.fullmatch(table):
            raise DataError("--table {!r} is not a BigQuery table reference: give project.dataset.table "
                            "(letters, digits, _ and -; e.g. {})".format(table, DEFAULT_TABLE))
        window = self._window(table.endswith("*"))
        if self.schema == "ga360":
            return SQL_TEMPLATE.format(table=table, content_index=int(self.content_index), window=window)
        visitor = "user_pseudo_id" if self.visitor == "user_pseudo_id" else "COALESCE(user_id, user_pseudo_id)"
        content = _GA4_PAGE if self.content_param == "page_location" else _GA4_PARAM.format(name=self.content_param)
        return GA4_SQL_TEMPLATE.format(table=table, visitor=visitor, content=content, window=window)

    def _window(self, wildcard):
        """The AND clause of the date window ('' without one).  On daily tables (a wildcard) it bounds
        _TABLE_SUFFIX on both sides, which also leaves the intraday tables out."""
        if not (self.start_date or self.end_date or wildcard):
            return ""
        field = "_TABLE_SUFFIX" if wildcard else _DATE_FIELD[self.schema]
        if not wildcard:
            bounds = [c for c in (self.start_date and "{} >= '{}'".format(field, self.start_date),
                                  self.end_date and "{} <= '{}'".format(field, self.end_date)) if c]
            return "".join("\n    AND " + c for c in bounds)
        return "\n    AND _TABLE_SUFFIX BETWEEN '{}' AND '{}'".format(self.start_date or "00000000",
                                                                       self.end_date or "99999999")

    def shown_sql(self):
        """The BigQuery SQL to show a user: this query's, or, run locally, the same on the lab's table (GA360)
        or on an example property's daily tables (GA4)."""
        if self.source == "bigquery":
            return self.sql()
        return dataclasses.replace(self, source="bigquery", table=DEFAULT_TABLE if self.schema == "ga360"
                                   else EXAMPLE_GA4_TABLE).sql()

    def check(self):
        """Refuse settings the query cannot run with, in one line each, before anything runs."""
        if self.schema not in SCHEMAS:
            raise DataError("--schema {!r}: use ga360 (Universal Analytics sessions, the lab's) or ga4 "
                            "(GA4 events)".format(self.schema))
        if self.source not in ("local", "bigquery"):
            raise DataError("unknown source {!r}: use 'local' or 'bigquery'".format(self.source))
        if self.source == "local" and self.table is not None:
            raise DataError("--table {} names a BigQuery table, but --source local reads --sessions_file or the "
                            "embedded sample: add --source bigquery --project P, or drop --table".format(self.table))
        if self.source == "bigquery" and not self.project:
            raise DataError("--source bigquery needs --project (the GCP project billed for the query)")
        if self.visitor not in VISITOR_FIELDS:
            raise DataError("--visitor {!r}: use user_pseudo_id or user_id".format(self.visitor))
        if not _PARAM_NAME.fullmatch(self.content_param or ""):
            raise DataError("--content_param {!r} is not an event parameter name (letters, digits and _, at most "
                            "40, starting with a letter; e.g. page_location or article_id)".format(self.content_param))
        if isinstance(self.content_index, bool) or not isinstance(self.content_index, int) or \
                not 1 <= self.content_index <= 200:
            raise DataError("--content_index {!r} is not a custom dimension index: give 1 to 200 (the lab's "
                            "article id is 10)".format(self.content_index))
        for flag, value in (("--start_date", self.start_date), ("--end_date", self.end_date)):
            if value is not None:
                _check_date(flag, value)
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise DataError("--end_date {} is before --start_date {}: the window is inclusive, give an end on or "
                            "after the start".format(self.end_date, self.start_date))
        if self.source == "bigquery":
            self.sql()
        return self

    def describe(self):
        """Where the rows come from, for a progress line."""
        window = " {}..{}".format(self.start_date or "", self.end_date or "") if (
            self.start_date or self.end_date) else ""
        engine = ("BigQuery project " + str(self.project)) if self.source == "bigquery" else "DuckDB (local)"
        return "{} query on {}{}".format("the lab's GA360" if self.schema == "ga360" else "GA4", engine, window)


def _check_date(flag, value):
    """Refuse a date that is not YYYYMMDD (a real day)."""
    try:
        ok = bool(re.fullmatch(r"[0-9]{8}", value)) and datetime.datetime.strptime(value, "%Y%m%d")
    except ValueError:
        ok = False
    if not ok:
        raise DataError("{} {!r} is not a date: give YYYYMMDD (e.g. 20240131)".format(flag, value))


def query_of(args):
    """The Query of parsed source flags (add_source_arguments)."""
    return Query(**{field.name: getattr(args, field.name) for field in dataclasses.fields(Query)}).check()


def lab_sql(table=DEFAULT_TABLE):
    """Return the lab's standard SQL reading ``table`` (project.dataset.table)."""
    return Query(source="bigquery", table=table).sql()


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

    And one for speed: a scalar subquery aggregating an UNNEST (the lab's
    content dimension, GA4's event parameters) is DuckDB's list functions on
    the row's own array, ``LIST_MAX(LIST_TRANSFORM(LIST_FILTER(...)))``: the
    same values, without a correlated join per row (37.9 s to 14.7 s at 10×).
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
    _aggregates_of_unnest_as_list_functions(tree)
    return tree.sql(dialect="duckdb")


# The aggregates a scalar subquery over an UNNEST may take, and DuckDB's list function for each.
_LIST_AGGREGATES = {"Max": "LIST_MAX", "Min": "LIST_MIN", "Sum": "LIST_SUM"}


def _aggregates_of_unnest_as_list_functions(tree):
    """Rewrite ``(SELECT AGG(expr) FROM UNNEST(array) AS t(x) [WHERE cond])`` as
    ``LIST_AGG(LIST_TRANSFORM([LIST_FILTER(array, x -> cond)], x -> expr))``; any other subquery stays."""
    from sqlglot import exp

    for subquery in list(tree.find_all(exp.Subquery)):
        select = subquery.this
        if not isinstance(select, exp.Select) or len(select.expressions) != 1 or any(
                select.args.get(part) for part in ("joins", "laterals", "group", "having", "order", "limit")):
            continue
        aggregate, source = select.expressions[0], select.args.get("from")
        unnest = source.this if source is not None else None
        alias = unnest.args.get("alias") if isinstance(unnest, exp.Unnest) else None
        if type(aggregate).__name__ not in _LIST_AGGREGATES or alias is None or len(alias.columns) != 1 or len(
                unnest.expressions) != 1:
            continue
        element = alias.columns[0]
        values = unnest.expressions[0].copy()
        where = select.args.get("where")
        if where is not None:
            values = exp.Anonymous(this="LIST_FILTER", expressions=[
                values, exp.Lambda(this=where.this.copy(), expressions=[element.copy()])])
        values = exp.Anonymous(this="LIST_TRANSFORM", expressions=[
            values, exp.Lambda(this=aggregate.this.copy(), expressions=[element.copy()])])
        subquery.replace(exp.Anonymous(this=_LIST_AGGREGATES[type(aggregate).__name__], expressions=[values]))


def _rename_unnested_column(tree, alias):
    from sqlglot import exp

    old = alias.columns[0].name
    alias.set("columns", [exp.to_identifier(_HIT_ALIAS)])
    for column in tree.find_all(exp.Column):
        if column.table == old:
            column.set("table", exp.to_identifier(_HIT_ALIAS))


def _alias_struct_unnest(unnest):
    """Alias an unaliased UNNEST of structs; qualify the struct's fields used in its SELECT with the alias
    (a bare ``index``, or ``value.int_value``: any column whose qualifier names nothing in the query)."""
    from sqlglot import exp

    tree = unnest.root()
    known = {alias.name for alias in tree.find_all(exp.TableAlias)}
    known |= {column.name for alias in tree.find_all(exp.TableAlias) for column in alias.columns}
    known |= {table.name for table in tree.find_all(exp.Table)} | {table.alias_or_name for table in
                                                                   tree.find_all(exp.Table)}
    unnest.set("alias", exp.TableAlias(
        this=exp.to_identifier("_" + _DIMENSION_ALIAS),
        columns=[exp.to_identifier(_DIMENSION_ALIAS)]))
    select = unnest.find_ancestor(exp.Select)
    for column in list(select.find_all(exp.Column)):
        if column.find_ancestor(exp.Select) is not select or column.find_ancestor(exp.Unnest) is unnest:
            continue
        if not column.table:
            column.set("table", exp.to_identifier(_DIMENSION_ALIAS))
        elif column.table not in known and not column.args.get("db"):
            column.set("db", exp.to_identifier(_DIMENSION_ALIAS))


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


def local_files(sessions_file):
    """The export files ``sessions_file`` names: a file, or a glob of daily files (``events_*.parquet``)."""
    if glob.has_magic(sessions_file):
        files = sorted(f for f in glob.glob(sessions_file) if os.path.isfile(f))
        if not files:
            raise DataError("no file matches --sessions_file {}: give a file or a glob of the daily export files "
                            "(e.g. 'export/events_*.parquet', quoted)".format(sessions_file))
        return files
    if os.path.isdir(sessions_file):
        raise DataError("--sessions_file {} is a directory: give a file, or a glob of its daily files (e.g. "
                        "'{}')".format(sessions_file, os.path.join(sessions_file, "events_*.parquet")))
    if not os.path.isfile(sessions_file):
        raise DataError("sessions file {} does not exist (run 'python -m walsmf.sample' "
                        "or leave --sessions_file out to use the embedded sample)".format(sessions_file))
    return [sessions_file]


def run_local(query, sessions_file, csv_path=None):
    """Run ``query`` (a Query) with DuckDB over a local export: one file or a glob of daily files.

    The files are Parquet, or newline-delimited JSON as BigQuery exports it
    (``.json``/``.ndjson``/``.jsonl``).  Returns the rows as a DataFrame, or
    with ``csv_path`` streams them into that CSV (with a header; DuckDB
    spills to disk, so nothing needs to fit in memory) and returns the path.
    """
    import duckdb

    files = local_files(sessions_file)
    json = files[0].endswith((".json", ".ndjson", ".jsonl"))
    for path in [] if json else files:
        with open(path, "rb") as f:
            if f.read(4) != b"PAR1":
                raise DataError("{} is not a Parquet file (nor newline-delimited JSON, named .json, .ndjson or "
                                ".jsonl): give the export's own files".format(path))
    file_list = ", ".join("'{}'".format(f.replace("'", "''")) for f in files)
    sql = to_duckdb_sql(query.sql(local=True))
    con = duckdb.connect()
    spill = temporary_directory("walsmf-duckdb-")
    try:
        # DuckDB spills past its limit: leave most of the memory to the preprocessing that follows
        con.execute("SET memory_limit='{}MB'".format(max(512, int(DUCKDB_MEMORY_SHARE * _total_memory_mb()))))
        con.execute("SET temp_directory='{}'".format(spill.replace("'", "''")))
        con.execute("SET preserve_insertion_order=false")  # the rows are ordered after the query
        con.execute("CREATE VIEW {} AS SELECT * FROM {}([{}], union_by_name=true)".format(
            LOCAL_VIEW, "read_json_auto" if json else "read_parquet", file_list))
        columns = _check_local_fields(con, query, sessions_file)
        if json:
            typed = ", ".join("'{}': '{}'".format(name, _JSON_TYPES[name]) for name in _JSON_TYPES if name in columns)
            con.execute("CREATE OR REPLACE VIEW {} AS SELECT * FROM read_json([{}], columns={{{}}}, "
                        "union_by_name=true)".format(LOCAL_VIEW, file_list, typed))
        if csv_path is None:
            table = con.execute(sql).arrow()
            if table.num_rows == 0:
                _explain_no_rows(con, query, sessions_file)
            con.close()  # DuckDB's buffers go before the rows are preprocessed
            check_fits_in_memory(table.num_rows)
            return _rows_frame(table)
        con.execute("COPY ({}) TO '{}' (HEADER, DELIMITER ',')".format(sql, csv_path.replace("'", "''")))
        return csv_path
    except duckdb.Error as err:
        raise DataError("{} is not a {} export the query can read: {}".format(
            sessions_file, _SCHEMA_NAMES[query.schema], _first_line(err)))
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)


_SCHEMA_NAMES = {"ga360": "GA360 sessions", "ga4": "GA4 events"}


def _check_local_fields(con, query, sessions_file):
    """Refuse an export of the other schema, or one without the fields the query reads, naming them; return the
    export's field names."""
    columns = {row[0] for row in con.execute("DESCRIBE {}".format(LOCAL_VIEW)).fetchall()}
    other = "ga4" if query.schema == "ga360" else "ga360"
    needed = list(_REQUIRED_FIELDS[query.schema])
    if query.start_date or query.end_date:
        needed.append(_DATE_FIELD[query.schema])
    if query.schema == "ga4" and query.visitor == "user_id":
        needed.append("user_id")
    missing = [f for f in needed if f not in columns]
    if not missing:
        return columns
    if set(_REQUIRED_FIELDS[other]) <= columns:
        raise DataError("{} holds {}, not {}: use --schema {}".format(
            sessions_file, _SCHEMA_NAMES[other], _SCHEMA_NAMES[query.schema], other))
    raise DataError("{} is not a {} export: it has no field {} (the export's own schema has {})".format(
        sessions_file, _SCHEMA_NAMES[query.schema], ", ".join(missing), ", ".join(needed)))


def _explain_no_rows(con, query, sessions_file):
    """The query found no (visitor, content) row: say which of the user's choices left nothing."""
    date = _DATE_FIELD[query.schema]
    if query.start_date or query.end_date:
        low, high, inside = con.execute("SELECT min({0}), max({0}), count(*) FILTER (WHERE {0} BETWEEN ? AND ?) "
                                        "FROM {1}".format(date, LOCAL_VIEW),
                                        [query.start_date or "00000000", query.end_date or "99999999"]).fetchone()
        if not inside:
            raise DataError("{} has no {} between {} and {} (its dates run from {} to {}): widen --start_date/"
                            "--end_date".format(sessions_file, "event" if query.schema == "ga4" else "session",
                                                query.start_date or "the start", query.end_date or "the end",
                                                low, high))
    if query.schema == "ga4":
        seen = [row[0] for row in con.execute(
            "SELECT DISTINCT p.key FROM (SELECT unnest(event_params) AS p FROM {}) ORDER BY 1 LIMIT 30".format(
                LOCAL_VIEW)).fetchall()]
        if query.content_param not in seen:
            raise DataError("no event in {} carries the parameter {!r} (--content_param): its events carry {}".format(
                sessions_file, query.content_param, ", ".join(map(str, seen)) or "no parameters"))
    else:
        seen = [row[0] for row in con.execute(
            "SELECT DISTINCT d.index FROM (SELECT unnest(h.customDimensions) AS d FROM (SELECT unnest(hits) AS h "
            "FROM {})) ORDER BY 1 LIMIT 30".format(LOCAL_VIEW)).fetchall()]
        if query.content_index not in seen:
            raise DataError("no hit in {} carries custom dimension {} (--content_index): its hits carry {}".format(
                sessions_file, query.content_index, ", ".join(map(str, seen)) or "no custom dimensions"))
    raise DataError("the query returned no (visitor, article) rows with a positive duration from {}".format(
        sessions_file))


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
    and the duration, a SUM DuckDB types as a 128-bit decimal, as int64 (the time too)."""
    import pyarrow as pa

    for column in ("session_duration", TIME_COLUMN):
        index = table.schema.get_field_index(column)
        if index < 0:
            continue
        try:
            table = table.set_column(index, column, table.column(column).cast(pa.int64()))
        except pa.ArrowInvalid:
            raise DataError("a visitor's summed {} does not fit in 64 bits: the export holds times that are not "
                            "milliseconds (GA360 hits.time) or microseconds (GA4 event_timestamp)".format(column))
    return table.to_pandas(strings_to_categorical=True)


def read_extracted_csv(path):
    """Rows of a CSV of visitorId,contentId,session_duration (as ``--output`` writes them), checked."""
    if os.path.isdir(path):
        raise DataError("--extracted_csv {} is a directory: give the CSV file 'python -m walsmf.extract --output "
                        "FILE' wrote".format(path))
    if not os.path.isfile(path):
        raise DataError("extracted CSV {} does not exist (write one with 'python -m walsmf.extract "
                        "--output FILE')".format(path))
    try:
        df = pd.read_csv(path, dtype={"visitorId": str, "contentId": str})
    except (ValueError, pd.errors.ParserError) as err:
        raise DataError("{} is not a CSV of {}: {}".format(path, ",".join(COLUMNS), _first_line(err)))
    return normalize_extracted(df, path)


def normalize_extracted(df, source=None):
    """Check the extracted rows and give them the lab's types.

    Keeps what the query guarantees (contentId not null, duration
    > 0) true for any engine: such rows are dropped as the lab does; a
    missing column, an empty result or a non-numeric duration is an error.
    A ``read_time`` column (the pair's latest time, ms) is kept and checked.
    ``source``: the file the rows come from, named in errors (None: a query's result).
    Rows of one (visitor, article) pair are summed, as the lab's GROUP BY
    sums them (their latest time kept); fractional durations stay fractional.
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError("{} {} no column{} {} (expected {})".format(
            source or "the query's result", "has" if source else "had", "s" if len(missing) > 1 else "",
            ", ".join(missing), ", ".join(COLUMNS)))
    duration = _numbers(df, "session_duration")
    if not np.isfinite(duration.fillna(0)).all() or (duration.abs() >= 2.0 ** 63).any():
        bad = duration[~np.isfinite(duration.fillna(0)) | (duration.abs() >= 2.0 ** 63)].iloc[0]
        raise DataError("session_duration {!r} is not a reading time: durations are milliseconds, finite and "
                        "below 2^63 (check the export's units)".format(bad))
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
        times = _numbers(df, TIME_COLUMN)[keep]
        if times.isna().any():
            raise DataError("{} is blank for visitor {} and content {}: give every row its time, or drop the "
                            "column".format(TIME_COLUMN, *df[keep][times.isna().to_numpy()].iloc[0][COLUMNS[:2]]))
        out[TIME_COLUMN] = times.astype("int64").to_numpy()[order]
    # (codes are int8/16/32 as the categories need: widen before the product)
    pair = pd.Series(visitors.codes[order].astype(np.int64) * len(contents.categories) +
                     contents.codes[order].astype(np.int64))
    if pair.duplicated().any():
        summed = {"session_duration": "sum"}
        summed.update({TIME_COLUMN: "max"} if TIME_COLUMN in out else {})
        out = out.groupby(pair.to_numpy(), sort=False).agg(dict(summed, visitorId="first", contentId="first"))
        out = out[list(out.columns[-2:]) + list(out.columns[:-2])].reset_index(drop=True)
    return out


def _numbers(df, column):
    """``df[column]`` as numbers (blank cells NaN); a value that is not a number is an error."""
    values = pd.to_numeric(df[column], errors="coerce")
    bad = values.isna() & df[column].notna()
    if bad.any():
        raise DataError("{} is not numeric (e.g. {!r})".format(column, df[column][bad].iloc[0]))
    return values


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


def extract(query=None, **fields):
    """Run ``query`` (a Query, or one made of ``fields``) on its source; return the checked rows."""
    query = (query or Query(**fields)).check()
    if query.source == "bigquery":
        df = run_bigquery(query.sql(), query.project)
        if len(df) == 0:
            raise DataError("BigQuery returned no (visitor, article) rows with a positive duration from {}: check "
                            "the date window against the tables' dates and that --{} names what the pages carry"
                            .format(query.bigquery_table(),
                                    "content_param" if query.schema == "ga4" else "content_index"))
    else:
        df = run_local(query, query.sessions_file or ensure_sample(scale=query.scale, seed=query.seed,
                                                                     schema=query.schema))
    return normalize_extracted(df)


def add_source_arguments(parser):
    """Add the flags that choose where the sessions come from and what the query takes of them."""
    parser.add_argument("--schema", choices=SCHEMAS, default="ga360",
                        help="the export's schema: ga360 (Universal Analytics sessions, the lab's) or ga4 "
                             "(GA4 events: one row per event)")
    parser.add_argument("--source", choices=["local", "bigquery"], default="local",
                        help="'local': DuckDB over the embedded sample of --schema (or --sessions_file); "
                             "'bigquery': the query on BigQuery (needs --project)")
    parser.add_argument("--project", help="GCP project that runs (and pays for) the BigQuery query")
    parser.add_argument("--table",
                        help="BigQuery table, project.dataset.table; daily tables as ga_sessions_* or events_* "
                             "(default for ga360: the lab's {})".format(DEFAULT_TABLE))
    parser.add_argument("--sessions_file",
                        help="local export to query instead of the embedded sample: Parquet or newline-delimited "
                             "JSON, one file or a glob of daily files ('events_*.parquet')")
    parser.add_argument("--start_date", metavar="YYYYMMDD", help="first day read (inclusive; default: all)")
    parser.add_argument("--end_date", metavar="YYYYMMDD", help="last day read (inclusive; default: all)")
    parser.add_argument("--content_index", type=int, default=DEFAULT_CONTENT_INDEX,
                        help="ga360: the custom dimension holding the article id (default: the lab's 10)")
    parser.add_argument("--content_param", default=DEFAULT_CONTENT_PARAM,
                        help="ga4: the event parameter naming the content (default page_location, the URL "
                             "without query string and fragment; or a custom one such as article_id)")
    parser.add_argument("--visitor", choices=VISITOR_FIELDS, default=VISITOR_FIELDS[0],
                        help="ga4: the visitor id (user_id: the signed-in id where set, else user_pseudo_id)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="embedded sample size relative to the lab's data (1 = 82,802 visitors)")
    parser.add_argument("--seed", type=int, default=0, help="embedded sample seed")


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
        check_writable(args.output, "--output", inputs=local_files(query.sessions_file) if query.sessions_file and
                       query.source == "local" else ())
    df = extract(query)
    if args.output == "-":
        df.to_csv(sys.stdout, index=False)
    else:
        with atomic_output(args.output) as tmp:
            df.to_csv(tmp, index=False)


if __name__ == "__main__":
    run_cli(main)
