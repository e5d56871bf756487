"""A data directory grown by new reads at the cost of the new reads (walsmf.refresh's merge).

Preprocessing and each refresh leave a ledger beside the lab's files, ``reads.npz``: every pair (userId, itemId,
its unrounded rating and, where the data has times, its latest read time) in the order of the lines of
collab_raw.csv, collab_mapped.csv and times.csv; each TFRecord set's record keys and sizes in file order; and
every file's size as written.  With it a refresh copies the lines and records of what the new reads do not touch as
bytes, and encodes only the changed and new ones, after them: the text it parses and writes grows with the new
reads, not with the history.  A directory without a current ledger (written by Beam, or edited since: a size
differs) is read from its CSVs once and written whole.
"""
import collections
import csv
import io
import os
import zipfile

import numpy as np
import pandas as pd
import tensorflow as tf

from walsmf import datadir, splits
from walsmf.errors import DataError
from walsmf.fileio import line_ends
from walsmf.recency import DAY_MS

LEDGER_FILE = datadir.LEDGER_FILE
TEXT_FILES = (datadir.RAW_FILE, datadir.MAPPED_FILE, datadir.TIMES_FILE)
RECORD_FILES = (datadir.ROWS_FILE, datadir.COLS_FILE)
SIZED_FILES = TEXT_FILES + (datadir.USERS_FILE, datadir.ITEMS_FILE) + RECORD_FILES

# The pairs of a data directory in its files' line order; ``time`` None without times; ``records``: per TFRecord set
# (keys, sizes) in file order, None where the files are not the ledger's (then they are written whole); ``lines``:
# per text file its lines' sizes, None where not recorded (then its lines are found by reading it).
Ledger = collections.namedtuple("Ledger", "user item rating time records lines", defaults=(None,))


def _sizes(data_dir):
    """Each SIZED_FILES file's size in bytes, −1 where it is absent."""
    paths = [os.path.join(data_dir, name) for name in SIZED_FILES]
    return np.array([tf.io.gfile.stat(p).length if tf.io.gfile.exists(p) else -1 for p in paths], np.int64)


def write_ledger(data_dir, ledger):
    """Write ``data_dir``'s reads.npz for ``ledger``, its files as they are now."""
    arrays = dict(user=ledger.user, item=ledger.item, rating=ledger.rating, sizes=_sizes(data_dir))
    if ledger.time is not None:
        arrays["time"] = ledger.time
    for name, (keys, sizes) in ledger.records.items():
        arrays[name + "_keys"], arrays[name + "_sizes"] = keys, sizes
    for name, sizes in (ledger.lines or {}).items():
        arrays[name + "_lines"] = sizes
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with tf.io.gfile.GFile(os.path.join(data_dir, LEDGER_FILE), "wb") as f:
        f.write(buffer.getvalue())


def read_ledger(data_dir, visitors, contents):
    """The Ledger of ``data_dir``: its reads.npz where that is current (every file the size it recorded), else
    read from collab_raw.csv and times.csv (``visitors``/``contents``: the id maps) with no records (every file to
    be written whole)."""
    path = os.path.join(data_dir, LEDGER_FILE)
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path, "rb") as f:
            try:
                arrays = dict(np.load(io.BytesIO(f.read())))
            except (ValueError, OSError, zipfile.BadZipFile):  # truncated or not ours: the CSVs say what it said
                arrays = {"sizes": None}
        if np.array_equal(arrays.get("sizes"), _sizes(data_dir)):
            return Ledger(arrays["user"], arrays["item"], arrays["rating"], arrays.get("time"),
                          {name: (arrays[name + "_keys"], arrays[name + "_sizes"]) for name in RECORD_FILES},
                          {name: arrays[name + "_lines"] for name in TEXT_FILES if name + "_lines" in arrays})
    return _ledger_of_csvs(data_dir, visitors, contents)


def _ledger_of_csvs(data_dir, visitors, contents):
    """The Ledger of collab_raw.csv (a pair given twice: its highest rating) and times.csv, without records."""
    with tf.io.gfile.GFile(os.path.join(data_dir, datadir.RAW_FILE)) as f:
        raw = pd.read_csv(f, header=None, names=["visitorId", "contentId", "rating"],
                          dtype={"visitorId": str, "contentId": str})
    mapped = pd.DataFrame({"userId": pd.Index(visitors).get_indexer(raw["visitorId"]),
                           "itemId": pd.Index(contents).get_indexer(raw["contentId"]), "rating": raw["rating"]})
    if (mapped[["userId", "itemId"]].values < 0).any():
        raise DataError("{} holds ids its users.csv / items.csv do not: regenerate the data directory (python -m "
                        "walsmf.preprocess)".format(data_dir))
    mapped = mapped.groupby(["userId", "itemId"], sort=False, as_index=False)["rating"].max()
    times_csv = os.path.join(data_dir, datadir.TIMES_FILE)
    time = (splits.read_times(times_csv, data_dir, mapped).astype(np.int64) if tf.io.gfile.exists(times_csv)
            else None)
    return Ledger(mapped["userId"].values.astype(np.int64), mapped["itemId"].values.astype(np.int64),
                  mapped["rating"].values.astype(np.float64), time, None)


