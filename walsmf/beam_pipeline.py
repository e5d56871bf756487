"""The data directory, written by an Apache Beam pipeline: DirectRunner here, Dataflow on Google Cloud.

    python -m walsmf.preprocess --runner DirectRunner --data_dir data
    python -m walsmf.preprocess --runner DataflowRunner --source bigquery --project P --region R \\
        --temp_location gs://B/tmp --data_dir gs://B/wals/data --setup_file ./setup.py

The same records as the in-process path (walsmf.preprocess), computed
without holding the data in one process: the median duration exactly (a
histogram of coarse buckets, then the values in the middle bucket), the
ratings, the ids numbered as the lab's order of appearance defines them
(items by contentId; users by their first contentId, then visitorId:
counted per first item, then ranked within it), and the files of the data
directory's contract, TFRecords as shards ``items_for_user-*`` and
``users_for_item-*``.  The lab's wals_tft notebook did this with
tf.Transform on Beam 2.9.
"""
import csv
import io
import json
import os

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions

from walsmf import datadir, progress, tfexample
from walsmf.errors import DataError
from walsmf.fileio import staged_directory, temporary_directory
from walsmf.local_export import run_local
from walsmf.queries import TIME_COLUMN, not_numeric
from walsmf.ratings import rating_of
from walsmf.sample import ensure_sample

# Durations are bucketed by their high bits to find the median's bucket.
_BUCKET_BITS = 16
EXTRACTED_FIELDS = ("visitorId", "contentId", "session_duration", TIME_COLUMN)


def csv_line(*fields):
    """One CSV line (quoted as pandas' to_csv quotes)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue()


def parse_extracted(line, n_fields=3):
    """(visitorId, contentId, session_duration, read_time or None) of one extracted CSV line of ``n_fields``
    (3, or 4 with read_time); None when the lab's query would have dropped it (no article, no positive
    duration)."""
    (fields,) = csv.reader([line])
    if len(fields) != n_fields:
        raise DataError("extracted CSV line {!r} does not have {} fields ({})".format(
            line[:200], n_fields, ",".join(EXTRACTED_FIELDS[:n_fields])))
    numbers = []
    for name, text in zip(EXTRACTED_FIELDS[2:], fields[2:]):
        try:
            numbers.append(_number(text))
        except ValueError:
            raise not_numeric(name, text)
    return _kept(fields[0], fields[1], numbers[0], numbers[1] if len(numbers) > 1 else None)


def _number(text):
    """A CSV number as the in-process path reads it: an int where integral, else the float; one that is not
    finite or past 2^63 is no reading time."""
    value = float(text)
    if not (abs(value) < 2.0 ** 63):
        raise DataError("session_duration {!r} is not a reading time: durations are milliseconds, finite and "
                        "below 2^63 (check the export's units)".format(text))
    return int(value) if value.is_integer() else value


def _summed(pair_and_reads):
    """One (visitor, article) row from all of the pair's: durations summed, the latest time kept (the lab's
    GROUP BY)."""
    (visitor, content), reads = pair_and_reads
    reads = list(reads)
    times = [t for _, t in reads if t is not None]
    return visitor, content, sum(d for d, _ in reads), max(times) if times else None


def _kept(visitor, content, duration, read_time=None):
    """The row, or None where the lab's query drops it (no visitor or article, no positive duration)."""
    return (visitor, content, duration, read_time) if visitor and content and duration > 0 else None


class _Median(beam.PTransform):
    """The exact median of a PCollection of numbers, as pandas computes it, in two passes."""

    def expand(self, durations):
        count = durations | "count" >> beam.combiners.Count.Globally()
        buckets = (durations | "bucket" >> beam.Map(lambda d: (int(d) >> _BUCKET_BITS, 1))
                   | "per bucket" >> beam.CombinePerKey(sum))
        middle = count | "middle buckets" >> beam.Map(_middle_buckets, beam.pvalue.AsList(buckets))
        values = (durations
                  | "in middle" >> beam.Filter(lambda d, keep: (int(d) >> _BUCKET_BITS) in keep["buckets"],
                                               beam.pvalue.AsSingleton(middle))
                  | "value" >> beam.Map(lambda d: (d, 1)) | "per value" >> beam.CombinePerKey(sum))
        return middle | "median" >> beam.Map(_median_from_values, beam.pvalue.AsList(values))


