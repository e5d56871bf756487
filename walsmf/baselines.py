"""What a recommender must beat: most popular, and implicit's ALS, as factor models ranked like WALS's."""
import numpy as np


def popularity_factors(train, nusers, nitems):
    """Most popular as a one-factor model: every user scores the items by their readers in training."""
    popularity = np.bincount(train["itemId"].values, minlength=nitems).astype(np.float32)
    return np.ones((nusers, 1), np.float32), popularity[:, None]


def implicit_als(train, nusers, nitems, factors=10, regularization=0.1, alpha=40.0, iterations=10, seed=0):
    """implicit's AlternatingLeastSquares on the training ratings; returns (user, item) factors.

    implicit weighs an entry by its value: confidence 1 + alpha·rating keeps
    every observed entry above the unobserved ones' weight of 1.
    """
    import scipy.sparse as sp
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    matrix = sp.csr_matrix((1 + alpha * train["rating"].values, (train["userId"].values, train["itemId"].values)),
                           shape=(nusers, nitems))
    # implicit runs its own threads; a multi-threaded BLAS under them oversubscribes the cores
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=factors, regularization=regularization, iterations=iterations,
                                        random_state=seed, calculate_training_loss=False)
        model.fit(matrix, show_progress=False)
    return np.asarray(model.user_factors), np.asarray(model.item_factors)
