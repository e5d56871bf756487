"""Where WALS training time goes, on the lab-sized embedded sample.

    .venv/bin/python benchmarks/bench_model.py [--data_dir data] [--batch_sizes 512 16384]

Prints, for n_embeds 10: seconds per full sweep (rows + columns) of training
steps through the estimator, after a first sweep that parses; remap_keys alone per batch (walsmf's gather form and the
lab's while_loop form, checked equal); export; and one iteration of implicit's ALS (10 factors) on the
same matrix, with the ratio sweep / implicit iteration.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

import tensorflow as tf
from bench_training import sweep_seconds

from walsmf import baselines, inputs, model, modeldir, settings, splits
from walsmf.datadir import METADATA_FILE, ROWS_FILE, read_metadata, tfrecord_files


def lab_remap_keys(sparse_tensor):
    """The lab's remap_keys algorithm (segment_sum, cumsum, tiled mask, while_loop), for comparison."""
    bad_indices, bad_values = sparse_tensor.indices, sparse_tensor.values
    size = tf.math.segment_sum(tf.ones_like(bad_indices[:, 0]), bad_indices[:, 0]) - 1
    length = tf.shape(size, out_type=tf.int64)[0]
    cum = tf.cumsum(size)
    cum_range = tf.range(length) + cum
    keys = tf.gather(bad_indices[:, 1], cum_range)
    x = tf.range(tf.shape(bad_indices, out_type=tf.int64)[0])
    x_tile = tf.tile(tf.expand_dims(x, -1), tf.stack([tf.constant(1, tf.int64), length]))
    keep = tf.logical_not(tf.reduce_any(tf.equal(x_tile, cum_range), axis=1))
    kept_indices = tf.boolean_mask(bad_indices, keep)
    kept_values = tf.boolean_mask(bad_values, keep)

    def body(i, grown):
        return i + 1, tf.concat([grown, tf.tile([keys[i]], [size[i]])], 0)
    _, tiled = tf.while_loop(lambda i, _: i < length, body, [tf.constant(1, tf.int64), tf.tile([keys[0]], [size[0]])],
                             shape_invariants=[tf.TensorShape([]), tf.TensorShape([None])])
    fixed = tf.stack([tiled, kept_indices[:, 1]], axis=1)
    return tf.SparseTensor(fixed, kept_values, sparse_tensor.dense_shape)


def time_remap(data_dir, vocab, batch_size, repeats=50):
    """Seconds per batch of each remap_keys form on the first batch of items_for_user."""
    with tf.Graph().as_default():
        protos = tf.data.TFRecordDataset(tfrecord_files(data_dir, ROWS_FILE)).batch(batch_size)
        decoded = inputs.decode_example(tf.compat.v1.data.make_one_shot_iterator(protos).get_next(), vocab)
        with tf.compat.v1.Session() as sess:
            batch = sess.run(decoded)
        fed = tf.compat.v1.sparse_placeholder(tf.float32)
        ours, lab = inputs.remap_keys(fed), lab_remap_keys(fed)
        results = {}
        with tf.compat.v1.Session() as sess:
            a, b = sess.run([ours, lab], {fed: batch})
            assert sorted(map(tuple, a.indices)) == sorted(map(tuple, b.indices)), "remap forms differ"
            for name, op in (("walsmf", ours), ("lab", lab)):
                sess.run(op, {fed: batch})
                start = time.perf_counter()
                for _ in range(repeats):
                    sess.run(op, {fed: batch})
                results[name] = (time.perf_counter() - start) / repeats
    return results


def time_training(data_dir, meta, batch_size, sweeps=3):
    """Seconds per full sweep of training steps (after the first, which parses), and of the export."""
    args = settings.make(input_path=data_dir, nusers=meta["nusers"], nitems=meta["nitems"], batch_size=batch_size,
                         n_embeds=10, output_dir=tempfile.mkdtemp(prefix="walsmf-bench-"), seed=1)
    sweep_s = sweep_seconds(args, sweeps)
    model.fit(args, sweeps * model.steps_per_sweep(args))
    start = time.perf_counter()
    model.export(modeldir.trained_factors(args.output_dir), model.load_data(args), args)
    export_s = time.perf_counter() - start
    shutil.rmtree(args.output_dir)
    return dict(steps_per_sweep=model.steps_per_sweep(args), sweep=sweep_s, export_s=export_s)


def time_implicit(data_dir, meta, iterations=10):
    """Seconds per iteration of implicit's ALS (10 factors) on the same user x item matrix."""
    train = splits.read_mapped(data_dir)
    start = time.perf_counter()
    baselines.implicit_als(train, meta["nusers"], meta["nitems"], factors=10, iterations=iterations)
    return (time.perf_counter() - start) / iterations


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default="data", help="lab-sized data (make data); generated if missing")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[512, 16384])
    args = parser.parse_args()
    if not os.path.exists(os.path.join(args.data_dir, METADATA_FILE)):
        from walsmf.preprocess import main as preprocess
        preprocess(["--data_dir", args.data_dir])
    meta = read_metadata(args.data_dir)
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
    print("data: {nusers} users, {nitems} items, {interactions} interactions; n_embeds 10".format(**meta))
    implicit_s = time_implicit(args.data_dir, meta)
    print("implicit 0.7.2 ALS, 10 factors: {:.3f} s per iteration".format(implicit_s))
    print("batch  steps/sweep  sweep_s(cached)  sweep/implicit  export_s")
    for batch_size in args.batch_sizes:
        r = time_training(args.data_dir, meta, batch_size)
        print("{:5d}  {:11d}  {:15.3f}  {:14.1f}  {:8.2f}".format(
            batch_size, r["steps_per_sweep"], r["sweep"], r["sweep"] / implicit_s, r["export_s"]), flush=True)
    remap = time_remap(args.data_dir, meta["nitems"], 512)
    print("remap_keys per batch of 512: walsmf {:.2f} ms, lab's while_loop {:.2f} ms (same result)".format(
        1e3 * remap["walsmf"], 1e3 * remap["lab"]))


if __name__ == "__main__":
    sys.exit(main())
