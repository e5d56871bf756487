"""The embedded default data: a deterministic GA360-shaped session sample.

The lab reads ``cloud-training-demos.GA360_test.ga_sessions_sample`` on
BigQuery.  Offline, walsmf generates a table in the same export schema
(the subset the lab's query reads) and writes it as Parquet for DuckDB:

    fullVisitorId STRING, visitNumber INT64, visitStartTime INT64,
    hits ARRAY<STRUCT<hitNumber INT64, time INT64, type STRING,
                      customDimensions ARRAY<STRUCT<index INT64, value STRING>>>>

At scale 1 the lab's query over it gives what the lab saw on BigQuery:
about 82,802 visitors, 5,668 articles and 278,913 (visitor, article) rows,
with session_duration quartiles near 17,095 / 57,938 / 129,393 ms.

Above scale 1, visitors grow with the scale and articles with its square
root (:func:`article_scale`).

Visitors read articles by latent taste: each article belongs to a topic and
each visitor mostly reads from a primary and a secondary topic, so
collaborative filtering has real signal to find.  Article popularity and
visitor activity are heavy-tailed.
"""
import argparse
import math
import os

import numpy as np

from walsmf.errors import DataError, run_cli
from walsmf.fileio import atomic_output

LAB_VISITORS = 82802
LAB_ARTICLES = 5668
CONTENT_DIMENSION = 10
SECTION_DIMENSION = 4

# Page reading time (ms) as a piecewise log-linear quantile function, fitted
# so the lab's query returns the lab's quartiles, min 1 and max near 7.7 M.
_DURATION_QUANTILES = np.array([0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.9, 0.97, 0.995, 0.99995, 1.0])
_DURATION_MS = np.array([1, 300, 2500, 15800, 53300, 116000, 215000, 400000, 900000, 3.0e6, 7.7e6])

# Extra articles read per visitor: negative binomial (heavy tail), mean
# fitted to the lab's 278,913 rows over 82,802 visitors.
_EXTRA_READS_SHAPE = 0.5
_EXTRA_READS_MEAN = 2.90
_MAX_READS = 400
_HOME_PAGE_SHARE = 0.05       # PAGE hits without a contentId
_REREAD_SHARE = 0.03          # a page that reloads the article just read
_EVENT_SHARE = 0.15           # EVENT hits following a page
_NON_READER_SHARE = 0.06      # visitors with a single page: no duration, no row
_PRIMARY_TASTE, _SECONDARY_TASTE = 0.6, 0.2
_POPULARITY_EXPONENT = 0.8


def default_sample_path(scale=1.0, seed=0, directory="samples"):
    """Where the sample for ``scale`` and ``seed`` is cached by default."""
    return os.path.join(directory, "ga_sessions_sample_scale{:g}_seed{}.parquet".format(scale, seed))


def article_scale(scale):
    """How the catalogue grows with the visitors: in proportion below the lab's size, with the square
    root above it (a news site's readers grow faster than what it publishes: 100x the visitors of
    the lab read from 10x its articles)."""
    return scale if scale <= 1 else scale ** 0.5


def _unique_ids(rng, n, low, high):
    """``n`` distinct random integers in [low, high), in random order."""
    ids = np.unique(rng.integers(low, high, size=int(n * 1.05) + 16))
    while len(ids) < n:
        ids = np.unique(np.concatenate([ids, rng.integers(low, high, size=n)]))
    return rng.permutation(ids)[:n]


def _arrow(values, type=None):
    """A pyarrow Array (pyarrow chunks large numpy string arrays; the schema wants one array)."""
    import pyarrow as pa

    array = pa.array(values, type)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _strings(indices, dictionary):
    """A pyarrow string array of ``dictionary[indices]``, built without a Python string per element."""
    import pyarrow as pa

    return pa.DictionaryArray.from_arrays(_arrow(indices, pa.int32()),
                                          _arrow(dictionary, pa.string())).dictionary_decode()


def _durations(rng, n):
    """``n`` page reading times in ms, from the fitted quantile function."""
    log_ms = np.interp(rng.random(n), _DURATION_QUANTILES, np.log(_DURATION_MS))
    return np.maximum(1, np.rint(np.exp(log_ms))).astype(np.int64)


