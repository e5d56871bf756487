"""A news-shaped stream of reads, for walsmf.replay: articles published all day whose pull halves every 36 hours,
visitors with topical tastes, new visitors every day.

    .venv/bin/python benchmarks/news_stream.py --output news.csv [--days 4] [--visitors 20000] [--seed 0]

Writes an extracted CSV (visitorId,contentId,session_duration,read_time), as
walsmf.extract writes it.  Unlike the embedded sample (every article there
from the first day), an article is read only after it is published, most in
its first day or two; a visitor mostly reads one topic; each day a quarter as
many new visitors arrive as there were at the start.
"""
import argparse
import collections

import numpy as np
import pandas as pd

from walsmf.errors import DataError, run_cli
from walsmf.fileio import atomic_output, check_writable, starts_with

DAY_MS = 86400 * 1000
HALF_LIFE_MS = 36 * 3600 * 1000
START_MS = 1_768_435_200_000  # 2026-01-15 00:00 UTC: past, as a real export's reads are; whole UTC days


# The site behind a stream: each article's publication time, topic and appeal; each visitor's arrival, topic of
# taste and activity (article n is contentId "a<n>", visitor n visitorId "v<n>").
Site = collections.namedtuple("Site", "published article_topic appeal arrival taste activity")


def news_site(rng, days=4, visitors=20000, articles_per_day=300, topics=12):
    """The Site of a stream of ``days`` days, drawn from ``rng``."""
    n_articles = articles_per_day * (days + 1)  # a day's articles before the first read, to read from
    published = START_MS - DAY_MS + np.sort(rng.integers(0, (days + 1) * DAY_MS, n_articles))
    article_topic = rng.integers(0, topics, n_articles)
    appeal = rng.lognormal(0, 1.0, n_articles)
    new_per_day = visitors // 4
    n_visitors = visitors + new_per_day * days
    arrival = np.concatenate([np.full(visitors, START_MS), START_MS + rng.integers(0, days * DAY_MS,
                                                                                   n_visitors - visitors)])
    return Site(published, article_topic, appeal, arrival, rng.integers(0, topics, n_visitors),
                rng.lognormal(0, 0.8, n_visitors))


def news_stream(days=4, visitors=20000, articles_per_day=300, reads_per_visitor_day=1.5, topics=12, seed=0):
    """The reads of ``days`` days as a DataFrame (visitorId, contentId, session_duration, read_time)."""
    rng = np.random.default_rng(seed)
    published, article_topic, appeal, arrival, taste, activity = news_site(rng, days, visitors, articles_per_day,
                                                                           topics)
    n_articles = len(published)
    n_reads = int(reads_per_visitor_day * visitors * days)
    times = START_MS + np.sort(rng.integers(0, days * DAY_MS, n_reads))
    rows = []
    seen = set()
    # reads an hour at a time: the hour's articles weighted by appeal, freshness and each visitor's taste
    for hour in range(days * 24):
        begin, end = START_MS + hour * 3600 * 1000, START_MS + (hour + 1) * 3600 * 1000
        when = times[(times >= begin) & (times < end)]
        if not len(when):
            continue
        age = begin - published
        pull = np.where(age >= 0, appeal * 0.5 ** (age / HALF_LIFE_MS), 0.0)
        present = np.flatnonzero(arrival <= begin)
        readers = rng.choice(present, len(when), p=activity[present] / activity[present].sum())
        for t, visitor in zip(when, readers):
            weights = pull * np.where(article_topic == taste[visitor], 6.0, 1.0)
            article = rng.choice(n_articles, p=weights / weights.sum())
            if (visitor, article) in seen:
                continue
            seen.add((visitor, article))
            rows.append((visitor, article, int(rng.lognormal(np.log(50000), 1.0)) + 1, int(t)))
    frame = pd.DataFrame(rows, columns=["visitor", "article", "session_duration", "read_time"])
    return pd.DataFrame({"visitorId": "v" + frame["visitor"].astype(str),
                         "contentId": "a" + frame["article"].astype(str),
                         "session_duration": frame["session_duration"], "read_time": frame["read_time"]})


def main(argv=None):
    """CLI: write a news stream."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="the CSV to write (replaces only an extracted CSV)")
    parser.add_argument("--days", type=int, default=4, help="days of reads (the replay needs 3 or more)")
    parser.add_argument("--visitors", type=int, default=20000, help="visitors at the start")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for flag, value in (("--days", args.days), ("--visitors", args.visitors)):
        if value < 1:
            raise DataError("{} {} is not a count: give 1 or more".format(flag, value))
    check_writable(args.output, "--output", replaces=("an extracted CSV", starts_with(b"visitorId,contentId,")))
    reads = news_stream(args.days, args.visitors, seed=args.seed)
    with atomic_output(args.output) as tmp:
        reads.to_csv(tmp, index=False)
    print("{:,} reads by {:,} visitors of {:,} articles over {} days -> {}".format(
        len(reads), reads["visitorId"].nunique(), reads["contentId"].nunique(), args.days, args.output))


if __name__ == "__main__":
    run_cli(main)
