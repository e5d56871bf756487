"""A local export queried with DuckDB: Parquet or newline-delimited JSON, one file or a glob of daily files."""
import glob
import gzip
import os
import re
from typing import List

from walsmf.duckdb_sql import LOCAL_VIEW, to_duckdb_sql
from walsmf.errors import DataError, first_line
from walsmf.fileio import temporary_directory
from walsmf.memory import DUCKDB_MEMORY_SHARE, check_fits_in_memory, total_memory_mb
from walsmf.queries import DATE_FIELD, REQUIRED_FIELDS, TIME_COLUMN

# BigQuery's types of the fields the queries read.  Its JSON export writes INT64 values as JSON strings,
# which DuckDB would take for text: a JSON export is read with these types.
_JSON_TYPES = {
    "fullVisitorId": "VARCHAR", "visitStartTime": "BIGINT", "date": "VARCHAR",
    "hits": "STRUCT(time BIGINT, type VARCHAR, customDimensions STRUCT(index BIGINT, value VARCHAR)[])[]",
    "event_date": "VARCHAR", "event_timestamp": "BIGINT", "event_name": "VARCHAR",
    "user_pseudo_id": "VARCHAR", "user_id": "VARCHAR",
    "event_params": "STRUCT(key VARCHAR, value STRUCT(string_value VARCHAR, int_value BIGINT))[]",
}


def local_files(sessions_file: str) -> List[str]:
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
    if not os.path.exists(sessions_file):
        raise DataError("sessions file {} does not exist (run 'python -m walsmf.sample' "
                        "or leave --sessions_file out to use the embedded sample)".format(sessions_file))
    if not os.path.isfile(sessions_file):
        raise DataError("--sessions_file {} is a pipe or device: DuckDB reads an export by seeking in it; save it "
                        "to a file and give that".format(sessions_file))
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
    json = files[0].lower().endswith(JSON_SUFFIXES)  # FILE.JSON as well
    if any(f.lower().endswith(JSON_SUFFIXES) != json for f in files):
        raise DataError("--sessions_file {} matches newline-delimited JSON and Parquet files: give a glob of one "
                        "kind".format(sessions_file))
    for path in [] if json else files:
        with open(path, "rb") as f:
            if f.read(4) != b"PAR1":
                raise DataError("{} is not a Parquet file (nor newline-delimited JSON, named .json, .ndjson or "
                                ".jsonl, gzipped or not): give the export's own files".format(path))
    file_list = ", ".join("'{}'".format(f.replace("'", "''")) for f in files)
    sql = to_duckdb_sql(query.sql(local=True))
    con = duckdb.connect()
    with temporary_directory("walsmf-duckdb-") as spill:
        try:
            # DuckDB spills past its limit: leave most of the memory to the preprocessing that follows
            con.execute("SET memory_limit='{}MB'".format(max(512, int(DUCKDB_MEMORY_SHARE * total_memory_mb()))))
            con.execute("SET temp_directory='{}'".format(spill.replace("'", "''")))
            con.execute("SET preserve_insertion_order=false")  # the rows are ordered after the query
            con.execute("CREATE VIEW {} AS SELECT * FROM {}([{}], union_by_name=true)".format(
                LOCAL_VIEW, "read_json_auto" if json else "read_parquet", file_list))
            _check_each_file_schema(con, query, files, json, sessions_file)
            columns = _check_local_fields(con, query, sessions_file)
            if json:
                typed = ", ".join("'{}': '{}'".format(name, _JSON_TYPES[name]) for name in _JSON_TYPES
                                  if name in columns)
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
                sessions_file, _SCHEMA_NAMES[query.schema], first_line(err)))
        finally:
            con.close()


_SCHEMA_NAMES = {"ga360": "GA360 sessions", "ga4": "GA4 events"}
# Top-level fields the query does arithmetic on, as integers (a JSON export has them as strings: cast)
_INTEGER_FIELDS = {"ga360": {"visitStartTime": "seconds since the epoch"},
                   "ga4": {"event_timestamp": "microseconds since the epoch"}}
