"""Held-out splits: a data directory's training part in the lab's formats, and heldout.csv.

The split holds out, for each user with at least 3 interactions, a fixed
number of them (default 1, at most a fifth of the user's): random ones
(chosen with a seed), or by a times file (visitorId, contentId, time: a
number or a date) each user's latest.  Any read may be held out, an item's
only one included: walsmf trains with ids left unread.
"""
import datetime
import os

import dateutil.parser
import numpy as np
import pandas as pd
import tensorflow as tf

from walsmf import datadir, progress
from walsmf.datadir import HELDOUT_FILE, MAPPED_FILE, read_metadata
from walsmf.errors import DataError
from walsmf.fileio import check_input_file, reading_directory, refuse_inside, staged_directory

MAPPED_COLUMNS = ["userId", "itemId", "rating"]
# Users with fewer interactions than this are not evaluated: none of theirs is held out.
MIN_INTERACTIONS = 3


def holdout_split(mapped, holdout=1, min_interactions=MIN_INTERACTIONS, seed=0, times=None):
    """Split collab_mapped rows into (train, test, n_unevaluated_users).

    Users with at least ``min_interactions`` hold out ``holdout`` random
    interactions each — their latest ones if ``times`` (one per row, larger
    is later) is given — at most a fifth of their interactions (one at
    least): any of them, an item's only reader's included (the item then
    has no training read, and walsmf trains without it).
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(mapped))
    if times is not None:
        order = order[np.argsort(-np.asarray(times)[order], kind="stable")]  # latest first, ties at random
    shuffled = mapped.iloc[order]
    per_user = shuffled.groupby("userId").cumcount().values
    user_count = shuffled.groupby("userId")["userId"].transform("size").values
    candidate = (user_count >= min_interactions) & (per_user < np.clip(user_count // 5, 1, holdout))
    held = np.zeros(len(mapped), bool)
    held[order[candidate]] = True
    train, test = mapped[~held].reset_index(drop=True), mapped[held].reset_index(drop=True)
    unevaluated = mapped["userId"].nunique() - test["userId"].nunique()
    return train, test, int(unevaluated)


def in_milliseconds(times):
    """Read times as milliseconds since the epoch, whatever their unit: walsmf's times.csv holds ms, a date
    column reads as ns, and a user's file may hold seconds or µs (told apart by their size, for dates
    after 1973)."""
    times = np.asarray(times, np.float64)
    largest = np.nanmax(np.abs(times)) if len(times) else 0.0
    for limit, scale in ((1e11, 1e3), (1e14, 1.0), (1e17, 1e-3)):
        if largest < limit:
            return times * scale
    return times * 1e-6


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def _date_in_milliseconds(text):
    """One date or date and time (any offset; none: UTC) as ms since the epoch, any year; None if no date."""
    try:
        moment = dateutil.parser.parse(text)
    except (ValueError, OverflowError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return (moment - _EPOCH).total_seconds() * 1000.0


def times_in_milliseconds(column, times_csv):
    """A times file's ``time`` column as ms since the epoch: numbers (in_milliseconds' units) and dates (any
    offset, any year) alike, mixed or not."""
    text = column.astype(str).str.strip()
    numbers = pd.to_numeric(text, errors="coerce")
    numeric = numbers.notna().values
    ms = np.empty(len(text))
    ms[numeric] = in_milliseconds(numbers[numeric].values)
    dates = text[~numeric]
    if len(dates):
        try:
            ms[~numeric] = pd.to_datetime(dates, utc=True).values.astype("int64") / 1e6
        except (ValueError, TypeError, OverflowError):  # pandas' years end at 2262: each distinct date alone
            parsed = {value: _date_in_milliseconds(value) for value in dates.unique()}
            unparsed = [value for value, moment in parsed.items() if moment is None]
            if unparsed:
                raise DataError("{}: time {!r} is neither a number nor a date: give ms since the epoch or a date "
                                "such as 2024-01-31T08:00:00Z".format(times_csv, unparsed[0]))
            ms[~numeric] = dates.map(parsed).values
    if not np.isfinite(ms).all():
        raise DataError("{}: time {!r} is not a time: give ms since the epoch or a date".format(
            times_csv, text[~np.isfinite(ms)].iloc[0]))
    return ms


def read_times(times_csv, data_dir, mapped):
    """The time of each row of ``mapped`` (collab_mapped.csv of ``data_dir``) from a CSV of visitorId,
    contentId, time (a number or a date; a pair's latest time counts), in ms since the epoch."""
    check_input_file(times_csv, "times file", "give a CSV of visitorId,contentId,time")
    with tf.io.gfile.GFile(times_csv) as f:
        try:
            times = pd.read_csv(f, dtype={"visitorId": str, "contentId": str})
        except (ValueError, pd.errors.ParserError) as err:
            raise DataError("{} is not a CSV of visitorId,contentId,time: {}".format(times_csv, err))
    missing = [c for c in ("visitorId", "contentId", "time") if c not in times.columns]
    if missing:
        raise DataError("{} lacks column(s) {}: give a CSV of visitorId,contentId,time".format(
            times_csv, ", ".join(missing)))
    blank = times["time"].isna() | (times["time"].astype(str).str.strip() == "")
    if blank.any():
        raise DataError("{}: the time of visitor {} and content {} is blank: give every read its time".format(
            times_csv, *times[blank].iloc[0][["visitorId", "contentId"]]))
    value = times_in_milliseconds(times["time"], times_csv)
    ids = [pd.Series(np.arange(len(original)), index=original)
           for original in (datadir.read_id_map(os.path.join(data_dir, name))
                            for name in (datadir.USERS_FILE, datadir.ITEMS_FILE))]
    keyed = pd.DataFrame({"userId": times["visitorId"].map(ids[0]), "itemId": times["contentId"].map(ids[1]),
                          "time": value}).dropna().groupby(["userId", "itemId"])["time"].max()
    found = keyed.reindex(pd.MultiIndex.from_arrays([mapped["userId"], mapped["itemId"]])).values
    if np.isnan(found).any():
        raise DataError("{} has no time for {} of {} reads in {} (e.g. user {}, item {}): give every "
                        "visitorId,contentId pair of collab_raw.csv a time".format(
                            times_csv, int(np.isnan(found).sum()), len(mapped), data_dir,
                            *mapped[np.isnan(found)].iloc[0][["userId", "itemId"]]))
    return found


def times_file(data_dir, times_csv=None, held_out=None):
    """The times file a split of ``data_dir`` holds out by: ``times_csv``, else the data's own times.csv;
    None for a random split (``held_out="random"``, or no times)."""
    if held_out == "random":
        return None
    own = os.path.join(data_dir, datadir.TIMES_FILE)
    chosen = times_csv or (own if tf.io.gfile.exists(own) else None)
    if held_out == "latest" and chosen is None:
        raise DataError("--held_out latest needs read times: {} has no {} (walsmf.preprocess writes it from an "
                        "export with times); give --latest_from TIMES.csv".format(data_dir, datadir.TIMES_FILE))
    return chosen


def write_split(data_dir, split_dir, holdout=1, seed=0, log=progress.say, times_csv=None, heldout_reads=None,
                held_out=None, nusers=None, nitems=None):
    """Write the training part of ``data_dir`` in the lab's formats, and heldout.csv, to ``split_dir``.

    Each user's latest reads are held out where there are times (``times_csv``, else the data's times.csv;
    ``held_out="random"`` ignores them), random ones otherwise; with ``heldout_reads``, more than ``holdout``
    per user where that many users hold out fewer reads than this.  The counts come from metadata.json,
    else ``nusers``/``nitems`` or the TFRecords (a directory of the lab's files alone).
    """
    if holdout < 1:
        raise DataError("--holdout {} holds out nothing: give 1 or more reads per user".format(holdout))
    refuse_inside(split_dir, "--data_dir", data_dir, "--split_from", "a split")
    with reading_directory(data_dir, datadir.METADATA_FILE):  # no preprocess replaces it meanwhile
        mapped = read_mapped(data_dir)
        metadata = dict(read_metadata(data_dir)) if tf.io.gfile.exists(os.path.join(data_dir, datadir.METADATA_FILE)) \
            else {}
        metadata.update(datadir.data_counts(data_dir, nusers, nitems))
        if heldout_reads:
            evaluated = max(1, int((mapped["userId"].value_counts() >= MIN_INTERACTIONS).sum()))
            holdout = max(holdout, -(-heldout_reads // evaluated))
        times_csv = times_file(data_dir, times_csv, held_out)
        times = read_times(times_csv, data_dir, mapped) if times_csv else None
        train, test, unevaluated = holdout_split(mapped, holdout=holdout, seed=seed, times=times)
        if len(test) == 0:
            raise DataError("no user of {} has the {} reads a held-out split needs: there is nothing to evaluate on"
                            .format(data_dir, MIN_INTERACTIONS))
        with staged_directory(split_dir, datadir.METADATA_FILE, datadir.written_here) as staged:
            for name in (datadir.USERS_FILE, datadir.ITEMS_FILE):
                if tf.io.gfile.exists(os.path.join(data_dir, name)):
                    tf.io.gfile.copy(os.path.join(data_dir, name), os.path.join(staged, name))
            if times_csv:  # the training reads' times, for the most-read-recently baseline
                tf.io.gfile.copy(times_csv, os.path.join(staged, datadir.TIMES_FILE))
            train.to_csv(os.path.join(staged, MAPPED_FILE), index=False, header=False)
            test.to_csv(os.path.join(staged, HELDOUT_FILE), index=False, header=False)
            datadir.write_interactions(staged, datadir.interactions_of(train, metadata["nusers"], metadata["nitems"]))
            datadir.write_metadata(staged, dict(metadata, interactions=len(train), heldout=len(test),
                                                unevaluated_users=unevaluated, split_seed=seed,
                                                held_out="latest" if times_csv else "random"))
    log("{} training interactions, {} held out from {} users; {} users have too few interactions "
        "to evaluate".format(len(train), len(test), test["userId"].nunique(), unevaluated))
    return train, test


def has_times(data_dir):
    """Whether ``data_dir`` has read times (times.csv)."""
    return tf.io.gfile.exists(os.path.join(data_dir, datadir.TIMES_FILE))


def has_heldout(data_dir):
    """Whether ``data_dir`` is a split directory (has heldout.csv)."""
    return tf.io.gfile.exists(os.path.join(data_dir, HELDOUT_FILE))


def read_mapped(data_dir, name=MAPPED_FILE):
    """collab_mapped.csv (or heldout.csv) of ``data_dir`` as userId, itemId, rating."""
    path = os.path.join(data_dir, name)
    if not tf.io.gfile.exists(path):
        hint = ("make one with 'python -m walsmf.evaluate --split_from DATA --data_dir {}'".format(data_dir)
                if name == HELDOUT_FILE else "run 'python -m walsmf.preprocess' first")
        raise DataError("{} does not exist: {}".format(path, hint))
    with tf.io.gfile.GFile(path) as f:
        return pd.read_csv(f, header=None, names=MAPPED_COLUMNS)
