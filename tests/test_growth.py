"""walsmf.growth: a data directory grown by new reads. Whether its ledger is current (lines and records kept as bytes)
or not (the CSVs read, every file written whole), the grown directory holds what preprocessing every read at once
gives, in the same ids; the batched fold-in is numpy's solve of each id's WALS equation."""
import csv
import os

import numpy as np
import pandas as pd
import pytest

from walsmf import datadir, growth, preprocess
from walsmf.errors import DataError
from walsmf.export_numpy import fold_in_many
from walsmf.ratings import rating_of

DAY_MS = 86400000
START_MS = 1700000000000


def reads(rng, n, visitors, contents, start_ms):
    """n extracted reads of the given visitors and contents in the day from ``start_ms``, each pair once."""
    return pd.DataFrame({"visitorId": rng.choice(visitors, n), "contentId": rng.choice(contents, n),
                         "session_duration": rng.randint(1000, 240000, n),
                         "read_time": start_ms + np.sort(rng.randint(0, DAY_MS, n))}).drop_duplicates(
                             ["visitorId", "contentId"], keep="last")


def first_data(tmp_path, rng):
    """The first reads (60 visitors, 25 articles whose ids hold commas) and the data directory preprocessed from
    them."""
    first = reads(rng, 400, ["v{}".format(i) for i in range(60)], ["c,{}".format(i) for i in range(25)], START_MS)
    data_dir = str(tmp_path / "data")
    preprocess.write_data_dir(first, data_dir, log=lambda _: None)
    return first, data_dir


def grow(data_dir, staged, extracted, keep_days=None):
    """growth's merge of ``extracted`` into ``data_dir``, written into ``staged``: the grown pairs."""
    known = [datadir.read_id_map(os.path.join(data_dir, name)) for name in (datadir.USERS_FILE, datadir.ITEMS_FILE)]
    ledger = growth.read_ledger(data_dir, *known)
    visitors, users = growth.grown_ids(known[0], extracted["visitorId"].values)
    contents, items = growth.grown_ids(known[1], extracted["contentId"].values)
    median = datadir.read_metadata(data_dir)["median_duration_ms"]
    merged = growth.merge(ledger, users, items, rating_of(extracted["session_duration"].values, median),
                          extracted["read_time"].values, len(contents), keep_days)
    pairs = growth.grown_ledger(ledger, merged)
    interactions = datadir.interactions_of(pd.DataFrame({"userId": pairs.user, "itemId": pairs.item,
                                                         "rating": np.round(pairs.rating, 2)}),
                                           len(visitors), len(contents))
    os.makedirs(staged)
    growth.write_grown(staged, data_dir, ledger, merged, pairs, visitors, contents, interactions,
                       [len(ids) for ids in known])
    datadir.write_metadata(staged, dict(datadir.read_metadata(data_dir), nusers=len(visitors),
                                        nitems=len(contents), interactions=len(pairs.user)))
    return pairs


def expected_pairs(median, *extracted, given=()):
    """The reference: every read rated by ``median``, with ``given`` (visitor, content, rating, time) pairs, each
    pair's highest rating and latest time."""
    every = pd.concat(extracted, ignore_index=True)
    every["rating"] = rating_of(every["session_duration"].values.astype(np.float64), median)
    every = pd.concat([every, pd.DataFrame(list(given), columns=["visitorId", "contentId", "rating", "read_time"])])
    return every.groupby(["visitorId", "contentId"]).agg(rating=("rating", "max"), time=("read_time", "max"))


def held_pairs(data_dir):
    """A data directory's pairs by original ids from each of its files: collab_raw.csv's ratings, collab_mapped.csv's
    and the TFRecords' (rounded) through users.csv / items.csv, and times.csv's times."""
    visitors = datadir.read_id_map(os.path.join(data_dir, datadir.USERS_FILE))
    contents = datadir.read_id_map(os.path.join(data_dir, datadir.ITEMS_FILE))
    raw = pd.read_csv(os.path.join(data_dir, datadir.RAW_FILE), header=None, dtype={0: str, 1: str},
                      names=["visitorId", "contentId", "rating"]).set_index(["visitorId", "contentId"])
    mapped = pd.read_csv(os.path.join(data_dir, datadir.MAPPED_FILE), header=None, names=["u", "i", "rating"])
    mapped.index = pd.MultiIndex.from_arrays([visitors[mapped["u"]], contents[mapped["i"]]])
    metadata = datadir.read_metadata(data_dir)
    by_user = datadir.read_interactions(data_dir, metadata["nusers"], metadata["nitems"]).by_user
    records = pd.Series(by_user.values, pd.MultiIndex.from_arrays([visitors[by_user.rows()],
                                                                    contents[by_user.indices]]))
    times = pd.read_csv(os.path.join(data_dir, datadir.TIMES_FILE), dtype={"visitorId": str, "contentId": str})
    return raw["rating"], mapped["rating"], records, times.set_index(["visitorId", "contentId"])["time"]


