"""Held-out split, ranking metrics (hand-computed), baselines, and the hyperparameter-tuning summary."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from helpers import ROOT, run_module

from walsmf import baselines, datadir, metrics, splits
from walsmf.errors import DataError


def mapped_frame(rng, nusers=60, nitems=15, per_user=(1, 8)):
    rows = [(u, i, round(float(rng.random()), 2)) for u in range(nusers)
            for i in rng.choice(nitems, size=int(rng.integers(*per_user)), replace=False)]
    return pd.DataFrame(rows, columns=splits.MAPPED_COLUMNS)


def test_split_holds_out_one_per_eligible_user_and_keeps_every_user():
    mapped = mapped_frame(np.random.default_rng(0))
    train, test, unevaluated = splits.holdout_split(mapped, seed=3)
    assert len(train) + len(test) == len(mapped)
    assert set(map(tuple, pd.concat([train, test]).values)) == set(map(tuple, mapped.values))
    per_user = mapped.groupby("userId").size()
    assert test["userId"].is_unique and set(test["userId"]) <= set(per_user[per_user >= 3].index)
    assert set(train["userId"]) == set(mapped["userId"])
    assert unevaluated == mapped["userId"].nunique() - test["userId"].nunique()
    again = splits.holdout_split(mapped, seed=3)[1]
    assert again.equals(test)
    assert not splits.holdout_split(mapped, seed=4)[1].equals(test)


def test_a_larger_holdout_takes_at_most_a_fifth_of_each_users_reads():
    mapped = mapped_frame(np.random.default_rng(2), nusers=80, nitems=40, per_user=(1, 30))
    train, test, _ = splits.holdout_split(mapped, holdout=4, seed=0)
    reads = mapped.groupby("userId").size()
    held = test.groupby("userId").size().reindex(reads.index, fill_value=0)
    # 3 or 4 reads: one; 10 reads: two; 20 or more: four; fewer than 3: none
    expected = np.where(reads < 3, 0, np.minimum(4, np.maximum(1, reads // 5)))
    assert (held.values == expected).all() and len(train) + len(test) == len(mapped)
    assert not set(map(tuple, test.values)) & set(map(tuple, train.values))


def test_with_times_each_user_holds_out_their_latest_reads():
    rng = np.random.default_rng(5)
    mapped = mapped_frame(rng, nusers=80, nitems=40, per_user=(1, 30))
    times = rng.permutation(len(mapped)).astype(float)
    for holdout in (1, 3):
        train, test, _ = splits.holdout_split(mapped, holdout=holdout, seed=1, times=times)
        timed = mapped.assign(time=times)
        for user, reads in timed.groupby("userId"):
            n = 0 if len(reads) < 3 else min(holdout, max(1, len(reads) // 5))
            latest = set(reads.nlargest(n, "time")["itemId"]) if n else set()
            assert set(test.loc[test["userId"] == user, "itemId"]) == latest


@pytest.mark.subprocess
def test_a_split_by_a_times_csv_holds_out_each_visitors_latest_read(small_data, tmp_path):
    data_dir, _ = small_data
    raw = pd.read_csv(os.path.join(data_dir, datadir.RAW_FILE), header=None, dtype=str,
                      names=["visitorId", "contentId", "rating"])
    rng = np.random.default_rng(0)
    seconds = rng.permutation(len(raw)) * 60
    # dates, as a BigQuery export of hits.time would give them, and a pair listed twice: its latest time counts
    dates = pd.to_datetime(seconds, unit="s", origin="2026-01-01").strftime("%Y-%m-%d %H:%M:%S")
    times = pd.DataFrame({"visitorId": raw["visitorId"], "contentId": raw["contentId"], "time": dates})
    early = times.iloc[:5].assign(time="2025-01-01 00:00:00")
    pd.concat([times, early]).to_csv(tmp_path / "times.csv", index=False)
    result = run_module("walsmf.evaluate", "--split_from", data_dir, "--data_dir", tmp_path / "split",
                        "--latest_from", tmp_path / "times.csv")
    assert result.returncode == 0, result.stderr[-2000:]
    users = pd.Series(np.arange(len(raw["visitorId"].unique())), index=datadir.read_id_map(
        os.path.join(data_dir, datadir.USERS_FILE)))
    items = pd.Series(np.arange(len(raw["contentId"].unique())), index=datadir.read_id_map(
        os.path.join(data_dir, datadir.ITEMS_FILE)))
    timed = pd.DataFrame({"userId": raw["visitorId"].map(users), "itemId": raw["contentId"].map(items),
                          "time": seconds})
    eligible = timed.groupby("userId").filter(lambda reads: len(reads) >= 3)
    expected = eligible.loc[eligible.groupby("userId")["time"].idxmax(), ["userId", "itemId"]]
    held = splits.read_mapped(str(tmp_path / "split"), datadir.HELDOUT_FILE)
    assert sorted(map(tuple, held[["userId", "itemId"]].values)) == sorted(map(tuple, expected.values))
    assert datadir.read_metadata(str(tmp_path / "split"))["held_out"] == "latest"


@pytest.mark.training
@pytest.mark.parametrize("rows, message", [
    ("visitorId,contentId\n", "lacks column(s) time"),
    ("visitorId,contentId,time\nnobody,nothing,3\n", "no time for"),
    ("visitorId,contentId,time\nnobody,nothing,soon\n", "'soon' is neither a number nor a date"),
])
def test_a_bad_times_csv_is_named_and_writes_no_split(small_data, tmp_path, rows, message):
    (tmp_path / "times.csv").write_text(rows)
    with pytest.raises(DataError, match=re.escape(message)):
        splits.write_split(small_data[0], str(tmp_path / "split"), times_csv=str(tmp_path / "times.csv"),
                             log=lambda _: None)
    assert not (tmp_path / "split").exists()


def test_times_mixing_numbers_dates_offsets_and_far_years_read_as_one_clock():
    column = pd.Series(["1704103200000", "2024-01-01T10:00:00+02:00", "2024-01-01 09:30:00", "2024-01-01T09:45Z",
                        "1704103200000.0", "2300-06-01", " 2024-01-01T08:59:00-01:00 "])
    # by numpy's datetime64, which has every year: each value's ms since 1970 (a naive date is UTC)
    ms = [np.datetime64(t, "ms").astype(np.int64) for t in
          ("2024-01-01T10:00", "2024-01-01T08:00", "2024-01-01T09:30", "2024-01-01T09:45", "2300-06-01",
           "2024-01-01T09:59")]
    expected = [ms[0], ms[1], ms[2], ms[3], ms[0], ms[4], ms[5]]
    np.testing.assert_array_equal(splits.times_in_milliseconds(column, "t.csv"), expected)
    # numbers alone keep their unit's reading (seconds here) when no date is near them
    np.testing.assert_array_equal(splits.times_in_milliseconds(pd.Series([1704103200, 1704103260]), "t.csv"),
                                  [ms[0], ms[0] + 60000])


@pytest.mark.parametrize("value, message", [("soon", "'soon' is neither a number nor a date"),
                                            ("inf", "'inf' is not a time")])
def test_a_time_that_is_no_time_is_named(value, message):
    with pytest.raises(DataError, match=re.escape(message)):
        splits.times_in_milliseconds(pd.Series(["2024-01-01", value]), "t.csv")


def test_split_may_hold_out_an_items_only_read():
    # 20 users read items 1, 2 and one item of their own (20 + u): walsmf trains with items left unread
    mapped = pd.DataFrame([(u, i, 0.5) for u in range(20) for i in (1, 2, 20 + u)], columns=splits.MAPPED_COLUMNS)
    train, test, _ = splits.holdout_split(mapped, seed=0)
    assert len(test) == 20 and set(test["itemId"]) - set(train["itemId"])


def test_metrics_match_a_hand_computation():
    top = np.array([[5, 2, 9], [1, 3, 4]])
    test = pd.DataFrame({"userId": [0, 1, 1], "itemId": [2, 4, 7], "rating": [1, 1, 1]})
    m = metrics.ranking_metrics(top, np.array([0, 1]), test, nitems=10)
    # user 0: hit at rank 2 of 1 held-out; user 1: hit at rank 3 of 2 held-out
    ndcg0 = (1 / np.log2(3)) / 1
    ndcg1 = (1 / np.log2(4)) / (1 + 1 / np.log2(3))
    # standard errors: the sample standard deviation of two users' values over √2, |a − b| / 2
    assert m == pytest.approx({"precision": 1 / 3, "recall": (1 + 0.5) / 2, "map": (1 / 2 + (1 / 3) / 2) / 2,
                               "ndcg": (ndcg0 + ndcg1) / 2, "coverage": 0.6, "recall_se": (1 - 0.5) / 2,
                               "ndcg_se": abs(ndcg0 - ndcg1) / 2})


def test_top_k_of_chosen_users_is_the_brute_force_ranking_without_training_items():
    from walsmf.recommend import top_k_items
    rng = np.random.default_rng(1)
    train = mapped_frame(rng, nusers=30, nitems=12)
    u, v = rng.standard_normal((30, 3)).astype(np.float32), rng.standard_normal((12, 3)).astype(np.float32)
    scores = u @ v.T
    users = np.arange(0, 30, 2)
    top = top_k_items(u, v, 4, seen=metrics.by_user(train, 30), users=users, block_size=4)
    for row, user in zip(top, users):
        seen = set(train[train["userId"] == user]["itemId"])
        expected = [i for i in np.argsort(-scores[user]) if i not in seen][:4]
        assert list(row) == expected


def test_popularity_recommends_the_most_read_unseen_items():
    train = pd.DataFrame({"userId": [0, 1, 1, 2, 2, 2], "itemId": [0, 0, 1, 0, 1, 2], "rating": 1.0})
    from walsmf.recommend import top_k_items
    top = top_k_items(*baselines.popularity_factors(train, 3, 4), 2, seen=metrics.by_user(train, 3),
                      users=np.array([0, 1]))
    assert top.tolist() == [[1, 2], [2, 3]]


@pytest.fixture(scope="module")
def split(small_data, tmp_path_factory):
    split_dir = str(tmp_path_factory.mktemp("split") / "split")
    result = run_module("walsmf.evaluate", "--split_from", small_data[0], "--data_dir", split_dir)
    assert result.returncode == 0, result.stderr
    return split_dir


def test_split_directory_is_in_the_labs_formats(split, small_data):
    original = splits.read_mapped(small_data[0])
    train, test = splits.read_mapped(split), splits.read_mapped(split, datadir.HELDOUT_FILE)
    assert len(train) + len(test) == len(original)
    for name in (datadir.ROWS_FILE, datadir.COLS_FILE, datadir.USERS_FILE, datadir.ITEMS_FILE, datadir.METADATA_FILE):
        assert os.path.exists(os.path.join(split, name))


@pytest.mark.subprocess
@pytest.mark.training
def test_task_trains_on_a_split_unchanged_and_writes_the_hptuning_metric(split, tmp_path):
    out = tmp_path / "model"
    metric_file = tmp_path / "hypertune" / "output.metrics"
    result = run_module("walsmf.task", "--input_path", split, "--output_dir", out, "--num_epochs", 3,
                        "--batch_size", 128, "--seed", 0, env={"CLOUD_ML_HP_METRIC_FILE": str(metric_file)})
    assert result.returncode == 0, result.stderr[-2000:]
    tags = {}
    for path in tf.io.gfile.glob(str(out / datadir.HELDOUT_SUMMARY_DIR / "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update({v.tag: v.simple_value for v in event.summary.value})
    expected = metrics.evaluate_model(str(out), split)
    assert tags[metrics.HPTUNING_TAG] == pytest.approx(expected["recall"])
    # what Vertex AI's tuning reads: cloudml-hypertune's file
    (reported,) = [json.loads(line) for line in metric_file.read_text().splitlines()]
    assert float(reported[metrics.HPTUNING_TAG]) == pytest.approx(expected["recall"])
    table = run_module("walsmf.evaluate", "--data_dir", split, "--model_dir", out, "--implicit")
    assert table.returncode == 0, table.stderr[-2000:]
    lines = table.stdout.splitlines()
    assert lines[1].split()[:2] == ["method", "precision@10"]
    # the split has read times (small_data's times.csv): most read recently is a baseline too
    assert [" ".join(line.split()[:2]) for line in lines[2:]] == ["WALS (" + str(out) + ")", "most popular",
                                                                   "most read,", "implicit ALS"]


def test_hptuning_config_names_the_tag_written():
    import yaml
    with open(os.path.join(ROOT, "hptuning_config.yaml")) as f:
        config = yaml.safe_load(f)
    spec = config["trainingInput"]["hyperparameters"]
    assert spec["hyperparameterMetricTag"] == metrics.HPTUNING_TAG and spec["goal"] == "MAXIMIZE"
    from walsmf.settings import FLAGS
    assert {p["parameterName"] for p in spec["params"]} <= set(FLAGS)


@pytest.mark.subprocess
def test_split_of_a_missing_directory_says_what_to_run(tmp_path):
    result = run_module("walsmf.evaluate", "--data_dir", tmp_path / "nothing")
    assert result.returncode == 1 and "does not exist" in result.stderr.strip().splitlines()[-1]


@pytest.mark.subprocess
def test_bench_prints_a_table_of_every_method_on_a_ratings_file_split_by_time(tmp_path):
    rng = np.random.default_rng(0)
    ratings = pd.DataFrame([(u, int(m), float(rng.choice([3, 4, 5])), int(rng.integers(10 ** 9)))
                            for u in range(60) for m in rng.choice(40, int(rng.integers(8, 20)), replace=False)],
                           columns=["userId", "movieId", "rating", "timestamp"])
    ratings.to_csv(tmp_path / "ratings.csv", index=False)
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_quality.py"), "--max_trials", "1",
                             "--datasets", "ratings", "--ratings_csv", str(tmp_path / "ratings.csv"),
                             "--workdir", str(tmp_path / "work")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split(" | ") for line in result.stdout.splitlines() if line.startswith("| ratings")]
    # the file has times: most read recently is a baseline too
    assert [row[1].split()[0].rstrip(",") for row in rows] == ["walsmf", "walsmf", "implicit", "most", "most"]
    assert all(0 <= float(row[2].split(" ± ")[0]) <= 1 for row in rows)
    assert sum(line.startswith("ratings: walsmf tuned / implicit") for line in result.stdout.splitlines()) == 1
    # the test split held out each user's latest read (ratings of 4 and more are the reads)
    reads = ratings[ratings["rating"] >= 4]
    counted = reads.groupby("userId").filter(lambda r: len(r) >= 3)
    latest = counted.loc[counted.groupby("userId")["timestamp"].idxmax()]
    split = str(tmp_path / "work" / "ratings" / "split")
    users, items = (datadir.read_id_map(os.path.join(split, name)) for name in (datadir.USERS_FILE, datadir.ITEMS_FILE))
    held = splits.read_mapped(split, datadir.HELDOUT_FILE)
    assert sorted(zip(users[held["userId"]], items[held["itemId"]])) == sorted(
        zip("u" + latest["userId"].astype(str), "m" + latest["movieId"].astype(str)))


@pytest.mark.subprocess
def test_a_model_that_saw_the_held_out_reads_is_refused_in_one_line(trained, split):
    """The session's model was trained on the whole small data: the split's held-out reads were in it."""
    listing = sorted(os.listdir(trained.output_dir))
    result = run_module("walsmf.evaluate", "--data_dir", split, "--model_dir", trained.output_dir)
    assert result.returncode == 1 and result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
    assert "may have seen the held-out reads" in result.stderr and trained.input_path in result.stderr
    assert "--input_path {}".format(split) in result.stderr and sorted(os.listdir(trained.output_dir)) == listing
