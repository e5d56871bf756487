"""What the benchmark scripts share: a step timer, and the data every quality benchmark starts from."""
import os
import time

import numpy as np
import tensorflow as tf

from walsmf.evaluate import write_split
from walsmf.extract import extract
from walsmf.preprocess import write_data_dir
from walsmf.sample import write_sample


class StepTimer(tf.estimator.SessionRunHook):
    """A training hook: wall time at the end of every step."""

    def __init__(self):
        self.ends = []

    def after_run(self, run_context, run_values):
        self.ends.append(time.perf_counter())

    def seconds_per_step(self, skip):
        """Mean step time after the first ``skip`` steps (graph start-up, first parse)."""
        return float(np.mean(np.diff(self.ends[skip:])))


def prepare(workdir, scale, log):
    """Sample, extract, preprocess; then the test split and a validation split of its training part."""
    sample = write_sample(os.path.join(workdir, "sample.parquet"), scale=scale, seed=0)
    write_data_dir(extract(sessions_file=sample), os.path.join(workdir, "data"), log=log)
    write_split(os.path.join(workdir, "data"), os.path.join(workdir, "split"), seed=0, log=log)
    write_split(os.path.join(workdir, "split"), os.path.join(workdir, "val"), seed=1, log=lambda _: None)
