"""Writing outputs so that a failed run never leaves a half-written file."""
import os
import shutil
import tempfile


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` (local or gs://) through a temporary name, then rename."""
    import tensorflow as tf

    tmp = "{}.tmp-{}".format(path, os.getpid())
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def staging_directory(final_dir):
    """A fresh empty directory beside ``final_dir`` to build it in."""
    parent = os.path.dirname(os.path.abspath(final_dir))
    os.makedirs(parent, exist_ok=True)
    staged = tempfile.mkdtemp(prefix="." + os.path.basename(os.path.abspath(final_dir)) + ".tmp-", dir=parent)
    os.chmod(staged, 0o755)  # mkdtemp makes it private; the data directory is not
    return staged


def replace_directory(staged_dir, final_dir):
    """Put ``staged_dir`` in place of ``final_dir`` (the old one is removed after the swap)."""
    old = None
    if os.path.exists(final_dir):
        old = staged_dir + ".old"
        os.rename(final_dir, old)
    os.rename(staged_dir, final_dir)
    if old:
        shutil.rmtree(old)
