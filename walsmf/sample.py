"""The embedded default data: deterministic GA360-shaped sessions and GA4-shaped events.

The lab reads ``cloud-training-demos.GA360_test.ga_sessions_sample`` on
BigQuery.  Offline, walsmf generates a table in the same export schema
(the subset the lab's query reads) and writes it as Parquet for DuckDB:

    fullVisitorId STRING, visitNumber INT64, visitStartTime INT64, date STRING (YYYYMMDD),
    hits ARRAY<STRUCT<hitNumber INT64, time INT64, type STRING,
                      customDimensions ARRAY<STRUCT<index INT64, value STRING>>>>

and, for ``--schema ga4``, the same reading as GA4 events (:func:`generate_events`):

    event_date STRING, event_timestamp INT64 (µs), event_name STRING, user_pseudo_id STRING, user_id STRING,
    event_params ARRAY<STRUCT<key STRING, value STRUCT<string_value STRING, int_value INT64,
                                                       float_value FLOAT64, double_value FLOAT64>>>

At scale 1 the lab's query over it gives what the lab saw on BigQuery:
about 82,802 visitors, 5,668 articles and 278,913 (visitor, article) rows,
with session_duration quartiles near 17,095 / 57,938 / 129,393 ms.

Above scale 1, articles grow with its square root (:func:`article_scale`).

Visitors read articles by latent taste: each article belongs to a topic and each visitor mostly reads
from a primary and a secondary topic, so collaborative filtering has real signal to find.  Article
popularity and visitor activity are heavy-tailed.
"""
import math
import os
import time

import numpy as np

from walsmf import flags
from walsmf.errors import DataError, run_cli
from walsmf.fileio import atomic_output, check_writable, starts_with
from walsmf.memory import check_available

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
# Peak memory of generating a sample per unit of --scale, with a margin (measured: 0.11 GB ga360, 0.78 GB ga4).
SAMPLE_BYTES_PER_SCALE = {"ga360": 0.15e9, "ga4": 0.9e9}
_SAMPLE_DAYS = 3              # visits start over three days (four calendar dates)
SECTIONS = np.array(["news", "sport", "culture", "economy", "home"])
# The GA4 sample: its events, parameters, URLs and how they vary.
GA4_EVENT_NAMES = ("session_start", "page_view", "scroll", "user_engagement")
GA4_PARAMS = ("ga_session_id", "page_location", "article_id", "engagement_time_msec")
_GA4_STREAM = 4                 # the GA4 emitter's own random stream: the GA360 sample stays as it is
_SITE = "https://news.example/"
_URL_SUFFIXES = np.array(["", "?utm_source=newsletter&utm_medium=email", "#comments", "?utm_source=social#top"])
_URL_SUFFIX_SHARES = [0.7, 0.15, 0.1, 0.05]
_INT_ARTICLE_ID_SHARE = 0.5     # gtag sends a numeric parameter as int_value
_CONSENT_SHARE = 0.04           # pages also sent as cookieless consent-mode pings


def default_sample_path(scale=1.0, seed=0, directory="samples", schema="ga360"):
    """Where the sample of ``schema`` for ``scale`` and ``seed`` is cached by default."""
    name = "ga4_events_sample" if schema == "ga4" else "ga_sessions_sample"
    return os.path.join(directory, "{}_scale{:g}_seed{}.parquet".format(name, scale, seed))


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


def _section_of(topic):
    """The section (an index into SECTIONS, home excluded) of an article of ``topic``."""
    return topic % (len(SECTIONS) - 1)


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


class _Reading:
    """The reading process both exports are emitted from: visitors, their pages in time order (each an
    article, or a page without one), the times between pages, and event hits inside pages."""


