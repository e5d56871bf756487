"""Writing outputs so that a failed run never leaves a half-written file or directory."""
import contextlib
import os
import shutil
import tempfile

import tensorflow as tf


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary name beside ``path`` (local or gs://) to write; rename it to ``path`` on success."""
    tmp = "{}.tmp-{}".format(path, os.getpid())
    try:
        yield tmp
        tf.io.gfile.rename(tmp, path, overwrite=True)
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` (local or gs://) through a temporary name."""
    with atomic_output(path) as tmp, tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)


@contextlib.contextmanager
def staged_directory(final_dir):
    """Yield a fresh empty directory beside ``final_dir`` to build it in; it replaces ``final_dir``
    when the block succeeds and is removed when it fails."""
    parent = os.path.dirname(os.path.abspath(final_dir))
    os.makedirs(parent, exist_ok=True)
    staged = tempfile.mkdtemp(prefix="." + os.path.basename(os.path.abspath(final_dir)) + ".tmp-", dir=parent)
    try:
        os.chmod(staged, 0o755)  # mkdtemp makes it private; the data directory is not
        yield staged
        _replace_directory(staged, final_dir)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _replace_directory(staged_dir, final_dir):
    """Put ``staged_dir`` in place of ``final_dir`` (the old one is removed after the swap)."""
    old = None
    if os.path.exists(final_dir):
        old = staged_dir + ".old"
        os.rename(final_dir, old)
    os.rename(staged_dir, final_dir)
    if old:
        shutil.rmtree(old)