def found_in(haystack, needles):
    """Each of the distinct ``needles``' position in ``haystack`` (−1: absent), and whether one is there twice: each
    of the haystack looked up among the needles, so the table hashed is of the few new reads, not the history."""
    where = pd.Index(needles).get_indexer(haystack)
    hits = np.flatnonzero(where >= 0)
    at = np.full(len(needles), -1, np.int64)
    at[where[hits]] = hits
    return at, len(hits) > len(np.unique(where[hits]))


def grown_ids(known, new):
    """(``known`` then the ids of ``new`` not among them in sorted order, each of ``new``'s number among them)."""
    distinct, inverse = np.unique(np.asarray(new, object), return_inverse=True)
    at = found_in(np.asarray(known, object), distinct)[0]
    unknown = distinct[at < 0]
    at[at < 0] = len(known) + np.arange(len(unknown))
    return np.concatenate([np.asarray(known, object), unknown]), at[inverse]


# What merging new reads into a Ledger makes: the grown Ledger's pairs are the old ones ``kept`` then ``added``
# (the changed pairs, with their merged rating and time, and the new ones).
Merge = collections.namedtuple("Merge", "kept added")


def merge(ledger, users, items, ratings, times, nitems, keep_days=None):
    """Merge new reads (``users``, ``items``: their ids; ``ratings``; ``times``: ms, or None) into ``ledger``: a
    pair read again keeps its highest rating and latest time; with ``keep_days``, pairs last read more than that
    many days before the newest read are dropped.  ``nitems``: the grown item count."""
    new = pd.DataFrame({"key": users * nitems + items, "rating": ratings})
    if ledger.time is not None:
        new["time"] = np.asarray(times, np.int64)
    new = new.groupby("key", sort=False).max()
    at, twice = found_in(ledger.user * nitems + ledger.item, new.index.values)
    if twice:
        raise DataError("the data directory lists a pair twice ({} or {}): preprocess the reads again".format(
            datadir.RAW_FILE, LEDGER_FILE))
    found = at >= 0
    rating = new["rating"].values.copy()
    rating[found] = np.maximum(rating[found], ledger.rating[at[found]])
    changed = found & (rating > ledger.rating[np.maximum(at, 0)])
    time = None
    if ledger.time is not None:
        time = new["time"].values.copy()
        time[found] = np.maximum(time[found], ledger.time[at[found]])
        changed |= found & (time > ledger.time[np.maximum(at, 0)])
    kept = np.ones(len(ledger.user), bool)
    kept[at[changed]] = False
    take = changed | ~found
    keys = new.index.values[take]
    added = Ledger(keys // nitems, keys % nitems, rating[take], None if time is None else time[take], None)
    if keep_days is not None:
        if ledger.time is None:
            raise DataError("--keep_days needs read times and the data directory has none ({}): preprocess reads "
                            "with their read_time column".format(datadir.TIMES_FILE))
        cutoff = max(ledger.time.max(initial=0), added.time.max(initial=0)) - keep_days * DAY_MS
        kept &= ledger.time >= cutoff
        recent = added.time >= cutoff
        added = Ledger(*(column[recent] for column in added[:4]), None)
    return Merge(kept, added)


def grown_ledger(ledger, merged):
    """The pairs of ``ledger`` after ``merged`` (kept, then added), without records."""
    return Ledger(*(None if old is None else np.concatenate([old[merged.kept], new])
                    for old, new in zip(ledger[:4], merged.added[:4])), None)


def _csv_lines(*columns):
    """CSV lines (as pandas' to_csv writes them: minimal quoting, "\\n") of the given columns, as bytes."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(zip(*(np.asarray(c).tolist() for c in columns)))
    return buffer.getvalue().encode()


def _line_sizes(data, lines, path):
    """The size of each of ``lines`` lines of ``data``, or a DataError if it holds another number of lines."""
    ends = line_ends(data)
    if len(ends) != lines or (lines and ends[-1] != len(data)):
        raise DataError("{} holds {} lines, its ledger {}: regenerate the data directory (python -m "
                        "walsmf.preprocess)".format(path, len(ends), lines))
    return np.diff(np.concatenate([[0], ends])).astype(np.uint32)


# Bytes of a file read at a time when its kept lines or records are copied: memory holds one such block.
_COPY_BLOCK = 64 << 20


def _copy_kept(out, path, kept, sizes, skip=0):
    """Write to ``out`` the units of ``path`` (consecutive, ``sizes`` bytes each, after ``skip`` bytes) where
    ``kept``, reading the file a block at a time."""
    ends = np.cumsum(sizes, dtype=np.int64) + skip
    runs = np.flatnonzero(np.diff(np.concatenate([[0], kept.astype(np.int8), [0]]))).reshape(-1, 2)
    if not len(runs):
        return
    run_starts, run_ends = ends[runs[:, 0]] - sizes[runs[:, 0]], ends[runs[:, 1] - 1]
    with tf.io.gfile.GFile(path, "rb") as source:
        for block_start in range(0, int(run_ends[-1]), _COPY_BLOCK):
            block = memoryview(source.read(_COPY_BLOCK))
            block_end = block_start + len(block)
            first = np.searchsorted(run_ends, block_start, side="right")
            last = np.searchsorted(run_starts, block_end, side="left")
            out.write(b"".join(block[max(start, block_start) - block_start:min(end, block_end) - block_start]
                               for start, end in zip(run_starts[first:last].tolist(), run_ends[first:last].tolist())))


def write_grown(staged, data_dir, ledger, merged, grown, visitors, contents, interactions, old_counts):
    """Write the grown data directory's CSVs, TFRecords and ledger into ``staged`` (metadata.json aside): the
    lines and records of ``data_dir`` that ``merged`` keeps as bytes, then the changed and new ones; ``grown``:
    grown_ledger's pairs, ``interactions`` theirs, ``old_counts`` the visitors and articles ``data_dir`` has."""
    old_users, old_items = old_counts
    whole = ledger.records is None
    for name, known, old in ((datadir.USERS_FILE, visitors, old_users), (datadir.ITEMS_FILE, contents, old_items)):
        source = os.path.join(data_dir, name)
        with tf.io.gfile.GFile(os.path.join(staged, name), "wb") as out:
            _copy_kept(out, source, np.ones(1, bool), np.array([tf.io.gfile.stat(source).length]))
            out.write(_csv_lines(known[old:], np.arange(old, len(known))))
    added = merged.added
    rows = grown if whole else added  # every pair's line, or the lines after the kept ones
    columns = {datadir.RAW_FILE: (visitors[rows.user], contents[rows.item], rows.rating),
               datadir.MAPPED_FILE: (rows.user, rows.item, np.round(rows.rating, 2))}
    if ledger.time is not None:
        columns[datadir.TIMES_FILE] = (visitors[rows.user], contents[rows.item], rows.time)
    lines = {}
    for name, new_columns in columns.items():
        path = os.path.join(data_dir, name)
        header = (",".join(datadir.TIMES_COLUMNS) + "\n").encode() if name == datadir.TIMES_FILE else b""
        text = _csv_lines(*new_columns)
        with tf.io.gfile.GFile(os.path.join(staged, name), "wb") as out:
            out.write(header)
            sizes = np.empty(0, np.uint32)
            if not whole:
                sizes = (ledger.lines or {}).get(name)
                if sizes is None:
                    with tf.io.gfile.GFile(path, "rb") as f:
                        sizes = _line_sizes(f.read()[len(header):], len(merged.kept), path)
                _copy_kept(out, path, merged.kept, sizes, len(header))
                sizes = sizes[merged.kept]
            out.write(text)
        lines[name] = np.concatenate([sizes, _line_sizes(text, len(rows.user), name)])
    records = {}
    dropped = ~merged.kept  # pairs changed, or older than --keep_days: their rows' and columns' records change
    for name, csr, touched in ((datadir.ROWS_FILE, interactions.by_user, np.union1d(added.user, ledger.user[dropped])),
                               (datadir.COLS_FILE, interactions.by_item, np.union1d(added.item, ledger.item[dropped]))):
        if whole:
            keys = np.flatnonzero(csr.counts)
            records[name] = keys, datadir.write_tfrecord(os.path.join(staged, name), csr, keys)
            continue
        old_keys, old_sizes = ledger.records[name]
        kept = ~np.isin(old_keys, touched)
        new_keys = touched[csr.counts[touched] > 0]
        tail = os.path.join(staged, name + ".added")
        new_sizes = datadir.write_tfrecord(tail, csr, new_keys)
        with tf.io.gfile.GFile(os.path.join(staged, name), "wb") as out, tf.io.gfile.GFile(tail, "rb") as g:
            _copy_kept(out, os.path.join(data_dir, name), kept, old_sizes)
            out.write(g.read())
        tf.io.gfile.remove(tail)
        records[name] = np.concatenate([old_keys[kept], new_keys]), np.concatenate([old_sizes[kept], new_sizes])
    users = np.flatnonzero(interactions.by_user.counts[:datadir.SUBSET_USERS])
    datadir.write_tfrecord(os.path.join(staged, datadir.SUBSET_FILE), interactions.by_user, users)
    write_ledger(staged, grown._replace(records=records, lines=lines))
    return grown
