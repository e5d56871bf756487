"""WALS training in few ``session.run`` calls: the sweep bookkeeping in the graph, batches merged, the loss when read.

contrib's WALSMatrixFactorization drives its sweeps from Python: before every
batch its SweepHook asks the session whether the sweep is done and which side
is being swept, and another hook increments the global step — three extra
``session.run`` calls per batch — and every batch computes its loss, which
the log reads once in 100 steps.  At the lab's batch of 512 rows that
overhead, not the solve, was most of a sweep (benchmarks/bench_training.py).

Here the same solves run in far fewer calls:

* A step solves the union of k consecutive batches of the side being swept
  (as many as fit in MAX_STEP_IDS ids: at lab size, the whole side) and
  counts as k steps.  Within a sweep each row (column) is solved from the
  other side's fixed factors, so which batches share a ``session.run`` does
  not change the result.  A step never crosses the end of the side's
  batches (no id twice in one solve) nor the last training step.
* The solves are walsmf.solve's: contrib's for ids with many reads, the
  Woodbury identity for ids with few (most visitors), equal to contrib's up
  to float rounding.
* The step's op does the bookkeeping: mark its ids processed; when the side
  is done (every id with a record processed: ids without one have nothing
  to solve and keep zero factors), switch side, mark every id unprocessed
  and prepare the Gramian the next sweep solves with; add k to the global
  step.  It returns the next
  side and the global step, which the hook keeps (it never asks the session).
* The batch loss is computed on the steps the Estimator logs (one run in
  ``LOSS_EVERY_STEPS``, from the first) and on the last ("Loss for final
  step"); summaries show the latest computed.

The variables keep contrib's names, so checkpoints of either load in the other.
"""
import time

import tensorflow as tf
from tensorflow.contrib.factorization import WALSMatrixFactorization

from walsmf import progress, solve
from walsmf.errors import check_interrupted
from walsmf.inputs import MERGED_BATCHES, MERGED_COLS, MERGED_ROWS

# contrib.learn's Estimator logs the loss every 100 runs: the runs whose loss anyone reads.
LOSS_EVERY_STEPS = 100
# A step solves at most this many rows (or columns): lab-sized data sweeps a
# side in one step, larger data in steps of this size.
MAX_STEP_IDS = 131072


def _state(name, initial, local=False):
    collection = tf.compat.v1.GraphKeys.LOCAL_VARIABLES if local else tf.compat.v1.GraphKeys.GLOBAL_VARIABLES
    return tf.compat.v1.Variable(initial, trainable=False, name=name, collections=[collection])


def _prepare_gramian(model, row_sweep):
    """Assign the Gramian a sweep solves with: the columns' for a row sweep, the rows' for a column sweep.

    The factors are read when this op runs, so under a control dependency
    it sees the factors a batch has just updated (a plain variable read may
    run at any point of the step).
    """
    # pylint: disable=protected-access  (WALSModel has no public handle on its Gramians)
    factors, gramian = (model.col_factors, model._col_gramian) if row_sweep else (model.row_factors, model._row_gramian)
    parts = []
    for shard in factors:
        with tf.compat.v1.colocate_with(shard):
            values = shard.read_value()
            parts.append(tf.matmul(values, values, transpose_a=True))
    return tf.compat.v1.assign(gramian, tf.add_n(parts))


class SweepHook(tf.estimator.SessionRunHook):
    """Chooses and runs each training step, just before each of the Estimator's ``session.run`` calls.

    A step solves the union of k consecutive batches of the side being
    swept (the most that stay within MAX_STEP_IDS ids, the end of the side's
    batches and ``last_step``) and advances the global step by k: the same
    solves as k steps of one batch, in one ``session.run``.
    Each step's op returns the side of the next step and the global step, so
    the hook never asks the session for them.  The step runs just before the
    Estimator's own run, which then reads the state (loss, global step) after
    it; on one step in ``LOSS_EVERY_STEPS``, and on the last, it computes the batch loss.
    """

    def __init__(self, session_start, steps, merged_batches, sweep_batches, max_batches, last_step):
        self._session_start, self._steps, self._merged_batches = session_start, steps, merged_batches
        self._sweep_batches, self._max_batches, self._last_step = sweep_batches, max_batches, last_step

    def after_create_session(self, session, coord):
        # The input iterators start over with every session.
        self._row_sweep, self._global_step = session.run(self._session_start)
        self._position, self._runs = {True: 0, False: 0}, 0

    def before_run(self, run_context):
        side = self._row_sweep
        left = self._sweep_batches[side] - self._position[side]
        left_in_training = None if self._last_step is None else self._last_step - self._global_step
        if left_in_training is not None:
            left = min(left, left_in_training)
        batches = max(1, min(left, self._max_batches))
        self._position[side] = (self._position[side] + batches) % self._sweep_batches[side]
        step, step_with_loss = self._steps[side]
        self._runs += 1
        # A run of its own, so the Estimator's run and its hooks (log, summaries,
        # step counter, checkpoints) read the state after the step, not during it.
        self._row_sweep, self._global_step = run_context.session.run(
            step_with_loss if (self._runs - 1) % LOSS_EVERY_STEPS == 0 or batches == left_in_training else step,
            {self._merged_batches: batches})

    def after_run(self, run_context, run_values):
        check_interrupted()
        # StopAtStepHook expects one step per run.
        if self._last_step is not None and self._global_step >= self._last_step:
            run_context.request_stop()


