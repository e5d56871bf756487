"""Quality a news site can trust: the blend with popularity, the choice rule, time-aware splits and the
most-read-recently baseline, tune and evaluate on a data directory of the lab's files alone."""
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from helpers import batch_pred, low_rank_ratings, run_module, write_matrix

from walsmf import baselines, datadir, metrics, model, modeldir, predict, recommend, settings, splits
from walsmf.errors import DataError
from walsmf.export_numpy import ExportAnswers
from walsmf.instances import check_instance


def test_a_large_blend_ranks_by_popularity_and_none_leaves_the_factors_alone():
    rng = np.random.default_rng(0)
    users, items = rng.standard_normal((20, 3)).astype(np.float32), rng.standard_normal((9, 3)).astype(np.float32)
    readers = np.array([5, 20, 1, 0, 7, 15, 2, 9, 4])  # item i read by users 0..readers[i]−1: every user reads
    read = np.arange(20)[:, None] < readers[None, :]
    reads = datadir.interactions_of(pd.DataFrame({"userId": np.nonzero(read)[0], "itemId": np.nonzero(read)[1],
                                                  "rating": 1.0}), 20, 9)
    plain = recommend.top_k_items(users, items, 4, users=np.arange(1, 20), reads=reads)
    scores = users[1:] @ items.T
    scores[:, 3] = -np.inf  # no reader: never recommended
    assert (plain == np.argsort(-scores, axis=1, kind="stable")[:, :4]).all()
    blended = recommend.top_k_items(users, items, 4, users=np.arange(1, 20), reads=reads, popularity_weight=1e4)
    assert (blended == np.argsort(-readers, kind="stable")[:4]).all()
    beta = 0.5
    middle = recommend.top_k_items(users, items, 4, users=np.arange(1, 20), reads=reads, popularity_weight=beta)
    expected = scores + beta * np.log1p(readers)
    assert (middle == np.argsort(-expected, axis=1, kind="stable")[:, :4]).all()


def test_the_choice_is_the_best_ndcg_within_one_standard_error_of_the_best_recall():
    results = [{"recall": 0.30, "recall_se": 0.01, "ndcg": 0.10}, {"recall": 0.295, "recall_se": 0.01, "ndcg": 0.14},
               {"recall": 0.28, "recall_se": 0.01, "ndcg": 0.20}, {"recall": 0.30, "recall_se": 0.01, "ndcg": 0.10}]
    assert metrics.choose(results) == 1  # 0.28 is more than one standard error below 0.30
    assert metrics.choose([dict(r, recall_se=0.0) for r in results]) == 0  # ties: the earliest


@pytest.mark.training
def test_the_blend_is_applied_alike_in_batch_pred_the_export_and_evaluation(tmp_path):
    ratings = low_rank_ratings(np.random.default_rng(2))
    write_matrix(str(tmp_path / "data"), ratings)
    trained = settings.make(input_path=str(tmp_path / "data"), output_dir=str(tmp_path / "out"), num_epochs=6,
                            batch_size=500, n_embeds=3, nusers=120, nitems=40, topk=5, seed=0, target="read",
                            popularity_weight=0.2)
    model.train_and_evaluate(trained)
    u, v = recommend.load_factors(trained.output_dir, "row"), recommend.load_factors(trained.output_dir, "col")
    readers = (ratings != 0).sum(axis=0)
    expected = np.argsort(-(u @ v.T + np.float32(0.2) * np.log1p(readers.astype(np.float32))), axis=1,
                          kind="stable")[:, :5]
    assert (batch_pred(trained.output_dir) == expected).mean() > 0.99  # up to float ties
    served = predict.predict(os.path.join(trained.output_dir, "export", "Servo"), [{"userId": n} for n in range(120)])
    assert [s["top_k_ids"] for s in served] == batch_pred(trained.output_dir).tolist()


def test_times_in_any_unit_become_milliseconds():
    seconds = np.array([1.7e9, 1.7e9 + 86400])
    for scale in (1e0, 1e3, 1e6, 1e9):
        np.testing.assert_allclose(baselines.in_milliseconds(seconds * scale), seconds * 1e3)


def test_most_read_recently_counts_the_window_its_validation_chose():
    day = 86400 * 1000.0
    # item 0 was read a lot long ago; items 1 and 2 in the last day; users' latest reads are of item 1 or 2
    rows, times = [], []
    for user in range(60):
        rows += [(user, 0), (user, 3 + user % 5), (user, 1 + user % 2)]
        times += [0.0, 50 * day, 99 * day + user]
    train = pd.DataFrame(rows, columns=["userId", "itemId"]).assign(rating=1.0)
    popular = baselines.popularity_factors(train, 60, 8)[1][:, 0]
    assert np.argmax(popular) == 0

    def score(factors, fit, check):
        return metrics.evaluate_factors(*factors, fit, check, 60, k=2)
    factors, days = baselines.most_read_recently(train, np.array(times), 60, 8, score)
    assert days is not None and days <= 30
    counts = factors[1][:, 0]
    assert set(np.argsort(-counts)[:2]) == {1, 2}


