"""The exported model: id-specific projections and top-k against numpy; local predict and gcloud."""
import io
import json
import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf
from helpers import ROOT, closed_form, gcloud_env, needs_gcloud, run_module

from walsmf import datadir, instances, modeldir, predict
from walsmf.errors import DataError


def export_dir(trained):
    return modeldir.latest_export(os.path.join(trained.output_dir, "export", "Servo"))


def exported(trained, name):
    return tf.train.load_variable(os.path.join(export_dir(trained), "variables", "variables"), name)


def dense_ratings(trained):
    """(ratings, observed) as dense matrices: a rating rounded to 0.00 is still observed."""
    ratings = np.zeros((trained.nusers, trained.nitems))
    observed = np.zeros(ratings.shape, bool)
    for record in tf.compat.v1.io.tf_record_iterator(os.path.join(trained.input_path, datadir.ROWS_FILE)):
        feature = tf.train.Example.FromString(record).features.feature
        key, items = feature["key"].int64_list.value[0], list(feature["indices"].int64_list.value)
        ratings[key, items] = feature["values"].float_list.value
        observed[key, items] = True
    assert (observed & (ratings == 0)).any()  # the small sample has such ratings
    return ratings, observed


def test_export_lives_where_the_lab_puts_it(trained):
    path = export_dir(trained)
    assert os.path.dirname(path) == os.path.join(trained.output_dir, "export", "Servo")
    assert os.path.basename(path).isdigit()
    assert modeldir.serving_info(path)["nusers"] == trained.nusers


def test_known_ids_are_answered_with_their_trained_factors_and_new_visitors_by_the_closed_form(trained):
    users, items = [0, 4, 5, trained.nusers - 1], [0, 4, trained.nitems - 1]
    u, v = exported(trained, "row_factors_shard_0"), exported(trained, "col_factors_shard_0")
    ratings, observed = dense_ratings(trained)
    histories = [{"items": [int(i) for i in np.flatnonzero(observed[user])],
                  "ratings": [float(r) for r in ratings[user][observed[user]]]} for user in users]
    out = predict.predict(export_dir(trained), [(user, -1) for user in users] + [(-1, i) for i in items] + histories)
    folded = closed_form(ratings, v, 0.1, np.ones(len(u)), np.ones(len(v)), observed=observed)
    for n, user in enumerate(users):
        np.testing.assert_allclose(out[n]["projection"], u[user], rtol=1e-6)
        assert out[n]["top_k_ids"] == list(np.argsort(-(v @ u[user]), kind="stable")[:3])
        np.testing.assert_allclose(out[n]["top_k_scores"], np.sort(v @ u[user])[::-1][:3], rtol=1e-5)
    for n, item in enumerate(items, len(users)):
        np.testing.assert_allclose(out[n]["projection"], v[item], rtol=1e-6)
        assert out[n]["top_k_ids"] == list(np.argsort(-(u @ v[item]), kind="stable")[:3])
    for n, user in enumerate(users, len(users) + len(items)):
        projection = np.array(out[n]["projection"])
        np.testing.assert_allclose(projection, folded[user], rtol=2e-3, atol=2e-4)
        assert out[n]["top_k_ids"] == list(np.argsort(-(v @ projection), kind="stable")[:3])
    # different ids, different answers (the lab's export gave every id the same)
    assert not np.allclose(out[1]["projection"], out[2]["projection"])


def test_closed_form_is_what_contribs_projection_computes_with_a_prepared_gramian(trained):
    """Grounds the numpy reference in TF's own WALS code (walsmf's formula is tested against it)."""
    u, v = exported(trained, "row_factors_shard_0"), exported(trained, "col_factors_shard_0")
    ratings, observed = dense_ratings(trained)
    rows = np.array([3, 4, 5])
    users, items = np.nonzero(observed[rows])
    with tf.Graph().as_default():
        wals = tf.contrib.factorization.WALSModel(len(u), len(v), u.shape[1], unobserved_weight=0.1,
                                                  row_init=u, col_init=v, row_weights=1.0, col_weights=1.0,
                                                  use_factors_weights_cache=False, use_gramian_cache=False)
        sparse = tf.SparseTensor(np.stack([rows[users], items], 1).astype(np.int64),
                                 ratings[rows][users, items].astype(np.float32), [len(u), len(v)])
        projection = wals.project_row_factors(sp_input=sparse)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            sess.run(wals.row_update_prep_gramian_op)
            contrib = sess.run(projection)
    expected = closed_form(ratings, v, 0.1, np.ones(len(u)), np.ones(len(v)), observed=observed)[rows]
    np.testing.assert_allclose(contrib, expected, rtol=2e-3, atol=2e-4)


