"""What a walsmf command prints while it works: its own lines by default, TensorFlow's with ``--verbosity debug``.

By default (``info``) a run prints a line per stage and as training goes
(say, flushed at once; walsmf.sweeps.TrainingProgress); TensorFlow's INFO log, its deprecation notices and
contrib's sunset warning are left out.  ``debug`` shows TensorFlow's log as
well; ``warning`` and ``error`` keep only what is at least that grave.
"""
import contextlib
import logging

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
    import tensorflow as tf  # only here: the lines themselves need no TensorFlow

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


@contextlib.contextmanager
def quiet():
    """Leave out walsmf's progress lines while the block runs (a training inside a longer run's own lines)."""
    level, _level[0] = _level[0], logging.WARNING
    try:
        yield
    finally:
        _level[0] = level