class CheckpointSaver(tf.compat.v1.train.Saver):
    """The Estimator's saver, minus the copy of the whole graph (``.meta``) beside every checkpoint.

    Writing that copy took 0.25 s a checkpoint at lab size, more than the
    checkpoint: a quarter of a sweep at the lab's once-per-epoch checkpoints.
    Restoring needs only the checkpoint; the graph is in graph.pbtxt and in
    the events file.
    """

    def save(self, *args, **kwargs):
        """Saver.save without write_meta_graph."""
        kwargs["write_meta_graph"] = False
        return super(CheckpointSaver, self).save(*args, **kwargs)


class _FirstEpochThenEvery(tf.compat.v1.train.SecondOrStepTimer):
    """Triggers at the start, once the first epoch is done, then at most every ``every_secs``."""

    def __init__(self, first_steps, every_secs):
        super(_FirstEpochThenEvery, self).__init__(every_secs=every_secs)
        self._first_steps = first_steps

    def should_trigger_for_step(self, step):
        """The SecondOrStepTimer's rule, and the step that ends the first epoch."""
        last = self.last_triggered_step()
        return super(_FirstEpochThenEvery, self).should_trigger_for_step(step) or (
            last is not None and last < self._first_steps <= step)


class CheckpointSchedule(tf.compat.v1.train.CheckpointSaverHook):
    """Checkpoints where a reader needs them, not once an epoch: at the start, after the first epoch (the
    Experiment's first evaluation then sees a trained model, not the initial one), at most every
    ``every_secs`` after it (the evaluations' pace, and a resume's loss at most), and at the last step.

    An epoch's checkpoint (every factor written, the checkpoint state updated, the oldest deleted) cost as
    much as a sweep's solves where the disk is slow (benchmarks/bench_training.py).
    """

    def __init__(self, checkpoint_dir, steps_in_epoch, every_secs):
        super(CheckpointSchedule, self).__init__(checkpoint_dir, save_secs=every_secs)
        self._timer = _FirstEpochThenEvery(steps_in_epoch, every_secs)


def add_checkpoint_saver(config):
    """Make CheckpointSaver the saver of the graph being built, with the Estimator's settings for its own."""
    tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.SAVERS, CheckpointSaver(
        sharded=True, max_to_keep=config.keep_checkpoint_max,
        keep_checkpoint_every_n_hours=config.keep_checkpoint_every_n_hours, defer_build=True,
        save_relative_paths=True))


