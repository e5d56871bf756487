"""Search walsmf.task's settings on your own data, the way cloud tuning services do, on this machine.

    python -m walsmf.tune --input_path DATA --output_dir DIR [--max_trials 12] [--seed 0]
                          [--nusers U --nitems I]

Carves a validation split from DATA (walsmf.splits': one read held out
per user with at least three — each user's latest where DATA has times.csv —
more where users are few, for about 5,000 held-out reads), then trains each trial's settings on the rest exactly as
walsmf.task trains, and ranks every held-out read: recall, NDCG and MAP at
10, items the user read in training left out.  The trials: the lab's
settings, ``--preset tuned``, then the iALS recipe (every read a target of
1, 40 factors, 16 sweeps) at four unobserved weights — a budget of up to 6
runs that many of these 6 points, a larger one half its trials' worth —
and, once all four were tried, λ ×10 and ×0.1 at the best, then 20
factors at the best recipe point; two random draws from SEARCH_SPACE (the
space hptuning_config.yaml and cloud/vertex_hptuning.yaml name); then points
near the best so far, every third a random draw.  Each trial is ranked with
and without a blend with popularity (score + β·log(1 + readers), β among
POPULARITY_WEIGHTS; where the data has times, the readers of most read
recently's window, counted as they are and as rates: --popularity_rate;
ranking only) and keeps its best blend.  The choice, of the blend as
of trials (metrics.choose): the best NDCG@10 among those within one standard
error of the best recall@10.  One progress line per trial, with standard
errors.  Writes DIR/trials.csv and DIR/best_params.json ({walsmf.task flag:
value}) and prints the walsmf.task command that applies it.
"""
import json
import math
import os
import shutil
import time

import numpy as np
import pandas as pd

from walsmf import baselines, flags, metrics, model, progress, settings, splits
from walsmf.datadir import HELDOUT_FILE, read_metadata
from walsmf.errors import DataError, run_cli
from walsmf.fileio import refuse_inside, staged_directory, temporary_directory
from walsmf.recency import data_popularity
from walsmf.recommend import load_factors

