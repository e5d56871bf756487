"""GA4 exports and date windows: the extracted rows against an answer computed here by the documented rules."""
import collections
import json
import os
import random
import re
import threading
from http.server import HTTPServer

import pandas as pd
import pyarrow.parquet as pq
import pytest
from helpers import (
    HAND_SESSIONS,
    FakeBigQuery,
    client_for,
    event,
    page,
    run_in_process,
    run_module,
    write_events,
    write_sessions,
)

from walsmf import duckdb_sql, extract, sample
from walsmf.errors import DataError

DAY = 86400 * 10 ** 6
BIG = 2 ** 31 + 5  # engaged ms past a 32-bit integer


def hand_events():
    """Events exercising each rule (docs/data.md), in no particular row order."""
    events = [
        # visitor A, session 1: an article sent as int and as string is one article; a page without the
        # parameter ends the carry; a sum past 2^31 ms
        event("A", 1, "session_start", page_location="https://site/a?utm_source=x"),
        event("A", 2, "page_view", page_location="https://site/a?utm_source=x#c", article_id=123),
        event("A", 3, "scroll", page_location="https://site/a", engagement_time_msec=1000),
        event("A", 4, "page_view", page_location="https://site/home#top"),
        event("A", 5, "user_engagement", page_location="https://site/home", engagement_time_msec=500),
        event("A", 6, "page_view", page_location="https://site/a", article_id="123"),
        event("A", 7, "user_engagement", page_location="https://site/a", engagement_time_msec=BIG),
        # visitor A, session 2: nothing carries over from session 1; "00123" stays "00123"
        event("A", 8, "user_engagement", session=2, page_location="https://site/b", engagement_time_msec=300),
        event("A", 9, "page_view", session=2, page_location="https://site/b?x=1", article_id="00123"),
        event("A", 10, "scroll", session=2, page_location="https://site/b", engagement_time_msec=50),
        # consent mode: no visitor, dropped (never one NULL visitor)
        event(None, 11, "page_view", page_location="https://site/z", article_id=999),
        event(None, 12, "user_engagement", page_location="https://site/z", engagement_time_msec=10000),
        event(None, 13, "page_view", session=7, page_location="https://site/z", article_id=999),
        event(None, 14, "user_engagement", session=7, page_location="https://site/z", engagement_time_msec=10),
        # visitor B: no ga_session_id at all (one session)
        event("B", 1, "page_view", session=None, page_location="https://site/7", article_id=7),
        event("B", 2, "user_engagement", session=None, page_location="https://site/7", engagement_time_msec=40),
        event("B", 3, "page_view", session=None, page_location="https://site/8", article_id=8),
        event("B", 4, "scroll", session=None, page_location="https://site/8", engagement_time_msec=60),
        # visitors signed in (user_id) or not
        event("C", 1, "page_view", user_id="u1", page_location="https://site/5", article_id=5),
        event("C", 2, "user_engagement", user_id="u1", page_location="https://site/5", engagement_time_msec=70),
        event("D", 1, "page_view", page_location="https://site/5", article_id=5),
        event("D", 2, "user_engagement", page_location="https://site/5", engagement_time_msec=75),
        # the site's root (its query string stripped) is no article: its page_view ends the carry
        event("G", 1, "page_view", page_location="https://site/7", article_id=7),
        event("G", 2, "user_engagement", page_location="https://site/7", engagement_time_msec=20),
        event("G", 3, "page_view", page_location="https://site/?utm_source=x"),
        event("G", 4, "user_engagement", page_location="https://site/", engagement_time_msec=500),
        # a section front (the URL of its articles up to their last segment) is no article with page URLs
        event("H", 1, "page_view", page_location="https://site/sport/"),
        event("H", 2, "user_engagement", page_location="https://site/sport/", engagement_time_msec=70),
        event("H", 3, "page_view", page_location="https://site/sport/4", article_id=4),
        event("H", 4, "user_engagement", page_location="https://site/sport/4", engagement_time_msec=40),
        # at one timestamp, the engagement counts for the page being left, not the page arriving
        event("F", 1, "page_view", page_location="https://site/1", article_id=1),
        event("F", 5, "user_engagement", page_location="https://site/1", engagement_time_msec=90),
        event("F", 5, "page_view", page_location="https://site/2", article_id=2),
        event("F", 6, "scroll", page_location="https://site/2", engagement_time_msec=0),
        # a page read across midnight: the carry sees only the window's events
        event("E", DAY - 1, "page_view", date="20240101", page_location="https://site/9", article_id=9),
        event("E", DAY + 1, "user_engagement", date="20240102", page_location="https://site/9",
              engagement_time_msec=80),
        event("E", DAY + 2, "page_view", date="20240102", page_location="https://site/10", article_id=10),
        event("E", DAY + 3, "scroll", date="20240102", page_location="https://site/10", engagement_time_msec=33),
    ]
    random.Random(0).shuffle(events)  # rows out of time order
    return events


