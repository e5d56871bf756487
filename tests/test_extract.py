"""The lab's SQL: its semantics on a hand-built table, the DuckDB rewrite, the BigQuery client path."""
import threading
from http.server import HTTPServer

import pandas as pd
import pytest
from helpers import HAND_EXPECTED, HAND_SESSIONS, FakeBigQuery, client_for, run_in_process, write_sessions

from walsmf import duckdb_sql, extract, queries
from walsmf.errors import DataError


def rows_of(df):
    return sorted(zip(df["visitorId"], df["contentId"], df["session_duration"].astype(int)))


def test_sql_semantics_on_hand_built_table(tmp_path):
    path = write_sessions(tmp_path / "s.parquet", HAND_SESSIONS)
    df = extract.normalize_extracted(extract.run_local(extract.Query(), path))
    assert rows_of(df) == sorted(HAND_EXPECTED)
    assert list(df.columns) == extract.COLUMNS + [extract.TIME_COLUMN]
    # a pair's latest time: visitStartTime (s) * 1000 + its latest PAGE hit's time (ms)
    start = 1500000000 * 1000
    assert dict(zip(zip(df["visitorId"], df["contentId"]), df["read_time"])) == {
        ("1", "100"): start + 3000, ("1", "200"): start + 1000, ("2", "400"): start + 10, ("2", "500"): start + 70}


def test_newline_delimited_json_export_reads_the_same(tmp_path):
    parquet = write_sessions(tmp_path / "s.parquet", HAND_SESSIONS)
    ndjson = tmp_path / "s.json"
    pd.read_parquet(parquet).to_json(ndjson, orient="records", lines=True)
    df = extract.normalize_extracted(extract.run_local(extract.Query(), str(ndjson)))
    assert rows_of(df) == sorted(HAND_EXPECTED)


@pytest.mark.parametrize("name", ["S.JSON", "s.ndjson.gz", "s.Jsonl"])
def test_a_json_export_is_known_by_its_name_whatever_its_case_and_gzipped(tmp_path, name):
    parquet = write_sessions(tmp_path / "s.parquet", HAND_SESSIONS)
    path = tmp_path / name
    pd.read_parquet(parquet).to_json(str(path), orient="records", lines=True,
                                     compression="gzip" if name.endswith(".gz") else None)
    df = extract.normalize_extracted(extract.run_local(extract.Query(), str(path)))
    assert rows_of(df) == sorted(HAND_EXPECTED)


def test_a_glob_of_both_schemas_or_both_file_kinds_is_refused_naming_the_odd_files(tmp_path):
    from helpers import event, write_events

    write_sessions(tmp_path / "export_1.parquet", HAND_SESSIONS)
    write_sessions(tmp_path / "export_2.parquet", HAND_SESSIONS)
    write_events(tmp_path / "export_3.parquet", [event("A", 1, "page_view", page_location="https://site/a")])
    with pytest.raises(DataError) as refused:
        extract.run_local(extract.Query(), str(tmp_path / "export_*.parquet"))
    assert str(refused.value).startswith("1 of the 3 files --sessions_file {} matches hold GA4 events, not GA360 "
                                         "sessions ({})".format(tmp_path / "export_*.parquet",
                                                                tmp_path / "export_3.parquet"))
    with pytest.raises(DataError) as refused:  # the other way round: GA4 asked, two GA360 files among them
        extract.run_local(extract.Query(schema="ga4"), str(tmp_path / "export_*.parquet"))
    assert str(refused.value).startswith("2 of the 3 files")
    pd.read_parquet(str(tmp_path / "export_1.parquet")).to_json(str(tmp_path / "export_4.json"), orient="records",
                                                                lines=True)
    with pytest.raises(DataError, match="matches newline-delimited JSON and Parquet files"):
        extract.run_local(extract.Query(), str(tmp_path / "export_*"))


def test_duckdb_rewrite_is_on_the_syntax_tree():
    sql = extract.to_duckdb_sql(queries.lab_sql("other-project.other_dataset.sessions"))
    assert "other-project" not in sql and duckdb_sql.LOCAL_VIEW in sql
    assert "AS _t0(hit)" in sql and "dimension.index = 10" in sql
    # the string "hits" in a comment or literal is not touched: only column references are
    assert "UNNEST(hits)" in sql


