"""The lab's input pipeline: TFRecords of (key, indices, values) into WALS's SparseTensor batches.

``decode_example`` and ``remap_keys`` keep the lab's names and contracts;
``read_dataset`` is the estimator's input_fn (rows, columns, project_row).
"""
import tensorflow as tf
from tensorflow.contrib.factorization import WALSMatrixFactorization

from walsmf.datadir import COLS_FILE, EXAMPLE_FEATURES, INDICES, KEY, ROWS_FILE, SUBSET_FILE, VALUES, tfrecord_files

INPUT_ROWS = WALSMatrixFactorization.INPUT_ROWS          # "input_rows"
INPUT_COLS = WALSMatrixFactorization.INPUT_COLS          # "input_cols"
PROJECT_ROW = WALSMatrixFactorization.PROJECT_ROW        # "project_row"
# Training also reads the union of consecutive batches of a side, as many as
# the feature MERGED_BATCHES says (fed by walsmf.sweeps; 1 by default), so a
# sweep of many batches takes few steps.
MERGED_ROWS, MERGED_COLS, MERGED_BATCHES = "merged_rows", "merged_cols", "merged_batches"


def decode_example(protos, vocab_size):
    """Decode a batch of serialized Examples (key, indices, values).

    Returns the SparseTensor [batch, vocab_size] the lab builds, row by row:
    each row holds the record's (indices, values), then the record's key as
    one extra entry (index = key, value 0), so the key survives batching.

    The lab decodes one Example at a time and batches the SparseTensors;
    this takes the batch of protos at once (``tf.io.parse_example``), which
    gives the same tensor and is the cheaper half of a training step.
    """
    parsed = tf.io.parse_example(protos, EXAMPLE_FEATURES)
    keys = parsed[KEY][:, 0]
    entries = parsed[INDICES]
    batch_size = tf.shape(keys, out_type=tf.int64)[0]
    entry_rows = entries.indices[:, 0]
    lengths = tf.math.unsorted_segment_sum(tf.ones_like(entry_rows), entry_rows, batch_size)
    row_start = tf.math.cumsum(lengths + 1, exclusive=True)
    # Where every entry and every appended key lands in row-major order.
    entry_position = tf.gather(row_start, entry_rows) + entries.indices[:, 1]
    key_position = row_start + lengths
    order = tf.math.invert_permutation(tf.concat([entry_position, key_position], 0))
    rows = tf.gather(tf.concat([entry_rows, tf.range(batch_size)], 0), order)
    cols = tf.gather(tf.concat([entries.values, keys], 0), order)
    values = tf.gather(tf.concat([parsed[VALUES].values, tf.zeros_like(keys, tf.float32)], 0), order)
    return tf.SparseTensor(indices=tf.stack([rows, cols], axis=1), values=values,
                           dense_shape=tf.stack([batch_size, tf.cast(vocab_size, tf.int64)]))


def remap_keys(sparse_tensor):
    """Replace each row's batch index by its key (the row's last entry) and drop the keys.

    The lab does this with segment_sum, cumsum, a mask built by tiling and
    a tf.while_loop that tiles the jagged keys one row at a time.  This
    form gathers each entry's key through its batch row instead: no
    while_loop, so its cost does not grow with one loop step per row
    (benchmarks/bench_model.py prints both; the tests check this form
    against the true (key, index, value) triples).
    """
    indices, values = sparse_tensor.indices, sparse_tensor.values
    batch_rows = indices[:, 0]
    n_rows = sparse_tensor.dense_shape[0]
    entries_per_row = tf.math.unsorted_segment_sum(tf.ones_like(batch_rows), batch_rows, n_rows)
    key_position = tf.math.cumsum(entries_per_row) - 1
    keys = tf.gather(indices[:, 1], key_position)
    is_key = tf.scatter_nd(tf.expand_dims(key_position, 1), tf.ones_like(key_position),
                           tf.shape(batch_rows, out_type=tf.int64))
    keep = tf.equal(is_key, 0)
    kept = tf.boolean_mask(indices, keep)
    remapped = tf.stack([tf.gather(keys, kept[:, 0]), kept[:, 1]], axis=1)
    n_keys = tf.maximum(n_rows, tf.reduce_max(keys) + 1)
    return tf.SparseTensor(indices=remapped, values=tf.boolean_mask(values, keep),
                           dense_shape=tf.stack([n_keys, sparse_tensor.dense_shape[1]]))


