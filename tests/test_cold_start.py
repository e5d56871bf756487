"""Ids without reads, and visitors the model has never seen."""
import json
import os
import subprocess

import numpy as np
import pytest
from helpers import batch_pred, closed_form, gcloud_env, low_rank_ratings, needs_gcloud, run_module, write_matrix

from walsmf import datadir, modeldir, predict, recommend
from walsmf.errors import DataError
from walsmf.ratings import MEDIAN_READ_RATING, rating_of

UNREAD_USERS, UNREAD_ITEMS = [0, 57, 119], [5, 39]


@pytest.fixture(scope="module")
def gappy(tmp_path_factory):
    """A model trained on data whose users 0, 57, 119 and items 5, 39 have no reads: (ratings, output_dir)."""
    ratings = low_rank_ratings(np.random.default_rng(4))
    ratings[UNREAD_USERS, :] = 0
    ratings[:, UNREAD_ITEMS] = 0
    assert (ratings != 0).sum(axis=1).min() == 0 and (ratings != 0).sum(axis=0)[UNREAD_ITEMS].max() == 0
    data_dir = tmp_path_factory.mktemp("gappy") / "data"
    write_matrix(str(data_dir), ratings)
    out = data_dir.parent / "model"
    # batch 16: 117 read users in 8 batches, 38 read items in 3; 22 epochs = 165 steps = 15 whole sweeps
    result = run_module("walsmf.task", "--input_path", data_dir, "--output_dir", out, "--batch_size", 16,
                        "--num_epochs", 22, "--n_embeds", 3, "--topk", 4, "--seed", 0, "--regularization", 0.1)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 users and 2 items have no interaction" in result.stdout
    return ratings, out


def test_ids_without_reads_train_with_zero_factors_and_the_rest_solved_exactly(gappy):
    ratings, out = gappy
    u, v = recommend.load_factors(str(out), "row"), recommend.load_factors(str(out), "col")
    assert not u[UNREAD_USERS].any() and not v[UNREAD_ITEMS].any()
    read = np.setdiff1d(np.arange(40), UNREAD_ITEMS)
    # the run ended on a full column sweep: every read item's factor is the exact solve for the final U
    expected = closed_form(ratings.T, u, 0.1, np.ones(40), np.ones(120), reg=0.1)
    np.testing.assert_allclose(v[read], expected[read], rtol=2e-3, atol=2e-4)


def test_users_without_reads_get_the_most_read_items_and_unread_items_are_never_recommended(gappy):
    ratings, out = gappy
    top = batch_pred(out)
    readers = (ratings != 0).sum(axis=0)
    most_read = np.argsort(-readers, kind="stable")[:4]
    assert (top[UNREAD_USERS] == most_read).all()
    assert not np.isin(top, UNREAD_ITEMS).any()
    u, v = recommend.load_factors(str(out), "row"), recommend.load_factors(str(out), "col")
    scores = u @ v.T
    scores[:, UNREAD_ITEMS] = -np.inf
    read_users = np.setdiff1d(np.arange(120), UNREAD_USERS)
    assert (top[read_users] == np.argsort(-scores[read_users], axis=1, kind="stable")[:, :4]).mean() > 0.99


def test_the_export_answers_ids_without_reads_as_batch_prediction_does(gappy):
    ratings, out = gappy
    unread_user, unread_item, read_item = predict.predict(str(out / "export" / "Servo"), [(0, -1), (-1, 5), (-1, 7)])
    assert unread_user["top_k_ids"] == list(batch_pred(out)[0]) and not np.any(unread_user["projection"])
    # an item no one read: the most active readers; and no one recommended who read nothing
    activity = (ratings != 0).sum(axis=1)
    assert unread_item["top_k_ids"] == list(np.argsort(-activity, kind="stable")[:4])
    assert not set(read_item["top_k_ids"]) & set(UNREAD_USERS)


def fitted_history(data_dir, user):
    """A user's item ids and the values WALS fitted for them."""
    interactions = datadir.read_interactions(str(data_dir), *(lambda m: (m["nusers"], m["nitems"]))(
        datadir.read_metadata(str(data_dir))))
    items, values = interactions.by_user.row(user)
    return [int(i) for i in items], [float(r) for r in values]


def test_a_known_visitor_gets_online_what_batch_pred_holds_by_userId_or_visitorId(trained):
    export = os.path.join(trained.output_dir, "export", "Servo")
    visitors = datadir.read_id_map(os.path.join(trained.input_path, datadir.USERS_FILE))
    contents = datadir.read_id_map(os.path.join(trained.input_path, datadir.ITEMS_FILE))
    by_user = predict.predict(export, [{"userId": u} for u in range(trained.nusers)])
    by_visitor = predict.predict(export, [{"visitorId": v} for v in visitors])
    expected = batch_pred(trained.output_dir)
    assert [p["top_k_ids"] for p in by_user] == expected.tolist()
    assert [p["top_k_ids"] for p in by_visitor] == expected.tolist()
    assert [p["top_k_content_ids"] for p in by_visitor] == [list(contents[row]) for row in expected]
    assert all(p["known_visitor"] for p in by_visitor)
    # an unknown visitorId is a new visitor: their contentIds decide; unknown contentIds are skipped and counted
    items, ratings = fitted_history(trained.input_path, 4)
    new, same = predict.predict(export, [
        {"visitorId": "never seen", "contentIds": [contents[i] for i in items] + ["no such article"],
         "ratings": ratings + [1.0]},
        {"items": items, "ratings": ratings}])
    assert not new["known_visitor"] and new["unknown_content_ids"] == 1
    assert new["top_k_ids"] == same["top_k_ids"]
    np.testing.assert_allclose(new["projection"], same["projection"], rtol=1e-6)