def test_an_aggregate_over_an_unnest_runs_as_list_functions_with_the_same_values():
    import duckdb
    sql = ("SELECT id, (SELECT MAX(IF(index = 10, value, NULL)) FROM UNNEST(dims)) AS content, "
           "(SELECT SUM(n.value) FROM UNNEST(nums) AS n WHERE n.key = 'k') AS total, "
           "(SELECT COUNT(*) FROM UNNEST(nums)) AS counted FROM `p.d.t`")
    local = extract.to_duckdb_sql(sql)
    assert "LIST_MAX(LIST_TRANSFORM(" in local and "LIST_SUM(LIST_TRANSFORM(LIST_FILTER(" in local
    assert "SELECT COUNT(*) FROM UNNEST(" in local  # no list function for it: the subquery stays
    con = duckdb.connect()
    con.execute("CREATE TABLE {} (id INT, dims STRUCT(index INT, value VARCHAR)[], "
                "nums STRUCT(key VARCHAR, value INT)[])".format(duckdb_sql.LOCAL_VIEW))
    rows = [(1, [(10, "b"), (3, "z"), (10, "a")], [("k", 2), ("j", 5), ("k", 4)]),
            (2, [(3, "z")], []), (3, None, None), (4, [], [("j", 1)])]
    for id_, dims, nums in rows:
        con.execute("INSERT INTO {} VALUES (?, ?, ?)".format(duckdb_sql.LOCAL_VIEW),
                    [id_, None if dims is None else [{"index": i, "value": v} for i, v in dims],
                     None if nums is None else [{"key": k, "value": v} for k, v in nums]])
    # by hand: the greatest value of index 10, the sum of key k's values, the count of entries
    assert con.execute(local + " ORDER BY id").fetchall() == [(1, "b", 6, 3), (2, None, None, 0), (3, None, None, 0),
                                                              (4, None, None, 1)]


@pytest.mark.parametrize("table", ["a`; DROP TABLE x", "p.d.t; DROP TABLE x", "p.d.t\n", "p.d\\t", "p.d", "",
                                   "p.d.t.u", "P.d.t"])
def test_table_names_that_are_not_bigquery_references_are_refused(table):
    with pytest.raises(DataError, match="not a BigQuery table reference"):
        queries.lab_sql(table)


@pytest.mark.parametrize("table", [queries.DEFAULT_TABLE, "my-project.ga360.ga_sessions_*",
                                   "example.com:my-project.ga360.ga_sessions_20170801"])
def test_bigquery_table_references_are_taken(table):
    assert "FROM `{}`".format(table) in queries.lab_sql(table)


def test_a_bad_or_misplaced_table_is_one_line_before_any_network_call(tmp_path, monkeypatch):
    # no credentials and no network here: a check that reached the client would say so instead
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "none"))
    bad = run_in_process("walsmf.extract", "--source", "bigquery", "--project", "p", "--table", "p.d.t;x")
    local = run_in_process("walsmf.extract", "--table", "my-project.ga360.ga_sessions_*", "--scale", "0.001",
                       "--output", tmp_path / "rows.csv")
    for result, message in ((bad, "not a BigQuery table reference"), (local, "--source local reads")):
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and lines[-1].startswith("error: --table") and message in lines[-1]
    assert not (tmp_path / "rows.csv").exists()


def test_normalize_drops_what_the_lab_drops_and_refuses_the_rest():
    df = pd.DataFrame({"visitorId": ["1", "2", "3", "4"], "contentId": ["9", None, "9", "8"],
                       "session_duration": [10, 5, 0, -3]})
    assert rows_of(extract.normalize_extracted(df)) == [("1", "9", 10)]
    with pytest.raises(DataError, match="the query.s result had no column contentId"):
        extract.normalize_extracted(df.drop(columns=["contentId"]))
    with pytest.raises(DataError, match=r"^session_duration 'abc' is not a number: give session_duration as numbers "
                                        r"\(milliseconds read\)$"):
        extract.normalize_extracted(df.assign(session_duration=["10", "abc", "1", "2"]))
    with pytest.raises(DataError, match="no \\(visitor, article\\) rows"):
        extract.normalize_extracted(df.iloc[2:])


