"""The lab's extraction query and its GA4 counterpart: the SQL templates, the query's settings and their flags.

One SQL text in BigQuery's standard SQL runs on BigQuery (walsmf.bigquery)
and, rewritten for DuckDB (walsmf.duckdb_sql), over a local export
(walsmf.local_export); walsmf.extract runs it and checks the rows.
"""
import dataclasses
import datetime
import re
from typing import Optional

from walsmf import flags
from walsmf.errors import DataError

DEFAULT_TABLE = "cloud-training-demos.GA360_test.ga_sessions_sample"
# What --print_sql shows a GA4 query reading (a property's daily tables) when no --table is given.
EXAMPLE_GA4_TABLE = "your-project.analytics_123456789.events_*"
COLUMNS = ["visitorId", "contentId", "session_duration"]
# Each (visitor, content) pair's latest time, ms since the epoch (UTC): the times file's source.
TIME_COLUMN = "read_time"
UNITS = {"session_duration": "milliseconds read", TIME_COLUMN: "ms since the epoch"}
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
WHERE latestContentId IS NOT NULL{pattern}
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
WHERE contentId IS NOT NULL{fronts}
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
# A URL with no path past the site's root (https://news.example/): the home page, never an article.
_SITE_ROOT = r"^[^:/]+://[^/]+/?$"
# A page whose URL is another page's URL up to its last segment is a front (a section, an archive, the root:
# https://news.example/sport of https://news.example/sport/123), no article: page URLs keep the others.
_FRONTS = """
  AND RTRIM(contentId, '/') NOT IN (
    SELECT DISTINCT REGEXP_REPLACE(RTRIM(contentId, '/'), '/[^/]*$', '') FROM carried WHERE contentId IS NOT NULL)"""
# The date field a row of each schema carries (YYYYMMDD), and the columns a local export must have.
DATE_FIELD = {"ga360": "date", "ga4": "event_date"}
REQUIRED_FIELDS = {"ga360": ("fullVisitorId", "visitStartTime", "hits"),
                    "ga4": ("event_date", "event_timestamp", "event_name", "event_params", "user_pseudo_id")}
# What the local form of the query names before the DuckDB rewrite points it at its view.
LOCAL_TABLE = "local.export.sessions"


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
    content_pattern: Optional[str] = None
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
        table = LOCAL_TABLE if local else self.bigquery_table()
        if not _TABLE_REFERENCE.fullmatch(table):
            raise DataError("--table {!r} is not a BigQuery table reference: give project.dataset.table "
                            "(letters, digits, _ and -; e.g. {})".format(table, DEFAULT_TABLE))
        window = self._window(table.endswith("*"))
        if self.schema == "ga360":
            pattern = "\n  AND REGEXP_CONTAINS(latestContentId, {})".format(_string(self.content_pattern)) if \
                self.content_pattern else ""
            return SQL_TEMPLATE.format(table=table, content_index=int(self.content_index), window=window,
                                       pattern=pattern)
        visitor = "user_pseudo_id" if self.visitor == "user_pseudo_id" else "COALESCE(user_id, user_pseudo_id)"
        content = _GA4_PAGE if self.content_param == "page_location" else _GA4_PARAM.format(name=self.content_param)
        # a page that is no article (the pattern's miss, or the site's root) is a page without content: it
        # ends the carry of the article before it
        if self.content_pattern:
            content = "IF(REGEXP_CONTAINS({0}, {1}), {0}, '')".format(content, _string(self.content_pattern))
        elif self.content_param == "page_location":
            content = "IF(REGEXP_CONTAINS({0}, {1}), '', {0})".format(content, _string(_SITE_ROOT))
        fronts = _FRONTS if self.content_param == "page_location" and not self.content_pattern else ""
        return GA4_SQL_TEMPLATE.format(table=table, visitor=visitor, content=content, window=window, fronts=fronts)

    def _window(self, wildcard):
        """The AND clause of the date window ('' without one).  On daily tables (a wildcard) it bounds
        _TABLE_SUFFIX on both sides, which also leaves the intraday tables out."""
        if not (self.start_date or self.end_date or wildcard):
            return ""
        field = "_TABLE_SUFFIX" if wildcard else DATE_FIELD[self.schema]
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
        if self.content_pattern is not None:
            _check_pattern(self.content_pattern)
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


def _string(text):
    """``text`` as a quoted string of BigQuery's SQL (not a raw one: sqlglot doubles a raw string's backslashes
    for DuckDB)."""
    return "'{}'".format(text.replace("\\", "\\\\").replace("'", "\\'"))


def _check_pattern(pattern):
    """Refuse a --content_pattern the query cannot carry: empty, not a regular expression, or holding a line
    break."""
    problem = None
    if not pattern:
        problem = "is empty"
    elif "\n" in pattern or "\r" in pattern:
        problem = "holds a line break"
    else:
        try:
            re.compile(pattern)
        except re.error as err:
            problem = "is not a regular expression ({})".format(err)
    if problem:
        raise DataError("--content_pattern {!r} {}: give a regular expression the contents kept match, e.g. "
                        "'/article/' or '/[0-9]{{4}}/[0-9]{{2}}/'".format(pattern, problem))


def query_of(args):
    """The Query of parsed source flags (add_source_arguments)."""
    return Query(**{field.name: getattr(args, field.name) for field in dataclasses.fields(Query)}).check()


def lab_sql(table=DEFAULT_TABLE):
    """Return the lab's standard SQL reading ``table`` (project.dataset.table)."""
    return Query(source="bigquery", table=table).sql()


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
    parser.add_argument("--content_index", type=flags.integer, default=DEFAULT_CONTENT_INDEX,
                        help="ga360: the custom dimension holding the article id (default: the lab's 10)")
    parser.add_argument("--content_param", default=DEFAULT_CONTENT_PARAM,
                        help="ga4: the event parameter naming the content (default page_location, the URL "
                             "without query string and fragment; or a custom one such as article_id)")
    parser.add_argument("--content_pattern", metavar="REGEX",
                        help="keep only contents whose id matches this regular expression (RE2, as BigQuery's "
                             "REGEXP_CONTAINS), e.g. '/article/' for the URLs of articles; a page that does not "
                             "match counts as a page without content (default for page_location: every page but "
                             "the site's root)")
    parser.add_argument("--visitor", choices=VISITOR_FIELDS, default=VISITOR_FIELDS[0],
                        help="ga4: the visitor id (user_id: the signed-in id where set, else user_pseudo_id)")
    flags.add_sample_arguments(parser)


def not_numeric(column, example, source=None):
    """The DataError for a ``column`` value that is no number, naming where it came from and what it should be."""
    return DataError("{}{} {!r} is not a number: give {} as numbers ({})".format(
        "{}: ".format(source) if source else "", column, example, column, UNITS[column]))
