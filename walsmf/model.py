"""WALS matrix factorization of the user x item ratings (the lab's model.py).

The lab's names stay importable from here: ``decode_example``,
``remap_keys``, ``parse_tfrecords``, ``read_dataset`` (walsmf.inputs),
``find_top_k``, ``batch_predict`` (walsmf.recommend),
``create_serving_input_fn`` (walsmf.export_graph) and ``train_and_evaluate``.
This module holds the estimator, its model_fn and the training driver.
Where the lab was wrong, the docstring says what changed and why (docs/lab.md,
"Fixes to the lab").

Every file is read and written through ``tf.io.gfile``, so ``input_path``
and ``output_dir`` may be ``gs://`` paths, and factors are always read as
a list of shards.
"""
import collections
import json
import os

import numpy as np
import tensorflow as tf
from tensorflow.contrib.factorization import WALSMatrixFactorization, WALSModel
from tensorflow.contrib.learn.python.learn import learn_runner
from tensorflow.contrib.learn.python.learn.estimators import model_fn as model_fn_lib

from walsmf import datadir, modeldir, progress, sweeps
from walsmf.datadir import unread_ids
from walsmf.errors import DataError, check_interrupted
from walsmf.export_graph import create_serving_input_fn, serving_predictions
from walsmf.fileio import atomic_write_text
from walsmf.inputs import INPUT_COLS, INPUT_ROWS, PROJECT_ROW, decode_example, parse_tfrecords, read_dataset, remap_keys  # noqa: F401
from walsmf.instances import SIGNATURES
from walsmf.recency import data_popularity, fresh_items
from walsmf.recommend import batch_predict, find_top_k  # noqa: F401 (the lab's names)
from walsmf.settings import training_schedule


def item_weights(item_counts, col_weight, col_weight_exp):
    """Per-item observed weights from popularity: col_weight·(count/mean count)^(−exp).

    exp = 0 gives contrib's default (every item weighs col_weight); exp > 0
    trusts an observation of a rarely read article more than one of a
    popular article (whose readers are less telling about taste).
    """
    counts = np.asarray(item_counts, dtype=np.float64)
    if col_weight_exp == 0:
        return np.full(len(counts), col_weight, dtype=np.float32)
    relative = np.maximum(counts, 1) / max(counts.mean(), 1e-12)
    return (col_weight * relative ** (-col_weight_exp)).astype(np.float32)


