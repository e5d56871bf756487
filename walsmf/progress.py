"""What a walsmf command prints while it works: its own lines by default, TensorFlow's with ``--verbosity debug``.

By default (``info``) a run prints a line per stage and per epoch of training
(walsmf.progress.say); TensorFlow's INFO log, its deprecation notices and
contrib's sunset warning are left out.  ``debug`` shows TensorFlow's log as
well; ``warning`` and ``error`` keep only what is at least that grave.
"""
import logging
import time

import tensorflow as tf

from walsmf import flags

LEVELS = dict(zip(flags.VERBOSITIES, (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)))
DEFAULT = "info"
_level = [logging.INFO]
# long work says how far it is at most this often
PROGRESS_SECONDS = 10.0

# TensorFlow's messages that say nothing about a walsmf run (shown with --verbosity debug)
_NOISE = ("is deprecated and will be removed", "The TensorFlow contrib module will not be included",
          "Next fit step starting.")


def _not_noise(record):
    message = record.getMessage()
    return not any(part in message for part in _NOISE)


def set_verbosity(name=DEFAULT):
    """Print walsmf's lines at ``name`` (a LEVELS key) and above; TensorFlow's log only with ``debug``."""
    _level[0] = LEVELS[name]
    logger = tf.get_logger()
    logger.removeFilter(_not_noise)
    if name == "debug":
        tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.INFO)
    else:
        logger.addFilter(_not_noise)
        tf.compat.v1.logging.set_verbosity(max(LEVELS[name], logging.WARNING))


def say(message):
    """Print one progress line of walsmf's (unless --verbosity is warning or error)."""
    if _level[0] <= logging.INFO:
        print(message, flush=True)


class TrainingProgress(tf.estimator.SessionRunHook):
    """Lines as training goes (the first epoch, then one at most every PROGRESS_SECONDS, and the last): epochs
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
        # the first epoch, then at most one line per PROGRESS_SECONDS, and the last
        if step < self._total and (step // self._epoch <= self._reported or (
                self._reported > 0 and spent - self._said < PROGRESS_SECONDS)):
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
        say("      epoch {:.1f} of {:.1f} (step {:,} of {:,}){}: {:.1f} s{}".format(
            step / self._epoch, self._total / self._epoch, step, self._total, shown, spent, left))
