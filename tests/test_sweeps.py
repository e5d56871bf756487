"""walsmf.sweeps against contrib's own WALS training: the same factors and objective, in far fewer session.runs."""
import numpy as np
import pytest
import tensorflow as tf

from walsmf import explore, model, settings
from walsmf.datadir import read_interactions
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


@pytest.mark.training
@pytest.mark.parametrize("shards, phases, col_weight_exp", [
    ((1, 1), [250], 0.0),              # ends inside a row sweep
    ((2, 3), [140, 230], 0.5),         # a restart inside a row sweep, ends inside a column sweep; weights by item
], ids=["one session", "sharded, resumed, item weights"])
def test_training_gives_contribs_factors_in_fewer_runs(small_data, tmp_path, shards, phases, col_weight_exp):
    """Equal up to float rounding, not bit for bit: walsmf.solve solves the ids with few reads through the
    Woodbury identity (in float64) where contrib solves k×k systems, so the sums run in another order."""
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
    u, v = load_factors(args.output_dir, "row"), load_factors(args.output_dir, "col")
    for got, expected in ((u, expected_u), (v, expected_v)):
        assert np.linalg.norm(got - expected) <= 1e-5 * np.linalg.norm(expected)

    interactions = read_interactions(data_dir, args.nusers, args.nitems)
    item_weights = model.item_weights(interactions.by_item.counts, args.col_weight, args.col_weight_exp)

    def objective(u, v):
        return explore.wals_objective(interactions.by_user, u, v, args.unobserved_weight, np.ones(args.nusers),
                                      item_weights, args.regularization)
    assert objective(u, v) == pytest.approx(objective(expected_u, expected_v), rel=1e-5)
    checkpoint = tf.train.latest_checkpoint(args.output_dir)
    assert tf.train.load_variable(checkpoint, "global_step") == phases[-1]
    assert counter.runs < phases[-1] / 5, "steps were not merged"


@pytest.mark.training
def test_the_final_steps_loss_is_the_final_models_objective(small_data, tmp_path):
    """A batch holding every id makes a step a whole side's solve, whose loss is the WALS objective of the
    factors after it: "Loss for final step" must be that of the last step, not the first step's."""
    data_dir, metadata = small_data
    args = settings.make(input_path=data_dir, output_dir=str(tmp_path / "out"), nusers=metadata["nusers"],
                         nitems=metadata["nitems"], batch_size=max(metadata["nusers"], metadata["nitems"]), seed=3,
                         regularization=0.01)
    interactions = model.prepare_training(args)[0].interactions
    model.fit(args, 4)  # row, column, row, column: fewer runs than the Estimator's logging interval
    u, v = load_factors(args.output_dir, "row"), load_factors(args.output_dir, "col")
    objective = explore.wals_objective(
        interactions.by_user, u, v, args.unobserved_weight, np.ones(args.nusers),
        model.item_weights(interactions.by_item.counts, args.col_weight, args.col_weight_exp), args.regularization)
    final_loss = tf.train.load_variable(tf.train.latest_checkpoint(args.output_dir), "WALS_loss")
    assert final_loss == pytest.approx(objective, rel=1e-5)


def test_training_log_and_summaries_keep_the_loss(trained):
    events = tf.io.gfile.glob(trained.output_dir + "/events.out.tfevents.*")
    losses = [value.simple_value for path in events for event in tf.compat.v1.train.summary_iterator(path)
              for value in event.summary.value if value.tag == "loss"]
    assert losses and all(np.isfinite(losses)) and losses[-1] > 0


def test_checkpoints_at_the_start_the_first_epoch_the_pace_and_the_end(monkeypatch):
    """The checkpoint schedule: the start, the step that ends the first epoch, then one once every_secs have
    passed (not every epoch), and the last step (CheckpointSaverHook.end saves whatever the timer says)."""
    import time as time_module

    from walsmf import sweeps
    now = [1000.0]
    monkeypatch.setattr(time_module, "time", lambda: now[0])
    timer = sweeps.CheckpointSchedule("unused", steps_in_epoch=13, every_secs=30)._timer
    saved = []
    # the first epoch's checkpoint at 3 s: the next at or after 33 s (step 65 at 40 s), then at or after 70 s
    for step, seconds in ((0, 0), (6, 1), (12, 2), (19, 3), (26, 4), (39, 20), (52, 32), (65, 40), (78, 69),
                          (91, 71)):
        now[0] = 1000.0 + seconds
        if timer.should_trigger_for_step(step):
            timer.update_last_triggered_step(step)
            saved.append(step)
    assert saved == [0, 19, 65, 91]


def test_a_short_run_keeps_the_start_the_first_epoch_and_the_end(trained):
    steps = sorted(int(path.rsplit("-", 1)[1])
                   for path in tf.train.get_checkpoint_state(trained.output_dir).all_model_checkpoint_paths)
    total, steps_in_epoch = model.training_schedule(trained)
    # merged steps end the first epoch at the first step past it
    assert steps[0] == 0 and steps_in_epoch <= steps[1] < 2 * steps_in_epoch and steps[-1] == total
    assert len(steps) == 3
