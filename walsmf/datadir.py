"""The data directory's contract: its file names, the TFRecord Example, metadata, and one scan.

A data directory (``walsmf.preprocess --data_dir``, a split from
``walsmf.evaluate --split_from``) holds:

    collab_raw.csv       visitorId,contentId,rating
    users.csv            visitorId,userId          (userId 0..nusers−1)
    items.csv            contentId,itemId          (itemId 0..nitems−1)
    collab_mapped.csv    userId,itemId,rating
    items_for_user       TFRecord: per user an Example (key = userId, indices = itemIds, values = ratings)
    users_for_item       TFRecord: per item an Example (key = itemId, indices = userIds, values = ratings)
    items_for_user_subset  items_for_user of the first 20 users (the lab's try-out file)
    metadata.json        {"nusers", "nitems", "interactions", ...}
    times.csv            visitorId,contentId,time  (with a header; each pair's latest read, ms since the epoch)
    heldout.csv          userId,itemId,rating held out (split directories only)
    reads.npz            the ledger of the pairs and records, for growing the directory (walsmf.growth)

A TFRecord set is the named file or its shards ``NAME-*`` (as Beam writes
them).  A model directory (``walsmf.task --output_dir``) is walsmf.modeldir's.  Every
file is read through ``tf.io.gfile``, so directories may be ``gs://`` paths.
"""
import collections
import hashlib
import json
import os

import numpy as np
import tensorflow as tf

from walsmf.errors import DataError, json_object
from walsmf.tfexample import INDICES, KEY, VALUES, encoded_examples

RAW_FILE = "collab_raw.csv"
USERS_FILE = "users.csv"
ITEMS_FILE = "items.csv"
MAPPED_FILE = "collab_mapped.csv"
ROWS_FILE = "items_for_user"
COLS_FILE = "users_for_item"
SUBSET_FILE = "items_for_user_subset"
METADATA_FILE = "metadata.json"
HELDOUT_FILE = "heldout.csv"
# visitorId,contentId,time: each pair's latest read (ms since the epoch), where the export has times.
TIMES_FILE = "times.csv"
TIMES_COLUMNS = ("visitorId", "contentId", "time")
LEDGER_FILE = "reads.npz"
DATA_FILES = (RAW_FILE, USERS_FILE, ITEMS_FILE, MAPPED_FILE, ROWS_FILE, COLS_FILE, SUBSET_FILE, METADATA_FILE)
SUBSET_USERS = 20

HELDOUT_SUMMARY_DIR = "eval_heldout"

# The lab's tf.train.Example (walsmf.tfexample): the row's id, its column ids and their ratings.
EXAMPLE_FEATURES = {
    KEY: tf.io.FixedLenFeature([1], tf.int64),
    INDICES: tf.io.VarLenFeature(tf.int64),
    VALUES: tf.io.VarLenFeature(tf.float32),
}
_SCAN_BATCH = 8192


# ------------------------------------------------------------- metadata --

def written_here(name):
    """Whether ``name`` is an entry walsmf writes into a data directory (its files, their shards)."""
    return (name in DATA_FILES or name in (TIMES_FILE, HELDOUT_FILE, LEDGER_FILE)
            or any(name.startswith(prefix + "-") for prefix in (ROWS_FILE, COLS_FILE)))


def read_metadata(data_dir):
    """The counts the data pipeline saved beside the data (nusers, nitems, interactions, ...)."""
    path = os.path.join(data_dir, METADATA_FILE)
    if not tf.io.gfile.exists(path):
        raise DataError("{} does not exist: run 'python -m walsmf.preprocess --data_dir {}' first, "
                        "or pass --nusers and --nitems".format(path, data_dir))
    with tf.io.gfile.GFile(path) as f:
        metadata = json_object(f.read(), path, "regenerate the data directory (python -m walsmf.preprocess)")
    for key in ("nusers", "nitems"):
        value = metadata.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise DataError("{}: {} is {!r}, not a positive count: regenerate the data directory "
                            "(python -m walsmf.preprocess)".format(path, key, value))
    return metadata