@pytest.mark.parametrize("unit", [1, 1000, 10 ** -3], ids=["ms", "µs", "seconds"])
def test_a_files_read_times_in_seconds_or_microseconds_are_kept_as_milliseconds(unit):
    ms = [1500019157679, 1500019160000]  # July 2017
    df = pd.DataFrame({"visitorId": ["1", "2"], "contentId": ["9", "9"], "session_duration": [10, 20],
                       "read_time": [int(t * unit) for t in ms]})
    kept = extract.normalize_extracted(df, "reads.csv")["read_time"].tolist()
    assert kept == ([t // 1000 * 1000 for t in ms] if unit < 1 else ms)


def test_a_querys_read_times_are_milliseconds_however_small():
    day = 86400000  # 1970-01-02: a seconds-sized number, but the lab's SQL always gives ms
    df = pd.DataFrame({"visitorId": ["1", "2"], "contentId": ["9", "9"], "session_duration": [10, 20],
                       "read_time": [0, day]})
    assert extract.normalize_extracted(df)["read_time"].tolist() == [0, day]


@pytest.fixture
def fake_bigquery(tmp_path):
    path = write_sessions(tmp_path / "s.parquet", HAND_SESSIONS)
    # the fake server computes its rows with the embedded engine
    FakeBigQuery.rows = rows_of(extract.normalize_extracted(extract.run_local(extract.Query(), path)))
    FakeBigQuery.requests, FakeBigQuery.fail_with = [], None
    server = HTTPServer(("127.0.0.1", 0), FakeBigQuery)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def test_bigquery_path_sends_the_lab_sql_and_returns_typed_rows(fake_bigquery):
    df = extract.run_bigquery(queries.lab_sql(), "p", client=client_for(fake_bigquery))
    method, path, body = FakeBigQuery.requests[0]
    assert (method, path.split("?")[0]) == ("POST", "/bigquery/v2/projects/p/jobs")
    query = body["configuration"]["query"]
    assert query["query"] == queries.lab_sql() and query["useLegacySql"] is False
    assert list(df.columns) == extract.COLUMNS
    assert str(df["session_duration"].dtype) == "Int64"
    assert rows_of(extract.normalize_extracted(df)) == sorted(HAND_EXPECTED)


def test_bigquery_not_found_is_one_clear_line(fake_bigquery):
    FakeBigQuery.fail_with = (404, "Not found: Table cloud-training-demos:GA360_test.nope was not found")
    with pytest.raises(DataError) as err:
        extract.run_bigquery(queries.lab_sql(), "p", client=client_for(fake_bigquery))
    assert "not found" in str(err.value) and "\n" not in str(err.value) and "--table" in str(err.value)
    assert len([r for r in FakeBigQuery.requests if r[0] == "POST"]) == 1  # not retried


def test_bigquery_without_project_says_so():
    with pytest.raises(DataError, match="needs --project"):
        extract.extract(source="bigquery")


@pytest.mark.subprocess
def test_bigquery_without_credentials_says_how_to_get_them(tmp_path):
    from helpers import run_module
    # no key file, no gcloud login, and no probe of the GCE metadata server (a network call)
    env = {"GOOGLE_APPLICATION_CREDENTIALS": "", "CLOUDSDK_CONFIG": str(tmp_path), "HOME": str(tmp_path),
           "NO_GCE_CHECK": "True"}
    result = run_module("walsmf.preprocess", "--source", "bigquery", "--project", "p", "--data_dir",
                        tmp_path / "data", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: no Google credentials for BigQuery project 'p': run 'gcloud auth application-default login' "
        "or set GOOGLE_APPLICATION_CREDENTIALS")
    assert not (tmp_path / "data").exists()


def test_spaces_around_ids_are_stripped_and_a_blank_id_is_refused(tmp_path):
    from walsmf.errors import DataError

    (tmp_path / "reads.csv").write_text("visitorId,contentId,session_duration\nv1,a,100\n v1 , a ,50\nv2,\tb,10\n")
    rows = extract.read_extracted_csv(str(tmp_path / "reads.csv"))
    # " v1 " reading " a " is v1 reading a: one pair, its durations summed as the lab's GROUP BY sums them
    assert list(zip(rows["visitorId"], rows["contentId"], rows["session_duration"])) == [("v1", "a", 150),
                                                                                       ("v2", "b", 10)]
    (tmp_path / "blank.csv").write_text("visitorId,contentId,session_duration\nv1,  ,100\n")
    with pytest.raises(DataError, match=r"an id is blank \('  '\)"):
        extract.read_extracted_csv(str(tmp_path / "blank.csv"))


def test_reads_over_a_day_past_now_are_refused_and_a_day_of_clock_skew_is_not():
    now, day = 1764547200000, 24 * 3600 * 1000
    rows = pd.DataFrame({"visitorId": ["v", "w"], "contentId": ["a", "b"], "session_duration": [5, 5],
                         "read_time": [now - day, now + day]})
    extract.check_times_past(rows, "reads.csv", now_ms=now)  # exactly a day ahead: a clock's skew, kept
    with pytest.raises(DataError, match=r"^reads.csv: 1 read\(s\) are dated after now, e.g. visitor w and content "
                                        r"b at 2025-12-02 00:00 UTC \(1764633600001 ms\): check the export's clock"):
        extract.check_times_past(rows.assign(read_time=[now, now + day + 1]), "reads.csv", now_ms=now)
