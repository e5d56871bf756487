"""Inputs a site really has, and odd files: duplicates summed, fractional and absurd durations, blank times,
ids beyond the id maps, a directory where a file belongs; each a correct result or one true error line."""
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from helpers import HAND_SESSIONS, event, run_in_process, run_module, write_events, write_sessions

from walsmf import datadir, extract, modeldir, predict, splits
from walsmf.errors import DataError


def bigquery_json(value):
    """``value`` as BigQuery's JSON export writes it: every integer (INT64) a JSON string."""
    if isinstance(value, dict):
        return {k: bigquery_json(v) for k, v in value.items()}
    if isinstance(value, (list, np.ndarray)):
        return [bigquery_json(v) for v in value]
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(value)
    return value


def write_bigquery_json(parquet, path):
    """The rows of a Parquet export as newline-delimited JSON in BigQuery's export layout."""
    records = pd.read_parquet(str(parquet)).to_dict(orient="records")
    path.write_text("".join(json.dumps(bigquery_json(r)) + "\n" for r in records))
    return path


@pytest.mark.parametrize("schema", ["ga360", "ga4"])
def test_bigquery_json_export_with_int64_as_strings_reads_as_its_parquet(tmp_path, schema):
    if schema == "ga360":
        parquet = write_sessions(tmp_path / "s.parquet", HAND_SESSIONS)
    else:
        parquet = write_events(tmp_path / "s.parquet", [
            event("A", 1704067200000000, "page_view", article_id=123, engagement_time_msec=5),
            event("A", 1704067201000000, "user_engagement", engagement_time_msec=1000),
            event("B", 1704067202000000, "page_view", article_id="9", engagement_time_msec=70)])
    ndjson = write_bigquery_json(parquet, tmp_path / "s.json")
    assert '"visitStartTime": "' in ndjson.read_text() or '"event_timestamp": "' in ndjson.read_text()
    query = extract.Query(schema=schema, content_param="article_id")
    from_json = extract.normalize_extracted(extract.run_local(query, str(ndjson)))
    from_parquet = extract.normalize_extracted(extract.run_local(query, str(parquet)))
    assert len(from_parquet) > 0
    pd.testing.assert_frame_equal(from_json, from_parquet)


def extracted(tmp_path, rows, name="rows.csv"):
    path = tmp_path / name
    pd.DataFrame(rows, columns=["visitorId", "contentId", "session_duration"]).to_csv(str(path), index=False)
    return path


def raw_ratings(data_dir):
    return {(v, c): r for v, c, r in pd.read_csv(str(data_dir / datadir.RAW_FILE), header=None,
                                                  dtype={0: str, 1: str}).itertuples(index=False)}


@pytest.mark.subprocess
def test_duplicate_pairs_are_summed_and_fractional_durations_kept_in_process_and_in_beam(tmp_path):
    pytest.importorskip("apache_beam")
    rows = [("a", "x", 1000), ("a", "x", 500.5), ("a", "y", 0.25), ("b", "x", 2000), ("b", "y", 700),
            ("c", "y", 1200), ("c", "x", 300)]
    path = extracted(tmp_path, rows)
    for runner in ([], ["--runner", "DirectRunner"]):
        out = tmp_path / ("beam" if runner else "in-process")
        result = run_module("walsmf.preprocess", "--extracted_csv", path, "--data_dir", out, *runner)
        assert result.returncode == 0, result.stderr[-2000:]
    # by hand: the pairs' durations a-x 1500.5, a-y 0.25, b-x 2000, b-y 700, c-y 1200, c-x 300: median 950
    durations = {("a", "x"): 1500.5, ("a", "y"): 0.25, ("b", "x"): 2000, ("b", "y"): 700, ("c", "y"): 1200,
                 ("c", "x"): 300}
    median = float(np.median(list(durations.values())))
    expected = {pair: min(0.3 * (1 + (d - median) / median), 1.0) for pair, d in durations.items()}
    for out in ("in-process", "beam"):
        got = raw_ratings(tmp_path / out)
        assert got.keys() == expected.keys(), out
        assert all(abs(got[p] - expected[p]) < 1e-12 for p in expected), out
        assert datadir.read_metadata(str(tmp_path / out))["interactions"] == 6
        assert datadir.read_metadata(str(tmp_path / out))["median_duration_ms"] == median