def assert_holds(data_dir, expected):
    """Every file of ``data_dir`` holds exactly the ``expected`` pairs, once each."""
    raw, mapped, records, times = held_pairs(data_dir)
    for held in (raw, mapped, records, times):
        assert held.index.is_unique and set(held.index) == set(expected.index)
    # (pandas writes a rating to 15 significant digits)
    np.testing.assert_allclose(raw.reindex(expected.index).values, expected["rating"].values, rtol=1e-13)
    np.testing.assert_allclose(mapped.reindex(expected.index).values, np.round(expected["rating"].values, 2))
    np.testing.assert_allclose(records.reindex(expected.index).values, np.round(expected["rating"].values, 2),
                               rtol=1e-6)
    np.testing.assert_array_equal(times.reindex(expected.index).values, expected["time"].values)


@pytest.mark.parametrize("ledger", ["current", "absent", "stale", "corrupt"])
def test_a_grown_directory_holds_every_pair_once_with_its_highest_rating_and_latest_time(tmp_path, monkeypatch,
                                                                                         ledger):
    monkeypatch.setattr(growth, "_COPY_BLOCK", 101)
    rng = np.random.RandomState(4)
    first, data_dir = first_data(tmp_path, rng)
    median = datadir.read_metadata(data_dir)["median_duration_ms"]
    later = reads(rng, 150, ["v{}".format(i) for i in range(50, 80)], ["c,{}".format(i) for i in range(20, 30)],
                  START_MS + DAY_MS)
    given = []
    if ledger == "absent":
        os.remove(os.path.join(data_dir, growth.LEDGER_FILE))
    if ledger == "corrupt":  # cut short: read from the CSVs
        with open(os.path.join(data_dir, growth.LEDGER_FILE), "r+b") as f:
            f.truncate(100)
    if ledger == "stale":  # a pair added by hand: the ledger no longer describes the files, which are read instead
        given = [("v0", "hand", 0.5, START_MS + 1)]
        nitems = datadir.read_metadata(data_dir)["nitems"]
        for name, line in ((datadir.RAW_FILE, "v0,hand,0.5\n"), (datadir.ITEMS_FILE, "hand,{}\n".format(nitems)),
                           (datadir.TIMES_FILE, "v0,hand,{}\n".format(START_MS + 1))):
            with open(os.path.join(data_dir, name), "a") as f:
                f.write(line)
    old_users = open(os.path.join(data_dir, datadir.USERS_FILE)).read()
    grown = str(tmp_path / "grown")
    grow(data_dir, grown, later)
    assert_holds(grown, expected_pairs(median, first, later, given=given))
    # ids stay: users.csv only grows, the new visitors numbered next in sorted order
    users = open(os.path.join(grown, datadir.USERS_FILE)).read()
    assert users.startswith(old_users)
    new = sorted(set(later["visitorId"]) - set(first["visitorId"]))
    assert users[len(old_users):] == "".join("{},{}\n".format(v, n) for n, v in enumerate(new, old_users.count("\n")))
    # the grown directory's ledger is current: it is grown again by its kept lines
    again = reads(rng, 40, ["v{}".format(i) for i in range(75, 90)], ["c,{}".format(i) for i in range(28, 33)],
                  START_MS + 2 * DAY_MS)
    grow(grown, str(tmp_path / "again"), again)
    assert growth.read_ledger(grown, [], []).records is not None
    assert_holds(str(tmp_path / "again"), expected_pairs(median, first, later, again, given=given))


def pair_of(line):
    """The (visitorId, contentId) of a CSV line."""
    return tuple(next(csv.reader([line]))[:2])


@pytest.mark.parametrize("block", [13, 64 << 20])
def test_a_current_ledger_keeps_the_lines_and_records_of_the_unchanged_pairs_as_they_were(tmp_path, monkeypatch,
                                                                                          block):
    monkeypatch.setattr(growth, "_COPY_BLOCK", block)  # 13 bytes: kept lines and records cut across blocks
    rng = np.random.RandomState(5)
    first, data_dir = first_data(tmp_path, rng)
    later = reads(rng, 30, ["v1", "v2", "new"], ["c,3", "c,new"], START_MS + DAY_MS)
    grown = str(tmp_path / "grown")
    grow(data_dir, grown, later)
    read_again = set(zip(later["visitorId"], later["contentId"]))
    for name in (datadir.RAW_FILE, datadir.TIMES_FILE):
        old = [line for line in open(os.path.join(data_dir, name), newline="") if pair_of(line) not in read_again]
        new = open(os.path.join(grown, name), newline="").readlines()
        assert new[:len(old)] == old  # the unchanged pairs' lines first, as they were, in their order
        assert {pair_of(line) for line in new[len(old):]} == read_again
    visitors = datadir.read_id_map(os.path.join(data_dir, datadir.USERS_FILE))
    before = datadir.scan_records(data_dir, datadir.ROWS_FILE)[0]
    after = datadir.scan_records(grown, datadir.ROWS_FILE)[0]
    untouched = [key for key in before if visitors[key] not in set(later["visitorId"])]
    touched = sorted(set(datadir.read_id_map(os.path.join(grown, datadir.USERS_FILE)).tolist().index(v)
                         for v in later["visitorId"]))
    assert list(after) == untouched + touched


