"""Writing outputs so that a failed run never leaves a half-written file or directory."""
import collections
import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import sys
import tempfile

import numpy as np
import tensorflow as tf

from walsmf.datadir import METADATA_FILE
from walsmf.errors import DataError, signals_held

LOCK_FILE = ".walsmf.lock"


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary name beside ``path`` (local or gs://) to write; rename it to ``path`` on success."""
    if "://" not in path:
        path = os.path.realpath(path)  # through a symbolic link: the file it names is replaced, the link kept
        check_regular(path, "output")
    tmp = "{}.tmp-{}".format(path, os.getpid())
    try:
        yield tmp
        tf.io.gfile.rename(tmp, path, overwrite=True)
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)


def inside(path, directory):
    """Whether local ``path`` is ``directory`` or below it (on gs://: the same path)."""
    if "://" in path or "://" in directory:
        return path.rstrip("/") == directory.rstrip("/")
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return path == directory or path.startswith(directory + os.sep)


def refuse_inside(output, output_flag, source, source_flag, what):
    """Refuse an ``output`` directory that is the command's input ``source`` or inside it (``what`` is written
    there: "a model", "a split")."""
    if inside(output, source):
        raise DataError("{} {} is {} {} or inside it: {} is written beside its data, never into it; name another "
                        "directory".format(output_flag, output, source_flag, source, what))


def check_input_file(path, what, remedy):
    """Refuse an input file (local or gs://) that is missing or a directory: "{what} {path} ...: {remedy}"."""
    if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
        raise DataError("{} {} {}: {}".format(
            what, path, "is a directory" if tf.io.gfile.exists(path) else "does not exist", remedy))


# The files that mark a directory walsmf writes whole: a data directory, a model directory (modeldir's
# TRAINING_SETTINGS_FILE), a tuning (tune's TRIALS_FILE and BEST_PARAMS_FILE, both: walsmf.best_trial writes a
# best_params.json alone, anywhere).  Spelled here, as those modules import this one.
OWNED_DIRECTORY_MARKERS = (((METADATA_FILE,), "data directory"), (("training_settings.json",), "model directory"),
                           (("trials.csv", "best_params.json"), "tuning directory"))


def owning_directory(path):
    """(directory, what it is) of the nearest directory at or above local ``path`` that walsmf writes whole
    (OWNED_DIRECTORY_MARKERS), or None."""
    directory = os.path.realpath(path)
    while True:
        for markers, what in OWNED_DIRECTORY_MARKERS:
            if all(os.path.isfile(os.path.join(directory, marker)) for marker in markers):
                return directory, what
        if os.path.dirname(directory) == directory:
            return None
        directory = os.path.dirname(directory)


def refuse_nested(path, flag=None, remedy="name a directory elsewhere"):
    """Refuse an output ``path`` (local) inside a directory walsmf writes whole: replacing that one would delete
    it, and it would be a stranger's file there."""
    owner = None if "://" in path else owning_directory(os.path.dirname(os.path.abspath(path)))
    if owner:
        raise DataError("{}{} is inside the {} {}, which walsmf writes whole: {}".format(
            flag + " " if flag else "", path, owner[1], owner[0], remedy))


def check_writable(path, flag, directory=False, inputs=(), replaces=None):
    """Refuse, before any work, an output ``path`` (local) that cannot be written, in one line naming ``flag``:
    a file where a directory belongs or the reverse, a place where nothing can be created, one of the
    command's own ``inputs``, a file inside a directory walsmf writes whole (a data or model directory, a
    tuning), or, with ``replaces`` = (what the command writes, a test of an existing file), an existing file
    of something else: a command replaces only its own kind of output."""
    if "://" in path:
        return
    for source in inputs:
        if source and os.path.exists(path) and os.path.exists(source) and os.path.samefile(path, source):
            raise DataError("{} {} is this command's input {}: write the output to another file".format(
                flag, path, source))
    refuse_nested(path, flag, "name a directory elsewhere" if directory else "write it elsewhere")
    check_regular(path, flag, directory)
    if directory and os.path.isfile(path):
        raise DataError("{} {} is a file: name a directory".format(flag, path))
    if not directory and os.path.isdir(path):
        raise DataError("{} {} is a directory: give a file name".format(flag, path))
    if replaces and os.path.isfile(path) and os.path.getsize(path) and not replaces[1](path):
        raise DataError("{} {} exists and is not {}, which is all this command replaces: give a new file name, or "
                        "move it away first".format(flag, path, replaces[0]))
    existing = os.path.abspath(path if directory else os.path.dirname(os.path.abspath(path)))
    while not os.path.exists(existing):  # what the run will create, or its nearest ancestor
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise DataError("{} {} cannot be written: {} is a file; choose a place you can write".format(
            flag, path, existing))
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise DataError("{} {} cannot be written ({}: {}): choose a place you can write".format(
            flag, path, err.strerror or type(err).__name__, existing))