@pytest.mark.parametrize("value", ["99999999999999999999999", "inf", "-inf"])
def test_a_duration_that_is_no_reading_time_is_one_line(tmp_path, value):
    path = tmp_path / "rows.csv"
    path.write_text("visitorId,contentId,session_duration\na,x,1000\nb,x,{}\n".format(value))
    with pytest.raises(DataError, match="is not a reading time: durations are milliseconds"):
        extract.read_extracted_csv(str(path))


def test_a_directory_where_a_file_belongs_is_named(tmp_path):
    with pytest.raises(DataError, match="--extracted_csv .* is a directory"):
        extract.read_extracted_csv(str(tmp_path))
    with pytest.raises(DataError, match="--output .* is a directory"):
        extract.main(["--output", str(tmp_path), "--scale", "0.001"])


def test_a_blank_time_is_refused_not_taken_as_the_earliest(small_data, tmp_path):
    times = pd.read_csv(os.path.join(small_data[0], datadir.TIMES_FILE), dtype=str)
    times.loc[3, "time"] = ""
    times.to_csv(str(tmp_path / "times.csv"), index=False)
    with pytest.raises(DataError, match="is blank: give every read its time"):
        splits.write_split(small_data[0], str(tmp_path / "split"), times_csv=str(tmp_path / "times.csv"),
                           log=lambda _: None)
    assert not (tmp_path / "split").exists()


def test_a_tfrecord_set_both_whole_and_sharded_is_named(small_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_data[0], str(data))
    shutil.copy(str(data / datadir.ROWS_FILE), str(data / (datadir.ROWS_FILE + "-00000-of-00001")))
    with pytest.raises(DataError, match="holds both items_for_user and its shards items_for_user-\\*"):
        datadir.tfrecord_files(str(data), datadir.ROWS_FILE)