def data_counts(data_dir, nusers=None, nitems=None):
    """nusers and nitems of ``data_dir``: the ones given, else metadata.json's, else (a directory of the lab's
    files alone) one more than the largest id its TFRecords hold."""
    if nusers is None or nitems is None:
        if tf.io.gfile.exists(os.path.join(data_dir, METADATA_FILE)):
            metadata = read_metadata(data_dir)
            nusers = metadata["nusers"] if nusers is None else nusers
            nitems = metadata["nitems"] if nitems is None else nitems
        else:
            if not tf.io.gfile.isdir(data_dir) or not tf.io.gfile.glob(os.path.join(data_dir, ROWS_FILE + "*")):
                raise DataError("{} does not exist, nor the TFRecords to count ids from: run 'python -m "
                                "walsmf.preprocess --data_dir {}' first, or check --input_path".format(
                                    os.path.join(data_dir, METADATA_FILE), data_dir))
            largest = [0, 0]
            for name, (key_side, index_side) in ((ROWS_FILE, (0, 1)), (COLS_FILE, (1, 0))):
                keys, _, indices, _ = scan_records(data_dir, name)
                largest[key_side] = max(largest[key_side], int(keys.max()) + 1)
                largest[index_side] = max(largest[index_side], int(indices.max()) + 1 if len(indices) else 0)
            nusers = largest[0] if nusers is None else nusers
            nitems = largest[1] if nitems is None else nitems
    return {"nusers": int(nusers), "nitems": int(nitems)}


def write_metadata(data_dir, metadata):
    """Write metadata.json (sorted keys, indented: one format for every writer)."""
    with tf.io.gfile.GFile(os.path.join(data_dir, METADATA_FILE), "w") as f:
        f.write(json.dumps(metadata, indent=2, sort_keys=True))


def median_duration(data_dir):
    """The training data's median read duration (ms), if its metadata.json says it."""
    if not tf.io.gfile.exists(os.path.join(data_dir, METADATA_FILE)):
        return None
    return read_metadata(data_dir).get("median_duration_ms")


# What a training run reads of a data directory, once, and hands on to the export and batch prediction: the
# Interactions, the original ids by internal id (None where the directory has no users.csv / items.csv), the
# median read time (None without one), the popularity the blend adds (None: the readers) and which items are fresh
# enough to recommend (None: all).
TrainingData = collections.namedtuple("TrainingData",
                                      "interactions visitor_ids content_ids median_duration_ms popularity fresh")


def load(data_dir, nusers, nitems, popularity=None, fresh=None):
    """The TrainingData of ``data_dir`` for ``nusers`` x ``nitems`` ids; ``popularity``: the blend's counts where
    they are not the readers (recency.data_popularity); ``fresh``: the items recommendable (recency.fresh_items)."""
    return TrainingData(read_interactions(data_dir, nusers, nitems), *id_maps(data_dir, nusers, nitems),
                        median_duration(data_dir), popularity, fresh)


def id_maps(data_dir, nusers, nitems):
    """(visitorIds, contentIds) indexed by internal id from users.csv and items.csv, an id beyond the file None;
    (None, None) where the directory lacks either file (the lab's TFRecords only)."""
    paths = [os.path.join(data_dir, name) for name in (USERS_FILE, ITEMS_FILE)]
    if not all(tf.io.gfile.exists(path) for path in paths):
        return None, None
    out = []
    for path, n in zip(paths, (nusers, nitems)):
        known = read_id_map(path)
        out.append([known[i] if i < len(known) else None for i in range(n)])
    return tuple(out)


def reads_fingerprint(interactions):
    """A fingerprint of a data directory's reads (every user's items and ratings): equal for the same reads."""
    digest = hashlib.sha256()
    for array in (interactions.by_user.offsets, interactions.by_user.indices, interactions.by_user.values):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


