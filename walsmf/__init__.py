"""walsmf: the WALS matrix-factorization lab's recommender for a news site, from reads to served articles."""
import os
import sys

# TensorFlow's C++ start-up lines (CPU features, XLA's host device) say nothing about a walsmf run; shown with
# TF_CPP_MIN_LOG_LEVEL=0.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
# Current TensorFlow (the serving environment) runs some CPU kernels through oneDNN, whose other summation order
# changes a score's last bits (and says so at every start): walsmf keeps TensorFlow 1.15's Eigen kernels.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

# `python -m walsmf.<command>` imports this package first (with sys.argv[0] "-m" until the command's module runs):
# a Ctrl-C or SIGTERM while the command still imports TensorFlow ends it in one line, as later in run_cli.  The
# two are held while walsmf.errors itself loads, and one that came meanwhile reaches its handler.
if sys.argv[:1] == ["-m"]:
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    from walsmf.errors import exit_on_signals_while_starting

    exit_on_signals_while_starting()