def test_a_rate_counts_each_article_over_the_hours_it_was_there_to_be_read_in_the_window():
    from walsmf import recency

    hour = 3600 * 1000
    now = 100 * 24 * hour
    # article 0: read 48 h ago, then 4 times in the last day; article 1: first read 3 h ago, 3 reads since;
    # article 2: read 30 h ago only; article 3: never read
    items = [0, 0, 0, 0, 0, 1, 1, 1, 2]
    times = [now - 48 * hour, now - 20 * hour, now - 9 * hour, now - 5 * hour, now, now - 3 * hour, now - 2 * hour,
             now - hour, now - 30 * hour]
    np.testing.assert_allclose(recency.recent_counts(items, times, 4, 1.0), [4, 3, 0, 0])
    # a day's window: article 0 was there all 24 hours (4 · 24/25), article 1 its 3 (3 · 24/4)
    np.testing.assert_allclose(recency.recent_counts(items, times, 4, 1.0, rate=True), [4 * 24 / 25, 18, 0, 0])
    # half a day: article 0's reads of the last 12 hours only, over all 12 of them
    np.testing.assert_allclose(recency.recent_counts(items, times, 4, 0.5, rate=True), [3 * 12 / 13, 3 * 12 / 4, 0, 0])


def lab_files_only(small_data, tmp_path):
    """A copy of the small data directory without metadata.json and times.csv: the lab's files alone."""
    lab = tmp_path / "lab"
    shutil.copytree(small_data[0], str(lab))
    for name in (datadir.METADATA_FILE, datadir.TIMES_FILE):
        os.remove(str(lab / name))
    return lab


@pytest.mark.subprocess
@pytest.mark.training
def test_tune_and_evaluate_run_on_a_data_directory_of_the_labs_files_alone(small_data, tmp_path):
    lab = lab_files_only(small_data, tmp_path)
    assert datadir.data_counts(str(lab)) == {key: small_data[1][key] for key in ("nusers", "nitems")}
    split = run_module("walsmf.evaluate", "--split_from", lab, "--data_dir", tmp_path / "split")
    assert split.returncode == 0, split.stderr[-2000:]
    scored = run_module("walsmf.evaluate", "--data_dir", tmp_path / "split")
    assert scored.returncode == 0 and "most popular" in scored.stdout, scored.stderr[-2000:]
    tuned = run_module("walsmf.tune", "--input_path", lab, "--output_dir", tmp_path / "tuned", "--max_trials", 1,
                       "--nusers", small_data[1]["nusers"], "--nitems", small_data[1]["nitems"])
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    assert set(json.loads((tmp_path / "tuned" / "best_params.json").read_text())) >= {"popularity_weight"}


def test_a_split_holds_out_the_latest_reads_where_the_data_has_times(small_data, tmp_path):
    latest = str(tmp_path / "latest")
    train, test = splits.write_split(small_data[0], latest, log=lambda _: None)
    assert datadir.read_metadata(latest)["held_out"] == "latest"
    mapped = splits.read_mapped(small_data[0])
    times = splits.read_times(os.path.join(small_data[0], datadir.TIMES_FILE), small_data[0], mapped)
    by_pair = dict(zip(zip(mapped["userId"], mapped["itemId"]), times))
    latest_of = {}
    for (user, _), time in by_pair.items():
        latest_of[user] = max(latest_of.get(user, time), time)
    assert all(by_pair[(u, i)] == latest_of[u] for u, i in zip(test["userId"], test["itemId"]))
    splits.write_split(small_data[0], str(tmp_path / "random"), held_out="random", log=lambda _: None)
    assert datadir.read_metadata(str(tmp_path / "random"))["held_out"] == "random"


@pytest.mark.parametrize("changes, message", [
    ({"holdout": 0}, "holds out nothing"),
    ({"holdout": -3}, "holds out nothing"),
    ({"same": True}, "is --split_from .* or inside it"),
])
def test_a_split_that_would_lose_data_or_hold_out_nothing_is_refused(small_data, tmp_path, changes, message):
    data = tmp_path / "data"
    shutil.copytree(small_data[0], str(data))
    before = {name: (data / name).read_bytes() for name in os.listdir(str(data))}
    target = data if changes.pop("same", False) else tmp_path / "split"
    with pytest.raises(DataError, match=message):
        splits.write_split(str(data), str(target), log=lambda _: None, **changes)
    assert {name: (data / name).read_bytes() for name in os.listdir(str(data))} == before
    assert not (tmp_path / "split").exists()


