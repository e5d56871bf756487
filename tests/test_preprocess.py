"""Ratings, id mapping, TFRecords and metadata, and bad input leaving old outputs untouched."""
import filecmp
import json
import os
import re
import tempfile

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from helpers import HAND_SESSIONS, run_in_process, run_module, write_sessions

from walsmf import datadir, memory, ratings
from walsmf.errors import DataError


def read_csv(data_dir, name, columns):
    return pd.read_csv(os.path.join(data_dir, name), header=None, names=columns, dtype=str)


def test_rating_formula_and_cap():
    df = pd.DataFrame({"visitorId": list("abcde"), "contentId": list("xxyyz"),
                       "session_duration": [10, 20, 30, 100, 1000]})
    raw, median = ratings.add_ratings(df)
    assert median == 30
    # 0.3·(1 + (d − 30)/30) = d/100, capped at 1
    np.testing.assert_allclose(raw["rating"], [0.1, 0.2, 0.3, 1.0, 1.0])
    assert list(raw.columns) == ["visitorId", "contentId", "rating"]


def test_mapping_is_dense_and_round_trips(small_data):
    data_dir, metadata = small_data
    raw = read_csv(data_dir, "collab_raw.csv", ["visitorId", "contentId", "rating"])
    users = read_csv(data_dir, "users.csv", ["visitorId", "userId"])
    items = read_csv(data_dir, "items.csv", ["contentId", "itemId"])
    mapped = read_csv(data_dir, "collab_mapped.csv", ["userId", "itemId", "rating"])
    assert sorted(users["userId"].astype(int)) == list(range(metadata["nusers"]))
    assert sorted(items["itemId"].astype(int)) == list(range(metadata["nitems"]))
    back = mapped.merge(users, on="userId").merge(items, on="itemId")
    original = set(zip(raw["visitorId"], raw["contentId"]))
    assert set(zip(back["visitorId"], back["contentId"])) == original and len(back) == len(raw)
    ratings = dict(zip(zip(raw["visitorId"], raw["contentId"]), raw["rating"].astype(float)))
    expected = [round(ratings[key], 2) for key in zip(back["visitorId"], back["contentId"])]
    np.testing.assert_allclose(back["rating"].astype(float), expected, atol=1e-9)
    assert metadata["interactions"] == len(raw)


def read_tfrecord(path):
    out = {}
    for record in tf.compat.v1.io.tf_record_iterator(path):
        example = tf.train.Example.FromString(record)
        f = example.features.feature
        key = f["key"].int64_list.value
        assert len(key) == 1 and key[0] not in out
        out[key[0]] = list(zip(f["indices"].int64_list.value, np.round(f["values"].float_list.value, 4)))
    return out


def test_every_interaction_is_in_each_tfrecord_exactly_once(small_data):
    data_dir, metadata = small_data
    mapped = pd.read_csv(os.path.join(data_dir, "collab_mapped.csv"), header=None, names=["u", "i", "r"])
    truth = sorted((u, i, round(r, 4)) for u, i, r in mapped.itertuples(index=False))
    by_user = read_tfrecord(os.path.join(data_dir, "items_for_user"))
    by_item = read_tfrecord(os.path.join(data_dir, "users_for_item"))
    assert sorted((u, i, r) for u, entries in by_user.items() for i, r in entries) == truth
    assert sorted((u, i, r) for i, entries in by_item.items() for u, r in entries) == truth
    assert len(by_user) == metadata["nusers"] and len(by_item) == metadata["nitems"]
    subset = read_tfrecord(os.path.join(data_dir, "items_for_user_subset"))
    assert subset == {u: by_user[u] for u in range(20)}


@pytest.mark.subprocess
def test_same_input_same_files(tmp_path, small_sample):
    for name in ("a", "b"):
        assert run_module("walsmf.preprocess", "--sessions_file", small_sample,
                          "--data_dir", tmp_path / name).returncode == 0
    for name in datadir.DATA_FILES:
        assert filecmp.cmp(str(tmp_path / "a" / name), str(tmp_path / "b" / name), shallow=False), name


@pytest.mark.subprocess
def test_cli_prints_the_lab_counts(tmp_path, small_sample):
    result = run_module("walsmf.preprocess", "--sessions_file", small_sample, "--data_dir", tmp_path / "d")
    metadata = json.loads((tmp_path / "d" / "metadata.json").read_text())
    assert "{nitems} items, {nusers} users, {interactions} interactions".format(**metadata) in result.stdout


def snapshot(directory):
    return {name: (directory / name).read_bytes() for name in os.listdir(str(directory))}


@pytest.mark.parametrize("make_input, message", [
    (lambda tmp: str(tmp / "missing.parquet"), "does not exist"),
    (lambda tmp: pd.DataFrame({"x": [1]}).to_parquet(str(tmp / "flat.parquet")) or str(tmp / "flat.parquet"),
     "is not a GA360 sessions export"),
    (lambda tmp: write_sessions(tmp / "empty.parquet", {"9": [{"hitNumber": 1, "time": 0, "type": "PAGE",
                                                              "customDimensions": []}]}),
     "no hit in .* carries custom dimension 10"),
])
def test_bad_input_is_one_line_and_leaves_the_data_dir_untouched(tmp_path, small_data, make_input, message):
    import shutil
    data_dir = tmp_path / "data"
    shutil.copytree(small_data[0], str(data_dir))
    before = snapshot(data_dir)
    result = run_in_process("walsmf.preprocess", "--sessions_file", make_input(tmp_path), "--data_dir", data_dir)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and re.search(message, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(data_dir) == before
    assert [p for p in os.listdir(str(tmp_path)) if ".tmp-" in p] == []


def test_read_metadata_missing_says_what_to_run(tmp_path):
    with pytest.raises(DataError, match="run 'python -m walsmf.preprocess"):
        datadir.read_metadata(str(tmp_path))


@pytest.mark.subprocess
def test_hand_table_end_to_end(tmp_path):
    sessions = write_sessions(tmp_path / "s.parquet", HAND_SESSIONS)
    assert run_module("walsmf.preprocess", "--sessions_file", sessions, "--data_dir", tmp_path / "d").returncode == 0
    # durations 1500, 2000, 60, 30: median 780, so rating = 0.3·d/780 (none reaches the cap)
    raw = pd.read_csv(str(tmp_path / "d" / "collab_raw.csv"), header=None, names=["v", "c", "r"],
                      dtype={"v": str, "c": str})
    expected = {("1", "100"): 0.3 * 1500 / 780, ("1", "200"): 0.3 * 2000 / 780,
                ("2", "400"): 0.3 * 60 / 780, ("2", "500"): 0.3 * 30 / 780}
    assert {(v, c): r for v, c, r in raw.itertuples(index=False)} == pytest.approx(expected)


def test_data_too_large_for_this_process_stops_naming_the_beam_runner(tmp_path, small_sample, monkeypatch):
    from walsmf import extract
    available = 10 * memory.PREPROCESS_BYTES_PER_ROW  # room for 10 rows
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: available)
    with pytest.raises(DataError, match=r"2,586 extracted rows would take about .* GB to preprocess in one process "
                                        r".* instead \(--runner DataflowRunner"):
        extract.extract(sessions_file=small_sample)
    # DuckDB's spill directory went with the run
    assert not [p for p in os.listdir(tempfile.gettempdir()) if p.startswith("walsmf-duckdb-{}-".format(os.getpid()))]