# Bytes of an id map hashed at a time.
_DIGEST_BLOCK = 16 << 20


def id_maps_digest(data_dir):
    """{users.csv / items.csv: [its size, the sha256 of its bytes]} for the id maps ``data_dir`` has: what a model
    records of the ids its factors are in (the maps only grow, so they stay the first bytes of the maps)."""
    digests = {}
    for name in (USERS_FILE, ITEMS_FILE):
        path = os.path.join(data_dir, name)
        if tf.io.gfile.exists(path):
            size = tf.io.gfile.stat(path).length
            digests[name] = [size, _prefix_digest(path, size)]
    return digests


def _prefix_digest(path, size):
    """The sha256 of the first ``size`` bytes of ``path``, None where it is shorter or absent."""
    if not tf.io.gfile.exists(path) or tf.io.gfile.stat(path).length < size:
        return None
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        for start in range(0, size, _DIGEST_BLOCK):
            digest.update(f.read(min(_DIGEST_BLOCK, size - start)))
    return digest.hexdigest()


def changed_id_maps(data_dir, digests):
    """The id maps of ``data_dir`` that no longer begin with the bytes ``digests`` (id_maps_digest's) recorded."""
    return [name for name, (size, digest) in sorted(digests.items())
            if _prefix_digest(os.path.join(data_dir, name), size) != digest]


def write_times(data_dir, visitors, contents, times):
    """Write times.csv: each (visitorId, contentId) pair's latest read time, as walsmf.evaluate reads it."""
    import pandas as pd  # here only: the serving modules import this module where pandas is not installed

    frame = pd.DataFrame({TIMES_COLUMNS[0]: np.asarray(visitors), TIMES_COLUMNS[1]: np.asarray(contents),
                          TIMES_COLUMNS[2]: np.asarray(times)})
    frame.to_csv(os.path.join(data_dir, TIMES_FILE), index=False)


def counts(mapped):
    """NITEMS, NUSERS (max id + 1) and the interaction count of userId,itemId rows, as the lab computes them."""
    return {"nitems": int(mapped["itemId"].max()) + 1,
            "nusers": int(mapped["userId"].max()) + 1,
            "interactions": int(len(mapped))}


def read_id_map(path):
    """The original ids of users.csv / items.csv, indexed by the mapped id (parsed as CSV: ids may hold commas)."""
    import pandas as pd  # here only, as in write_times

    with tf.io.gfile.GFile(path) as f:
        try:
            pairs = pd.read_csv(f, header=None, names=["original", "mapped"], dtype={"original": str},
                                na_filter=False)
        except pd.errors.EmptyDataError:
            return np.empty(0, dtype=object)
        except (ValueError, pd.errors.ParserError) as err:
            raise DataError("{} is not a CSV of original id,mapped id ({}): regenerate the data directory (python "
                            "-m walsmf.preprocess)".format(path, str(err).splitlines()[0]))
    if not len(pairs):
        return np.empty(0, dtype=object)
    mapped = pairs["mapped"].values
    if (pairs["mapped"].dtype.kind != "i" or mapped.min() < 0 or mapped.max() >= len(pairs) or (
            np.bincount(mapped, minlength=len(pairs)) != 1).any()):
        raise DataError("{}: the mapped ids are not 0..{}, each once: regenerate the data directory (python -m "
                        "walsmf.preprocess)".format(path, len(pairs) - 1))
    original = np.empty(len(pairs), dtype=object)
    original[mapped] = pairs["original"].values
    return original


# ------------------------------------------------------------------ CSR --