TRIALS_FILE = "trials.csv"
BEST_PARAMS_FILE = "best_params.json"
# flag: (kind, values): "log"/"linear" draw a float in [low, high]; "choice" one of the values.
SEARCH_SPACE = {
    "target": ("choice", ["rating", "read"]),
    "n_embeds": ("choice", [10, 20, 40]),
    "regularization": ("log", [0.001, 10.0]),
    "unobserved_weight": ("log", [0.003, 1.0]),
    "col_weight": ("log", [0.3, 30.0]),
    "col_weight_exp": ("linear", [0.0, 1.0]),
    "num_epochs": ("choice", [5, 10, 20, 40]),
}
METRICS = ("recall", "ndcg", "map")
# The blends with popularity each trial is ranked with (score + β·log(1 + readers)): ranking only, no training.
POPULARITY_WEIGHTS = (0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
# Where users are few (MovieLens' 671), one held-out read each ranks settings mostly by chance: each then
# holds out enough for about this many held-out reads (walsmf.splits takes at most a fifth of a user's).
VALIDATION_READS = 5000


def draw(rng):
    """One point of SEARCH_SPACE."""
    point = {}
    for flag, (kind, values) in SEARCH_SPACE.items():
        if kind == "choice":
            point[flag] = values[int(rng.integers(len(values)))]
        else:
            low, high = (math.log(v) for v in values) if kind == "log" else values
            value = float(rng.uniform(low, high))
            point[flag] = round(math.exp(value) if kind == "log" else value, 4)
    return point


def near(point, rng):
    """A point of SEARCH_SPACE near ``point``: each float moved a little (×e^N(0, 0.5) on a log scale,
    ±N(0, 0.15) on a linear one), each choice kept 3 times in 4."""
    moved = {}
    for flag, (kind, values) in SEARCH_SPACE.items():
        value = point[flag]
        if kind == "choice":
            moved[flag] = value if rng.random() < 0.75 else values[int(rng.integers(len(values)))]
        elif kind == "log":
            start = value if value else values[0]  # the lab's regularization is None: start from the least
            moved[flag] = round(float(np.clip(start * math.exp(rng.normal(0, 0.5)), *values)), 4)
        else:
            moved[flag] = round(float(np.clip(value + rng.normal(0, 0.15), *values)), 4)
    return moved


# The iALS recipe (Rendle et al., "Revisiting the performance of iALS", 2022): every read a target of
# 1 weighing about 1, the most factors, 16 sweeps, and the unobserved weight — smaller for sparser
# data — tuned first, then λ with it.  Its unobserved weights, in the order tried.
RECIPE_UNOBSERVED_WEIGHTS = (0.01, 0.1, 0.3, 0.03)
# Then λ at the best of them: λ = unobserved weight × each of these (the recipe's first λ is ×1).
RECIPE_REGULARIZATION_FACTORS = (10.0, 0.1)
# Then, at the best recipe point, half its factors: 40 overfit where articles are few (800).
RECIPE_DIMENSIONS = (max(SEARCH_SPACE["n_embeds"][1]) // 2,)
# Then random draws (what found head-heavy's popularity weighting: col_weight ~20, col_weight_exp ~0.8).
RANDOM_DRAWS = 2
RECIPE_SWEEPS = 16


def recipe_epochs(nusers, nitems):
    """The recipe's training length as walsmf.task's num_epochs (row batches: 16 sweeps are 17 epochs
    at lab size, 183 on MovieLens' 671 users and 6,170 items)."""
    return round(model.epochs_for_sweeps(RECIPE_SWEEPS, settings.make(nusers=nusers, nitems=nitems)), 1)


def recipe_point(unobserved_weight, num_epochs, regularization_factor=1.0):
    """The iALS recipe's point of SEARCH_SPACE at ``unobserved_weight``, λ = it × ``regularization_factor``."""
    return {"target": "read", "n_embeds": max(SEARCH_SPACE["n_embeds"][1]),
            "regularization": round(unobserved_weight * regularization_factor, 4),
            "unobserved_weight": unobserved_weight, "col_weight": 1.0, "col_weight_exp": 0.0,
            "num_epochs": num_epochs}


def first_points(num_epochs):
    """The trials every search starts with: the lab's settings, --preset tuned's, then the iALS recipe's
    unobserved weights (trained ``num_epochs``)."""
    return ([{flag: settings.DEFAULTS[flag] for flag in SEARCH_SPACE},
             {flag: settings.PRESETS["tuned"].get(flag, settings.DEFAULTS[flag]) for flag in SEARCH_SPACE}]
            + [recipe_point(weight, num_epochs) for weight in RECIPE_UNOBSERVED_WEIGHTS])


def _best(done):
    """The point of the best trial in ``done`` [(point, metrics)], by metrics.choose's rule."""
    return done[metrics.choose([result for _, result in done])][0]


def next_point(done, max_trials, rng, num_epochs):
    """The next trial's settings after ``done`` [(point, recall, ndcg)]; the recipe trains ``num_epochs``.

    The first points (all of a budget that few, else half of it); then, if
    the recipe's weights were all tried, λ ×10 and ×0.1 at the best of them
    and half the factors at the best recipe point; two random draws; then
    points near the best so far, every third a random draw.
    """
    starts = first_points(num_epochs)
    n_starts = max_trials if max_trials <= len(starts) else min(len(starts), max_trials // 2)
    if len(done) < n_starts:
        return starts[len(done)]
    step = len(done) - n_starts
    whole_recipe = n_starts == len(starts)
    lambda_steps = len(RECIPE_REGULARIZATION_FACTORS) if whole_recipe else 0
    if step < lambda_steps:
        weight = _best(done[2:n_starts])["unobserved_weight"]
        return recipe_point(weight, num_epochs, RECIPE_REGULARIZATION_FACTORS[step])
    step -= lambda_steps
    dimension_steps = len(RECIPE_DIMENSIONS) if whole_recipe else 0
    if step < dimension_steps:
        return dict(_best(done[2:n_starts + lambda_steps]), n_embeds=RECIPE_DIMENSIONS[step])
    step -= dimension_steps
    return draw(rng) if step < RANDOM_DRAWS or (step - RANDOM_DRAWS) % 3 == 2 else near(_best(done), rng)


def write_validation_split(input_path, split_dir, seed=0, log=progress.say, held_out=None, nusers=None, nitems=None):
    """walsmf.splits' split of ``input_path`` into ``split_dir`` (each user's latest reads where the data has
    times), holding out enough reads per user for about VALIDATION_READS held-out reads."""
    return splits.write_split(input_path, split_dir, seed=seed, log=log, heldout_reads=VALIDATION_READS,
                              held_out=held_out, nusers=nusers, nitems=nitems)


def run_trial(split_dir, point, metadata, seed, workdir):
    """Train ``point`` on the split's training part; its metrics on the held-out reads at the blend with
    popularity metrics.choose picks among POPULARITY_WEIGHTS (``popularity_weight``), and training seconds."""
    trial = settings.make(input_path=split_dir, output_dir=os.path.join(workdir, "model"), nusers=metadata["nusers"],
                         nitems=metadata["nitems"], seed=seed, **point)
    start = time.perf_counter()
    model.fit(trial, model.training_schedule(trial)[0])
    seconds = time.perf_counter() - start
    train, test = splits.read_mapped(split_dir), splits.read_mapped(split_dir, HELDOUT_FILE)
    # a point that names its blend (a chosen one, or the lab's 0) is scored at it; else each is tried
    weights = (point["popularity_weight"],) if "popularity_weight" in point else POPULARITY_WEIGHTS
    # with a window of recent reads and a weight to blend them with, counted as they are and as rates
    rates = [False, True] if point.get("popularity_days") and any(weights) else [False]
    factors = load_factors(trial.output_dir, "row"), load_factors(trial.output_dir, "col")
    blends, chosen_from = [], []
    for rate in rates:
        popularity = data_popularity(split_dir, metadata["nitems"], point.get("popularity_days"), rate)
        scored = metrics.evaluate_factors(*factors, train, test, metadata["nusers"], popularity_weights=weights,
                                          popularity=popularity)
        blends += scored if len(weights) > 1 else [scored]
        chosen_from += [(weight, rate) for weight in weights]
    shutil.rmtree(trial.output_dir)
    chosen = metrics.choose(blends)
    weight, rate = chosen_from[chosen]
    return dict(blends[chosen], popularity_weight=weight, popularity_rate=rate, train_seconds=round(seconds, 2))


def recent_window(split_dir, metadata, seed=0):
    """Where the split has read times, the days of "most read recently"'s window on it (baselines' choice
    among recency.RECENT_DAYS, None: all reads): the blend's popularity then counts those days' reads."""
    if not splits.has_times(split_dir):
        return None
    return baselines.most_read_recently_of(split_dir, splits.read_mapped(split_dir), metadata["nusers"],
                                           metadata["nitems"], seed=seed)[1]


def plain(value):
    """A trials.csv cell as JSON takes it: None for an unset flag (the lab's regularization), numpy → Python."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def best_trial(trials):
    """The row of the best trial, by metrics.choose's rule (the best NDCG@10 within one standard error of the
    best recall@10)."""
    return trials.iloc[metrics.choose(trials.to_dict("records"))]


def tune(input_path, output_dir, max_trials=12, seed=0, nusers=None, nitems=None, log=progress.say, held_out=None):
    """Search SEARCH_SPACE (and the blend with popularity) on a validation split of ``input_path``; write
    trials.csv and best_params.json."""
    if max_trials < 1:
        raise DataError("--max_trials {} must be at least 1".format(max_trials))
    refuse_inside(output_dir, "--output_dir", input_path, "--data_dir", "a tuning")
    with staged_directory(output_dir, BEST_PARAMS_FILE, lambda name: name in (TRIALS_FILE, BEST_PARAMS_FILE)) as staged:
        split_dir = os.path.join(staged, "validation_split")
        write_validation_split(input_path, split_dir, seed, log=lambda line: log("validation split: " + line),
                               held_out=held_out, nusers=nusers, nitems=nitems)
        metadata = read_metadata(split_dir)
        rows, done, rng = [], [], np.random.default_rng(seed)
        epochs = recipe_epochs(metadata["nusers"], metadata["nitems"])
        recent = recent_window(split_dir, metadata, seed)
        if recent:
            log("the blend's popularity: the reads of the last {:g} days (most read recently's window on the "
                "validation split)".format(recent))
        with temporary_directory(".walsmf-tune-", staged) as workdir:
            for trial in range(1, max_trials + 1):
                point = dict(next_point(done, max_trials, rng, epochs),
                             **({"popularity_days": recent} if recent else {}))
                result = run_trial(split_dir, point, metadata, seed, workdir)
                done.append((point, result))
                rows.append(dict(trial=trial, **point, **result))
                log("trial {}/{}: {} -> recall@10 {:.4f} ± {:.4f}, NDCG@10 {:.4f} ± {:.4f} at popularity_weight {}{} "
                    "({:.1f} s)".format(trial, max_trials, " ".join("{}={}".format(k, v) for k, v in point.items()),
                                        result["recall"], result["recall_se"], result["ndcg"], result["ndcg_se"],
                                        result["popularity_weight"], " as rates" if result["popularity_rate"] else "",
                                        result["train_seconds"]))
        shutil.rmtree(split_dir)
        trials = pd.DataFrame(rows)
        trials.to_csv(os.path.join(staged, TRIALS_FILE), index=False)
        best = best_trial(trials)
        params = {flag: plain(best[flag]) for flag in list(SEARCH_SPACE) + ["popularity_weight"]}
        if recent and params["popularity_weight"]:
            params["popularity_days"] = recent
            if best["popularity_rate"]:
                params["popularity_rate"] = True
        params["exclude_seen"] = True  # the trials were scored on unread articles, as a news site recommends them
        with open(os.path.join(staged, BEST_PARAMS_FILE), "w") as f:
            json.dump(params, f, indent=1, sort_keys=True)
    log("best: trial {} (recall@10 {:.4f}, NDCG@10 {:.4f}); train on all of {} with:".format(
        int(best["trial"]), best["recall"], best["ndcg"], input_path))
    log("  python -m walsmf.task --input_path {} --output_dir wals_trained --params_file {}".format(
        input_path, os.path.join(output_dir, BEST_PARAMS_FILE)))
    return trials


def main(argv=None):
    """CLI: python -m walsmf.tune."""
    parser = flags.Parser(prog="python -m walsmf.tune", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument(*flags.DATA_DIR_FLAGS[::-1], dest="input_path", required=True,
                        help="data directory (walsmf.preprocess's output)")
    parser.add_argument("--output_dir", required=True, help="where trials.csv and best_params.json go")
    parser.add_argument("--max_trials", type=flags.integer, default=12, help="trials to run (default 12)")
    flags.add_seed(parser, "seed of the split, the draws and the factors' initialization")
    flags.add_id_counts(parser)
    parser.add_argument("--held_out", choices=["latest", "random"],
                        help="the validation split's held-out reads: each user's latest (the default where the "
                             "data has times.csv) or random ones")
    flags.add_verbosity(parser)
    args = parser.parse_args(argv)
    progress.set_verbosity(args.verbosity)
    tune(args.input_path, args.output_dir, args.max_trials, args.seed, args.nusers, args.nitems,
         held_out=args.held_out)


if __name__ == "__main__":
    run_cli(main)