def _reading_process(scale, seed, schema):
    """Draw the visitors' reading (deterministic for ``scale`` and ``seed``; refused if it would not fit)."""
    if not (scale > 0 and math.isfinite(scale)):
        raise DataError("--scale {} is not a size: give a positive number (1 = the lab's data)".format(scale))
    check_available(SAMPLE_BYTES_PER_SCALE[schema] * scale, "--scale {:g}'s {} sample".format(scale, schema),
                    "to generate", "give a smaller --scale")
    if seed < 0:
        raise DataError("--seed {} is negative: give a seed of 0 or more".format(seed))
    rng = np.random.default_rng(seed)
    n_readers = max(2, int(round(LAB_VISITORS * scale)))
    n_articles = max(2, int(round(LAB_ARTICLES * article_scale(scale))))
    n_visitors = n_readers + int(round(n_readers * _NON_READER_SHARE))
    catalogue = _Catalogue(rng, n_articles)

    # Pages per visitor: reads (each with a following page, so a duration), then the last page (no duration).
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

    reading = _Reading()
    reading.__dict__.update(
        n_visitors=n_visitors, n_articles=n_articles, topic=catalogue.topic, page_visitor=page_visitor,
        is_last=is_last, article=article, gap=gap, page_time=page_time, event_of=event_of,
        content_ids=_unique_ids(rng, n_articles, 10 ** 8, 10 ** 9).astype(str),
        visitor_ids=_unique_ids(rng, n_visitors, 10 ** 18, 9 * 10 ** 18).astype(str),
        visit_number=rng.integers(1, 4, size=n_visitors),
        start=1500000000 + rng.integers(0, _SAMPLE_DAYS * 86400, size=n_visitors))
    return reading


def _dates(seconds):
    """YYYYMMDD strings (UTC) of epoch seconds, as the exports' date fields hold them."""
    days = np.asarray(seconds, np.int64).astype("datetime64[s]").astype("datetime64[D]")
    return np.char.replace(days.astype(str), "-", "")


def generate_sessions(scale=1.0, seed=0):
    """Generate the GA360-shaped sample as a pyarrow Table (deterministic)."""
    import pyarrow as pa

    r = _reading_process(scale, seed, "ga360")
    n_pages = len(r.page_visitor)
    event_time = r.page_time[r.event_of] + r.gap[r.event_of] // 2
    hit_visitor = np.concatenate([r.page_visitor, r.page_visitor[r.event_of]])
    hit_time = np.concatenate([r.page_time, event_time])
    hit_article = np.concatenate([r.article, r.article[r.event_of]])
    hit_is_page = np.concatenate([np.ones(n_pages, bool), np.zeros(len(r.event_of), bool)])
    order = np.lexsort((~hit_is_page, hit_time, hit_visitor))
    hit_visitor, hit_time = hit_visitor[order], hit_time[order]
    hit_article, hit_is_page = hit_article[order], hit_is_page[order]
    hits_per_visitor = np.bincount(hit_visitor, minlength=r.n_visitors)
    hit_offsets = np.concatenate([[0], np.cumsum(hits_per_visitor)])
    hit_number = np.arange(len(hit_visitor)) - hit_offsets[:-1][hit_visitor] + 1

    # Custom dimensions: the section (index 4) on every hit, the article (index 10) on hits of an article.
    has_article = hit_article >= 0
    n_dims = 1 + has_article
    dim_offsets = np.concatenate([[0], np.cumsum(n_dims)])
    dim_index = np.full(dim_offsets[-1], SECTION_DIMENSION, dtype=np.int64)
    # values by their index in [sections..., content ids...]: no Python string per hit (100x has 40 M hits)
    dim_value = np.empty(dim_offsets[-1], dtype=np.int32)
    dim_value[dim_offsets[:-1]] = np.where(has_article, _section_of(r.topic[np.maximum(hit_article, 0)]),
                                           len(SECTIONS) - 1)
    content_slot = dim_offsets[:-1][has_article] + 1
    dim_index[content_slot] = CONTENT_DIMENSION
    dim_value[content_slot] = len(SECTIONS) + hit_article[has_article]

    dimensions = pa.ListArray.from_arrays(
        _arrow(dim_offsets, pa.int32()),
        pa.StructArray.from_arrays([_arrow(dim_index),
                                    _strings(dim_value, np.concatenate([SECTIONS, r.content_ids]))],
                                   names=["index", "value"]))
    hits = pa.StructArray.from_arrays(
        [_arrow(hit_number), _arrow(hit_time),
         _strings(hit_is_page.astype(np.int32), np.array(["EVENT", "PAGE"])), dimensions],
        names=["hitNumber", "time", "type", "customDimensions"])
    return pa.table({
        "fullVisitorId": _arrow(r.visitor_ids, pa.string()),
        "visitNumber": pa.array(r.visit_number),
        "visitStartTime": pa.array(r.start),
        "date": _arrow(_dates(r.start), pa.string()),
        "hits": pa.ListArray.from_arrays(_arrow(hit_offsets, pa.int32()), hits),
    })