def shard_sizes(n, num_shards):
    """How contrib splits ``n`` ids into shards: the first ``n % num_shards`` one longer."""
    return [n // num_shards + (i < n % num_shards) for i in range(num_shards)]


def shard(values, num_shards):
    """Split per-id values into WALS's shards, as contrib does."""
    bounds = np.cumsum(shard_sizes(len(values), num_shards))[:-1]
    return [list(part) for part in np.split(np.asarray(values), bounds)]


def initial_factors(n, dim, num_shards, seed, stream, unread=()):
    """contrib's random initialization (standard normal), made independent of the sharding.

    contrib draws each shard on its own, so the same seed gave another model
    for another shard count; here all ``n`` rows are drawn at once from
    (``seed``, ``stream``) with a stateless generator and then cut into
    contrib's shards: one seed, one model, however the factors are spread.
    Ids in ``unread`` (no interaction) start, and stay, at zero: WALS's
    solution for them, and out of the other side's Gramian.
    Returns the callable contrib's ``row_init``/``col_init`` accepts.
    """
    def shards():
        factors = tf.random.stateless_normal([n, dim], seed=tf.constant([seed, stream], tf.int64))
        if len(unread):
            factors = tf.tensor_scatter_nd_update(factors, np.asarray(unread, np.int64)[:, None],
                                                  tf.zeros([len(unread), dim]))
        return tf.split(factors, shard_sizes(n, num_shards))
    return shards


def _wals_model(params):
    """The WALSModel of ``params``, reading the factors and Gramians themselves (no per-worker caches)."""
    return WALSModel(
        params["num_rows"], params["num_cols"], params["embedding_dimension"],
        unobserved_weight=params["unobserved_weight"],
        regularization=params["regularization_coeff"],
        row_init=params["row_init"], col_init=params["col_init"],
        num_row_shards=params["num_row_shards"], num_col_shards=params["num_col_shards"],
        row_weights=params["row_weights"], col_weights=params["col_weights"],
        use_factors_weights_cache=False, use_gramian_cache=False)


def walsmf_model_fn(features, labels, mode, params, config):
    """WALS's model_fn: contrib's model and ops, walsmf's training step, evaluation and serving.

    TRAIN: walsmf.sweeps: a step solves many batches in one session.run
    where contrib's hooks made four per batch; the loss is computed when it
    is logged; checkpoints carry no copy of the graph.
    EVAL: contrib reads the Gramians stored in the checkpoint, which are
    only prepared at the start of a sweep: the step-0 checkpoint holds
    zeros, and with no regularization the first mid-training evaluation
    (the lab's min_eval_frequency) fails with "Input matrix is not
    invertible".  Here the Gramians are recomputed from the restored factors
    when local variables are initialized (after the restore), so any
    checkpoint evaluates.
    INFER: walsmf.export_graph.serving_predictions.
    """
    model = _wals_model(params)
    if mode == model_fn_lib.ModeKeys.TRAIN:
        sweeps.add_checkpoint_saver(config)
        loss, sweep_hook = sweeps.train_ops(model, features, params)
        return model_fn_lib.ModelFnOps(mode=mode, predictions={}, loss=loss, train_op=tf.no_op(),
                                       training_hooks=[sweep_hook])
    if mode == model_fn_lib.ModeKeys.INFER:
        return model_fn_lib.ModelFnOps(mode=mode, predictions=serving_predictions(model, params, features),
                                       loss=None, train_op=tf.no_op())

    def loss_of(update):
        _, _, loss, regularization, _ = update
        return loss + regularization
    loss = tf.cond(features[PROJECT_ROW],
                   lambda: loss_of(model.update_row_factors(sp_input=features[INPUT_ROWS])),
                   lambda: loss_of(model.update_col_factors(sp_input=features[INPUT_COLS],
                                                            transpose_input=True)))
    # Local variables are initialized after the checkpoint is restored: one
    # whose initial value waits for the Gramian ops runs them at that point.
    with tf.control_dependencies([model.row_update_prep_gramian_op, model.col_update_prep_gramian_op]):
        prepared = tf.identity(True)
    tf.compat.v1.Variable(prepared, trainable=False, name="gramians_prepared",
                          collections=[tf.compat.v1.GraphKeys.LOCAL_VARIABLES])
    return model_fn_lib.ModelFnOps(mode=mode, predictions={}, loss=loss, train_op=tf.no_op())


class WALSRecommender(WALSMatrixFactorization):
    """contrib's WALSMatrixFactorization with walsmf's evaluation and serving (walsmf_model_fn)."""

    def __init__(self, serving_top_k=10, batch_size=512, last_step=None, rows_read=None, cols_read=None,
                 popularity_weight=0.0, **kwargs):
        super(WALSRecommender, self).__init__(**kwargs)
        self._model_fn = walsmf_model_fn
        self.params = dict(self.params, serving_top_k=serving_top_k, batch_size=batch_size, last_step=last_step,
                           popularity_weight=popularity_weight,
                           rows_read=self.params["num_rows"] if rows_read is None else rows_read,
                           cols_read=self.params["num_cols"] if cols_read is None else cols_read)


def draw_seed():
    """A fresh initialization seed (logged by whoever draws it, so the run can be repeated)."""
    return int(np.random.SeedSequence().entropy % 2 ** 31)


def build_estimator(settings, col_weights=1.0, config=None, model_dir=None, last_step=None, interactions=None):
    """The WALS estimator for settings ``settings`` (the lab's, plus the weights it left at contrib defaults).

    ``col_weights``: a float, or per-item weights by shard (see prepare_training).
    ``last_step``: the global step training stops at (no merged step runs past it).
    ``interactions``: the data's, to train with ids that have no interaction
    (default: every id has some).
    Without a seed, one is drawn and logged, so any run can be repeated.
    """
    seed = settings.seed
    if seed is None:
        seed = draw_seed()
        progress.say("      initialization seed {} (--seed {} gives this model again)".format(seed, seed))
    unread_users, unread_items = unread_ids(interactions) if interactions else ((), ())
    return WALSRecommender(
        num_rows=settings.nusers, num_cols=settings.nitems, embedding_dimension=settings.n_embeds,
        row_init=initial_factors(settings.nusers, settings.n_embeds, settings.num_row_shards, seed, 0, unread_users),
        col_init=initial_factors(settings.nitems, settings.n_embeds, settings.num_col_shards, seed, 1, unread_items),
        rows_read=settings.nusers - len(unread_users), cols_read=settings.nitems - len(unread_items),
        unobserved_weight=settings.unobserved_weight, regularization_coeff=settings.regularization,
        row_weights=settings.row_weight, col_weights=col_weights,
        num_row_shards=settings.num_row_shards, num_col_shards=settings.num_col_shards,
        serving_top_k=settings.topk, batch_size=settings.batch_size, last_step=last_step,
        popularity_weight=settings.popularity_weight, model_dir=model_dir or settings.output_dir, config=config)


# ----------------------------------------------------------------- train --

# The Experiment evaluates once an epoch, but at most this often (contrib's
# default: 5 s), and checkpoints at the same pace.  An evaluation rebuilds the graph and restores the
# checkpoint (about 1 s at lab size) to report one batch's loss.
EVALUATION_INTERVAL_SECS = 30

def steps_per_sweep(settings):
    """Training steps of one full sweep: every row batch, then every column batch."""
    return -(-settings.nusers // settings.batch_size) + -(-settings.nitems // settings.batch_size)


def epochs_for_sweeps(sweeps, settings):
    """The num_epochs (the lab's: in row batches) that trains ``sweeps`` full sweeps of ``settings``' data shape."""
    return sweeps * steps_per_sweep(settings) * settings.batch_size / settings.nusers


def prepare_training(settings):
    """Check output_dir and the data; return (the data's TrainingData, col_weights for the estimator).

    The TFRecords are scanned here once; the export and batch prediction
    reuse what was read.
    """
    modeldir.check_existing_model(settings)
    modeldir.check_same_training(settings)
    data = load_data(settings)
    interactions = data.interactions
    unread_users, unread_items = (len(ids) for ids in unread_ids(interactions))
    read = min(settings.nusers - unread_users, settings.nitems - unread_items)
    if not settings.regularization and settings.n_embeds > read:
        raise DataError("--n_embeds {} is more than the {} {} with reads: without regularization WALS's solves are "
                        "singular; use --regularization 0.1 (or more), or at most {} factors".format(
                            settings.n_embeds, read, "users" if settings.nusers - unread_users == read else "items",
                            read))
    if unread_users or unread_items:
        progress.say("      {} users and {} items have no interaction: their factors stay zero; such a user is "
                     "recommended the most read items, such an item is not recommended".format(unread_users,
                                                                                              unread_items))
    modeldir.record_training(settings, interactions)
    modeldir.remove_unfinished_writes(settings.output_dir)
    if settings.col_weight_exp == 0:
        return data, float(settings.col_weight)
    weights = item_weights(interactions.by_item.counts, settings.col_weight, settings.col_weight_exp)
    return data, shard(weights, settings.num_col_shards)


def fit(settings, steps, hooks=()):
    """Train to global step ``steps`` without the Experiment (no evaluation, no export): searches, benchmarks.

    Saves a checkpoint at the start and at the end only.
    """
    data, col_weights = prepare_training(settings)
    config = tf.contrib.learn.RunConfig(save_checkpoints_secs=None, save_checkpoints_steps=10 ** 9,
                                        save_summary_steps=10 ** 9, tf_random_seed=settings.seed)
    estimator = build_estimator(settings, col_weights, config, last_step=steps, interactions=data.interactions)
    estimator.fit(input_fn=read_dataset(tf.estimator.ModeKeys.TRAIN, settings), max_steps=steps, monitors=list(hooks))
    return estimator


def load_data(settings):
    """The TrainingData of ``settings.input_path``, read once: its reads, ids, median, the blend's popularity and
    the items fresh enough to recommend."""
    return datadir.load(settings.input_path, settings.nusers, settings.nitems,
                        data_popularity(settings.input_path, settings.nitems, settings.popularity_days,
                                        settings.popularity_rate),
                        fresh_items(settings.input_path, settings.nitems, settings.max_age_days))


def train(settings):
    """Train WALS with tf.contrib.learn.Experiment + learn_runner (evaluating once an epoch); return the
    TrainingData, read once, for the export and batch prediction."""
    data, col_weights = prepare_training(settings)
    train_steps, steps_in_epoch = training_schedule(settings)
    if settings.seed is None:  # drawn here, so the line below names it: any run can be repeated
        settings = settings.replace(seed=draw_seed())
    progress.say("[train] {:,} users x {:,} items, {} factors, seed {} (--seed {} repeats it): {:,} steps of {:,} "
                 "rows -> {}".format(settings.nusers, settings.nitems, settings.n_embeds, settings.seed, settings.seed,
                                     train_steps, settings.batch_size, settings.output_dir))

    def experiment_fn(output_dir):
        # Checkpoints at the evaluations' pace (sweeps.CheckpointSchedule), so each
        # evaluation sees the model as trained so far, not the step-0 one.
        config = tf.contrib.learn.RunConfig(save_checkpoints_secs=EVALUATION_INTERVAL_SECS,
                                            tf_random_seed=settings.seed)
        return tf.contrib.learn.Experiment(
            build_estimator(settings, col_weights, config, model_dir=output_dir, last_step=train_steps,
                            interactions=data.interactions),
            train_input_fn=read_dataset(tf.estimator.ModeKeys.TRAIN, settings),
            eval_input_fn=read_dataset(tf.estimator.ModeKeys.EVAL, settings),
            train_steps=train_steps,
            eval_steps=1,
            min_eval_frequency=steps_in_epoch, check_interval_secs=EVALUATION_INTERVAL_SECS,
            train_monitors=[sweeps.TrainingProgress(train_steps, steps_in_epoch),
                            sweeps.CheckpointSchedule(output_dir, steps_in_epoch, EVALUATION_INTERVAL_SECS)])

    atomic_write_text(os.path.join(settings.output_dir, modeldir.SERVING_INFO_FILE),
                      json.dumps(modeldir.serving_info_of(settings)))
    learn_runner.run(experiment_fn, settings.output_dir)
    check_interrupted()  # a signal TensorFlow's teardown swallowed ends the run here
    return data


def export(factors, data, settings, exports_dir=None):
    """Write the serving export of trained ``factors`` (modeldir.Factors) as a new version under ``exports_dir``
    (default: the output_dir's export/Servo) and return its path: the lab's serving input and
    walsmf.export_graph's predictions over the factors, without the estimator.

    ``data``: the datadir.TrainingData trained on (its reads, id maps and popularity travel with the export
    as assets).  The version is written under temp-<version> and renamed when
    complete, so a reader never sees half an export; serving_info.json goes to its assets.extra/.
    """
    exports_dir = exports_dir or os.path.join(settings.output_dir, modeldir.EXPORTS_DIR)
    final = modeldir.new_version_dir(exports_dir)
    staging = os.path.join(exports_dir, "temp-" + os.path.basename(final))
    graph = tf.Graph()
    with graph.as_default():
        initial = {}

        def shards(name, values, num_shards):
            """Variables named as contrib's WALSModel names them, initialized from a feed (not a constant in the
            graph: a large model's factors would pass protobuf's 2 GB)."""
            out = []
            bounds = np.cumsum(shard_sizes(len(values), num_shards))[:-1]
            for number, part in enumerate(np.split(np.asarray(values, np.float32), bounds)):
                feed = tf.compat.v1.placeholder(tf.float32, np.shape(part))
                initial[feed] = part
                out.append(tf.compat.v1.Variable(feed, name="{}_shard_{}".format(name, number)))
            return out

        shards_of = {"row": settings.num_row_shards, "col": settings.num_col_shards}
        model = ExportedModel(**{"{}_{}".format(side, kind): shards("{}_{}".format(side, kind), values,
                                                                    shards_of[side])
                                 for (side, kind), values in zip(
                                     (("row", "factors"), ("col", "factors"), ("row", "weights"),
                                      ("col", "weights")), factors)})
        inputs = create_serving_input_fn(settings, data)()
        params = {"num_rows": settings.nusers, "num_cols": settings.nitems,
                  "unobserved_weight": settings.unobserved_weight, "regularization_coeff": settings.regularization,
                  "popularity_weight": settings.popularity_weight}
        signature = tf.compat.v1.saved_model.predict_signature_def(
            inputs.default_inputs, serving_predictions(model, params, inputs.features))
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer(), initial)
            builder = tf.compat.v1.saved_model.Builder(staging)
            builder.add_meta_graph_and_variables(
                session, ["serve"], signature_def_map={name: signature for name in SIGNATURES},
                assets_collection=tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.ASSET_FILEPATHS),
                main_op=tf.group(tf.compat.v1.local_variables_initializer(), tf.compat.v1.tables_initializer()))
            builder.save()
    tf.io.gfile.makedirs(os.path.join(staging, "assets.extra"))
    atomic_write_text(os.path.join(staging, "assets.extra", modeldir.SERVING_INFO_FILE),
                      json.dumps(modeldir.serving_info_of(settings)))
    tf.io.gfile.rename(staging, final)
    progress.say("[export] {}".format(final))
    return final


# What serving_predictions reads of a model: every shard of both sides' factors and weights.
ExportedModel = collections.namedtuple("ExportedModel", "row_factors col_factors row_weights col_weights")


def train_and_evaluate(settings):
    """The lab's run: train (train), export the trained factors (export), then batch-predict
    (recommend.batch_predict); return the number of users batch-predicted."""
    try:
        data = train(settings)
        modeldir.record_checkpoint(settings.output_dir)
        export(modeldir.trained_factors(settings.output_dir), data, settings)
    except KeyboardInterrupt:
        modeldir.remove_unfinished_writes(settings.output_dir)
        raise
    check_interrupted()  # a signal TensorFlow's teardown swallowed ends the run before batch prediction
    return batch_predict(settings, data)
