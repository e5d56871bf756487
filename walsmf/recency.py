"""What was read lately: read times in one unit, and the items' reads within a window of the latest days.

The blend with popularity (--popularity_days) and the most-read-recently
baseline count the same way: the reads of the last N days before the data's
latest read.
"""
import os

import numpy as np
import tensorflow as tf

from walsmf import datadir, splits
from walsmf.errors import DataError

# The windows counted, in days before the latest read (chosen on validation); None: every read.
RECENT_DAYS = (1, 2, 3, 7, 14, 30, None)
DAY_MS = 86400 * 1000.0


def recent_counts(item_ids, times_ms, nitems, days):
    """Reads per item among those in the last ``days`` before the latest (None: all of them)."""
    item_ids = np.asarray(item_ids)
    if days is not None and len(item_ids):
        item_ids = item_ids[np.asarray(times_ms) >= np.max(times_ms) - days * DAY_MS]
    return np.bincount(item_ids, minlength=nitems).astype(np.float64)


def data_popularity(data_dir, nitems, days):
    """Reads per item of ``data_dir`` (collab_mapped.csv) in its last ``days`` by its times.csv; None if ``days``
    is None (every read counts: the TFRecords' own counts)."""
    if days is None:
        return None
    times_csv = os.path.join(data_dir, datadir.TIMES_FILE)
    if not tf.io.gfile.exists(times_csv):
        raise DataError("--popularity_days {} counts recent reads, and {} has no {}: preprocess an export with "
                        "times, or leave --popularity_days out".format(days, data_dir, datadir.TIMES_FILE))
    mapped = splits.read_mapped(data_dir)
    times = splits.read_times(times_csv, data_dir, mapped)
    return recent_counts(mapped["itemId"].values, times, nitems, days)