def check_regular(path, flag, directory=False):
    """Refuse an output ``path`` (local) that is a device, a pipe or a socket: writing through a temporary name
    would replace the device (/dev/null) with a file, and walsmf's outputs are files and directories."""
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        raise DataError("{} {} is a device, pipe or socket, not a {}".format(flag, path, "directory: name a directory"
                        if directory else "file: give a file name (standard output: pipe the file, or --output - "
                        "where the command takes it)"))


def starts_with(prefix):
    """A test of an existing file for check_writable's ``replaces``: whether its first bytes are ``prefix``."""
    def test(path):
        with open(path, "rb") as f:
            return f.read(len(prefix)) == prefix
    return test


def line_ends(data):
    """Where each line of ``data`` (bytes) ends: the offsets just past its line feeds."""
    return np.flatnonzero(np.frombuffer(data, np.uint8) == ord("\n")) + 1


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` (local or gs://) through a temporary name."""
    with atomic_output(path) as tmp, tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)


@contextlib.contextmanager
def staged_directory(final_dir, marker, owned):
    """Yield a fresh empty directory beside ``final_dir`` to build it in; it replaces ``final_dir``
    when the block succeeds and is removed when it fails.

    Only a directory walsmf wrote (it holds ``marker``) or an empty one is
    ever replaced: anything else at ``final_dir`` is refused before any work;
    so is one holding an entry ``owned(name)`` says walsmf did not write there
    (a user's file, a model trained into it), which replacing it would delete.
    """
    parent = os.path.dirname(os.path.abspath(final_dir))
    with contextlib.ExitStack() as temporary:
        try:
            refuse_nested(final_dir)
            os.makedirs(parent, exist_ok=True)
            temporary.enter_context(writing_directory(final_dir))
            check_replaceable(final_dir, marker, owned)
            staged = temporary.enter_context(temporary_directory(
                "." + os.path.basename(os.path.abspath(final_dir)) + ".tmp-", parent))
        except OSError as err:
            raise DataError("cannot write {} ({}: {}): name a directory in a place you can write".format(
                final_dir, err.strerror or type(err).__name__, err.filename or parent))
        os.chmod(staged, 0o755)  # mkdtemp makes it private; the data directory is not
        yield staged
        with _replacing(final_dir, marker):
            _replace_directory(staged, final_dir)


def check_replaceable(final_dir, marker, owned):
    """Refuse, in one line, a ``final_dir`` (local) that staged_directory would not replace: anything but a
    directory, one without ``marker`` that is not empty, one holding an entry ``owned(name)`` says walsmf did
    not write, one inside another directory walsmf writes whole, or one another run is writing or reading.  A
    command calls it before its costly work (a query, a training)."""
    refuse_nested(final_dir)
    if os.path.isdir(os.path.dirname(os.path.abspath(final_dir))):
        with writing_directory(final_dir):
            pass
    if not os.path.lexists(final_dir):
        return
    if os.path.islink(final_dir) or not os.path.isdir(final_dir):
        raise DataError("{} exists and is not a directory walsmf wrote: name another directory".format(final_dir))
    if os.listdir(final_dir) and not os.path.exists(os.path.join(final_dir, marker)):
        raise DataError("{} holds files walsmf did not write (it has no {}): name another directory, or "
                        "empty it first".format(final_dir, marker))
    foreign = sorted(name for name in os.listdir(final_dir) if not owned(name))
    if foreign:
        raise DataError("{} holds {} that walsmf did not write, and a new run replaces the directory whole: "
                        "move {} out, or name another directory".format(
                            final_dir, ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else ""),
                            "it" if len(foreign) == 1 else "them"))
    with _replacing(final_dir, marker):
        pass


@contextlib.contextmanager
def reading_directory(directory, marker):
    """Hold ``directory`` (local) for reading while the block runs: no walsmf run replaces it meanwhile
    (staged_directory refuses, naming the reader).  A shared flock on its ``marker``, so readers never
    exclude each other and nothing is written into the directory; without the marker (a directory of the
    lab's files alone, which walsmf never replaces) or on gs://, nothing to hold."""
    path = os.path.join(directory, marker)
    if "://" in directory or not os.path.isfile(path):
        yield
        return
    while True:
        fd = os.open(path, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:  # a directory replaced while this waited: hold the new one's marker instead
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _replacing(final_dir, marker):
    """Hold ``final_dir``'s marker exclusively while the block replaces it; refuse if a run is reading it."""
    path = os.path.join(final_dir, marker)
    if not os.path.isfile(path):
        yield
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError("{} is being read by a walsmf run (a training on it, say): wait for it to end, or "
                            "write the new data to another directory".format(final_dir))
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def temporary_directory(prefix, parent=None):
    """Yield a new directory ``<parent>/<prefix><pid>-<random>``, removed when the block ends however it ends
    (an interrupt too, even one that comes as it is made); first removes the ones of processes that are gone (a
    run killed with SIGKILL leaves its directory behind)."""
    parent = parent or tempfile.gettempdir()
    for name in os.listdir(parent):
        pid = name[len(prefix):].split("-", 1)[0] if name.startswith(prefix) else ""
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    made = None
    try:
        with signals_held():
            made = tempfile.mkdtemp(prefix="{}{}-".format(prefix, os.getpid()), dir=parent)
        yield made
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


@contextlib.contextmanager
def exclusive_directory(directory, what):
    """Hold ``directory`` (local) for this process while the block runs: a second run into it refuses at
    once, naming the first and the lock file.  The hold is an flock on ``LOCK_FILE`` in it (_lock_held).
    gs:// paths are not locked (Cloud Storage has no atomic create-if-absent through tf.io.gfile)."""
    if "://" in directory:
        yield
        return
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise DataError("{} exists and is not a directory: {} needs a directory there; name another".format(
            directory, what))
    created = not os.path.exists(directory)
    os.makedirs(directory, exist_ok=True)
    lock = os.path.join(directory, LOCK_FILE)
    try:
        with _lock_held(lock, what, lambda holder: DataError(
                "{} is in use by another {} ({}; its lock {}): wait for it to end or choose another directory".format(
                    directory, what, "process " + holder if holder else "starting", lock))):
            yield
    finally:
        if created and not os.listdir(directory):  # a run that failed before writing leaves nothing
            os.rmdir(directory)


@contextlib.contextmanager
def _lock_held(lock, what, refusal):
    """Hold an flock on the file ``lock`` while the block runs, "<pid> <what>" written in it, removed after; where
    another process holds it, raise ``refusal(what it wrote)``.  The kernel releases the flock when its holder ends
    however it ends (a lock left by a killed run is free, whatever process has its id since)."""
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip()
            os.close(fd)
            raise refusal(holder)
        try:  # the lock file replaced meanwhile (its holder ended and removed it): hold the one there now
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, "{} {}\n".format(os.getpid(), what).encode())
    try:
        yield
    finally:
        os.remove(lock)
        os.close(fd)


# The directories this process holds for writing (writing_directory), and how many times over.
_writing = collections.Counter()


@contextlib.contextmanager
def writing_directory(final_dir):
    """Hold ``final_dir`` (local; its parent exists), a directory walsmf replaces whole, for this process's writing
    while the block runs: another walsmf run writing it refuses at once, naming this one.  The lock file is beside
    it (``.<name>.walsmf-lock``: the directory itself is swapped away); the hold is re-entrant, so a refresh holds
    its data directory from its first read to its swap."""
    path = os.path.realpath(final_dir)
    if "://" in final_dir or _writing[path]:
        _writing[path] += 1
        try:
            yield
        finally:
            _writing[path] -= 1
        return
    lock = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".walsmf-lock")
    with _lock_held(lock, command_name(), lambda holder: DataError(
            "{} is being written by another walsmf run ({}; its lock {}): wait for it to end, or write to another "
            "directory".format(final_dir, "process " + holder if holder else "starting", lock))):
        _writing[path] += 1
        try:
            yield
        finally:
            _writing[path] -= 1


def command_name():
    """The walsmf module this process runs (``python -m walsmf.refresh``: walsmf.refresh), else "walsmf"."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec.name if spec and spec.name.startswith("walsmf.") else "walsmf"


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


# renameat2's flag that swaps two paths in one step (Linux 3.15, glibc 2.28)
_RENAME_EXCHANGE, _AT_FDCWD = 2, -100


def _exchange(first, second):
    """Swap two directories in one step, so that no instant finds either missing; False where the system cannot
    (then the caller renames twice)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        swapped = libc.renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    except (AttributeError, OSError):  # no renameat2 in this C library
        return False
    if swapped == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # a file system or kernel without the exchange
        return False
    raise OSError(error, os.strerror(error), second)


def _replace_directory(staged_dir, final_dir):
    """Put ``staged_dir`` in place of ``final_dir`` (the old one is removed after the swap).  The swap is one
    step where the system has one: a process killed during it leaves the old directory or the new, never none."""
    if not os.path.exists(final_dir):
        os.rename(staged_dir, final_dir)
        return
    if _exchange(staged_dir, final_dir):
        shutil.rmtree(staged_dir)  # now the old directory
        return
    old = staged_dir + ".old"
    os.rename(final_dir, old)
    os.rename(staged_dir, final_dir)
    shutil.rmtree(old)