def generate_events(scale=1.0, seed=0):
    """Generate the GA4-shaped sample (one row per event) from the same reading as the GA360 sample.

    Each visitor's visit is a session (``ga_session_id`` its start): session_start, then per page a
    page_view (``page_location`` a URL, some with tracking query strings or fragments; an article's
    page_view also carries ``article_id``, as an int or as a string), and, for every page but the last, the
    time until the next page as ``engagement_time_msec`` on a scroll (half) and on the user_engagement sent as
    the page is left (the rest).  Some pages are sent again as consent-mode pings without ``user_pseudo_id``.
    With ``--content_param article_id`` the rows equal the GA360 sample's (tested).
    """
    import pyarrow as pa

    r = _reading_process(scale, seed, "ga4")
    rng = np.random.default_rng([seed, _GA4_STREAM])
    n_pages = len(r.page_visitor)
    page_us = (r.start[r.page_visitor] * 1000 + r.page_time) * 1000
    half = r.gap // 2
    leaves = ~r.is_last
    scrolls = leaves & (half > 0)
    first = np.concatenate([[True], r.page_visitor[1:] != r.page_visitor[:-1]])
    consent = rng.random(n_pages) < _CONSENT_SHARE

    # (page, event kind, timestamp µs, engaged ms) of every event, kinds in EVENT_NAMES' order
    kinds, pages, stamps, engaged = [], [], [], []
    for kind, mask, stamp, ms in (
            (0, first, page_us, None),
            (1, np.ones(n_pages, bool), page_us, None),
            (2, scrolls, page_us + half * 1000, half),
            (3, leaves, page_us + r.gap * 1000 - 1, r.gap - half)):
        index = np.flatnonzero(mask)
        kinds.append(np.full(len(index), kind))
        pages.append(index)
        stamps.append(stamp[index])
        engaged.append(np.full(len(index), -1) if ms is None else ms[index])
    kind, page, stamp, engaged = (np.concatenate(x) for x in (kinds, pages, stamps, engaged))
    pinged = np.flatnonzero(consent[page])  # consent-mode pings repeat their page's events, anonymously
    kind, page, stamp, engaged = (np.concatenate([x, x[pinged]]) for x in (kind, page, stamp, engaged))
    anonymous = np.arange(len(kind)) >= len(kind) - len(pinged)
    order = np.lexsort((kind, stamp, anonymous))
    kind, page, stamp, engaged, anonymous = (x[order] for x in (kind, page, stamp, engaged, anonymous))
    n_events = len(kind)

    # page_location: the article's URL (or the home page) with one of the tracking suffixes
    article = r.article[page]
    suffix = rng.choice(len(_URL_SUFFIXES), size=n_events, p=_URL_SUFFIX_SHARES)
    sections = np.where(article >= 0, _section_of(r.topic[np.maximum(article, 0)]), len(SECTIONS) - 1)
    article_urls = np.char.add(np.char.add(_SITE, SECTIONS[:-1][:, None]), np.char.add("/", r.content_ids)[None, :])
    bases = np.concatenate([article_urls.ravel(), [_SITE]])
    base = np.where(article >= 0, sections * len(r.content_ids) + np.maximum(article, 0), len(bases) - 1)
    urls = np.char.add(np.repeat(bases, len(_URL_SUFFIXES)), np.tile(_URL_SUFFIXES, len(bases)))
    url = base * len(_URL_SUFFIXES) + suffix

    # event_params: ga_session_id, page_location, article_id (page_view of an article), engagement_time_msec
    with_article = (kind == 1) & (article >= 0)
    with_engaged = engaged >= 0
    n_params = 2 + with_article + with_engaged
    offsets = np.concatenate([[0], np.cumsum(n_params)])
    slot = offsets[:-1]
    key = np.zeros(offsets[-1], np.int32)
    string_index = np.full(offsets[-1], -1, np.int64)   # into [urls..., content ids...]
    int_value = np.zeros(offsets[-1], np.int64)
    has_int = np.zeros(offsets[-1], bool)
    key[slot], int_value[slot], has_int[slot] = 0, r.start[r.page_visitor[page]], True
    key[slot + 1], string_index[slot + 1] = 1, url
    article_slot = slot[with_article] + 2
    as_int = rng.random(len(article_slot)) < _INT_ARTICLE_ID_SHARE
    key[article_slot] = 2
    int_value[article_slot[as_int]] = r.content_ids[article[with_article][as_int]].astype(np.int64)
    has_int[article_slot[as_int]] = True
    string_index[article_slot[~as_int]] = len(urls) + article[with_article][~as_int]
    engaged_slot = offsets[1:][with_engaged] - 1
    key[engaged_slot], int_value[engaged_slot], has_int[engaged_slot] = 3, engaged[with_engaged], True

    strings = pa.DictionaryArray.from_arrays(
        pa.array(np.maximum(string_index, 0).astype(np.int32), mask=string_index < 0),
        _arrow(np.concatenate([urls, r.content_ids]), pa.string())).dictionary_decode()
    no_float = pa.nulls(offsets[-1], pa.float64())
    value = pa.StructArray.from_arrays(
        [strings, pa.array(int_value, mask=~has_int), no_float, no_float],
        names=["string_value", "int_value", "float_value", "double_value"])
    params = pa.StructArray.from_arrays([_strings(key, np.array(GA4_PARAMS)), value], names=["key", "value"])
    visitor = r.page_visitor[page]
    return pa.table({
        "event_date": _arrow(_dates(stamp // 10 ** 6), pa.string()),
        "event_timestamp": pa.array(stamp),
        "event_name": _strings(kind.astype(np.int32), np.array(GA4_EVENT_NAMES)),
        "event_params": pa.ListArray.from_arrays(_arrow(offsets, pa.int32()), params),
        "user_pseudo_id": pa.array(r.visitor_ids[visitor], pa.string(), mask=anonymous),
        "user_id": pa.nulls(n_events, pa.string()),
    })


def write_sample(path, scale=1.0, seed=0, schema="ga360"):
    """Generate the sample of ``schema`` (ga360 sessions or ga4 events) and write it to ``path`` (Parquet)
    atomically."""
    import pyarrow.parquet as pq

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    generate = generate_events if schema == "ga4" else generate_sessions
    start, table = time.time(), generate(scale, seed)
    print("      {:,} rows generated in {:.1f}s; writing them".format(table.num_rows, time.time() - start), flush=True)
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp)
    return path


def ensure_sample(path=None, scale=1.0, seed=0, schema="ga360"):
    """Return the path of the sample of ``schema`` for (scale, seed), generating it if missing."""
    path = path or default_sample_path(scale, seed, schema=schema)
    if not os.path.exists(path):
        print("Generating the {}-shaped sample (scale {:g}, seed {}) -> {}".format(
            "GA4" if schema == "ga4" else "GA360", scale, seed, path), flush=True)
        write_sample(path, scale, seed, schema)
    return path


def main(argv=None):
    """CLI: write the embedded GA360-shaped (or GA4-shaped) sample."""
    parser = flags.Parser(prog="python -m walsmf.sample", description=__doc__.split("\n\n")[0])
    parser.add_argument("--schema", choices=["ga360", "ga4"], default="ga360",
                        help="ga360: sessions with hits (the lab's); ga4: one row per event")
    flags.add_sample_arguments(parser)
    parser.add_argument("--output", help="Parquet file to write (default: %s)" % default_sample_path())
    args = parser.parse_args(argv)
    path = args.output or default_sample_path(args.scale, args.seed, schema=args.schema)
    check_writable(path, "--output", replaces=("a Parquet file", starts_with(b"PAR1")))
    print(write_sample(path, args.scale, args.seed, args.schema))


if __name__ == "__main__":
    run_cli(main)