class CSR(collections.namedtuple("CSR", "offsets indices values")):
    """Rows 0..n−1 of a sparse matrix: row r holds ids ``indices[offsets[r]:offsets[r+1]]``
    (ascending) and their ``values``."""

    @classmethod
    def from_triples(cls, rows, cols, values, n_rows):
        """Build from (row, col, value) entries in any order."""
        rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        # one sort of one key, (row, col) as row·n_cols + col (lexsort of the two takes 15 times as long); a stable
        # one where an entry is given twice, so the same input gives the same order
        key = rows * (int(cols.max(initial=0)) + 1) + cols
        order = np.argsort(key)
        if (np.diff(key[order]) == 0).any():
            order = np.argsort(key, kind="stable")
        offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_rows))]).astype(np.int64)
        return cls(offsets, cols[order], np.asarray(values, np.float32)[order])

    @property
    def n_rows(self):
        return len(self.offsets) - 1

    @property
    def counts(self):
        """Entries per row."""
        return np.diff(self.offsets)

    def row(self, r):
        """(ids, values) of row ``r``."""
        return self.indices[self.offsets[r]:self.offsets[r + 1]], self.values[self.offsets[r]:self.offsets[r + 1]]

    def rows(self):
        """The row of every entry (the COO form's first column)."""
        return np.repeat(np.arange(self.n_rows, dtype=np.int64), self.counts)

    def with_values(self, values):
        """The same entries with other values."""
        return CSR(self.offsets, self.indices, np.asarray(values, np.float32))


Interactions = collections.namedtuple("Interactions", "by_user by_item")
Interactions.__doc__ = """Both TFRecord sets in memory: ``by_user`` (items_for_user) and ``by_item``
(users_for_item), each a CSR over every id 0..n−1."""


def unread_ids(interactions):
    """(userIds with no read, itemIds with no reader) of ``interactions``."""
    return tuple(np.flatnonzero(side.counts == 0) for side in interactions)


# ------------------------------------------------------------ TFRecords --

def tfrecord_files(data_dir, name):
    """The files of one TFRecord set: ``name`` itself or its shards ``name-*``.

    (``name*`` would also take items_for_user_subset for items_for_user.)
    """
    pattern = os.path.join(data_dir, name)
    whole, shards = tf.io.gfile.glob(pattern), tf.io.gfile.glob(pattern + "-*")
    if whole and shards:
        raise DataError("{} holds both {} and its shards {}-*: two writers left one set each; regenerate the data "
                        "directory (python -m walsmf.preprocess) or remove the older set".format(data_dir, name, name))
    files = sorted(whole + shards)
    if not files:
        raise DataError("no TFRecord file {} (or shards {}-*): run 'python -m walsmf.preprocess' "
                        "or check --input_path".format(pattern, pattern))
    return files


def write_tfrecord(path, csr, keys=None):
    """Write one Example per row of ``csr`` that has entries (or per row of ``keys``) to ``path``; return each
    record's size in the file (the Example and TFRecord's 16 bytes of length and checksums)."""
    keys = np.flatnonzero(csr.counts) if keys is None else keys
    sizes = np.empty(len(keys), np.int64)
    with tf.io.TFRecordWriter(path) as writer:
        for number, record in enumerate(encoded_examples(csr, keys)):
            writer.write(record)
            sizes[number] = len(record) + 16
    return sizes


def write_interactions(data_dir, interactions):
    """Write items_for_user, users_for_item and items_for_user_subset (the first 20 users); return the first two's
    (keys, record sizes) by name."""
    records = {}
    for name, csr in ((ROWS_FILE, interactions.by_user), (COLS_FILE, interactions.by_item)):
        keys = np.flatnonzero(csr.counts)
        records[name] = keys, write_tfrecord(os.path.join(data_dir, name), csr, keys)
    users = np.flatnonzero(interactions.by_user.counts[:SUBSET_USERS])
    write_tfrecord(os.path.join(data_dir, SUBSET_FILE), interactions.by_user, users)
    return records


def interactions_of(mapped, nusers=None, nitems=None):
    """Interactions of userId,itemId,rating rows (a collab_mapped.csv DataFrame)."""
    users, items = mapped["userId"].values, mapped["itemId"].values
    values = mapped["rating"].values
    nusers = int(users.max()) + 1 if nusers is None else nusers
    nitems = int(items.max()) + 1 if nitems is None else nitems
    return Interactions(CSR.from_triples(users, items, values, nusers), CSR.from_triples(items, users, values, nitems))