def _middle_buckets(n, bucket_counts):
    """The buckets holding ranks (n−1)//2 and n//2, and how many values lie below the first."""
    if n == 0:
        raise DataError("the query returned no (visitor, article) rows with a positive duration")
    ranks = ((n - 1) // 2, n // 2)
    below, keep, first_start = 0, set(), None
    for bucket, size in sorted(bucket_counts):
        if any(below <= r < below + size for r in ranks):
            keep.add(bucket)
            first_start = below if first_start is None else first_start
        below += size
    return {"n": n, "ranks": ranks, "buckets": keep, "start": first_start}


def _median_from_values(middle, value_counts):
    """The median from the distinct values (with counts) of the middle buckets."""
    values = np.repeat(*zip(*sorted(value_counts)))
    a, b = (values[r - middle["start"]] for r in middle["ranks"])
    return (float(a) + float(b)) / 2


def _number_users(first_item, offsets):
    """(visitorId, userId) for the visitors whose first contentId is ``first_item``."""
    content, visitors = first_item
    start = offsets[content]
    return [(visitor, start + rank) for rank, visitor in enumerate(sorted(visitors))]


def _user_offsets(first_counts):
    """userId of the first visitor of each first contentId: visitors counted per first item, in item order."""
    offsets, total = {}, 0
    for content, count in sorted(first_counts):
        offsets[content] = total
        total += count
    return offsets


def _example(key_and_entries):
    """The Example (key, indices ascending, values) of one user or item."""
    key, entries = key_and_entries
    entries = sorted(entries)
    return tfexample.encode_example(key, [i for i, _ in entries], np.array([v for _, v in entries], np.float32))


def build(pipeline, rows, data_dir, source, with_times):
    """Add the preprocessing to ``pipeline`` over ``rows`` of (visitorId, contentId, session_duration,
    read_time); ``with_times``: the rows have times, written to times.csv."""
    def write_text(pcoll, name, label, header=None, trailing_newline=True):
        return pcoll | label >> beam.io.WriteToText(os.path.join(data_dir, name), num_shards=1,
                                                    shard_name_template="", header=header,
                                                    append_trailing_newlines=trailing_newline)

    rows = (rows | "by pair" >> beam.Map(lambda r: ((r[0], r[1]), (r[2], r[3])))
            | "group pairs" >> beam.GroupByKey() | "sum pairs" >> beam.Map(_summed))
    if with_times:
        write_text(rows | "time lines" >> beam.Map(lambda r: csv_line(r[0], r[1], r[3])), datadir.TIMES_FILE,
                   "write times", header=",".join(datadir.TIMES_COLUMNS))

    median = rows | "durations" >> beam.Map(lambda r: r[2]) | "median" >> _Median()
    raw = rows | "rating" >> beam.Map(lambda r, m: (r[0], r[1], float(rating_of(r[2], m))),
                                      beam.pvalue.AsSingleton(median))
    write_text(raw | "raw lines" >> beam.MapTuple(lambda v, c, r: csv_line(v, c, repr(r))), datadir.RAW_FILE,
               "write collab_raw")

    contents = (rows | "contentIds" >> beam.Map(lambda r: r[1]) | "distinct items" >> beam.Distinct()
                | "all items" >> beam.combiners.ToList() | "item ids" >> beam.Map(
                    lambda ids: {content: n for n, content in enumerate(sorted(ids))}))
    item_ids = beam.pvalue.AsSingleton(contents)
    write_text(contents | "item lines" >> beam.FlatMap(lambda ids: [csv_line(c, n) for c, n in ids.items()]),
               datadir.ITEMS_FILE, "write items")

    first_item = (rows | "visitor, item" >> beam.Map(lambda r: (r[0], r[1]))
                  | "first item" >> beam.CombinePerKey(min))
    by_first = (first_item | "swap" >> beam.KvSwap() | "visitors per first item" >> beam.GroupByKey())
    offsets = (by_first | "count per first item" >> beam.MapTuple(lambda c, vs: (c, len(list(vs))))
               | "first counts" >> beam.combiners.ToList() | "offsets" >> beam.Map(_user_offsets))
    user_ids = by_first | "number users" >> beam.FlatMap(_number_users, beam.pvalue.AsSingleton(offsets))
    write_text(user_ids | "user lines" >> beam.MapTuple(lambda v, n: csv_line(v, n)), datadir.USERS_FILE,
               "write users")

    mapped = ({"user": user_ids, "reads": raw | "by visitor" >> beam.Map(lambda r: (r[0], (r[1], r[2])))}
              | "join users" >> beam.CoGroupByKey()
              | "mapped" >> beam.FlatMap(lambda kv, items: [
                  (kv[1]["user"][0], items[content], float(np.round(rating, 2)))
                  for content, rating in kv[1]["reads"]], item_ids))
    write_text(mapped | "mapped lines" >> beam.MapTuple(lambda u, i, r: csv_line(u, i, repr(r))),
               datadir.MAPPED_FILE, "write collab_mapped")

    by_user = (mapped | "key user" >> beam.MapTuple(lambda u, i, r: (u, (i, r)))
               | "group by user" >> beam.GroupByKey())
    by_item = (mapped | "key item" >> beam.MapTuple(lambda u, i, r: (i, (u, r)))
               | "group by item" >> beam.GroupByKey())
    for name, groups in ((datadir.ROWS_FILE, by_user), (datadir.COLS_FILE, by_item)):
        (groups | "encode " + name >> beam.Map(_example)
         | "write " + name >> beam.io.WriteToTFRecord(os.path.join(data_dir, name)))
    (by_user | "first users" >> beam.Filter(lambda kv: kv[0] < datadir.SUBSET_USERS)
     | "encode subset" >> beam.Map(_example)
     | "write subset" >> beam.io.WriteToTFRecord(os.path.join(data_dir, datadir.SUBSET_FILE), num_shards=1,
                                                 shard_name_template=""))

    counts = {
        "interactions": rows | "count rows" >> beam.combiners.Count.Globally(),
        "nusers": first_item | "count users" >> beam.combiners.Count.Globally(),
        "nitems": contents | "count items" >> beam.Map(len),
        "median_duration_ms": median,
    }
    metadata = (pipeline | "one" >> beam.Create([None])
                | "metadata" >> beam.Map(lambda _, **c: json.dumps(dict(c, source=source), indent=2,
                                                                    sort_keys=True),
                                         **{k: beam.pvalue.AsSingleton(v) for k, v in counts.items()}))
    # metadata.json byte for byte as datadir.write_metadata writes it: no newline after the object
    write_text(metadata, datadir.METADATA_FILE, "write metadata", trailing_newline=False)


def run(data_dir, source, read_rows, beam_args, with_times, log=progress.say):
    """Run the pipeline with ``beam_args`` (``--runner`` and its options) into ``data_dir``.

    ``read_rows(pipeline)`` returns the PCollection of extracted rows.
    """
    options = PipelineOptions(beam_args, save_main_session=False)
    with beam.Pipeline(options=options) as pipeline:
        build(pipeline, read_rows(pipeline), data_dir, source, with_times)
    log("Beam pipeline done ({})".format(options.get_all_options()["runner"] or "DirectRunner"))


def _rows_of_bigquery(row):
    """(visitorId, contentId, session_duration, read_time) of a BigQuery result row; None if the query would
    drop it."""
    visitor, content, duration, read_time = (row.get(c) for c in EXTRACTED_FIELDS)
    return _kept(None if visitor is None else str(visitor), None if content is None else str(content),
                 int(duration or 0), None if read_time is None else int(read_time))


def _csv_fields(path):
    """How many fields the extracted CSV's header names (3, or 4 with read_time), checked."""
    with tf.io.gfile.GFile(path) as f:
        header = next(csv.reader([f.readline()]), [])
    if tuple(header) not in (EXTRACTED_FIELDS[:3], EXTRACTED_FIELDS):
        raise DataError("{} does not start with the header {} (optionally ,{}): write it with 'python -m "
                        "walsmf.extract --output FILE'".format(path, ",".join(EXTRACTED_FIELDS[:3]), TIME_COLUMN))
    return len(header)


def preprocess(query, data_dir, runner, beam_args, extracted_csv=None, log=progress.say):
    """walsmf.preprocess --runner: read the rows ``query`` names (or ``extracted_csv``), run the pipeline on
    ``runner`` into ``data_dir``.

    A local data_dir is built beside the old one and swapped in when the
    pipeline succeeds; a gs:// one must not exist yet (there is no rename of
    a directory on Cloud Storage).
    """
    beam_args = ["--runner", runner] + list(beam_args)
    if query.project:
        beam_args += ["--project", query.project]
    remote = "://" in data_dir
    if runner == "DataflowRunner" and query.source == "local" and not (extracted_csv or "").startswith("gs://"):
        raise DataError("DataflowRunner's workers read from BigQuery (--source bigquery --project P) or a gs:// "
                        "--extracted_csv, not from this machine")
    query.check()
    with temporary_directory("walsmf-beam-") as workdir:
        if extracted_csv:
            csv_path = extracted_csv
        elif query.source == "local":
            sessions = query.sessions_file or ensure_sample(scale=query.scale, seed=query.seed, schema=query.schema)
            csv_path = run_local(query, sessions, os.path.join(workdir, "extracted.csv"))
            log("extracted with DuckDB into {}".format(csv_path))
        else:
            csv_path = None
        n_fields = len(EXTRACTED_FIELDS) if csv_path is None else _csv_fields(csv_path)

        def read_rows(pipeline):
            if csv_path is None:
                rows = pipeline | "query" >> beam.io.ReadFromBigQuery(query=query.sql(), use_standard_sql=True)
                return rows | "rows" >> beam.Map(_rows_of_bigquery) | "kept" >> beam.Filter(bool)
            lines = pipeline | "read" >> beam.io.ReadFromText(csv_path, skip_header_lines=1)
            return lines | "rows" >> beam.Map(parse_extracted, n_fields) | "kept" >> beam.Filter(bool)

        with_times = n_fields == len(EXTRACTED_FIELDS)
        if remote:
            if tf.io.gfile.exists(data_dir) and tf.io.gfile.listdir(data_dir):
                raise DataError("{} exists and is not empty: Beam writes a gs:// data directory fresh; name a "
                                "new one".format(data_dir))
            run(data_dir, query.source, read_rows, beam_args, with_times, log)
        else:
            with staged_directory(data_dir, datadir.METADATA_FILE, datadir.written_here) as staged:
                run(staged, query.source, read_rows, beam_args, with_times, log)
    metadata = datadir.read_metadata(data_dir)
    log("{nitems} items, {nusers} users, {interactions} interactions".format(**metadata))
    return metadata
