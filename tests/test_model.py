"""The WALS model package against numpy: input pipeline, training, batch prediction, evaluation."""
import json
import os
import re

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from helpers import batch_pred, closed_form, low_rank_ratings, run_in_process, run_module, write_matrix

from walsmf import datadir, inputs, model, modeldir, progress, recommend, settings, trainer


def run(fetch):
    with tf.compat.v1.Session() as sess:
        return sess.run(fetch)


def random_rows(rng, n_rows, vocab, max_len):
    """(key, indices, values) rows with jagged lengths: 1 entry, many entries, anything between."""
    keys = rng.choice(10 * n_rows + 50, size=n_rows, replace=False)
    lengths = rng.integers(1, max_len + 1, size=n_rows)
    lengths[0], lengths[-1] = 1, max_len
    return [(int(k), rng.choice(vocab, size=n, replace=False), rng.random(n).astype(np.float32))
            for k, n in zip(keys, lengths)]


def lab_batch(rows, vocab):
    """The SparseTensor the lab's decode_example + batch produce: entries, then (key, 0) per row."""
    indices, values = [], []
    for b, (key, idx, val) in enumerate(rows):
        indices += [(b, i) for i in idx] + [(b, key)]
        values += list(val) + [0.0]
    return tf.SparseTensor(np.array(indices, np.int64), np.array(values, np.float32), [len(rows), vocab])


def truth(rows):
    return sorted((key, int(i), float(v)) for key, idx, val in rows for i, v in zip(idx, val))


def triples(sparse):
    return sorted((int(r), int(c), float(v)) for (r, c), v in zip(sparse.indices, sparse.values))


@pytest.mark.parametrize("seed", range(6))
def test_remap_keys_is_exact_on_random_jagged_batches(seed):
    rng = np.random.default_rng(seed)
    rows = random_rows(rng, n_rows=int(rng.integers(1, 40)), vocab=500, max_len=300)
    with tf.Graph().as_default():
        out = run(model.remap_keys(lab_batch(rows, 500)))
    assert triples(out) == truth(rows)
    assert out.dense_shape[1] == 500 and out.dense_shape[0] > max(k for k, _, _ in rows)


def serialized(rows):
    return [tf.train.Example(features=tf.train.Features(feature={
        "key": tf.train.Feature(int64_list=tf.train.Int64List(value=[k])),
        "indices": tf.train.Feature(int64_list=tf.train.Int64List(value=idx)),
        "values": tf.train.Feature(float_list=tf.train.FloatList(value=val))})).SerializeToString()
        for k, idx, val in rows]


def test_decode_example_builds_the_labs_batch_layout():
    rows = random_rows(np.random.default_rng(7), n_rows=17, vocab=90, max_len=60)
    with tf.Graph().as_default():
        decoded, expected = run((model.decode_example(tf.constant(serialized(rows)), 90), lab_batch(rows, 90)))
    np.testing.assert_array_equal(decoded.indices, expected.indices)
    np.testing.assert_array_equal(decoded.values, expected.values)
    np.testing.assert_array_equal(decoded.dense_shape, [17, 90])


def test_pipeline_batches_hold_each_key_once_even_when_larger_than_the_data(tmp_path):
    ratings = low_rank_ratings(np.random.default_rng(0), nusers=30, nitems=12)
    write_matrix(str(tmp_path), ratings)
    args = settings.make(input_path=str(tmp_path), output_dir=str(tmp_path / "m"), batch_size=50)
    for mode, batches in ((tf.estimator.ModeKeys.TRAIN, 3), (tf.estimator.ModeKeys.EVAL, 1)):
        with tf.Graph().as_default():
            rows = model.parse_tfrecords(datadir.COLS_FILE, 30, mode, args)
            with tf.compat.v1.Session() as sess:
                for _ in range(batches):
                    batch = sess.run(rows)
                    keys = np.unique(batch.indices[:, 0])
                    assert len(batch.indices) == np.count_nonzero(ratings)  # each entry once
                    np.testing.assert_array_equal(keys, np.arange(12))
                if mode == tf.estimator.ModeKeys.EVAL:
                    with pytest.raises(tf.errors.OutOfRangeError):
                        sess.run(rows)