def test_keep_days_drops_the_pairs_last_read_before_the_window(tmp_path):
    rng = np.random.RandomState(6)
    first, data_dir = first_data(tmp_path, rng)
    later = reads(rng, 50, ["v3", "v70"], ["c,1", "c,40"], START_MS + 2 * DAY_MS)
    grow(data_dir, str(tmp_path / "grown"), later, keep_days=1.5)
    everything = expected_pairs(datadir.read_metadata(data_dir)["median_duration_ms"], first, later)
    expected = everything[everything["time"] >= everything["time"].max() - 1.5 * DAY_MS]
    assert 0 < len(expected) < len(everything)
    assert_holds(str(tmp_path / "grown"), expected)


def test_the_batched_fold_in_is_each_ids_weighted_least_squares_solve(monkeypatch):
    monkeypatch.setattr("walsmf.export_numpy._FOLD_IN_BLOCK", 7)  # ids' reads spanning blocks
    monkeypatch.setattr("walsmf.export_numpy._OWN_PRODUCT_READS", 10)  # and ids with their own products
    rng = np.random.RandomState(0)
    other = rng.normal(size=(30, 4)).astype(np.float32)
    other_weights = rng.uniform(0.5, 2, 30).astype(np.float32)
    counts = np.array([0, 3, 12, 1, 20, 0, 5])
    offsets = np.concatenate([[0], np.cumsum(counts)])
    ids = np.concatenate([np.sort(rng.choice(30, c, replace=False)) for c in counts]).astype(np.int64)
    values = rng.uniform(0, 1, len(ids)).astype(np.float32)
    own_weights = rng.uniform(0.5, 2, len(counts)).astype(np.float32)
    w0, reg = 0.1, 0.3
    got = fold_in_many(other, other.astype(np.float64).T @ other, offsets, ids, values, other_weights, own_weights,
                       w0, reg)
    for n in range(len(counts)):
        # minimize Σ_j weight_j (a_j − x·v_j)² + λ|x|² over every column j: a_j 0 and weight w0 where unread
        weight, target = np.full(30, w0), np.zeros(30)
        read = ids[offsets[n]:offsets[n + 1]]
        weight[read] += np.float32(own_weights[n]) * other_weights[read]
        target[read] = values[offsets[n]:offsets[n + 1]]
        scale = np.sqrt(weight)[:, None]
        a = np.vstack([other * scale, np.sqrt(reg) * np.eye(4)])
        b = np.concatenate([target * scale[:, 0], np.zeros(4)])
        np.testing.assert_allclose(got[n], np.linalg.lstsq(a, b, rcond=None)[0], rtol=1e-4, atol=1e-6)


def test_a_ledger_listing_a_pair_twice_is_one_error_naming_it(tmp_path):
    _, data_dir = first_data(tmp_path, np.random.RandomState(7))
    known = [datadir.read_id_map(os.path.join(data_dir, name)) for name in (datadir.USERS_FILE, datadir.ITEMS_FILE)]
    ledger = growth.read_ledger(data_dir, *known)
    growth.write_ledger(data_dir, ledger._replace(**{name: np.append(getattr(ledger, name), getattr(ledger, name)[0])
                                                     for name in ("user", "item", "rating", "time")}))
    again = pd.DataFrame({"visitorId": [known[0][ledger.user[0]]], "contentId": [known[1][ledger.item[0]]],
                          "session_duration": [1000], "read_time": [START_MS + DAY_MS]})
    with pytest.raises(DataError, match="lists a pair twice"):
        grow(data_dir, str(tmp_path / "grown"), again)


@pytest.mark.parametrize("text", ["a,0\nb,0\n", "a,0\nb,2\n", "a,0\nb,x\n", "a,-1\n"])
def test_an_id_map_whose_mapped_ids_are_not_0_to_n_each_once_is_one_error_naming_it(tmp_path, text):
    path = tmp_path / datadir.USERS_FILE
    path.write_text(text)
    with pytest.raises(DataError, match="{}.*regenerate the data directory".format(path)):
        datadir.read_id_map(str(path))


def test_an_id_map_is_read_as_csv_ids_holding_commas_quotes_and_line_breaks(tmp_path):
    ids = ["plain", "a,b", 'say "hi"', "two\nlines", ""]
    path = tmp_path / datadir.ITEMS_FILE
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(reversed(list(zip(ids, range(len(ids))))))
    assert list(datadir.read_id_map(str(path))) == ids