def test_k_and_exclusions_shape_the_answer(trained):
    export = os.path.join(trained.output_dir, "export", "Servo")
    contents = datadir.read_id_map(os.path.join(trained.input_path, datadir.ITEMS_FILE))
    u, v = recommend.load_factors(trained.output_dir, "row"), recommend.load_factors(trained.output_dir, "col")
    read, _ = fitted_history(trained.input_path, 4)
    ranked = [int(i) for i in np.argsort(-(v @ u[4]), kind="stable")]
    plain, longer, left_out, unread = predict.predict(export, [
        {"userId": 4}, {"userId": 4, "k": 6}, {"userId": 4, "k": 6, "exclude": [contents[ranked[0]]]},
        {"userId": 4, "k": 6, "excludeRead": True}])
    assert plain["top_k_ids"] == ranked[:3]  # in one batch with longer ones: its own k
    assert longer["top_k_ids"] == ranked[:6]
    assert left_out["top_k_ids"] == ranked[1:7]
    assert unread["top_k_ids"] == [i for i in ranked if i not in read][:6]
    assert plain["top_k_content_ids"] == [contents[i] for i in ranked[:3]] and len(plain["top_k_scores"]) == 3


def test_a_new_visitors_ratings_default_to_a_median_read_and_no_reads_get_the_most_read(trained):
    assert MEDIAN_READ_RATING == rating_of(1000.0, 1000.0)
    export = os.path.join(trained.output_dir, "export", "Servo")
    items, _ = fitted_history(trained.input_path, 4)
    # (one request gives ratings for every new visitor or for none, as gcloud's batching requires)
    unrated, nothing = predict.predict(export, [{"userId": -1, "itemId": -1, "items": items},
                                                {"userId": -1, "itemId": -1}])
    rated = predict.predict(export, [{"userId": -1, "itemId": -1, "items": items,
                                      "ratings": [MEDIAN_READ_RATING] * len(items)}])[0]
    assert unrated == rated
    readers = datadir.read_interactions(trained.input_path, trained.nusers, trained.nitems).by_item.counts
    assert nothing["top_k_ids"] == list(np.argsort(-readers, kind="stable")[:len(nothing["top_k_ids"])])


@pytest.mark.parametrize("line, message", [
    ('{"userId": 4, "itemId": -1, "items": [1]}', "items describe a new visitor's reads, userId 4 asks for a known "
                                                  "user's articles"),
    ('{"userId": -1, "itemId": -1, "items": [100000]}', "items must be a list of itemIds the model knows"),
    ('{"userId": -1, "itemId": -1, "items": [1, 2], "ratings": [1]}', "one per item"),
    ('{"userId": -1, "itemId": -1, "items": ["1"]}', "items must be a list"),
    ('{"userId": -1, "itemId": -1, "item": [1]}', "unknown key 'item'"),
])
def test_bad_new_visitor_instances_are_named(trained, tmp_path, line, message):
    path = tmp_path / "input.json"
    path.write_text('{"userId": 1, "itemId": -1}\n' + line + "\n")
    with pytest.raises(DataError) as refused:
        predict.main(["--model-dir", os.path.join(trained.output_dir, "export", "Servo"),
                      "--json-instances", str(path)])
    assert message in str(refused.value) and ("line 2" in str(refused.value) or "instance 2" in str(refused.value))


@pytest.mark.subprocess
@needs_gcloud
def test_gcloud_local_predict_answers_a_new_visitor_as_walsmf_predict_does(trained, tmp_path):
    items, ratings = fitted_history(trained.input_path, 4)
    path = tmp_path / "visitors.json"
    # one request: every instance has the same keys, lists padded with -1 to one length
    path.write_text("".join(json.dumps(i) + "\n" for i in (
        {"userId": -1, "itemId": -1, "items": items, "ratings": ratings},
        {"userId": 4, "itemId": -1, "items": [-1] * len(items), "ratings": [0.0] * len(items)})))
    export = os.path.join(trained.output_dir, "export", "Servo")
    result = subprocess.run(["gcloud", "ai-platform", "local", "predict", "--model-dir",
                             modeldir.latest_export(export), "--json-instances", str(path), "--format", "json"],
                            env=gcloud_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    theirs = json.loads(result.stdout)["predictions"]
    ours = predict.predict(export, [(4, -1)])[0]
    assert theirs[0]["top_k_ids"] == theirs[1]["top_k_ids"] == ours["top_k_ids"]
    np.testing.assert_allclose(theirs[0]["projection"], ours["projection"], rtol=1e-5, atol=1e-6)


def test_a_new_visitors_durations_are_rated_by_the_labs_rule_with_the_training_median(trained):
    export = os.path.join(trained.output_dir, "export", "Servo")
    median = datadir.read_metadata(trained.input_path)["median_duration_ms"]
    items, durations = [1, 4, 9], [900.0, 40000.0, 300000.0]
    by_duration, by_rating = predict.predict(export, [
        {"items": items, "durations": durations},
        {"items": items, "ratings": [float(rating_of(d, median)) for d in durations]}])
    assert by_duration["top_k_ids"] == by_rating["top_k_ids"]
    np.testing.assert_allclose(by_duration["projection"], by_rating["projection"], rtol=1e-5, atol=1e-7)