def test_a_split_with_no_user_to_evaluate_is_refused(tmp_path):
    write_matrix(str(tmp_path / "data"), np.eye(4))
    pd.DataFrame({"u": [0, 1, 2, 3], "i": [0, 1, 2, 3], "r": [1.0] * 4}).to_csv(
        str(tmp_path / "data" / datadir.MAPPED_FILE), index=False, header=False)
    with pytest.raises(DataError, match="no user of .* has the 3 reads a held-out split needs"):
        splits.write_split(str(tmp_path / "data"), str(tmp_path / "split"), log=lambda _: None)


@pytest.mark.training
@pytest.mark.parametrize("rate", [False, True])
def test_a_blend_of_recent_reads_is_the_same_in_batch_pred_the_export_and_evaluation(small_data, tmp_path, rate):
    data_dir, metadata = small_data
    trained = settings.make(input_path=data_dir, output_dir=str(tmp_path / "out"), num_epochs=2, batch_size=256,
                            nusers=metadata["nusers"], nitems=metadata["nitems"], seed=0, target="read",
                            popularity_weight=0.3, popularity_days=1.0, popularity_rate=rate)
    model.train_and_evaluate(trained)
    mapped = splits.read_mapped(data_dir)
    times = splits.read_times(os.path.join(data_dir, datadir.TIMES_FILE), data_dir, mapped)
    day = 86400 * 1000.0
    recent = mapped["itemId"].values[times >= times.max() - day]
    counts = np.bincount(recent, minlength=metadata["nitems"]).astype(np.float32)
    assert 0 < counts.sum() < len(mapped)  # the last day is a part of the reads
    if rate:  # each article's reads over the hours since its first read, at most the day's 24, plus one
        hours = np.minimum((times.max() - pd.Series(times).groupby(mapped["itemId"]).min()) / 3.6e6, 24)
        counts = (counts * 24 / (hours.reindex(range(metadata["nitems"])).values + 1)).astype(np.float32)
    u, v = recommend.load_factors(trained.output_dir, "row"), recommend.load_factors(trained.output_dir, "col")
    expected = np.argsort(-(u @ v.T + np.float32(0.3) * np.log1p(counts)), axis=1, kind="stable")[:, :3]
    assert (batch_pred(trained.output_dir) == expected).mean() > 0.99  # up to float ties
    served = predict.predict(os.path.join(trained.output_dir, "export", "Servo"),
                             [{"userId": n} for n in range(metadata["nusers"])])
    assert [s["top_k_ids"] for s in served] == batch_pred(trained.output_dir).tolist()
    # a visitor without reads gets the most read of the last day (not of all time), in the graph and in numpy
    readers = np.bincount(mapped["itemId"].values, minlength=metadata["nitems"])
    assert (readers > 0).all()
    most_read_lately = list(np.argsort(-counts, kind="stable"))
    assert most_read_lately != list(np.argsort(-readers, kind="stable"))
    export = modeldir.latest_export(os.path.join(trained.output_dir, modeldir.EXPORTS_DIR))
    nobody = [{"visitorId": "nobody", "k": len(readers)}, {"userId": -1, "itemId": -1, "k": len(readers)}]
    for answer in predict.predict(export, nobody) + ExportAnswers(export, modeldir.serving_info(export)).answer(
            [check_instance(form, "instance", modeldir.serving_info(export)) for form in nobody]):
        assert answer["top_k_ids"] == most_read_lately


def test_a_user_without_reads_gets_the_blends_popularity_and_without_a_blend_the_readers():
    rng = np.random.default_rng(1)
    users, items = rng.standard_normal((6, 3)).astype(np.float32), rng.standard_normal((7, 3)).astype(np.float32)
    readers = np.array([4, 1, 5, 0, 3, 2, 5])  # item i read by users 1..readers[i]: user 0 reads nothing
    read = (np.arange(6)[:, None] >= 1) & (np.arange(6)[:, None] <= readers[None, :])
    reads = datadir.interactions_of(pd.DataFrame({"userId": np.nonzero(read)[0], "itemId": np.nonzero(read)[1],
                                                  "rating": 1.0}), 6, 7)
    lately = np.array([0, 6, 1, 9, 2, 2, 0], np.float32)  # item 3 has no reader: never recommended
    fresh = np.array([True, True, True, True, True, False, True])
    blended = recommend.top_k_items(users, items, 3, users=np.array([0]), reads=reads, popularity_weight=0.5,
                                    popularity=lately)
    assert blended[0].tolist() == [1, 4, 5]  # equal counts: the lower id first
    plain = recommend.top_k_items(users, items, 3, users=np.array([0]), reads=reads, popularity=lately)
    assert plain[0].tolist() == [2, 6, 0]
    blocks = recommend.top_k_blocks(users, items, 3, users=np.array([0]), reads=reads, popularity_weight=0.5,
                                    popularity=lately, fresh=fresh)
    assert next(blocks)[1][0].tolist() == [1, 4, 2]  # item 5 is not fresh