def train_ops(model, features, params):
    """(loss, SweepHook) of WALS training on ``features``' rows and columns: the hook runs the steps.

    ``params``: the estimator's (num_rows, num_cols, batch_size, last_step:
    the global step training ends at or None, rows_read and cols_read: how
    many ids of each side have a record, the ids a sweep solves).
    """
    num_rows, num_cols = params["num_rows"], params["num_cols"]
    ids_read = {True: params["rows_read"], False: params["cols_read"]}
    is_row_sweep = _state("is_row_sweep", True)
    is_sweep_done = _state("is_sweep_done", False)
    completed_sweeps = _state(WALSMatrixFactorization.COMPLETED_SWEEPS, 0)
    loss_var = _state(WALSMatrixFactorization.LOSS, 0.)
    rwse_var = _state(WALSMatrixFactorization.RWSE, 0.)
    processed = {True: _state("processed_rows", tf.fill([num_rows], False)),
                 False: _state("processed_cols", tf.fill([num_cols], False))}
    global_step = tf.compat.v1.train.get_global_step()

    def switch_to(row_sweep):
        """The op that makes the next sweep ``row_sweep``'s: flag, unprocessed ids, Gramian; returns the flag."""
        with tf.control_dependencies([_prepare_gramian(model, row_sweep), tf.compat.v1.assign(is_sweep_done, False),
                                      tf.compat.v1.assign(is_row_sweep, row_sweep)] + [
                tf.compat.v1.assign(ids, tf.zeros_like(ids, tf.bool)) for ids in processed.values()]):
            return tf.constant(row_sweep)

    def prepare(row_sweep):
        with tf.control_dependencies([_prepare_gramian(model, row_sweep)]):
            return tf.constant(row_sweep)

    # A checkpoint of contrib's may end on a finished sweep whose switch is still pending.
    row_sweep = is_row_sweep.read_value()
    session_start = (tf.cond(
        is_sweep_done.read_value(),
        lambda: tf.cond(row_sweep, lambda: switch_to(False), lambda: switch_to(True)),
        lambda: tf.cond(row_sweep, lambda: prepare(True), lambda: prepare(False))), global_step.read_value())

    batches = features[MERGED_BATCHES]

    def side_steps(row_side):
        """(step, step computing the loss) on merged batches of this side; each returns (side, global step)."""
        sp_input = features[MERGED_ROWS if row_side else MERGED_COLS]
        update, loss, regularization, sum_weights = solve.update_factors(model, sp_input, row_side)
        ids = sp_input.indices[:, 0]
        with tf.control_dependencies([update]):
            marked = tf.compat.v1.scatter_update(processed[row_side], ids, tf.ones_like(ids, tf.bool))
            # ids without a record are never in a batch: the sweep is done once every id with one is
            done = tf.reduce_sum(tf.cast(marked, tf.int64)) >= ids_read[row_side]
            # The switch's Gramian reads the factors after this update.
            next_side = tf.cond(done, lambda: switch_to(not row_side), lambda: tf.constant(row_side))
        with tf.control_dependencies([tf.compat.v1.assign_add(completed_sweeps, tf.cast(done, tf.int32))]):
            step = (tf.identity(next_side), tf.compat.v1.assign_add(global_step, tf.cast(batches, global_step.dtype)))
        with tf.control_dependencies([tf.compat.v1.assign(loss_var, loss + regularization),
                                      tf.compat.v1.assign(rwse_var, tf.sqrt(loss / sum_weights))]):
            return step, tuple(tf.identity(value) for value in step)

    steps = {side: side_steps(side) for side in (True, False)}
    tf.compat.v1.summary.scalar("loss", loss_var)
    tf.compat.v1.summary.scalar("root_weighted_squared_error", rwse_var)
    tf.compat.v1.summary.scalar("completed_sweeps", completed_sweeps)
    sweep_batches = {side: max(1, -(-n // params["batch_size"])) for side, n in ids_read.items()}
    return loss_var.read_value(), SweepHook(session_start, steps, batches, sweep_batches,
                                            max(1, MAX_STEP_IDS // params["batch_size"]), params["last_step"])


class TrainingProgress(tf.estimator.SessionRunHook):
    """Lines as training goes (the first epoch, then one at most every progress.PROGRESS_SECONDS, and the last): epochs
    (the lab's unit: ``nusers / batch_size`` steps) and steps done of the total, the loss, the time spent and left.

    The loss is WALS's objective on the last batch that computed it: the
    weighted squared error of the fitted reads (and of the unread pairs at the
    unobserved weight) plus the regularization; it falls as the factors fit.
    """

    def __init__(self, total_steps, steps_in_epoch):
        self._total, self._epoch = total_steps, max(1, steps_in_epoch)
        self._started = self._first_step = self._last_loss = None
        self._reported, self._said = 0, 0.0

    def begin(self):
        self._step = tf.compat.v1.train.get_global_step()
        self._loss = [v for v in tf.compat.v1.global_variables() if v.op.name.endswith("WALS_loss")][:1]

    def after_create_session(self, session, coord):
        self._started = time.time()
        self._first_step = int(session.run(self._step))
        self._reported = self._first_step // self._epoch

    def before_run(self, run_context):
        return tf.estimator.SessionRunArgs([self._step] + self._loss)

    def after_run(self, run_context, run_values):
        step = min(int(run_values.results[0]) + 1, self._total)
        spent = time.time() - self._started
        # the first epoch, then at most one line per progress.PROGRESS_SECONDS, and the last
        if step < self._total and (step // self._epoch <= self._reported or (
                self._reported > 0 and spent - self._said < progress.PROGRESS_SECONDS)):
            return
        self._reported, self._said = max(step // self._epoch, 1), spent
        done = step - self._first_step
        # the loss is computed on some steps only (walsmf.sweeps): shown when there is a new one
        loss = float(run_values.results[1]) if self._loss else None
        shown = ", loss {:,.1f}".format(loss) if loss is not None and loss != self._last_loss else ""
        self._last_loss = loss
        if step < self._total:
            left = ", about {:.0f} s left".format(spent / done * (self._total - step)) if done > 0 else ""
        else:
            left = " (the loss: weighted squared error of the last batch fitted, plus regularization)" if shown else ""
        progress.say("      epoch {:.1f} of {:.1f} (step {:,} of {:,}){}: {:.1f} s{}".format(
            step / self._epoch, self._total / self._epoch, step, self._total, shown, spent, left))
