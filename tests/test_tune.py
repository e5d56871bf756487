"""walsmf.tune: a search on the user's own data that walsmf.task then applies."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from helpers import run_in_process, run_module

from walsmf import model, recency, settings, splits, tune


def test_draws_stay_in_the_search_space():
    rng = np.random.default_rng(0)
    for _ in range(300):
        point = tune.draw(rng)
        assert set(point) == set(tune.SEARCH_SPACE)
        for flag, (kind, values) in tune.SEARCH_SPACE.items():
            if kind == "choice":
                assert point[flag] in values
            else:
                assert values[0] <= point[flag] <= values[1]
    logs = [math.log(tune.draw(rng)["regularization"]) for _ in range(300)]
    # log-uniform: about half the draws below the geometric middle
    assert 0.4 < np.mean(np.array(logs) < np.mean([math.log(v) for v in tune.SEARCH_SPACE["regularization"][1]])) < 0.6


@pytest.mark.subprocess
@pytest.mark.training
def test_tune_writes_trials_and_the_best_params_that_walsmf_task_applies(small_data, tmp_path):
    data_dir, metadata = small_data
    out = tmp_path / "tuned"
    result = run_module("walsmf.tune", "--input_path", data_dir, "--output_dir", out, "--max_trials", 2, "--seed", 1)
    assert result.returncode == 0, result.stderr[-2000:]
    progress = [line for line in result.stdout.splitlines() if line.startswith("trial ")]
    assert [line.split(":")[0] for line in progress] == ["trial 1/2", "trial 2/2"]
    trials = pd.read_csv(out / tune.TRIALS_FILE)
    assert list(trials["trial"]) == [1, 2] and set(tune.SEARCH_SPACE) <= set(trials.columns)
    assert trials[["recall", "ndcg", "map"]].apply(lambda c: c.between(0, 1)).all().all()
    # trial 1 is the lab's settings, trial 2 the tuned preset
    assert trials.loc[0, "n_embeds"] == settings.DEFAULTS["n_embeds"]
    assert trials.loc[1, "n_embeds"] == settings.PRESETS["tuned"]["n_embeds"]
    # the rule: the best NDCG among trials within one standard error of the best recall
    top = trials.loc[trials["recall"].idxmax()]
    best = trials[trials["recall"] >= top["recall"] - top["recall_se"]].sort_values(
        ["ndcg", "recall", "trial"], ascending=[False, False, True]).iloc[0]
    assert set(trials["popularity_weight"]) <= set(tune.POPULARITY_WEIGHTS)
    params = json.loads((out / tune.BEST_PARAMS_FILE).read_text())
    # the data has read times: the blend counts the recent reads (most read recently's window), when it blends
    blends = best["popularity_weight"] > 0
    # the trials were scored on articles the user had not read: the model is to recommend those
    assert params.pop("exclude_seen") is True
    # counted as rates where that blend won (--popularity_rate), a flag left out where it did not
    assert set(trials["popularity_rate"]) <= {True, False}
    rates = blends and bool(best["popularity_rate"])
    assert params == dict({flag: None if pd.isna(best[flag]) else best[flag].item() if hasattr(best[flag], "item")
                           else best[flag] for flag in list(tune.SEARCH_SPACE) + ["popularity_weight"] + (
                               ["popularity_days"] if blends else [])}, **({"popularity_rate": True} if rates else {}))
    assert not blends or params["popularity_days"] in [d for d in recency.RECENT_DAYS if d]
    command = result.stdout.strip().splitlines()[-1].split()
    assert command[:3] == ["python", "-m", "walsmf.task"] and command[-1] == str(out / tune.BEST_PARAMS_FILE)
    applied = settings.parse(["--input_path", data_dir, "--output_dir", "m", "--params_file", command[-1],
                              "--n_embeds", "7"])
    assert applied.n_embeds == 7  # an explicit flag overrides the file
    assert all(getattr(applied, flag) == value for flag, value in params.items() if flag != "n_embeds")
    assert applied.exclude_seen
    # the lab's trial has no regularization: null in the file, None in the settings
    assert json.loads((out / tune.BEST_PARAMS_FILE).read_text(), parse_constant=lambda c: pytest.fail(c)) == dict(
        params, exclude_seen=True)
    # the trials' lines and nothing of TensorFlow's: no deprecation notice, no contrib warning
    assert "deprecated" not in result.stdout + result.stderr and "contrib" not in result.stdout + result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([tune.TRIALS_FILE, tune.BEST_PARAMS_FILE])


@pytest.mark.training
def test_tune_refuses_bad_input_in_one_line_and_keeps_the_users_files(small_data, tmp_path):
    data_dir, _ = small_data
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for args, expected in (((mine, 2), "walsmf did not write"), ((tmp_path / "new", 0), "--max_trials 0")):
        result = run_in_process("walsmf.tune", "--input_path", data_dir, "--output_dir", args[0], "--max_trials",
                                args[1])
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and lines[-1].startswith("error: ") and expected in lines[-1]
    assert (mine / "notes.txt").read_text() == "keep me" and not (tmp_path / "new").exists()


@pytest.mark.parametrize("nusers, nitems", [(82802, 5668), (671, 6170), (50, 20)])
def test_the_recipe_trains_16_sweeps_whatever_the_datas_shape(nusers, nitems):
    args = settings.make(nusers=nusers, nitems=nitems, num_epochs=tune.recipe_epochs(nusers, nitems))
    steps, _ = model.training_schedule(args)
    assert steps / model.steps_per_sweep(args) == pytest.approx(16, abs=0.1)


def test_the_search_refines_around_the_best_trial():
    rng = np.random.default_rng(0)
    # 12 trials: lab, tuned, the recipe at 4 unobserved weights, λ ×10 and ×0.1 at the best of them,
    # 20 factors there, 2 random draws, then near the best (every third a random draw)
    starts = [tune.next_point([None] * done, 12, rng, 17.0) for done in range(6)]
    assert starts[:2] == tune.first_points(17.0)[:2]
    assert [p["unobserved_weight"] for p in starts[2:]] == [0.01, 0.1, 0.3, 0.03]
    assert all(p["target"] == "read" and p["n_embeds"] == 40 and p["col_weight_exp"] == 0 and
               p["regularization"] == p["unobserved_weight"] and p["num_epochs"] == 17.0 for p in starts[2:])
    scores = [0.1, 0.2, 0.15, 0.25, 0.12, 0.18]  # the recipe's 0.1 did best
    def result(recall, ndcg, se=0.0):
        return {"recall": recall, "ndcg": ndcg, "recall_se": se}
    done = [(point, result(score, score)) for point, score in zip(starts, scores)]
    lambdas = [tune.next_point(done + [None] * k, 12, rng, 17.0) for k in range(2)]
    assert [(p["unobserved_weight"], p["regularization"]) for p in lambdas] == [(0.1, 1.0), (0.1, 0.01)]
    # then 20 factors at the best recipe point (here λ ×10)
    done += [(lambdas[0], result(0.3, 0.3)), (lambdas[1], result(0.05, 0.05))]
    assert tune.next_point(done, 12, rng, 17.0) == dict(lambdas[0], n_embeds=20)
    # a budget of 4 (the notebook's) runs the first four: lab, tuned, the recipe at 0.01 and 0.1
    assert [tune.next_point([None] * done, 4, rng, 17.0) for done in range(4)] == tune.first_points(17.0)[:4]
    best = {"target": "read", "n_embeds": 20, "regularization": 1.0, "unobserved_weight": 0.1,
            "col_weight": 1.0, "col_weight_exp": 0.5, "num_epochs": 10}
    done = [(tune.draw(rng), result(0.1, 0.1)) for _ in range(8)] + [(best, result(0.3, 0.2))] + [
        (tune.draw(rng), result(0.2, 0.1))] * 2
    refined = [tune.next_point(done, 12, rng, 17.0) for _ in range(200)]
    regularization = np.array([p["regularization"] for p in refined])
    # near the best: on a log scale mostly within a factor e of 1.0, and in the space
    assert np.mean(np.abs(np.log(regularization)) < 1) > 0.9
    assert all(tune.SEARCH_SPACE["regularization"][1][0] <= r <= tune.SEARCH_SPACE["regularization"][1][1]
               for r in regularization)
    assert 0.6 < np.mean([p["target"] == "read" for p in refined]) < 0.95
    # the two trials after the recipe's, and every third after them, are random draws: as far from the best
    # as the space is wide
    for before in (9, 10, 13):
        drawn = [tune.next_point(done[:before] + [None] * (before - len(done[:before])), 12, rng, 17.0)
                 ["regularization"] for _ in range(200)]
        assert np.mean(np.abs(np.log(drawn)) < 1) < 0.5


def test_the_validation_split_holds_out_more_reads_where_users_are_few(tmp_path):
    from walsmf import datadir
    rng = np.random.default_rng(0)
    for nusers, per_user in ((100, 40), (6000, 4)):
        rows = [(u, i, 1.0) for u in range(nusers) for i in rng.choice(200, per_user, replace=False)]
        mapped = pd.DataFrame(rows, columns=splits.MAPPED_COLUMNS)
        data_dir = tmp_path / str(nusers)
        data_dir.mkdir()
        mapped.to_csv(data_dir / datadir.MAPPED_FILE, index=False, header=False)
        datadir.write_metadata(str(data_dir), {"nusers": nusers, "nitems": 200})
        for name in (datadir.USERS_FILE, datadir.ITEMS_FILE):
            (data_dir / name).write_text("")
        _, test = tune.write_validation_split(str(data_dir), str(tmp_path / "split{}".format(nusers)), log=print)
        # 100 users: 5000 / 100 = 50 each, capped at a fifth of 40 reads = 8; 6000 users: one each
        assert test.groupby("userId").size().tolist() == ([8] * 100 if nusers == 100 else [1] * 6000)
