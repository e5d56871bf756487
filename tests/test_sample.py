"""The embedded GA360-shaped sample: deterministic, lab-shaped, with taste structure."""
import numpy as np
import pyarrow.parquet as pq
from helpers import session_schema

from walsmf import extract
from walsmf.sample import LAB_ARTICLES, LAB_VISITORS, generate_sessions, write_sample


def test_same_seed_same_table_other_seed_other_table():
    assert generate_sessions(0.005, seed=3).equals(generate_sessions(0.005, seed=3))
    assert not generate_sessions(0.005, seed=3).equals(generate_sessions(0.005, seed=4))


def test_schema_is_the_ga360_export_subset(small_sample):
    schema = pq.read_schema(small_sample)
    for field in session_schema():
        assert schema.field(field.name).type == field.type


def test_lab_query_sees_every_reader_and_every_article(small_sample):
    df = extract.normalize_extracted(extract.run_local(extract.Query(), small_sample))
    assert df["visitorId"].nunique() == round(LAB_VISITORS * 0.01)
    assert df["contentId"].nunique() == round(LAB_ARTICLES * 0.01)
    # about 3.4 articles per visitor, as in the lab's 278,913 / 82,802
    assert 2.8 < len(df) / df["visitorId"].nunique() < 4.0
    assert df["session_duration"].min() >= 1


def test_sessions_hold_event_hits_and_pages_without_article(small_sample):
    hits = pq.read_table(small_sample).column("hits").combine_chunks().flatten()
    types = np.array(hits.field("type").to_pylist())
    assert {"PAGE", "EVENT"} == set(types)
    dims = hits.field("customDimensions").to_pylist()
    pages_without_article = sum(1 for t, d in zip(types, dims) if t == "PAGE" and all(x["index"] != 10 for x in d))
    assert pages_without_article > 0


def test_co_reading_predicts_better_than_popularity(tmp_path):
    """Latent tastes: items co-read with a visitor's other reads find a held-out read
    more often than the most popular items do (no taste would make them equal)."""
    import scipy.sparse as sp

    path = write_sample(str(tmp_path / "s.parquet"), scale=0.05, seed=1)
    df = extract.normalize_extracted(extract.run_local(extract.Query(), path))
    users = df["visitorId"].astype("category").cat.codes.values
    items = df["contentId"].astype("category").cat.codes.values
    rng = np.random.default_rng(0)
    counts = np.bincount(users)
    held = {}
    for row in rng.permutation(len(df)):
        if counts[users[row]] >= 3:
            held.setdefault(users[row], row)
    held = np.array(sorted(held.values()))
    train = np.ones(len(df), bool)
    train[held] = False
    X = sp.csr_matrix((np.ones(train.sum()), (users[train], items[train])))
    popularity = np.asarray(X.sum(0)).ravel()
    cooccurrence = (X.T @ X).toarray() / np.sqrt(np.outer(popularity, popularity) + 1e-9)
    np.fill_diagonal(cooccurrence, 0)
    seen = X[users[held]].toarray() > 0

    def hit_rate(scores):
        scores = np.where(seen, -np.inf, scores)
        top = np.argsort(-scores, axis=1)[:, :10]
        return (top == items[held][:, None]).any(axis=1).mean()
    by_taste = hit_rate(X[users[held]] @ cooccurrence)
    by_popularity = hit_rate(np.tile(popularity, (len(held), 1)))
    assert len(held) > 1000
    assert by_taste > by_popularity + 0.03
