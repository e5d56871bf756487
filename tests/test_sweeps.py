"""walsmf.sweeps against contrib's own WALS training: the same factors, batch by batch, in far fewer session.runs."""
import numpy as np
import pytest
import tensorflow as tf

from walsmf import model, settings
from walsmf.inputs import read_dataset
from walsmf.recommend import load_factors


class RunCounter(tf.estimator.SessionRunHook):
    """Counts the Estimator's session.run calls."""

    def __init__(self):
        self.runs = 0

    def after_run(self, run_context, run_values):
        self.runs += 1


def contrib_fit(args, col_weights, phases, model_dir):
    """contrib's WALSMatrixFactorization (its own model_fn and hooks), trained to each global step of ``phases``."""
    estimator = tf.contrib.factorization.WALSMatrixFactorization(
        num_rows=args.nusers, num_cols=args.nitems, embedding_dimension=args.n_embeds,
        row_init=model.initial_factors(args.nusers, args.n_embeds, args.num_row_shards, args.seed, 0),
        col_init=model.initial_factors(args.nitems, args.n_embeds, args.num_col_shards, args.seed, 1),
        unobserved_weight=args.unobserved_weight, regularization_coeff=args.regularization,
        row_weights=args.row_weight, col_weights=col_weights, num_row_shards=args.num_row_shards,
        num_col_shards=args.num_col_shards, model_dir=model_dir)
    for last_step in phases:  # each phase is a new session: the input iterators start over
        estimator.fit(input_fn=read_dataset(tf.estimator.ModeKeys.TRAIN, args), max_steps=last_step)
    return load_factors(model_dir, "row"), load_factors(model_dir, "col")


@pytest.mark.parametrize("shards, phases, col_weight_exp", [
    ((1, 1), [250], 0.0),              # ends inside a row sweep
    ((2, 3), [140, 230], 0.5),         # a restart inside a row sweep, ends inside a column sweep; weights by item
], ids=["one session", "sharded, resumed, item weights"])
def test_training_gives_contribs_factors_bit_for_bit_in_fewer_runs(small_data, tmp_path, shards, phases,
                                                                    col_weight_exp):
    data_dir, metadata = small_data
    # small batches: a row sweep is about 100 batches, merged into one step (two after a restart mid-sweep)
    args = settings.make(input_path=data_dir, output_dir=str(tmp_path / "walsmf"), nusers=metadata["nusers"],
                         nitems=metadata["nitems"], batch_size=-(-metadata["nusers"] // 100), seed=3,
                         num_row_shards=shards[0], num_col_shards=shards[1], col_weight_exp=col_weight_exp,
                         regularization=0.01)
    _, col_weights = model.prepare_training(args)
    counter = RunCounter()
    for last_step in phases:
        model.fit(args, last_step, hooks=[counter])
    expected_u, expected_v = contrib_fit(args, col_weights, phases, str(tmp_path / "contrib"))
    np.testing.assert_array_equal(load_factors(args.output_dir, "row"), expected_u)
    np.testing.assert_array_equal(load_factors(args.output_dir, "col"), expected_v)
    checkpoint = tf.train.latest_checkpoint(args.output_dir)
    assert tf.train.load_variable(checkpoint, "global_step") == phases[-1]
    assert counter.runs < phases[-1] / 5, "steps were not merged"


def test_training_log_and_summaries_keep_the_loss(trained):
    events = tf.io.gfile.glob(trained.output_dir + "/events.out.tfevents.*")
    losses = [value.simple_value for path in events for event in tf.compat.v1.train.summary_iterator(path)
              for value in event.summary.value if value.tag == "loss"]
    assert losses and all(np.isfinite(losses)) and losses[-1] > 0
