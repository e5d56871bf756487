"""Interaction sets shaped unlike the embedded sample: what walsmf's quality is measured on besides it.

Each shape draws (visitorId, contentId, session_duration) rows, the lab's
extracted form, so walsmf.preprocess turns them into a data directory like any
other source.  A visitor reads mostly from a favourite topic (``taste``: the
share of reads drawn from it, by popularity within it) and otherwise from the
whole catalogue by popularity (Zipf with ``skew``); reads per visitor are
negative-binomial (``activity_shape``: smaller is more heavy-tailed); reads in
the favourite topic last longer, so the rating carries signal too.
"""
import numpy as np
import pandas as pd

SHAPES = {
    # few visitors and articles, many reads each: a dense matrix
    "dense": dict(visitors=8000, articles=800, topics=20, reads_mean=25.0, activity_shape=1.0, skew=0.5,
                  taste=0.8),
    # a few hits take most reads; taste is weak
    "head-heavy": dict(visitors=40000, articles=3000, topics=30, reads_mean=4.0, activity_shape=0.5, skew=1.2,
                       taste=0.4),
    # a large catalogue read thinly, by visitors with narrow tastes
    "long-tail": dict(visitors=30000, articles=20000, topics=200, reads_mean=3.0, activity_shape=0.5, skew=0.5,
                      taste=0.9),
    # most visitors read one or two articles, a few read dozens
    "heavy-readers": dict(visitors=20000, articles=4000, topics=40, reads_mean=6.0, activity_shape=0.15, skew=0.8,
                          taste=0.7),
}


# news: articles published over DAYS, their appeal halving every HALF_LIFE days after publication
NEWS = dict(visitors=30000, articles=3000, topics=30, days=30, half_life_days=1.0, reads_mean=5.0,
            activity_shape=0.5, skew=1.1, taste=0.6)
_START_MS = 1764547200000  # 2025-12-01, UTC


def _zipf_weights(rng, n, skew):
    weights = np.arange(1, n + 1, dtype=np.float64) ** -skew
    return rng.permutation(weights / weights.sum())


def generate(shape, seed=0, scale=1.0):
    """The extracted rows (visitorId, contentId, session_duration in ms) of one SHAPES entry.

    ``scale`` multiplies the visitors and articles (at least 50 and 20).
    """
    p = dict(SHAPES[shape])
    p["visitors"], p["articles"] = max(50, int(p["visitors"] * scale)), max(20, int(p["articles"] * scale))
    p["topics"] = min(p["topics"], p["articles"] // 4)
    rng = np.random.default_rng(seed)
    popularity = _zipf_weights(rng, p["articles"], p["skew"])
    topic_of = rng.integers(0, p["topics"], p["articles"])
    topic_weight = np.bincount(topic_of, weights=popularity, minlength=p["topics"])
    favourite = rng.choice(p["topics"], size=p["visitors"], p=topic_weight / topic_weight.sum())
    reads = 1 + rng.negative_binomial(p["activity_shape"], p["activity_shape"] / (
        p["activity_shape"] + p["reads_mean"] - 1), size=p["visitors"])
    reads = np.minimum(reads, p["articles"] // 4)
    visitor = np.repeat(np.arange(p["visitors"]), reads)
    in_taste = rng.random(len(visitor)) < p["taste"]
    article = rng.choice(p["articles"], size=len(visitor), p=popularity)
    # reads within the favourite topic: by popularity among the topic's articles
    by_topic = [np.flatnonzero(topic_of == t) for t in range(p["topics"])]
    for t, members in enumerate(by_topic):
        chosen = in_taste & (favourite[visitor] == t)
        if len(members) and chosen.any():
            weights = popularity[members] / popularity[members].sum()
            article[chosen] = rng.choice(members, size=int(chosen.sum()), p=weights)
    liked = topic_of[article] == favourite[visitor]
    duration = np.exp(rng.normal(10.6 + 0.7 * liked, 1.1, len(visitor))).astype(np.int64) + 1
    rows = pd.DataFrame({"visitorId": visitor, "contentId": article, "session_duration": duration})
    rows = rows.groupby(["visitorId", "contentId"], as_index=False)["session_duration"].sum()
    return rows.assign(visitorId=rows["visitorId"].map("v{}".format),
                       contentId=rows["contentId"].map("a{}".format))


def generate_news(seed=0, scale=1.0):
    """The extracted rows of NEWS (visitorId, contentId, session_duration in ms, read_time in ms): each read at a
    random time of the month, of an article already published, by popularity × freshness (× taste)."""
    p = dict(NEWS)
    p["visitors"], p["articles"] = max(50, int(p["visitors"] * scale)), max(40, int(p["articles"] * scale))
    p["topics"] = min(p["topics"], p["articles"] // 4)
    rng = np.random.default_rng(seed)
    appeal = _zipf_weights(rng, p["articles"], p["skew"])
    published = rng.uniform(0, p["days"], p["articles"])
    topic_of = rng.integers(0, p["topics"], p["articles"])
    favourite = rng.integers(0, p["topics"], p["visitors"])
    reads = 1 + rng.negative_binomial(p["activity_shape"], p["activity_shape"] / (
        p["activity_shape"] + p["reads_mean"] - 1), size=p["visitors"])
    reads = np.minimum(reads, p["articles"] // 10)
    visitor = np.repeat(np.arange(p["visitors"]), reads)
    when = rng.uniform(0, p["days"], len(visitor))
    in_taste = rng.random(len(visitor)) < p["taste"]
    article = np.empty(len(visitor), np.int64)
    assigned = np.zeros(len(visitor), bool)
    day = when.astype(int)
    for d in range(p["days"]):
        age = d + 0.5 - published
        weight = np.where(age > 0, appeal * 0.5 ** (np.maximum(age, 0) / p["half_life_days"]), 0.0)
        today = day == d
        for t in range(p["topics"]):
            chosen = today & in_taste & (favourite[visitor] == t)
            members = weight * (topic_of == t)
            if chosen.any() and members.sum() > 0:
                article[chosen] = rng.choice(p["articles"], size=int(chosen.sum()), p=members / members.sum())
                assigned |= chosen
        rest = today & ~assigned  # out of taste, or no article of the topic published yet
        article[rest] = rng.choice(p["articles"], size=int(rest.sum()), p=weight / weight.sum())
    liked = topic_of[article] == favourite[visitor]
    duration = np.exp(rng.normal(10.6 + 0.7 * liked, 1.1, len(visitor))).astype(np.int64) + 1
    rows = pd.DataFrame({"visitorId": visitor, "contentId": article, "session_duration": duration,
                         "read_time": (_START_MS + when * 86400000).astype(np.int64)})
    rows = rows.groupby(["visitorId", "contentId"], as_index=False).agg(
        session_duration=("session_duration", "sum"), read_time=("read_time", "max"))
    return rows.assign(visitorId=rows["visitorId"].map("v{}".format), contentId=rows["contentId"].map("a{}".format))