def write_instances(tmp_path, lines):
    path = tmp_path / "input.json"
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.mark.parametrize("line, message", [
    ('{"userId": 4, "visitorId": "x"}', "name the visitor once: userId or visitorId"),
    ('{"userId": 4, "k": 0}', "k must be 1 to 2147483647"),
    ('{"userId": 4, "k": 9223372036854775808}', "k must be an integer of 64 bits"),
    ('{"userId": 4, "k": 2147483648}', "k must be 1 to 2147483647"),
    ('{"userId": 18446744073709551616}', "userId must be an integer of 64 bits"),
    ('{"visitorId": "\\ud800"}', "visitorId must be a string of UTF-8 text"),
    ('{"contentIds": ["a", "\\udfff"]}', "contentIds must be a list of contentIds"),
    pytest.param('[' * 100000 + ']' * 100000, "JSON nested too deeply", id="nested-deep"),
    ('{"userId": "4", "itemId": -1}', "userId must be an integer of 64 bits, got '4'"),
    ('{"userId": 4.5, "itemId": -1}', "userId must be an integer of 64 bits, got 4.5"),
    ('{"userId": 100000, "itemId": -1}', "userId 100000 out of range"),
    ('{"userId": -1, "itemId": 100000}', "itemId 100000 out of range"),
    ('[4, -1]', "must be a JSON object"),
    ('{"userId": 4, ', "not JSON"),
    ('{"visitorId": "a", "k": 2, "visitorId": "b"}', "the key 'visitorId' appears twice in one object"),
])
def test_bad_instances_are_named(trained, tmp_path, line, message):
    path = write_instances(tmp_path, ['{"userId": 1, "itemId": -1}', line])
    with pytest.raises(DataError) as refused:
        predict.main(["--model-dir", export_dir(trained), "--json-instances", str(path)])
    assert message in str(refused.value) and ("line 2" in str(refused.value) or "instance 2" in str(refused.value))


