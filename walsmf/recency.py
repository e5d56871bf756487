"""What was read lately: read times in one unit, and the items' reads within a window of the latest days.

The blend with popularity (--popularity_days) and the most-read-recently
baseline count the same way: the reads of the last N days before the data's
latest read.  With --popularity_rate the blend counts an article younger than
that window at its rate since its first read, so that a news article an hour
old is not outranked for having had only an hour to be read.
"""
import os

import numpy as np
import pandas as pd
import tensorflow as tf

from walsmf import datadir, splits
from walsmf.errors import DataError

# The windows counted, in days before the latest read (chosen on validation); None: every read.
RECENT_DAYS = (1, 2, 3, 7, 14, 30, None)
DAY_MS = 86400 * 1000
HOUR_MS = 3600 * 1000


def recent_counts(item_ids, times_ms, nitems, days, rate=False):
    """Reads per item among those in the last ``days`` before the latest (None: all of them).  With ``rate``, each
    item's reads are scaled to the whole window by the hours it was there to be read: reads × window hours /
    (hours since its first read, at most the window's, + 1); the hour added keeps an article read a minute ago
    from counting as read at its first reader's pace."""
    item_ids, times_ms = np.asarray(item_ids), np.asarray(times_ms)
    recent = item_ids
    if days is not None and len(item_ids):
        recent = item_ids[times_ms >= times_ms.max() - days * DAY_MS]
    counts = np.bincount(recent, minlength=nitems).astype(np.float64)
    if rate and days is not None and len(item_ids):
        window_hours = days * DAY_MS / HOUR_MS
        hours_read = np.clip((times_ms.max() - first_reads(item_ids, times_ms, nitems)) / HOUR_MS, 0, window_hours)
        counts *= window_hours / (hours_read + 1.0)
    return counts


def first_reads(item_ids, times_ms, nitems):
    """Each of ``nitems`` items' earliest time in ``times_ms`` (ms; inf: never read)."""
    first = np.full(nitems, np.inf)
    earliest = pd.Series(np.asarray(times_ms, np.float64)).groupby(np.asarray(item_ids)).min()  # (ufunc.at: slow)
    first[earliest.index.values] = earliest.values
    return first


def fresh_items(data_dir, nitems, max_age_days):
    """Which items of ``data_dir`` were first read within ``max_age_days`` of its newest read (by its times.csv:
    an item's earliest time there); None if ``max_age_days`` is None (every item may be recommended)."""
    if max_age_days is None:
        return None
    mapped, times = _mapped_times(data_dir, "--max_age_days {}".format(max_age_days))
    return fresh_of(mapped["itemId"].values, times, nitems, max_age_days, data_dir)


def fresh_of(item_ids, times_ms, nitems, max_age_days, where):
    """Which of ``nitems`` items were first read (their earliest of ``times_ms``) within ``max_age_days`` of the
    newest read, of the reads of ``item_ids``; a DataError naming ``where`` if none was."""
    first = first_reads(item_ids, times_ms, nitems)
    fresh = first >= np.max(times_ms) - max_age_days * DAY_MS
    if not fresh.any():
        youngest = (np.max(times_ms) - first[np.isfinite(first)].max()) / DAY_MS
        raise DataError("--max_age_days {} leaves no article of {} to recommend: the youngest was first read {:.2f} "
                        "days before the newest read; give more days, or leave --max_age_days out".format(
                            max_age_days, where, youngest))
    return fresh


def _no_times(flag, data_dir):
    """The DataError of ``flag`` given for a data directory without read times."""
    return DataError("{} counts read times, and {} has no {}: preprocess an export with times, or leave {} "
                     "out".format(flag, data_dir, datadir.TIMES_FILE, flag.split()[0]))


def _mapped_times(data_dir, flag):
    """(collab_mapped.csv, each row's time in ms) of ``data_dir``, or a DataError naming ``flag`` without times."""
    times_csv = os.path.join(data_dir, datadir.TIMES_FILE)
    if not tf.io.gfile.exists(times_csv):
        raise _no_times(flag, data_dir)
    mapped = splits.read_mapped(data_dir)
    return mapped, splits.read_times(times_csv, data_dir, mapped)


def of_reads(item_ids, times_ms, nitems, popularity_days, max_age_days, data_dir, popularity_rate=False):
    """(data_popularity, fresh_items) of reads held in memory (``times_ms`` None: reads without times) rather
    than of ``data_dir``'s files."""
    for flag, value in (("--popularity_days", popularity_days), ("--max_age_days", max_age_days)):
        if value is not None and times_ms is None:
            raise _no_times("{} {}".format(flag, value), data_dir)
    return (None if popularity_days is None else recent_counts(item_ids, times_ms, nitems, popularity_days,
                                                               popularity_rate),
            None if max_age_days is None else fresh_of(item_ids, times_ms, nitems, max_age_days, data_dir))


def data_popularity(data_dir, nitems, days, rate=False):
    """Reads per item of ``data_dir`` (collab_mapped.csv) in its last ``days`` by its times.csv (``rate``: as
    recent_counts scales them); None if ``days`` is None (every read counts: the TFRecords' own counts)."""
    if days is None:
        return None
    mapped, times = _mapped_times(data_dir, "--popularity_days {}".format(days))
    return recent_counts(mapped["itemId"].values, times, nitems, days, rate)