def batch_iterator(filename, vocab_size, mode, settings):
    """One-shot iterator over remapped SparseTensor batches of ``filename``.

    TRAIN repeats forever, EVAL reads once.  The lab repeated before it
    batched, so a batch larger than the file held some keys twice and the
    WALS kernel summed the duplicates (a doubled objective); here every
    batch holds each key at most once: batch, then repeat.  In training,
    parsed batches are cached, so epochs after the first skip parsing.
    With ``settings.target == "read"`` every observed value becomes 1
    (walsmf.task --target).
    """
    @tf.autograph.experimental.do_not_convert
    def decode_batch(protos):
        batch = remap_keys(decode_example(protos, vocab_size))
        if settings.target == "read":
            batch = tf.SparseTensor(batch.indices, tf.ones_like(batch.values), batch.dense_shape)
        return batch

    files = tfrecord_files(settings.input_path, filename)
    dataset = tf.data.TFRecordDataset(files).batch(settings.batch_size).map(decode_batch)
    if mode == tf.estimator.ModeKeys.TRAIN:
        dataset = dataset.cache().repeat()
    return tf.compat.v1.data.make_one_shot_iterator(dataset.prefetch(1))


def parse_tfrecords(filename, vocab_size, mode, settings):
    """The next remapped SparseTensor batch of ``filename`` (see batch_iterator)."""
    return batch_iterator(filename, vocab_size, mode, settings).get_next()


def merge_batches(iterator, batches):
    """The union of the iterator's next ``batches`` batches (a scalar tensor) as one SparseTensor, keys unchanged."""
    def read(taken, indices, values, dense_shape):
        batch = iterator.get_next()
        return (taken + 1, indices.write(taken, batch.indices), values.write(taken, batch.values),
                tf.maximum(dense_shape, batch.dense_shape))
    # TensorArrays concatenated once at the end: growing one tensor would copy it every batch.  One
    # iteration at a time: parallel ones take the batches out of order, and the solve then sorts the keys.
    _, indices, values, dense_shape = tf.while_loop(
        lambda taken, *_: taken < batches, read,
        [tf.constant(0), tf.TensorArray(tf.int64, size=0, dynamic_size=True, infer_shape=False),
         tf.TensorArray(tf.float32, size=0, dynamic_size=True, infer_shape=False), tf.zeros([2], tf.int64)],
        parallel_iterations=1)
    return tf.SparseTensor(tf.reshape(indices.concat(), [-1, 2]), tf.reshape(values.concat(), [-1]), dense_shape)


def read_dataset(mode, settings):
    """The estimator's input_fn: rows (items_for_user), columns (users_for_item), project_row.

    Each side also comes as the union of the next MERGED_BATCHES batches
    (MERGED_ROWS, MERGED_COLS); a training step reads one side's, and only
    what a step reads is taken from the iterators.  (Evaluation presents the
    same features, as the Estimator requires, and reads one batch.)
    """
    def _input_fn():
        batches = tf.compat.v1.placeholder_with_default(tf.constant(1), [], name=MERGED_BATCHES)
        features = {PROJECT_ROW: tf.constant(True), MERGED_BATCHES: batches}
        for key, merged, filename, vocab_size in ((INPUT_ROWS, MERGED_ROWS, ROWS_FILE, settings.nitems),
                                                  (INPUT_COLS, MERGED_COLS, COLS_FILE, settings.nusers)):
            iterator = batch_iterator(filename, vocab_size, mode, settings)
            features[key] = iterator.get_next()
            features[merged] = merge_batches(iterator, batches)
        return features, None
    return _input_fn


def try_out(settings, filename=SUBSET_FILE):
    """The first EVAL batch of ``filename`` as a SparseTensorValue (the lab's try_out)."""
    with tf.Graph().as_default():
        rows = parse_tfrecords(filename, settings.nitems, tf.estimator.ModeKeys.EVAL, settings)
        with tf.compat.v1.Session() as sess:
            return sess.run(rows)