def test_a_corrupt_serving_info_is_one_line(trained, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(modeldir.latest_export(os.path.join(trained.output_dir, "export", "Servo")), str(export))
    (export / "assets.extra" / modeldir.SERVING_INFO_FILE).write_text("{not json")
    with pytest.raises(DataError, match="serving_info.json is not JSON .*: export the model again"):
        predict.predict(str(export), [{"userId": 1}])


@pytest.mark.training
def test_users_beyond_users_csv_train_and_get_the_most_read(small_data, tmp_path):
    data_dir, metadata = small_data
    out = tmp_path / "model"
    result = run_in_process("walsmf.task", "--input_path", data_dir, "--output_dir", out, "--num_epochs", 1,
                            "--batch_size", 256, "--nusers", metadata["nusers"] + 3, "--seed", 1)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = (out / modeldir.BATCH_PRED_FILE).read_text().splitlines()
    original = modeldir.read_original_ids_pred(str(out / modeldir.ORIGINAL_IDS_PRED_FILE))
    assert len(lines) == len(original) == metadata["nusers"] + 3
    readers = datadir.read_interactions(data_dir, metadata["nusers"], metadata["nitems"]).by_item.counts
    assert lines[-1] == ",".join(map(str, np.argsort(-readers, kind="stable")[:3]))
    assert original[-1][0] == "" and json.loads((out / modeldir.SERVING_INFO_FILE).read_text())["nusers"] == \
        metadata["nusers"] + 3


def test_many_visitors_and_articles_are_never_taken_for_duplicates():
    """Pair keys from small category codes: 500 visitors × 300 articles overflow 16 bits if not widened."""
    rng = np.random.default_rng(0)
    pairs = {(int(v), int(c)) for v, c in zip(rng.integers(0, 500, 40000), rng.integers(0, 300, 40000))}
    rows = pd.DataFrame([("v{}".format(v), "c{:03d}".format(c), 1000 + 7 * v + c) for v, c in sorted(pairs)],
                        columns=["visitorId", "contentId", "session_duration"])
    out = extract.normalize_extracted(rows)
    assert len(out) == len(pairs)
    assert sorted(zip(out["visitorId"], out["contentId"], out["session_duration"])) == sorted(
        zip(rows["visitorId"], rows["contentId"], rows["session_duration"]))


@pytest.mark.training
def test_a_model_of_other_settings_is_not_continued_and_unfinished_exports_are_swept(small_data, tmp_path):
    data_dir = small_data[0]
    out = tmp_path / "model"
    common = ["--input_path", data_dir, "--output_dir", out, "--batch_size", 256, "--seed", 1]
    assert run_in_process("walsmf.task", *common, "--num_epochs", 1).returncode == 0
    before = {name: (out / name).read_bytes() for name in (modeldir.BATCH_PRED_FILE,)}
    other = run_in_process("walsmf.task", *common, "--num_epochs", 1, "--regularization", 10, "--target", "read")
    lines = other.stderr.strip().splitlines()
    assert other.returncode == 1 and lines[-1].startswith("error: ") and "trained with other settings" in lines[-1]
    assert "regularization None (now 10.0)" in lines[-1] and "target 'rating' (now 'read')" in lines[-1]
    assert (out / modeldir.BATCH_PRED_FILE).read_bytes() == before[modeldir.BATCH_PRED_FILE]
    # the same settings go on training (more epochs), and a killed export's staging is removed
    stale = out / "export" / "Servo" / "temp-123"
    stale.mkdir(parents=True)
    (stale / "saved_model.pb").write_bytes(b"half")
    more = run_in_process("walsmf.task", *common, "--num_epochs", 2)
    assert more.returncode == 0, more.stderr[-2000:]
    assert not stale.exists()


def test_settings_past_what_a_graph_holds_or_an_output_dir_nobody_can_write_are_one_line(small_data, tmp_path):
    from walsmf import settings, trainer

    data_dir, metadata = small_data
    with pytest.raises(DataError, match="--n_embeds 100000 is more factors than a graph holds"):
        settings.validate(settings.make(input_path=data_dir, output_dir="o", nusers=10, nitems=10, n_embeds=100000))
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with pytest.raises(DataError, match="--output_dir .* cannot be written"):
        trainer.resolve(settings.make(input_path=data_dir, output_dir=str(blocked / "model")))
    # a directory of the lab's files alone: the counts come from the TFRecords
    lab = tmp_path / "lab"
    shutil.copytree(data_dir, str(lab))
    os.remove(str(lab / datadir.METADATA_FILE))
    resolved = trainer.resolve(settings.make(input_path=str(lab), output_dir=str(tmp_path / "m")))
    assert (resolved.nusers, resolved.nitems) == (metadata["nusers"], metadata["nitems"])


def test_a_truncated_export_asset_is_an_error_naming_it(trained, tmp_path):
    import tensorflow as tf

    export = tmp_path / "export"
    shutil.copytree(modeldir.latest_export(os.path.join(trained.output_dir, "export", "Servo")), str(export))
    asset = export / "assets" / "by_user.indices.int64"
    asset.write_bytes(asset.read_bytes()[:-80])
    with pytest.raises(tf.errors.InvalidArgumentError, match="asset.*by_user.*is truncated"):
        predict.predict(str(export), [{"userId": 1}])


@pytest.mark.training
def test_weights_that_leave_wals_singular_are_one_line_with_what_to_change(small_data, tmp_path):
    # an unobserved weight float32 loses beside the observed ones: a user with fewer reads than factors is undetermined
    result = run_in_process("walsmf.task", "--input_path", small_data[0], "--output_dir", tmp_path / "m",
                            "--num_epochs", 2, "--batch_size", 256, "--unobserved_weight", 1e-30, "--seed", 0)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and lines[-1].startswith("error: WALS's equations became singular")
    assert "--regularization" in lines[-1] and "Traceback" not in result.stderr


def test_re_preprocessing_never_deletes_what_the_user_keeps_in_the_data_dir(small_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_data[0], str(data))
    (data / "model").mkdir()
    (data / "model" / "checkpoint").write_text("mine")
    (data / "notes.txt").write_text("mine too")
    before = sorted(os.listdir(str(data)))
    result = run_in_process("walsmf.preprocess", "--scale", "0.001", "--data_dir", data)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and lines[-1].startswith("error: ") and "model, notes.txt" in lines[-1]
    assert "that walsmf did not write" in lines[-1] and sorted(os.listdir(str(data))) == before
    assert (data / "model" / "checkpoint").read_text() == "mine"