def test_merged_batches_come_in_the_files_order(tmp_path):
    ratings = low_rank_ratings(np.random.default_rng(1), nusers=200, nitems=12)
    write_matrix(str(tmp_path), ratings)
    args = settings.make(input_path=str(tmp_path), output_dir=str(tmp_path / "m"), batch_size=7, nusers=200,
                         nitems=12)
    with tf.Graph().as_default():
        features, _ = inputs.read_dataset(tf.estimator.ModeKeys.TRAIN, args)()
        with tf.compat.v1.Session() as sess:
            for _ in range(3):  # the first read parses, the next come from the cache
                merged = sess.run(features[inputs.MERGED_ROWS], {features[inputs.MERGED_BATCHES]: 200 // 7 + 1})
                # every user's reads once, users ascending as items_for_user holds them (no sort in the solve)
                np.testing.assert_array_equal(merged.indices[:, 0], np.nonzero(ratings)[0])


def test_training_schedule_matches_the_lab():
    assert model.training_schedule(settings.make(num_epochs=0.05, nusers=82802, batch_size=512)) == (8, 162)


def objective(ratings, u, v, w0=0.1):
    approx = u @ v.T
    observed = ratings != 0
    return ((w0 + 1) * (ratings - approx) ** 2 * observed).sum() + w0 * (approx ** 2 * ~observed).sum()


@pytest.mark.training
@pytest.mark.parametrize("target", ["rating", "read"])
def test_low_rank_matrix_is_learned_and_sweeps_are_exact_with_batches_larger_than_the_data(tmp_path, target):
    ratings = low_rank_ratings(np.random.default_rng(1))
    write_matrix(str(tmp_path / "data"), ratings)
    fitted = ratings if target == "rating" else (ratings != 0).astype(float)
    # batch 500 > nusers 120 > nitems 40: each step is a whole sweep; 7 epochs = 2 steps = rows, then columns
    args = settings.make(input_path=str(tmp_path / "data"), output_dir=str(tmp_path / "out"), num_epochs=7,
                         batch_size=500, n_embeds=3, nusers=120, nitems=40, topk=5, seed=0, target=target)
    model.train_and_evaluate(args)
    u, v = recommend.load_factors(args.output_dir, "row"), recommend.load_factors(args.output_dir, "col")
    # the last step was the column sweep: V is the exact solve for the final U (no key counted twice)
    np.testing.assert_allclose(v, closed_form(fitted.T, u, 0.1, np.ones(40), np.ones(120)), rtol=2e-3, atol=2e-4)
    # the export answers a known user with their trained factor (batch_pred.txt's), and folds in user 7's
    # reads as a new visitor the way training fits a row
    from walsmf import predict
    items = [int(i) for i in np.flatnonzero(ratings[7])]
    known, folded = predict.predict(os.path.join(args.output_dir, "export", "Servo"), [
        {"userId": 7}, {"items": items, "ratings": [float(r) for r in ratings[7][items]]}])
    np.testing.assert_allclose(known["projection"], u[7], rtol=1e-6)
    np.testing.assert_allclose(folded["projection"], closed_form(fitted, v, 0.1, np.ones(120), np.ones(40))[7],
                               rtol=2e-3, atol=2e-4)
    start = tf.train.load_variable(os.path.join(args.output_dir, "model.ckpt-0"), "col_factors_shard_0")
    u0 = tf.train.load_variable(os.path.join(args.output_dir, "model.ckpt-0"), "row_factors_shard_0")
    assert objective(fitted, u, v) < 0.5 * objective(fitted, u0, start)
    # observed entries rank far above chance among each user's items
    scores = u @ v.T
    ranks = (scores[:, None, :] > scores[:, :, None]).sum(axis=2) / (40 - 1)  # share of items ranked above
    assert ranks[fitted != 0].mean() < 0.25


def test_batch_pred_is_numpys_top_k_of_the_checkpoint_factors(trained):
    u, v = recommend.load_factors(trained.output_dir, "row"), recommend.load_factors(trained.output_dir, "col")
    expected = np.argsort(-(u @ v.T), axis=1, kind="stable")[:, :3]
    got = batch_pred(trained.output_dir)
    assert got.shape == (trained.nusers, 3)
    assert all(len(set(row)) == 3 for row in got) and got.min() >= 0 and got.max() < trained.nitems
    assert (got == expected).mean() > 0.999  # float ties aside


def test_find_top_k_of_one_user_and_of_a_block():
    rng = np.random.default_rng(5)
    users, items = rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal((30, 4)).astype(np.float32)
    expected = np.argsort(-(users @ items.T), axis=1)[:, :5]
    with tf.Graph().as_default():
        one, block = run((model.find_top_k(tf.constant(users[2]), tf.constant(items), 5),
                          model.find_top_k(tf.constant(users), tf.constant(items), 5)))
    np.testing.assert_array_equal(one, expected[2])
    np.testing.assert_array_equal(block, expected)


@pytest.mark.parametrize("n_items, k", [(1000, 3), (1000, 10), (37, 5), (5, 5), (300, 40)])
def test_batch_top_k_is_a_full_sort_by_score_then_lower_id_ties_seen_and_offsets_included(n_items, k):
    """Small integer factors make exact ties everywhere (and exact float scores): the partial selection must
    give what sorting each whole row by (score desc, itemId asc) gives, as tf.nn.top_k does."""
    rng = np.random.default_rng(n_items + k)
    users = rng.integers(-2, 3, (700, 3)).astype(np.float32)
    items = rng.integers(-2, 3, (n_items, 3)).astype(np.float32)
    read = rng.random((700, n_items)) < 4.0 / n_items
    read[np.arange(700), rng.integers(0, n_items // 2 + 1, 700)] = True  # every user reads; the last items rarely
    read[3] = True  # user 3 read everything: with seen left out, only never-recommended items remain
    rows, cols = np.nonzero(read)
    reads = datadir.Interactions(datadir.CSR.from_triples(rows, cols, np.ones(len(rows)), 700),
                                 datadir.CSR.from_triples(cols, rows, np.ones(len(rows)), n_items))
    readers = read.sum(axis=0)
    scores = users @ items.T + np.float32(0.5) * np.log1p(readers.astype(np.float32))
    scores[:, readers == 0] = -np.inf  # never read: never recommended
    ids = np.broadcast_to(np.arange(n_items), scores.shape)
    for seen, ranked in ((None, scores), (reads.by_user, np.where(read, -np.inf, scores))):
        expected = np.lexsort((ids, -ranked), axis=1)[:, :k]
        got = recommend.top_k_items(users, items, k, seen=seen, reads=reads, popularity_weight=0.5, block_size=64)
        np.testing.assert_array_equal(got, expected)


def test_plain_ids_are_written_as_the_csv_module_writes_them():
    visitors = np.array(["123", "", "v-9"], dtype=object)
    contents = np.array([["a", "b"], ["c", "d"], ["e", "f"]], dtype=object)
    assert modeldir.plain_ids(visitors) and modeldir.plain_ids(contents.ravel())
    assert modeldir.original_ids_lines(visitors, contents, plain=True) == modeldir.original_ids_lines(
        visitors, contents) == "123\ta,b\n\tc,d\nv-9\te,f\n"
    assert not any(modeldir.plain_ids([odd]) for odd in ("a,b", 'say "hi"', "tab\there", "line\nbreak", "cr\r"))


def test_batch_pred_in_original_ids_follows_the_mappings(trained):
    data_dir = trained.input_path
    visitors = [line.split(",")[0] for line in open(os.path.join(data_dir, "users.csv")).read().splitlines()]
    contents = [line.split(",")[0] for line in open(os.path.join(data_dir, "items.csv")).read().splitlines()]
    mapped = open(os.path.join(trained.output_dir, modeldir.BATCH_PRED_FILE)).read().splitlines()
    original = open(os.path.join(trained.output_dir, modeldir.ORIGINAL_IDS_PRED_FILE)).read().splitlines()
    for user in (0, 5, len(mapped) - 1):
        visitor, items = original[user].split("\t")
        assert visitor == visitors[user]
        assert items.split(",") == [contents[int(i)] for i in mapped[user].split(",")]


def test_exclude_seen_leaves_out_what_users_read(trained, tmp_path):
    import shutil
    args = trained.replace(output_dir=str(tmp_path / "m"), exclude_seen=True)
    shutil.copytree(trained.output_dir, args.output_dir)
    model.batch_predict(args, model.load_data(args))
    top = batch_pred(args.output_dir)
    mapped = pd.read_csv(os.path.join(trained.input_path, datadir.MAPPED_FILE), header=None, names=["u", "i", "r"])
    for user, items in mapped.groupby("u")["i"]:
        assert not set(top[user]) & set(items)
    assert mapped["u"].nunique() == trained.nusers


def test_runs_past_mid_training_evaluations_with_the_labs_defaults(trained):
    """The lab's trap: evaluation every epoch (here 13 steps) of 52, no regularization."""
    steps = set()
    for path in tf.io.gfile.glob(os.path.join(trained.output_dir, "eval", "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            if any(v.tag == "loss" and np.isfinite(v.simple_value) for v in event.summary.value):
                steps.add(event.step)
    # a mid-training evaluation (contrib checks for new checkpoints at most every 5 s) and the final one
    assert min(steps) == 13 and max(steps) == 52


def step0_checkpoint(small_data, model_dir, estimator_class):
    data_dir, metadata = small_data
    args = settings.make(input_path=data_dir, output_dir=model_dir, nusers=metadata["nusers"],
                         nitems=metadata["nitems"], batch_size=64)
    # Column factors of ±1 and ±0.5 make the rank-deficient solves exactly singular,
    # as they happen to be in float rounding at the lab's size.
    col_init = np.random.default_rng(0).choice([-1.0, -0.5, 0.5, 1.0], size=(metadata["nitems"], 10))
    estimator = estimator_class(num_rows=metadata["nusers"], num_cols=metadata["nitems"],
                                embedding_dimension=10, col_init=col_init.astype(np.float32),
                                model_dir=model_dir)
    estimator.fit(input_fn=model.read_dataset(tf.estimator.ModeKeys.TRAIN, args), steps=1)
    return estimator.evaluate(input_fn=model.read_dataset(tf.estimator.ModeKeys.EVAL, args), steps=1,
                              checkpoint_path=os.path.join(model_dir, "model.ckpt-0"))


@pytest.mark.training
def test_step0_checkpoint_evaluates(small_data, tmp_path):
    assert np.isfinite(step0_checkpoint(small_data, str(tmp_path / "w"), model.WALSRecommender)["loss"])
    # what the lab's estimator does with the same checkpoint
    with pytest.raises(tf.errors.InvalidArgumentError, match="not invertible"):
        step0_checkpoint(small_data, str(tmp_path / "c"), tf.contrib.factorization.WALSMatrixFactorization)


@pytest.mark.training
def test_factor_shards_are_all_read_and_do_not_change_the_model(small_data, tmp_path):
    data_dir, metadata = small_data
    args = settings.make(input_path=data_dir, output_dir=str(tmp_path / "out"), num_epochs=2, batch_size=128,
                         n_embeds=4, nusers=metadata["nusers"], nitems=metadata["nitems"], topk=2,
                         num_row_shards=3, num_col_shards=2, seed=0)
    model.train_and_evaluate(args)
    top = batch_pred(args.output_dir)
    names = [n for n, _ in tf.train.list_variables(tf.train.latest_checkpoint(args.output_dir))]
    assert sum(n.startswith("row_factors_shard_") for n in names) == 3
    u = np.concatenate([tf.train.load_variable(args.output_dir, "row_factors_shard_%d" % i) for i in range(3)])
    v = np.concatenate([tf.train.load_variable(args.output_dir, "col_factors_shard_%d" % i) for i in range(2)])
    assert u.shape == (metadata["nusers"], 4) and v.shape == (metadata["nitems"], 4)
    assert (top == np.argsort(-(u @ v.T), axis=1, kind="stable")[:, :2]).mean() > 0.999
    # one seed, one model: the same factors as an unsharded run
    unsharded = args.replace(output_dir=str(tmp_path / "one"), num_row_shards=1, num_col_shards=1)
    model.train_and_evaluate(unsharded)
    np.testing.assert_array_equal(batch_pred(unsharded.output_dir), top)
    np.testing.assert_allclose(recommend.load_factors(unsharded.output_dir, "row"), u, rtol=1e-5, atol=1e-6)


def test_item_weights_from_popularity():
    np.testing.assert_allclose(model.item_weights([1, 3], 2.0, 0.0), [2, 2])
    # mean count 2: weights 2·(1/2)^-1 = 4 and 2·(3/2)^-1 = 4/3
    np.testing.assert_allclose(model.item_weights([1, 3], 2.0, 1.0), [4, 4 / 3], rtol=1e-6)
    assert [len(s) for s in model.shard(np.arange(7), 3)] == [3, 2, 2]


@pytest.mark.training
def test_small_vocabularies_stop_before_training(tmp_path):
    ratings = low_rank_ratings(np.random.default_rng(2), nusers=20, nitems=9)
    write_matrix(str(tmp_path / "d"), ratings)
    base = ["--input_path", tmp_path / "d", "--output_dir", tmp_path / "out", "--batch_size", 8]
    small = run_in_process("walsmf.task", *(base + ["--nusers", 20, "--nitems", 5]))
    assert small.returncode == 1
    assert small.stderr.strip().splitlines()[-1] == (
        "error: --nitems 5 is fewer than the 9 items of {} (metadata.json): leave --nitems out, or give at least "
        "9".format(tmp_path / "d"))
    assert not (tmp_path / "out").exists()
    missing = run_in_process("walsmf.task", "--input_path", tmp_path / "nothing", "--output_dir", tmp_path / "o2")
    assert missing.returncode == 1 and "metadata.json does not exist" in missing.stderr


def test_a_model_of_another_shape_in_output_dir_is_refused(trained, tmp_path):
    import shutil
    output_dir = str(tmp_path / "old")
    shutil.copytree(trained.output_dir, output_dir)
    result = run_in_process("walsmf.task", "--input_path", trained.input_path, "--output_dir", output_dir,
                        "--n_embeds", 4)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: {} holds a model of {} users x {} items x 10 factors, not {} x {} x 4: choose another "
        "--output_dir or delete it".format(output_dir, trained.nusers, trained.nitems, trained.nusers,
                                           trained.nitems))


def test_hyperparameter_trial_gets_its_own_output_dir(tmp_path):
    from walsmf import cluster
    me = cluster.role({"TF_CONFIG": json.dumps({"task": {"type": "master", "trial": "7"}})})
    args = trainer.resolve(settings.parse(["--input_path", "x", "--output_dir", str(tmp_path), "--nusers", "3",
                                           "--nitems", "2", "--batch_size", "1", "--topk", "2"]), me.trial)
    assert me.kind == cluster.SINGLE and args.output_dir == os.path.join(str(tmp_path), "7")


@pytest.mark.training
def test_a_training_run_reads_each_tfrecord_set_once(tmp_path, monkeypatch):
    """The checks, the export and batch prediction (with --exclude_seen) share one scan of each set."""
    write_matrix(str(tmp_path / "d"), low_rank_ratings(np.random.default_rng(3), nusers=30, nitems=12))
    scans = []
    real_scan = datadir.scan_records
    monkeypatch.setattr(datadir, "scan_records", lambda data_dir, name: scans.append(name) or real_scan(data_dir, name))
    args = settings.make(input_path=str(tmp_path / "d"), output_dir=str(tmp_path / "out"), num_epochs=4,
                         batch_size=8, nusers=30, nitems=12, exclude_seen=True, seed=0)
    model.train_and_evaluate(args)
    assert sorted(scans) == sorted([datadir.ROWS_FILE, datadir.COLS_FILE])
    assert os.path.exists(os.path.join(args.output_dir, modeldir.BATCH_PRED_FILE))


def test_batch_prediction_streams_blocks_with_progress(trained, tmp_path, monkeypatch):
    import shutil
    args = trained.replace(output_dir=str(tmp_path / "m"))
    shutil.copytree(trained.output_dir, args.output_dir)
    os.remove(os.path.join(args.output_dir, modeldir.BATCH_PRED_FILE))
    lines = []
    monkeypatch.setattr(progress, "PROGRESS_SECONDS", 0.0)  # a line after every block
    monkeypatch.setattr(recommend, "MIN_WINDOW_USERS", 100)  # several blocks of the 828 users
    assert model.batch_predict(args, model.load_data(args), log=lines.append) == trained.nusers
    assert lines[0].startswith("[batch_pred] top {} of {:,} items for each of {:,} users".format(
        trained.topk, trained.nitems, trained.nusers))
    # 828 users in blocks of about a quarter of a core's share: a line as each block is written
    block = recommend.users_per_window(trained.nusers)
    assert block == max(100, -(-trained.nusers // (4 * (os.cpu_count() or 1))))
    done = [min(end, trained.nusers) for end in range(block, trained.nusers + block, block)]
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "{:,} of {:,} users".format(n, trained.nusers) for n in done]
    np.testing.assert_array_equal(batch_pred(args.output_dir), batch_pred(trained.output_dir))
    u, v = recommend.load_factors(args.output_dir, "row"), recommend.load_factors(args.output_dir, "col")
    blocks = list(recommend.top_k_blocks(u, v, 3, block_size=100))
    assert [len(users) for users, _ in blocks] == [100] * (trained.nusers // 100) + [trained.nusers % 100]
    np.testing.assert_array_equal(np.concatenate([top for _, top in blocks]), batch_pred(args.output_dir))


@pytest.mark.subprocess
@pytest.mark.training
def test_ids_with_line_breaks_commas_quotes_and_tabs_come_back_as_they_were(tmp_path):
    from helpers import page, write_sessions

    from walsmf.datadir import read_id_map
    from walsmf.modeldir import read_original_ids_pred
    odd = ['line\nbreak', 'a,b', 'say "hi"', 'tab\there', 'plain']
    # every odd visitor reads every odd article (and one plain one), with durations from the next page
    sessions = {visitor: [page(10 * n, content) for n, content in enumerate(odd + ["x"] * 2)] for visitor in odd}
    write_sessions(tmp_path / "s.parquet", sessions)
    data, out = tmp_path / "data", tmp_path / "out"
    result = run_module("walsmf.preprocess", "--sessions_file", tmp_path / "s.parquet", "--data_dir", data)
    assert result.returncode == 0, result.stderr[-2000:]
    result = run_module("walsmf.task", "--input_path", data, "--output_dir", out, "--num_epochs", 4, "--topk", 2,
                        "--batch_size", 2, "--n_embeds", 2, "--regularization", 0.1, "--seed", 0)
    assert result.returncode == 0, result.stderr[-2000:]
    visitors, contents = read_id_map(str(data / "users.csv")), read_id_map(str(data / "items.csv"))
    assert sorted(visitors) == sorted(odd) and set(odd) <= set(contents)
    top = batch_pred(out)
    assert read_original_ids_pred(str(out / modeldir.ORIGINAL_IDS_PRED_FILE)) == [
        (visitors[u], [contents[i] for i in row]) for u, row in enumerate(top)]
    # ordinary ids keep the plain form: visitorId TAB ids joined by commas
    assert modeldir.original_ids_lines(["v1"], [["c1", "c2"]]) == "v1\tc1,c2\n"


def quiet_task(data_dir, output_dir, *flags):
    """walsmf.task on ``data_dir`` at the default verbosity: (its output lines, the seed its [train] line names)."""
    result = run_module("walsmf.task", "--input_path", data_dir, "--num_epochs", 3, "--batch_size", 64, "--output_dir",
                        output_dir, *flags)
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    train = [line for line in output.splitlines() if line.startswith("[train] ")]
    return output.splitlines(), int(re.search(r"seed (\d+) \(--seed \1 repeats it\)", train[0]).group(1))


@pytest.mark.subprocess
@pytest.mark.training
def test_task_prints_its_own_lines_and_not_tensorflows(small_data, tmp_path):
    data_dir, metadata = small_data
    lines, _ = quiet_task(data_dir, tmp_path / "q")
    assert not [line for line in lines if "tensorflow" in line.lower() or "deprecated" in line]
    steps = settings.training_schedule(settings.make(input_path=data_dir, output_dir="o", num_epochs=3,
                                                     batch_size=64, nusers=metadata["nusers"],
                                                     nitems=metadata["nitems"]))[0]
    epochs = [line.strip() for line in lines if line.strip().startswith("epoch ")]
    assert epochs and epochs[-1].startswith("epoch 3.0 of 3.0 (step {:,} of {:,}), loss ".format(steps, steps))
    export = [line for line in lines if line.startswith("[export] ")]
    assert len(export) == 1 and os.path.isdir(export[0].split(" ", 1)[1])  # the final export, not a temp-* one
    assert [line for line in lines if line.startswith("[batch_pred] ")]


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.training
def test_the_seed_a_run_names_repeats_it_and_verbosity_debug_adds_tensorflows_log(small_data, tmp_path):
    _, seed = quiet_task(small_data[0], tmp_path / "q")
    lines, _ = quiet_task(small_data[0], tmp_path / "d", "--seed", seed, "--verbosity", "debug")
    assert [line for line in lines if line.startswith("INFO:tensorflow")]
    np.testing.assert_array_equal(batch_pred(tmp_path / "d"), batch_pred(tmp_path / "q"))