def reference(events, content_param="page_location", visitor="user_pseudo_id", start=None, end=None,
              content_pattern=None):
    """The documented rules, applied in plain Python: {(visitorId, contentId): (session_duration, read_time)}."""
    def visitor_of(e):
        return (e["user_id"] or e["user_pseudo_id"]) if visitor == "user_id" else e["user_pseudo_id"]

    def param(e, key):
        for p in e["event_params"]:
            if p["key"] == key:
                return p["value"]
        return None

    def content_of(e):
        value = param(e, content_param)
        if value is None:
            return None
        if content_param == "page_location":
            text = value["string_value"] or ""
            text = text.split("?")[0].split("#")[0]
            if content_pattern is None and re.fullmatch(r"https?://[^/]+/?", text):
                return None  # the site's root
        else:
            text = value["string_value"] if value["string_value"] is not None else (
                None if value["int_value"] is None else str(value["int_value"]))
        if text and content_pattern is not None and not re.search(content_pattern, text):
            return None
        return text or None

    kept = [e for e in events if visitor_of(e) is not None and (start is None or e["event_date"] >= start)
            and (end is None or e["event_date"] <= end)]
    sessions = collections.defaultdict(list)
    for e in kept:
        session = param(e, "ga_session_id")
        sessions[(visitor_of(e), session and session["int_value"])].append(e)
    durations, times = collections.Counter(), {}
    for (who, _), group in sessions.items():
        group.sort(key=lambda e: (e["event_timestamp"], content_of(e) is not None or e["event_name"] == "page_view"))
        current = None
        for e in group:
            if content_of(e) is not None:
                current = content_of(e)
            elif e["event_name"] == "page_view":
                current = None
            if current is None:
                continue
            engaged = param(e, "engagement_time_msec")
            durations[(who, current)] += engaged["int_value"] if engaged else 0
            times[(who, current)] = max(times.get((who, current), 0), e["event_timestamp"] // 1000)
    fronts = set()
    if content_param == "page_location" and content_pattern is None:  # pages other pages' URLs continue
        fronts = {re.sub(r"/[^/]*$", "", c.rstrip("/")) for _, c in durations}
    return {pair: (d, times[pair]) for pair, d in durations.items() if d > 0 and pair[1].rstrip("/") not in fronts}


def rows(df):
    return {(v, c): (d, t) for v, c, d, t in zip(df["visitorId"], df["contentId"], df["session_duration"],
                                                    df[extract.TIME_COLUMN])}


def ga4(path, **fields):
    return rows(extract.extract(schema="ga4", sessions_file=path, **fields))


@pytest.mark.parametrize("fields", [
    {}, {"content_param": "article_id"}, {"content_param": "article_id", "visitor": "user_id"},
    {"start_date": "20240102"}, {"end_date": "20240101", "content_param": "article_id"},
    {"start_date": "20240101", "end_date": "20240101"}, {"content_pattern": r"/\d+$"},
    {"content_param": "article_id", "content_pattern": "^[0-9]$"},
])
def test_ga4_rows_follow_the_rules(tmp_path, fields):
    events = hand_events()
    path = write_events(tmp_path / "events.parquet", events)
    expected = reference(events, **{{"start_date": "start", "end_date": "end"}.get(k, k): v
                                    for k, v in fields.items()})
    assert ga4(path, **fields) == expected


def test_the_rules_by_hand(tmp_path):
    """A few rows computed by reading the events above, so the reference itself is checked."""
    path = write_events(tmp_path / "events.parquet", hand_events())
    by_url, by_article = ga4(path), ga4(path, content_param="article_id")
    assert by_url[("A", "https://site/a")][0] == 1000 + BIG
    assert by_url[("A", "https://site/home")][0] == 500
    assert by_article[("A", "123")][0] == 1000 + BIG          # int 123 and "123": one article
    assert by_article[("A", "00123")][0] == 50                # its session's first engagement preceded it
    assert ("A", "https://site/home") not in by_article and None not in {v for v, _ in by_article}
    assert by_article[("F", "1")][0] == 90 and ("F", "2") not in by_article
    assert by_article[("B", "7")] == (40, 0) and by_article[("B", "8")] == (60, 0)
    assert ("u1", "5") in ga4(path, content_param="article_id", visitor="user_id")
    assert by_article[("E", "9")][0] == 80
    assert ("E", "9") not in ga4(path, content_param="article_id", start_date="20240102")


def test_daily_files_read_as_a_glob_and_windowed_by_their_rows_date(tmp_path):
    events = hand_events()
    for date in ("20240101", "20240102"):
        write_events(tmp_path / "events_{}.parquet".format(date), (e for e in events if e["event_date"] == date))
    pattern = str(tmp_path / "events_*.parquet")
    assert ga4(pattern) == reference(events)
    assert ga4(pattern, start_date="20240102") == reference(events, start="20240102")


def test_ga4_sample_is_the_ga360_samples_reading(tmp_path):
    ga360 = sample.write_sample(str(tmp_path / "s.parquet"), scale=0.01, seed=3)
    events = sample.write_sample(str(tmp_path / "e.parquet"), scale=0.01, seed=3, schema="ga4")
    sessions = extract.extract(sessions_file=ga360)
    by_article = extract.extract(schema="ga4", sessions_file=events, content_param="article_id")
    pd.testing.assert_frame_equal(by_article[extract.COLUMNS].astype(str), sessions[extract.COLUMNS].astype(str))
    table = pq.read_table(events).to_pandas()
    assert table["user_pseudo_id"].isna().sum() > 0                      # consent-mode pings
    assert table["event_date"].nunique() >= 3                            # several days
    params = [p for ps in table["event_params"] for p in ps]
    article_ids = [p["value"] for p in params if p["key"] == "article_id"]
    assert {v["int_value"] is None for v in article_ids} == {True, False}  # sent as int and as string
    assert any("?utm_" in (p["value"]["string_value"] or "") for p in params if p["key"] == "page_location")
    by_url = extract.extract(schema="ga4", sessions_file=events)
    assert not by_url["contentId"].str.contains(r"[?#]").any()
    assert by_url["contentId"].str.startswith("https://").all()


def test_ga360_window_on_the_rows_date_and_custom_dimension(tmp_path):
    sessions = dict(HAND_SESSIONS)
    path = write_sessions(tmp_path / "s.parquet", sessions)
    table = pq.read_table(path).to_pandas()
    table["date"] = ["20170801", "20170802", "20170802", "20170803"]
    table.to_parquet(str(tmp_path / "dated.parquet"))
    dated = str(tmp_path / "dated.parquet")
    everything = rows(extract.extract(sessions_file=dated))
    assert rows(extract.extract(sessions_file=dated, start_date="20170802", end_date="20170802")) == {
        pair: value for pair, value in everything.items() if pair[0] in ("2", "3")}
    assert set(rows(extract.extract(sessions_file=dated, end_date="20170801"))) == {("1", "100"), ("1", "200")}
    # the article id in another custom dimension
    moved = write_sessions(tmp_path / "moved.parquet", {"1": [page(0, extra=[{"index": 7, "value": "50"}]),
                                                              page(100, extra=[{"index": 7, "value": "60"}]),
                                                              page(400)]})
    assert rows(extract.extract(sessions_file=moved, content_index=7)) == {
        ("1", "50"): (100, 1500000000000), ("1", "60"): (300, 1500000000100)}


def test_window_on_daily_bigquery_tables_filters_table_suffix():
    import sqlglot

    for schema, table in (("ga360", "p.d.ga_sessions_*"), ("ga4", "p.analytics_1.events_*")):
        sql = extract.Query(source="bigquery", project="p", schema=schema, table=table,
                            start_date="20240101", end_date="20240107").check().sql()
        assert "_TABLE_SUFFIX BETWEEN '20240101' AND '20240107'" in sql
        sqlglot.parse_one(sql, read="bigquery")
        # without a window the daily tables are still bounded: intraday_* suffixes are left out
        assert "BETWEEN '00000000' AND '99999999'" in extract.Query(source="bigquery", project="p", schema=schema,
                                                                      table=table).sql()
    # today's reads, as an hourly refresh takes them: GA4's intraday tables by the same window
    today = extract.Query(source="bigquery", project="p", schema="ga4", table="p.analytics_1.events_intraday_*",
                          start_date="20240107", end_date="20240107").check().sql()
    assert "`p.analytics_1.events_intraday_*`" in today and "_TABLE_SUFFIX BETWEEN '20240107' AND '20240107'" in today
    one_table = extract.Query(source="bigquery", project="p", schema="ga4", table="p.analytics_1.events_20240101",
                              start_date="20240101").sql()
    assert "event_date >= '20240101'" in one_table and "_TABLE_SUFFIX" not in one_table


class FakeGA4BigQuery(FakeBigQuery):
    """BigQuery's REST API, answering any query with the rows the embedded engine gives for a GA4 file."""


def test_ga4_through_the_real_bigquery_client_against_a_loopback_fake(tmp_path):
    import sqlglot

    events = hand_events()
    path = write_events(tmp_path / "events.parquet", events)
    local = extract.extract(schema="ga4", sessions_file=path, content_param="article_id", start_date="20240101")
    FakeGA4BigQuery.rows = sorted(zip(local["visitorId"], local["contentId"], local["session_duration"]))
    FakeGA4BigQuery.requests, FakeGA4BigQuery.fail_with = [], None
    server = HTTPServer(("127.0.0.1", 0), FakeGA4BigQuery)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        query = extract.Query(source="bigquery", project="p", schema="ga4", table="p.analytics_1.events_*",
                              content_param="article_id", start_date="20240101").check()
        df = extract.run_bigquery(query.sql(), "p", client=client_for(server))
    finally:
        server.shutdown()
    sent = [body for method, _, body in FakeGA4BigQuery.requests if method == "POST"][0]
    sql = sent["configuration"]["query"]["query"]
    assert sqlglot.parse_one(sql, read="bigquery") is not None
    assert "_TABLE_SUFFIX BETWEEN '20240101' AND '99999999'" in sql and "'article_id'" in sql
    assert sorted(zip(df["visitorId"], df["contentId"], df["session_duration"].astype(int))) == FakeGA4BigQuery.rows


@pytest.mark.subprocess
def test_print_sql_shows_the_ga4_query_and_its_duckdb_form():
    result = run_module("walsmf.extract", "--schema", "ga4", "--content_param", "article_id", "--print_sql")
    assert result.returncode == 0, result.stderr
    bigquery, duckdb = result.stdout.split("-- DuckDB form:")
    assert "UNNEST(event_params)" in bigquery and "'article_id'" in bigquery and "events_*" in bigquery
    assert "IGNORE NULLS" in duckdb and duckdb_sql.LOCAL_VIEW in duckdb


@pytest.mark.parametrize("args, message", [
    (["--schema", "ga4", "--sessions_file", "{ga360}"], "holds GA360 sessions, not GA4 events: use --schema ga360"),
    (["--sessions_file", "{ga4}"], "holds GA4 events, not GA360 sessions: use --schema ga4"),
    (["--schema", "ga4", "--sessions_file", "{ga4}", "--content_param", "section"],
     "no event in .* carries the parameter 'section' \\(--content_param\\)"),
    (["--sessions_file", "{ga360}", "--content_index", "7"], "no hit in .* carries custom dimension 7"),
    (["--schema", "ga4", "--sessions_file", "{ga4}", "--start_date", "20250101"],
     "has no event between 20250101 and the end \\(its dates run from 20240101 to 20240102\\)"),
    (["--start_date", "2024-01-01"], "--start_date '2024-01-01' is not a date: give YYYYMMDD"),
    (["--end_date", "20240231"], "--end_date '20240231' is not a date"),
    (["--start_date", "20240105", "--end_date", "20240101"], "--end_date 20240101 is before --start_date 20240105"),
    (["--schema", "ga4", "--content_param", "page location"], "is not an event parameter name"),
    (["--schema", "ga4", "--source", "bigquery", "--project", "p"], "--schema ga4 on BigQuery needs --table"),
    (["--sessions_file", "{dir}"], "is a directory: give a file, or a glob"),
    (["--sessions_file", "{dir}/nothing_*.parquet"], "no file matches --sessions_file"),
])
def test_bad_input_is_one_true_line_and_the_data_dir_stays(tmp_path, small_data, args, message):
    import re
    import shutil

    files = {"ga360": write_sessions(tmp_path / "s.parquet", HAND_SESSIONS),
             "ga4": write_events(tmp_path / "e.parquet", hand_events()), "dir": str(tmp_path)}
    data_dir = tmp_path / "data"
    shutil.copytree(small_data[0], str(data_dir))
    before = {name: (data_dir / name).read_bytes() for name in os.listdir(str(data_dir))}
    result = run_in_process("walsmf.preprocess", *[a.format(**files) for a in args], "--data_dir", data_dir)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert {name: (data_dir / name).read_bytes() for name in os.listdir(str(data_dir))} == before


def test_a_window_needs_the_rows_date_field(tmp_path):
    path = write_sessions(tmp_path / "s.parquet", HAND_SESSIONS)
    with pytest.raises(DataError, match="no field date"):
        extract.extract(sessions_file=path, start_date="20170101")


@pytest.mark.subprocess
def test_beam_writes_the_in_process_ga4_data_directory(tmp_path):
    pytest.importorskip("apache_beam")
    path = write_events(tmp_path / "e.parquet", hand_events())
    for runner in ([], ["--runner", "DirectRunner"]):
        result = run_module("walsmf.preprocess", "--schema", "ga4", "--sessions_file", path, "--data_dir",
                            tmp_path / ("beam" if runner else "in-process"), *runner)
        assert result.returncode == 0, result.stderr[-2000:]
    for name in ("collab_raw.csv", "users.csv", "items.csv", "collab_mapped.csv", "times.csv"):
        read = [sorted((tmp_path / d / name).read_text().splitlines()) for d in ("beam", "in-process")]
        assert read[0] == read[1], name
    assert json.loads((tmp_path / "beam" / "metadata.json").read_text()) == json.loads(
        (tmp_path / "in-process" / "metadata.json").read_text())
    times = pd.read_csv(str(tmp_path / "in-process" / "times.csv"), dtype={"visitorId": str, "contentId": str})
    expected = reference(hand_events())
    assert {(v, c): t for v, c, t in zip(times["visitorId"], times["contentId"], times["time"])} == {
        pair: t for pair, (_, t) in expected.items()}


def test_an_export_whose_timestamp_is_no_integer_is_named_with_the_type_expected(tmp_path):
    import pyarrow as pa

    path = write_events(tmp_path / "events.parquet", hand_events())
    table = pq.read_table(str(path))
    column = table.schema.get_field_index("event_timestamp")
    table = table.set_column(column, "event_timestamp", table.column(column).cast(pa.timestamp("us")))
    pq.write_table(table, str(tmp_path / "timestamps.parquet"))
    with pytest.raises(DataError, match=r"field event_timestamp is TIMESTAMP, and the query reads it as an integer "
                                        r"\(microseconds since the epoch\)"):
        ga4(str(tmp_path / "timestamps.parquet"))


def test_a_section_front_is_no_article_with_page_urls_unless_a_pattern_says_what_articles_are(tmp_path):
    path = write_events(tmp_path / "events.parquet", hand_events())
    by_url = ga4(path)
    assert ("H", "https://site/sport/4") in by_url and ("H", "https://site/sport/") not in by_url
    assert ("G", "https://site/") not in by_url  # the root is every page's front
    by_pattern = ga4(path, content_pattern="sport")
    assert {("H", "https://site/sport/4"), ("H", "https://site/sport/")} <= set(by_pattern)
