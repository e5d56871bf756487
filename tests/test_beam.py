"""The Beam pipeline (DirectRunner) writes the same data directory, record for record, as the in-process path."""
import collections
import csv
import os

import numpy as np
import pytest
import tensorflow as tf
from helpers import batch_pred, run_in_process, run_module

from walsmf import datadir
from walsmf.errors import DataError
from walsmf.extract import read_extracted_csv

beam = pytest.importorskip("apache_beam")
from walsmf import beam_pipeline  # noqa: E402 (needs apache_beam)


@pytest.fixture(scope="module")
def beam_data(small_sample, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("beam") / "data"
    result = run_module("walsmf.preprocess", "--sessions_file", small_sample, "--runner", "DirectRunner",
                        "--data_dir", data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return str(data_dir)


def csv_rows(data_dir, name):
    with open(os.path.join(data_dir, name)) as f:
        return collections.Counter(tuple(row) for row in csv.reader(f))


def tfrecords(data_dir, name):
    records = {}
    for path in datadir.tfrecord_files(data_dir, name):
        for record in tf.compat.v1.io.tf_record_iterator(path):
            feature = tf.train.Example.FromString(record).features.feature
            key = feature["key"].int64_list.value[0]
            assert key not in records
            records[key] = (list(feature["indices"].int64_list.value), list(feature["values"].float_list.value))
    return records


@pytest.mark.training
def test_beam_writes_the_in_process_records(beam_data, small_data):
    in_process = small_data[0]
    for name in (datadir.RAW_FILE, datadir.USERS_FILE, datadir.ITEMS_FILE, datadir.MAPPED_FILE):
        assert csv_rows(beam_data, name) == csv_rows(in_process, name), name
    for name in (datadir.ROWS_FILE, datadir.COLS_FILE, datadir.SUBSET_FILE):
        assert tfrecords(beam_data, name) == tfrecords(in_process, name), name
    assert datadir.read_metadata(beam_data) == datadir.read_metadata(in_process)
    with open(os.path.join(beam_data, datadir.METADATA_FILE), "rb") as beam_file, \
            open(os.path.join(in_process, datadir.METADATA_FILE), "rb") as in_process_file:
        assert beam_file.read() == in_process_file.read()
    # Beam's layout: TFRecord shards NAME-*, which the trainer reads
    assert not os.path.exists(os.path.join(beam_data, datadir.ROWS_FILE))
    assert datadir.tfrecord_files(beam_data, datadir.ROWS_FILE)[0].endswith("-of-00001")


@pytest.mark.training
def test_the_trainer_reads_beams_shards(beam_data, tmp_path, small_data):
    for name, data_dir in (("beam", beam_data), ("in-process", small_data[0])):
        result = run_in_process("walsmf.task", "--input_path", data_dir, "--output_dir", tmp_path / name,
                                "--num_epochs", 1, "--batch_size", 256, "--seed", 2)
        assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_array_equal(batch_pred(tmp_path / "beam"), batch_pred(tmp_path / "in-process"))


@pytest.mark.parametrize("values", [
    [5], [7, 3], [1, 2, 3, 4], [70000, 3, 3, 65536, 65535, 1 << 40, 2, 9],
    list(np.random.default_rng(0).integers(1, 1 << 24, size=1001)),
    list(np.random.default_rng(1).integers(1, 200, size=1000)),
])
def test_exact_median_in_two_passes_is_pandas_median(values):
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to
    with TestPipeline() as pipeline:
        median = pipeline | beam.Create([int(v) for v in values]) | beam_pipeline._Median()
        assert_that(median, equal_to([float(np.median(values))]))


def test_dataflow_cannot_read_this_machines_files(tmp_path):
    result = run_in_process("walsmf.preprocess", "--runner", "DataflowRunner", "--data_dir", tmp_path / "d")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: DataflowRunner's workers read from BigQuery")


@pytest.mark.parametrize("line, column, text", [("a,x,abc", "session_duration", "abc"),
                                                ("a,x,100,yesterday", "read_time", "yesterday")])
def test_beam_refuses_a_value_that_is_no_number_in_the_in_process_paths_words(tmp_path, line, column, text):
    header = "visitorId,contentId,session_duration" + (",read_time" if line.count(",") == 3 else "")
    path = tmp_path / "reads.csv"
    path.write_text(header + "\n" + line + "\n")
    with pytest.raises(DataError) as in_beam:
        beam_pipeline.parse_extracted(line, line.count(",") + 1)
    with pytest.raises(DataError) as in_process:
        read_extracted_csv(str(path))
    assert str(in_process.value) == "{}: {}".format(path, in_beam.value)
    assert str(in_beam.value).startswith("{} {!r} is not a number: give {} as numbers (".format(column, text, column))