def scan_records(data_dir, name):
    """Every record of one TFRecord set in file order: (keys, offsets, indices, values), CSR over the records."""
    keys, lengths, indices, values = [], [], [], []
    with tf.Graph().as_default():
        protos = tf.data.TFRecordDataset(tfrecord_files(data_dir, name)).batch(_SCAN_BATCH)
        parsed = tf.io.parse_example(tf.compat.v1.data.make_one_shot_iterator(protos).get_next(),
                                     EXAMPLE_FEATURES)
        with tf.compat.v1.Session() as sess:
            while True:
                try:
                    out = sess.run(parsed)
                except tf.errors.OutOfRangeError:
                    break
                except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as err:
                    raise DataError("{} is truncated or corrupt ({}): regenerate it with 'python -m "
                                    "walsmf.preprocess'".format(os.path.join(data_dir, name),
                                                                err.message.splitlines()[0]))
                keys.append(out[KEY][:, 0])
                lengths.append(np.bincount(out[INDICES].indices[:, 0], minlength=len(out[KEY])))
                n_values = np.bincount(out[VALUES].indices[:, 0], minlength=len(out[KEY]))
                if (lengths[-1] != n_values).any():
                    bad = np.flatnonzero(lengths[-1] != n_values)[0]
                    raise DataError("{}: the record of key {} has {} indices and {} values: each index needs its "
                                    "value; regenerate the data".format(os.path.join(data_dir, name),
                                                                        out[KEY][bad, 0], lengths[-1][bad],
                                                                        n_values[bad]))
                indices.append(out[INDICES].values)
                values.append(out[VALUES].values)
    if not keys:
        raise DataError("{} holds no records".format(os.path.join(data_dir, name)))
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))])
    return np.concatenate(keys), offsets, np.concatenate(indices), np.concatenate(values)


def check_ids(name, keys, indices, n_keys, n_indices, key_kind, index_kind):
    """Fail unless the record keys and their indices fit the vocabularies (ids 0..n−1).

    ``key_kind``/``index_kind``: "user" or "item".  Ids without a record are
    fine: users who read nothing yet, articles no one has read.
    """
    for kind, ids, size in ((key_kind, keys, n_keys), (index_kind, indices, n_indices)):
        if len(ids) and ids.min() < 0:
            raise DataError("{}: {}Id {} is negative: ids are 0..N-1; regenerate the data with "
                            "'python -m walsmf.preprocess'".format(name, kind, ids.min()))
        if len(ids) and ids.max() >= size:
            raise DataError("{}: {}Id {} is outside 0..{} (--n{}s {} is too small for this data)".format(
                name, kind, ids.max(), size - 1, kind, size))


def read_interactions(data_dir, nusers, nitems):
    """Scan both TFRecord sets once, check them against nusers/nitems and each other, return the Interactions."""
    sides = []
    for name, n_keys, n_indices, kinds in ((ROWS_FILE, nusers, nitems, ("user", "item")),
                                           (COLS_FILE, nitems, nusers, ("item", "user"))):
        keys, offsets, indices, values = scan_records(data_dir, name)
        check_ids(name, keys, indices, n_keys, n_indices, *kinds)
        sides.append(CSR.from_triples(np.repeat(keys, np.diff(offsets)), indices, values, n_keys))
    # A file cut at a record boundary reads cleanly: the two views of one matrix must agree.
    by_user, by_item = (len(side.indices) for side in sides)
    if by_user != by_item:
        raise DataError("{} holds {} interactions but {} holds {}: one is truncated or from other data; "
                        "regenerate the data directory (python -m walsmf.preprocess)".format(
                            ROWS_FILE, by_user, COLS_FILE, by_item))
    return Interactions(*sides)
