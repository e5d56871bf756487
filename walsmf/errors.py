"""One error type for what the user must fix, and the CLI wrapper that shows every failure in one line."""
import contextlib
import json
import os
import signal
import sys
import threading
import warnings

# Set to see the traceback behind an unexpected failure's one line.
DEBUG_ENV = "WALSMF_DEBUG"


class DataError(Exception):
    """Bad input or a failed external call, described in one line for the user."""


def _unique_keys(pairs):
    """A JSON object's dict, refusing a key given twice: which value was meant would be a guess."""
    value = dict(pairs)
    if len(value) < len(pairs):
        seen = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError("the key {!r} appears twice in one object: give it once".format(twice))
    return value


def loads_json(text):
    """``json.loads`` for what a user or client wrote: an object with a key twice is a ValueError naming it, and so
    is a number too long to convert (its message would tell the reader to raise Python's limit)."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except ValueError as err:
        if "integer string conversion" in str(err):
            raise ValueError("a number has more digits than any id or count: {}".format(
                str(err).split("value has ", 1)[-1].split(";")[0]))
        raise


def json_object(text, where, remedy):
    """The JSON object ``text`` holds, or a DataError naming ``where`` and the ``remedy`` (what to do)."""
    try:
        value = loads_json(text)
    except ValueError as err:
        raise DataError("{} is not JSON ({}): {}".format(where, err, remedy))
    if not isinstance(value, dict):
        raise DataError("{} holds no JSON object: {}".format(where, remedy))
    return value


# An error line quoting a value (an id of a megabyte, a whole bad row) keeps this many characters of it.
LONGEST_LINE = 2000


def shortened(line):
    """``line`` at most about LONGEST_LINE characters: its start and its end (where the remedy is), the middle
    left out and said so."""
    if len(line) <= LONGEST_LINE:
        return line
    head, tail = LONGEST_LINE * 2 // 3, LONGEST_LINE // 3
    return "{} [... {:,} characters ...] {}".format(line[:head], len(line) - head - tail, line[-tail:])


def first_line(text):
    """The first line of an error's text (a library's message may run to many)."""
    return str(text).strip().splitlines()[0] if str(text).strip() else "no message"


_signalled = []


def _terminate(signum, frame):
    """SIGTERM (timeout, job schedulers) and Ctrl-C end the run: cleanups run, temporary outputs go.

    The signal is also remembered: where its KeyboardInterrupt lands in code that cannot pass it on (a
    weakref callback or ``__del__``, whose exceptions Python prints and drops), the next
    ``check_interrupted`` raises it again, and run_cli exits 130 whatever main returned.
    """
    _signalled.append(signum)
    raise KeyboardInterrupt


@contextlib.contextmanager
def signals_held():
    """Hold Ctrl-C and SIGTERM while the block runs, and deliver one that came as it ends: what the block makes
    (a temporary directory) is named, so whoever removes it knows it, before an interrupt can stop the run.  Only
    the main thread handles signals; in another the block just runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = {signum: signal.signal(signum, lambda signum, frame: caught.append(signum))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught:
            os.kill(os.getpid(), caught[0])


def check_interrupted():
    """Raise KeyboardInterrupt if SIGTERM or Ctrl-C came and was swallowed: a long loop calls it per block."""
    if _signalled:
        raise KeyboardInterrupt


def _interrupted(err):
    """Whether ``err`` carries a Ctrl-C/SIGTERM: one raised inside a C call (numpy's, say) comes back as a
    SystemError whose cause is the KeyboardInterrupt."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


INTERRUPTED = "error: interrupted; earlier outputs are as they were, run the same command again"
_interrupted_line = [INTERRUPTED]


def interrupted_line(line):
    """From now on, Ctrl-C or SIGTERM prints ``line`` (what the command has changed so far and what to do), not
    INTERRUPTED."""
    _interrupted_line[0] = line


def _exit_interrupted():
    print(_interrupted_line[0], file=sys.stderr)
    sys.exit(130)


def _exit_while_starting(signum, frame):
    """Ctrl-C or SIGTERM while a command still imports its modules: nothing written yet, the one line and 130."""
    os.write(2, (INTERRUPTED + "\n").encode())
    os._exit(130)


def _exit_finished(signum, frame):
    """Ctrl-C or SIGTERM once the command has finished (while Python and TensorFlow tear down): its work is whole
    and said so, so the exit is 0, its output flushed."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a pipe nobody reads
            pass
    os._exit(0)


def exit_on_signals_while_starting():
    """From a command's first instruction until run_cli takes over: Ctrl-C and SIGTERM end it in one line (one
    held while this module loaded is delivered as they are let through)."""
    signal.signal(signal.SIGINT, _exit_while_starting)
    signal.signal(signal.SIGTERM, _exit_while_starting)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def run_cli(main, argv=None):
    """Run ``main(argv)``; print any failure as one ``error:`` line on stderr and exit non-zero.

    DataError: walsmf's own check (exit 1).  Ctrl-C or SIGTERM: exit 130,
    after the staging directories and temporary files are removed; once
    ``main`` has returned (``argv`` None: the process is the command), exit 0:
    the work is done.  Anything
    else (TensorFlow, DuckDB, the OS): its type and first line (exit 1); the
    traceback with WALSMF_DEBUG=1.
    """
    # Google's client libraries warn on import that they no longer update for Python 3.7; TF 1.15 needs it
    warnings.filterwarnings("ignore", message=".*non-supported Python version.*", category=FutureWarning)
    del _signalled[:]
    interrupted_line(INTERRUPTED)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    try:
        main(argv)
        check_interrupted()
        if argv is None:  # this process is the command (not a caller's run of it): its teardown is all that is left
            signal.signal(signal.SIGTERM, _exit_finished)
            signal.signal(signal.SIGINT, _exit_finished)
    except DataError as err:
        print("error: {}".format(shortened(str(err))), file=sys.stderr)
        sys.exit(1)
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        sys.stderr.close()
    except KeyboardInterrupt:
        _exit_interrupted()
    except Exception as err:  # the promise: one line, whatever failed
        if _interrupted(err):
            _exit_interrupted()
        if os.environ.get(DEBUG_ENV):
            raise
        message = (str(getattr(err, "message", "") or err).strip().splitlines() or [""])[0]
        print("error: {}: {} (set {}=1 for the traceback)".format(type(err).__name__, shortened(message), DEBUG_ENV),
              file=sys.stderr)
        sys.exit(1)
