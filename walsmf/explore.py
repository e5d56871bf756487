"""Tables and pictures of each stage, for the notebook (what a reader would rather look at)."""
import os

import numpy as np
import pandas as pd
import tensorflow as tf

from walsmf.datadir import counts, read_interactions, read_metadata
from walsmf.modeldir import load_shards
from walsmf.recommend import load_factors


def sparsity_table(mapped):
    """Items, users, interactions and the share of the user x item matrix observed."""
    c = counts(mapped)
    c["observed share"] = c["interactions"] / float(c["nusers"] * c["nitems"])
    return pd.Series(c)


def files_table(directory):
    """The files of a data directory and their sizes."""
    names = sorted(os.listdir(directory))
    return pd.DataFrame({"file": names, "bytes": [os.path.getsize(os.path.join(directory, n)) for n in names]})


def plot_durations_and_ratings(extracted, raw):
    """Session durations (log scale) beside the ratings made from them."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
    left.hist(np.log10(extracted["session_duration"]), bins=60)
    left.set(title="session_duration", xlabel="log10(ms)", ylabel="(visitor, article) rows")
    right.hist(raw["rating"], bins=50)
    right.set(title="rating = 0.3·duration/median, capped at 1", xlabel="rating")
    fig.tight_layout()
    return fig


def plot_long_tails(mapped):
    """Readers per article and articles per visitor, by rank (log-log)."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
    for ax, column, what in ((left, "itemId", "readers per article"), (right, "userId", "articles per visitor")):
        sizes = np.sort(mapped.groupby(column).size().values)[::-1]
        ax.loglog(np.arange(1, len(sizes) + 1), sizes)
        ax.set(title=what, xlabel="rank", ylabel=what.split(" per ")[0])
    fig.tight_layout()
    return fig


def wals_objective(by_user, u, v, unobserved_weight=0.1, row_weights=None, col_weights=None,
                   regularization=None):
    """The objective WALS minimizes, over every (user, item) entry:

    Σ_obs (w0 + r_i·c_j)(a_ij − u_i·v_j)² + w0 Σ_unobs (u_i·v_j)² + λ(|U|² + |V|²),
    with the unobserved sum taken as w0·(trace(UᵀU·VᵀV) − Σ_obs (u_i·v_j)²).
    ``by_user``: the ratings as a CSR by user (datadir.CSR).
    """
    users, indices, values = by_user.rows(), by_user.indices, by_user.values
    predicted = np.einsum("ij,ij->i", u[users].astype(np.float64), v[indices].astype(np.float64))
    r = np.ones(len(u)) if row_weights is None else row_weights
    c = np.ones(len(v)) if col_weights is None else col_weights
    observed_weight = unobserved_weight + r[users] * c[indices]
    total = (np.sum(observed_weight * (values - predicted) ** 2)
             + unobserved_weight * (np.trace((u.T @ u) @ (v.T @ v)) - np.sum(predicted ** 2)))
    if regularization:
        total += regularization * (np.sum(u ** 2) + np.sum(v ** 2))
    return float(total)


def objective_by_checkpoint(output_dir, data_dir, unobserved_weight=0.1, regularization=None):
    """The WALS objective at each checkpoint kept in ``output_dir`` (step, objective)."""
    metadata = read_metadata(data_dir)
    by_user = read_interactions(data_dir, metadata["nusers"], metadata["nitems"]).by_user
    out = []
    for path in tf.train.get_checkpoint_state(output_dir).all_model_checkpoint_paths:
        objective = wals_objective(by_user, load_shards(path, "row_factors_shard_"),
                                   load_shards(path, "col_factors_shard_"), unobserved_weight,
                                   load_shards(path, "row_weights_shard_"), load_shards(path, "col_weights_shard_"),
                                   regularization)
        out.append((int(path.rsplit("-", 1)[1]), objective))
    return pd.DataFrame(out, columns=["step", "objective"])


def plot_training_objective(output_dir, data_dir):
    """The WALS objective over all entries at each kept checkpoint: what training minimizes."""
    import matplotlib.pyplot as plt

    table = objective_by_checkpoint(output_dir, data_dir)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(table["step"], table["objective"], marker="o")
    ax.set(title="WALS objective at each checkpoint", xlabel="step", ylabel="objective", yscale="log")
    fig.tight_layout()
    return fig


def plot_item_factors(output_dir, mapped):
    """The learned item factors projected on their first two principal components."""
    import matplotlib.pyplot as plt

    factors = load_factors(output_dir, "col")
    centered = factors - factors.mean(axis=0)
    _, _, components = np.linalg.svd(centered, full_matrices=False)
    xy = centered @ components[:2].T
    readers = mapped.groupby("itemId").size().reindex(range(len(factors)), fill_value=0).values
    fig, ax = plt.subplots(figsize=(6, 5))
    points = ax.scatter(xy[:, 0], xy[:, 1], c=np.log10(np.maximum(readers, 1)), s=6, cmap="viridis")
    fig.colorbar(points, label="log10(readers)")
    # a few very popular items lie far out: frame the bulk
    low, high = np.percentile(xy, [1, 99], axis=0)
    margin = 0.2 * (high - low)
    ax.set_xlim(low[0] - margin[0], high[0] + margin[0])
    ax.set_ylim(low[1] - margin[1], high[1] + margin[1])
    ax.set(title="item factors, first two principal components", xlabel="PC 1", ylabel="PC 2")
    fig.tight_layout()
    return fig