class _Catalogue:
    """Articles with topics and heavy-tailed popularity, sampled by taste."""

    def __init__(self, rng, n_articles):
        self.n_topics = int(np.clip(n_articles // 40, 2, 40))
        self.topic = np.sort(rng.integers(0, self.n_topics, size=n_articles))
        popularity = rng.permutation(np.arange(1, n_articles + 1) ** -_POPULARITY_EXPONENT)
        self.global_cdf = np.cumsum(popularity) / popularity.sum()
        topic_mass = np.bincount(self.topic, weights=popularity, minlength=self.n_topics)
        self.topic_share = topic_mass / topic_mass.sum()
        within = np.cumsum(popularity) - np.concatenate([[0], np.cumsum(topic_mass)])[self.topic]
        # topic + cumulative share within the topic: one sorted key for all topics
        self.topic_key = self.topic + within / np.maximum(topic_mass[self.topic], 1e-300)

    def popular(self, rng, n):
        """Articles drawn by global popularity."""
        return np.minimum(np.searchsorted(self.global_cdf, rng.random(n)), len(self.topic) - 1)

    def from_topics(self, rng, topics):
        """One article per entry of ``topics``, by popularity within the topic."""
        key = topics + rng.random(len(topics)) * (1 - 1e-9)
        return np.minimum(np.searchsorted(self.topic_key, key), len(self.topic) - 1)


def generate_sessions(scale=1.0, seed=0):
    """Generate the GA360-shaped sample as a pyarrow Table (deterministic)."""
    import pyarrow as pa

    if not (scale > 0 and math.isfinite(scale)):
        raise DataError("--scale {} is not a size: give a positive number (1 = the lab's data)".format(scale))
    if seed < 0:
        raise DataError("--seed {} is negative: give a seed of 0 or more".format(seed))
    rng = np.random.default_rng(seed)
    n_readers = max(2, int(round(LAB_VISITORS * scale)))
    n_articles = max(2, int(round(LAB_ARTICLES * article_scale(scale))))
    n_visitors = n_readers + int(round(n_readers * _NON_READER_SHARE))
    catalogue = _Catalogue(rng, n_articles)

    # Pages per visitor: reads (each with a following page, so a duration),
    # then the last page, whose duration the query cannot know.
    p = _EXTRA_READS_SHAPE / (_EXTRA_READS_SHAPE + _EXTRA_READS_MEAN)
    reads = np.minimum(1 + rng.negative_binomial(_EXTRA_READS_SHAPE, p, size=n_readers), _MAX_READS)
    pages = np.concatenate([reads + 1, np.ones(n_visitors - n_readers, dtype=np.int64)])
    page_visitor = np.repeat(np.arange(n_visitors), pages)
    page_start = np.concatenate([[0], np.cumsum(pages)[:-1]])
    position = np.arange(len(page_visitor)) - page_start[page_visitor]
    is_last = position == pages[page_visitor] - 1
    n_pages = len(page_visitor)

    # Taste: a primary and a secondary topic per visitor.
    primary = rng.choice(catalogue.n_topics, size=n_visitors, p=catalogue.topic_share)
    secondary = rng.choice(catalogue.n_topics, size=n_visitors, p=catalogue.topic_share)
    u = rng.random(n_pages)
    article = catalogue.popular(rng, n_pages)
    by_primary = u < _PRIMARY_TASTE
    by_secondary = (u >= _PRIMARY_TASTE) & (u < _PRIMARY_TASTE + _SECONDARY_TASTE)
    article[by_primary] = catalogue.from_topics(rng, primary[page_visitor[by_primary]])
    article[by_secondary] = catalogue.from_topics(rng, secondary[page_visitor[by_secondary]])

    home = (rng.random(n_pages) < _HOME_PAGE_SHARE) & (position > 0) & ~is_last
    reread = (rng.random(n_pages) < _REREAD_SHARE) & (position > 0) & ~home
    reread_index = np.flatnonzero(reread)
    article[reread_index] = article[reread_index - 1]

    # Every article is read (with a duration) at least once.
    counted = np.flatnonzero(~home & ~is_last)
    unread = np.setdiff1d(np.arange(n_articles), article[counted])
    if len(unread):
        article[rng.choice(counted, size=len(unread), replace=False)] = unread
    article[home] = -1

    gap = _durations(rng, n_pages)
    page_time = np.cumsum(gap) - gap
    page_time -= page_time[page_start][page_visitor]

    # EVENT hits fall inside a page's reading time.
    event_of = np.flatnonzero(rng.random(n_pages) < _EVENT_SHARE)
    event_time = page_time[event_of] + gap[event_of] // 2

    hit_visitor = np.concatenate([page_visitor, page_visitor[event_of]])
    hit_time = np.concatenate([page_time, event_time])
    hit_article = np.concatenate([article, article[event_of]])
    hit_is_page = np.concatenate([np.ones(n_pages, bool), np.zeros(len(event_of), bool)])
    order = np.lexsort((~hit_is_page, hit_time, hit_visitor))
    hit_visitor, hit_time = hit_visitor[order], hit_time[order]
    hit_article, hit_is_page = hit_article[order], hit_is_page[order]
    hits_per_visitor = np.bincount(hit_visitor, minlength=n_visitors)
    hit_offsets = np.concatenate([[0], np.cumsum(hits_per_visitor)])
    hit_number = np.arange(len(hit_visitor)) - hit_offsets[:-1][hit_visitor] + 1

    content_ids = _unique_ids(rng, n_articles, 10 ** 8, 10 ** 9).astype(str)
    visitor_ids = _unique_ids(rng, n_visitors, 10 ** 18, 9 * 10 ** 18).astype(str)
    sections = np.array(["news", "sport", "culture", "economy", "home"])

    # Custom dimensions: the section (index 4) on every hit, the article
    # (index 10) on hits of an article.
    has_article = hit_article >= 0
    n_dims = 1 + has_article
    dim_offsets = np.concatenate([[0], np.cumsum(n_dims)])
    dim_index = np.full(dim_offsets[-1], SECTION_DIMENSION, dtype=np.int64)
    # values by their index in [sections..., content ids...]: no Python string per hit (100x has 40 M hits)
    dim_value = np.empty(dim_offsets[-1], dtype=np.int32)
    dim_value[dim_offsets[:-1]] = np.where(has_article, catalogue.topic[np.maximum(hit_article, 0)] % 4, 4)
    content_slot = dim_offsets[:-1][has_article] + 1
    dim_index[content_slot] = CONTENT_DIMENSION
    dim_value[content_slot] = len(sections) + hit_article[has_article]

    dimensions = pa.ListArray.from_arrays(
        _arrow(dim_offsets, pa.int32()),
        pa.StructArray.from_arrays([_arrow(dim_index), _strings(dim_value, np.concatenate([sections, content_ids]))],
                                   names=["index", "value"]))
    hits = pa.StructArray.from_arrays(
        [_arrow(hit_number), _arrow(hit_time),
         _strings(hit_is_page.astype(np.int32), np.array(["EVENT", "PAGE"])), dimensions],
        names=["hitNumber", "time", "type", "customDimensions"])
    start = 1500000000 + rng.integers(0, 3 * 86400, size=n_visitors)
    return pa.table({
        "fullVisitorId": _arrow(visitor_ids, pa.string()),
        "visitNumber": pa.array(rng.integers(1, 4, size=n_visitors)),
        "visitStartTime": pa.array(start),
        "hits": pa.ListArray.from_arrays(_arrow(hit_offsets, pa.int32()), hits),
    })


def write_sample(path, scale=1.0, seed=0):
    """Generate the sample and write it to ``path`` (Parquet) atomically."""
    import pyarrow.parquet as pq

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with atomic_output(path) as tmp:
        pq.write_table(generate_sessions(scale, seed), tmp)
    return path


def ensure_sample(path=None, scale=1.0, seed=0):
    """Return the path of the sample for (scale, seed), generating it if missing."""
    path = path or default_sample_path(scale, seed)
    if not os.path.exists(path):
        print("Generating the GA360-shaped sample (scale {:g}, seed {}) -> {}".format(scale, seed, path),
              flush=True)
        write_sample(path, scale, seed)
    return path


def main(argv=None):
    """CLI: write the embedded GA360-shaped sample."""
    parser = argparse.ArgumentParser(
        prog="python -m walsmf.sample", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="size relative to the lab's data (1 = 82,802 visitors)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same file)")
    parser.add_argument("--output", help="Parquet file to write (default: %s)" % default_sample_path())
    args = parser.parse_args(argv)
    path = args.output or default_sample_path(args.scale, args.seed)
    print(write_sample(path, args.scale, args.seed))


if __name__ == "__main__":
    run_cli(main)