@pytest.mark.subprocess
def test_the_cli_says_a_bad_instance_in_one_error_line(trained, tmp_path):
    path = write_instances(tmp_path, ['{"userId": 1, "itemId": -1}', '{"userId": 4, "k": "3"}'])
    result = run_module("walsmf.predict", "--model-dir", export_dir(trained), "--json-instances", path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and lines[-1].startswith("error: ") and "line 2" in lines[-1]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_out_of_range_ids_are_refused_by_the_graph_too(trained):
    """A client that skips walsmf.predict's checks (gcloud) gets the graph's assertion."""
    from tensorflow.contrib import predictor
    predict_fn = predictor.from_saved_model(export_dir(trained))
    with pytest.raises(tf.errors.InvalidArgumentError, match="userId out of range"):
        predict_fn({"userId": np.array([trained.nusers]), "itemId": np.array([-1])})


@pytest.mark.subprocess
def test_predict_cli_prints_gclouds_table(trained, tmp_path):
    path = write_instances(tmp_path, ['{"userId": 4, "itemId": -1}', '{"userId": -1, "itemId": 4}'])
    result = run_module("walsmf.predict", "--model-dir", os.path.join(trained.output_dir, "export", "Servo"),
                        "--json-instances", path)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.strip().splitlines()
    assert header.split() == ["KNOWN_VISITOR", "PROJECTION", "TOP_K_CONTENT_IDS", "TOP_K_IDS", "TOP_K_SCORES",
                              "TOP_K_VISITOR_IDS", "UNKNOWN_CONTENT_IDS"] and len(rows) == 2
    assert result.stderr == ""  # no TensorFlow notice above the answer


def test_answers_come_a_batch_at_a_time_and_print_as_one_table_or_json_document(trained):
    export = modeldir.latest_export(export_dir(trained))
    info, predict_fn = modeldir.serving_info(export), predict.load(export)
    fed = []

    def counting(feed):
        fed.append({key: value.shape for key, value in feed.items()})
        return predict_fn(feed)
    checked = [{"userId": u} for u in range(5)] + [{"items": list(range(12)), "k": 2}, {"itemId": 3}]
    batched = list(predict.predictions(counting, checked, info, batch_size=3))
    assert [shapes["userId"] for shapes in fed] == [(3,), (3,), (1,)]
    assert fed[1]["items"] == (3, 12) and "items" not in fed[0]  # padded to its own batch's longest list
    whole = predict.run(predict_fn, checked, info)
    assert [p["top_k_ids"] for p in batched] == [p["top_k_ids"] for p in whole]
    np.testing.assert_allclose([p["projection"] for p in batched], [p["projection"] for p in whole], rtol=1e-5)
    out = io.StringIO()
    predict.write_json(batched, out)
    assert out.getvalue() == json.dumps({"predictions": batched}, indent=2) + "\n"
    # gcloud's table by hand: JSON cells, each column as wide as its widest cell or heading
    keys = sorted(batched[0])
    cells = [[key.upper() for key in keys]] + [[json.dumps(p[key]) for key in keys] for p in batched]
    widths = [max(len(row[c]) for row in cells) for c in range(len(keys))]
    assert predict.format_table(batched).splitlines() == [
        "  ".join(cell + " " * (width - len(cell)) for cell, width in zip(row, widths)).rstrip() for row in cells]


@pytest.mark.subprocess
@needs_gcloud
def test_gcloud_local_predict_returns_what_walsmf_predict_returns(trained, tmp_path):
    path = write_instances(tmp_path, ['{"userId": 4, "itemId": -1}', '{"userId": -1, "itemId": 4}',
                                      '{"userId": 0, "itemId": -1}'])
    gcloud = subprocess.run(["gcloud", "ai-platform", "local", "predict", "--model-dir", export_dir(trained),
                             "--json-instances", str(path), "--format", "json"], env=gcloud_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    assert gcloud.returncode == 0, gcloud.stderr[-2000:]
    ours = run_module("walsmf.predict", "--model-dir", export_dir(trained), "--json-instances", path,
                      "--format", "json")
    theirs, mine = json.loads(gcloud.stdout)["predictions"], json.loads(ours.stdout)["predictions"]
    assert [p["top_k_ids"] for p in theirs] == [p["top_k_ids"] for p in mine]
    for a, b in zip(theirs, mine):
        np.testing.assert_allclose(a["projection"], b["projection"], rtol=1e-6)


@pytest.mark.subprocess
@pytest.mark.training
@needs_gcloud
def test_gcloud_local_train_runs_the_module_unchanged(small_data, tmp_path):
    data_dir, metadata = small_data
    out = tmp_path / "job"
    result = subprocess.run(
        ["gcloud", "ai-platform", "local", "train", "--module-name", "walsmf.task", "--package-path", "walsmf",
         "--", "--input_path", data_dir, "--output_dir", str(out), "--num_epochs", "1", "--batch_size", "256"],
        cwd=ROOT, env=gcloud_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = (out / modeldir.BATCH_PRED_FILE).read_text().splitlines()
    assert len(lines) == metadata["nusers"] and all(len(line.split(",")) == 3 for line in lines)


@pytest.mark.training
def test_export_graph_does_not_grow_with_the_interactions(tmp_path):
    """Two models of one shape, 4x the interactions apart: the same saved_model.pb size, the interactions in assets."""
    from helpers import low_rank_ratings, write_matrix

    from walsmf import model, settings
    sizes = {}
    for density in (0.2, 0.9):
        data_dir, output_dir = tmp_path / "d{}".format(density), tmp_path / "m{}".format(density)
        ratings = low_rank_ratings(np.random.default_rng(0), density=density)
        write_matrix(str(data_dir), ratings)
        model.train_and_evaluate(settings.make(input_path=str(data_dir), output_dir=str(output_dir), num_epochs=1,
                                               batch_size=500, n_embeds=3, nusers=120, nitems=40, seed=0))
        export = modeldir.latest_export(str(output_dir / "export" / "Servo"))
        assets = sum(os.path.getsize(p) for p in tf.io.gfile.glob(os.path.join(export, "assets", "*")))
        sizes[density] = (os.path.getsize(os.path.join(export, "saved_model.pb")), assets, np.count_nonzero(ratings))
    (graph_small, assets_small, n_small), (graph_large, assets_large, n_large) = sizes[0.2], sizes[0.9]
    assert n_large > 3 * n_small
    assert abs(graph_large - graph_small) < 64 and graph_large < 1 << 20
    # each interaction is in the assets twice (by user, by item): 8-byte id and 4-byte value
    assert assets_large - assets_small == 2 * 12 * (n_large - n_small)


def test_the_docs_instance_table_is_the_schema():
    with open(os.path.join(ROOT, "docs", "serving.md")) as f:
        assert instances.schema_table() in f.read(), "print instances.schema_table() into docs/serving.md"


def test_the_exports_inputs_are_the_schemas_keys_with_their_types(trained):
    session = predict.load(export_dir(trained))
    kinds = {"int": tf.int64, "string": tf.string, "bool": tf.bool, "number": tf.float32}
    assert {name: (t.dtype, t.shape.ndims) for name, t in session.inputs.items()} == {
        key.name: (kinds[key.kind], 2 if key.is_list else 1) for key in instances.SCHEMA}


def test_instances_piped_on_standard_input_are_answered_as_a_files_are(trained, tmp_path, capsys):
    import threading

    from walsmf import predict

    export = os.path.join(trained.output_dir, "export", "Servo")
    lines = "".join(json.dumps({"userId": u}) + "\n" for u in range(5))
    (tmp_path / "instances.json").write_text(lines)
    pipe = str(tmp_path / "pipe")
    os.mkfifo(pipe)  # what /dev/stdin is when instances are piped in: readable once

    def write():
        with open(pipe, "w") as f:
            f.write(lines)
    writer = threading.Thread(target=write)
    writer.start()
    predict.main(["--model-dir", export, "--format", "json", "--json-instances", pipe])
    writer.join(timeout=30)
    piped = json.loads(capsys.readouterr().out)
    predict.main(["--model-dir", export, "--format", "json", "--json-instances", str(tmp_path / "instances.json")])
    assert piped == json.loads(capsys.readouterr().out) and len(piped["predictions"]) == 5