# newline-delimited JSON as BigQuery exports it, gzipped or not (DuckDB reads both)
JSON_SUFFIXES = tuple(kind + gz for kind in (".json", ".ndjson", ".jsonl") for gz in ("", ".gz"))


def _check_each_file_schema(con, query, files, json, sessions_file):
    """Refuse files of the other schema among ``files``: read together (union_by_name), their rows would have
    none of the query's fields and be left out without a word."""
    other = "ga4" if query.schema == "ga360" else "ga360"
    if json:
        import json as json_module

        fields = {}
        for path in files:
            with (gzip.open if path.lower().endswith(".gz") else open)(path, "rt", encoding="utf-8",
                                                                       errors="replace") as f:
                first = next((line for line in f if line.strip()), "{}")
            try:
                fields[path] = set(json_module.loads(first))
            except (ValueError, TypeError):
                fields[path] = set()
    else:
        fields = {path: set() for path in files}
        for path, name in con.execute("SELECT file_name, name FROM parquet_schema([{}])".format(
                ", ".join("'{}'".format(f.replace("'", "''")) for f in files))).fetchall():
            fields.setdefault(path, set()).add(name)
    foreign = [path for path, names in sorted(fields.items()) if set(REQUIRED_FIELDS[other]) <= names and
               not set(REQUIRED_FIELDS[query.schema]) <= names]
    if foreign and len(foreign) < len(files):
        raise DataError("{} of the {} files --sessions_file {} matches hold {}, not {} ({}{}): give a glob of the "
                        "{} files only".format(len(foreign), len(files), sessions_file, _SCHEMA_NAMES[other],
                                               _SCHEMA_NAMES[query.schema], ", ".join(foreign[:3]),
                                               ", ..." if len(foreign) > 3 else "", _SCHEMA_NAMES[query.schema]))


def _check_local_fields(con, query, sessions_file):
    """Refuse an export of the other schema, or one without the fields the query reads, naming them; return the
    export's field names."""
    types = {row[0]: row[1] for row in con.execute("DESCRIBE {}".format(LOCAL_VIEW)).fetchall()}
    columns = set(types)
    for field in _INTEGER_FIELDS[query.schema]:
        if field in types and not re.fullmatch(r"(U?(BIG|SMALL|TINY|HUGE)?INT(EGER)?|VARCHAR)", types[field]):
            raise DataError("{}: field {} is {}, and the query reads it as an integer ({}): export it as BigQuery "
                            "does (INT64), or convert the column".format(sessions_file, field, types[field],
                                                                        _INTEGER_FIELDS[query.schema][field]))
    other = "ga4" if query.schema == "ga360" else "ga360"
    needed = list(REQUIRED_FIELDS[query.schema])
    if query.start_date or query.end_date:
        needed.append(DATE_FIELD[query.schema])
    if query.schema == "ga4" and query.visitor == "user_id":
        needed.append("user_id")
    missing = [f for f in needed if f not in columns]
    if not missing:
        return columns
    if set(REQUIRED_FIELDS[other]) <= columns:
        raise DataError("{} holds {}, not {}: use --schema {}".format(
            sessions_file, _SCHEMA_NAMES[other], _SCHEMA_NAMES[query.schema], other))
    raise DataError("{} is not a {} export: it has no field {} (the export's own schema has {})".format(
        sessions_file, _SCHEMA_NAMES[query.schema], ", ".join(missing), ", ".join(needed)))


def _explain_no_rows(con, query, sessions_file):
    """The query found no (visitor, content) row: say which of the user's choices left nothing."""
    date = DATE_FIELD[query.schema]
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
    if query.content_pattern:
        raise DataError("no content of {} matches --content_pattern {!r}: check it against the ids the export "
                        "holds (python -m walsmf.extract without it lists them)".format(sessions_file,
                                                                                       query.content_pattern))
    raise DataError("the query returned no (visitor, article) rows with a positive duration from {}".format(
        sessions_file))


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
