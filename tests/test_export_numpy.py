"""The export answered in numpy (what walsmf.serve runs) answers as the export's graph does, on every instance form,
with the lab's settings and with the blend, --exclude_seen, --target read and regularization; a known visitor's
answer is their batch_pred.txt line; an export without the fold-in's settings is answered by its graph."""
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from helpers import assert_same_answers, batch_pred

from walsmf import datadir, model, modeldir, predict, settings, versions
from walsmf.errors import DataError
from walsmf.export_numpy import ExportAnswers, answers_in_numpy
from walsmf.instances import check_instance


@pytest.fixture(scope="module")
def blended(small_data, tmp_path_factory):
    """The small data trained with every setting the answers depend on away from the lab's default
    (--max_age_days: the articles' median age, which leaves out the older half)."""
    data_dir, metadata = small_data
    times = pd.read_csv(os.path.join(data_dir, datadir.TIMES_FILE), dtype={"contentId": str})
    ages = (times["time"].max() - times.groupby("contentId")["time"].min()) / (86400 * 1000)
    args = settings.make(input_path=data_dir, output_dir=str(tmp_path_factory.mktemp("blended") / "out"),
                         num_epochs=2, batch_size=64, nusers=metadata["nusers"], nitems=metadata["nitems"], seed=2,
                         topk=4, exclude_seen=True, popularity_weight=0.3, popularity_days=1.0, target="read",
                         regularization=0.5, unobserved_weight=0.2, max_age_days=float(ages.median()))
    model.train_and_evaluate(args)
    return args


def instances_of_every_form(trained, seed):
    """The lab's, the site's ids, new visitors (with durations, ratings, unknown and empty contentIds),
    exclusions and k, and random known and new visitors."""
    visitors = datadir.read_id_map(os.path.join(trained.input_path, datadir.USERS_FILE))
    contents = [str(c) for c in datadir.read_id_map(os.path.join(trained.input_path, datadir.ITEMS_FILE))]
    rng = np.random.RandomState(seed)
    forms = [{"userId": 4, "itemId": -1}, {"userId": -1, "itemId": 4}, {"userId": -1, "itemId": 2, "excludeRead": True,
                                                                       "k": 6},
             {"visitorId": visitors[3], "k": 10}, {"visitorId": visitors[9], "contentIds": [contents[3]],
                                                   "excludeRead": True},
             {"visitorId": "new", "contentIds": [contents[1], "unknown", contents[7], ""],
              "durations": [1000, 20, 300000, 5]},
             {"items": [1, 2, 3], "ratings": [0.2, 0.5, 1.0]}, {"userId": 6, "k": 5, "exclude": [contents[0], "x"],
                                                               "excludeRead": False},
             {}, {"visitorId": "nobody"}, {"contentIds": contents[10:15], "k": 10 ** 4},
             {"userId": trained.nusers - 1, "k": 1}]
    for user in rng.randint(0, trained.nusers, 80):
        forms.append({"userId": int(user), "k": int(rng.randint(1, 12))})
    for n in range(40):
        reads = [contents[i] for i in rng.randint(0, len(contents), rng.randint(1, 8))]
        forms.append({"visitorId": "v{}".format(n), "contentIds": reads, "excludeRead": bool(n % 2),
                      "durations": [float(d) for d in rng.randint(0, 400000, len(reads))]})
    return forms


@pytest.mark.training
@pytest.mark.parametrize("which", ["trained", "blended"])
def test_the_numpy_answers_are_the_graphs_on_every_instance_form(which, request):
    trained = request.getfixturevalue(which)
    export = modeldir.latest_export(os.path.join(trained.output_dir, modeldir.EXPORTS_DIR))
    info = modeldir.serving_info(export)
    assert answers_in_numpy(info)
    forms = instances_of_every_form(trained, seed=len(which))
    checked = [check_instance(form, "instance", info) for form in forms]
    assert_same_answers(ExportAnswers(export, info).answer(checked), predict.predict(export, forms))


def test_a_k_past_the_ids_answers_at_most_the_ids_in_numpy_and_in_the_graph(trained):
    export = modeldir.latest_export(os.path.join(trained.output_dir, modeldir.EXPORTS_DIR))
    info = modeldir.serving_info(export)
    forms = [{"userId": 3, "k": 10 ** 6}, {"userId": -1, "itemId": 2, "k": 10 ** 6},
             {"visitorId": "new", "contentIds": [], "k": 10 ** 6}]
    graph = predict.predict(export, forms)
    numpy = ExportAnswers(export, info).answer([check_instance(form, "instance", info) for form in forms])
    assert_same_answers(numpy, graph)
    assert [len(answer["top_k_ids"]) for answer in numpy] == [trained.nitems, trained.nusers, trained.nitems]


@pytest.mark.training
@pytest.mark.parametrize("which", ["trained", "blended"])
def test_a_known_visitors_answer_is_their_batch_pred_line(which, request):
    trained = request.getfixturevalue(which)
    export = modeldir.latest_export(os.path.join(trained.output_dir, modeldir.EXPORTS_DIR))
    answers = ExportAnswers(export, modeldir.serving_info(export)).answer(
        [{"userId": user} for user in range(trained.nusers)])
    assert [answer["top_k_ids"] for answer in answers] == batch_pred(trained.output_dir).tolist()


def test_an_export_without_the_fold_in_settings_is_answered_by_its_graph(trained, tmp_path):
    export = modeldir.latest_export(os.path.join(trained.output_dir, modeldir.EXPORTS_DIR))
    older = str(tmp_path / "1500000000")
    shutil.copytree(export, older)
    info_path = os.path.join(older, "assets.extra", modeldir.SERVING_INFO_FILE)
    with open(info_path) as f:
        info = json.load(f)
    with open(info_path, "w") as f:
        json.dump({key: value for key, value in info.items() if key != "unobserved_weight"}, f)
    forms = instances_of_every_form(trained, seed=7)[:15]
    served = versions.Model(older)
    assert not answers_in_numpy(served.info)
    # the graph's own answers, to the last bit
    assert served.answer(forms) == predict.predict(older, forms)


def stale_items(data_dir, max_age_days):
    """The itemIds first read more than ``max_age_days`` before the data's newest read, from times.csv."""
    times = pd.read_csv(os.path.join(data_dir, datadir.TIMES_FILE), dtype={"contentId": str})
    items = {c: int(i) for c, i in pd.read_csv(os.path.join(data_dir, datadir.ITEMS_FILE), header=None,
                                               dtype={0: str}).values}
    first = times.groupby("contentId")["time"].min()
    return {items[c] for c, t in first.items() if t < times["time"].max() - max_age_days * 86400 * 1000}


@pytest.mark.training
def test_articles_older_than_max_age_days_are_in_no_answer_nor_batch_pred(blended):
    stale = stale_items(blended.input_path, blended.max_age_days)
    assert 0 < len(stale) < blended.nitems
    assert not stale & set(batch_pred(blended.output_dir).ravel().tolist())
    export = modeldir.latest_export(os.path.join(blended.output_dir, modeldir.EXPORTS_DIR))
    answers = predict.predict(export, instances_of_every_form(blended, seed=11))
    items_answered = {i for a, form in zip(answers, instances_of_every_form(blended, seed=11))
                      if form.get("itemId", -1) < 0 or form.get("userId", -1) >= 0 for i in a["top_k_ids"]}
    assert items_answered and not stale & items_answered


def test_max_age_days_keeps_an_article_first_read_exactly_that_long_before_the_newest_read(small_data):
    from walsmf import recency

    data_dir, metadata = small_data
    times = pd.read_csv(os.path.join(data_dir, datadir.TIMES_FILE))["time"]
    first = pd.read_csv(os.path.join(data_dir, datadir.TIMES_FILE), dtype={"contentId": str}).groupby(
        "contentId")["time"].min()
    edge = (times.max() - first.min()) / (86400 * 1000)  # the oldest article's age, in days
    assert recency.fresh_items(data_dir, metadata["nitems"], edge).all()
    just_under = recency.fresh_items(data_dir, metadata["nitems"], edge - 1e-3 / 86400)
    assert (~just_under).sum() == (first == first.min()).sum()
    youngest = (times.max() - first.max()) / (86400 * 1000)
    with pytest.raises(DataError, match=r"--max_age_days {} leaves no article .* the youngest was first read {:.2f} "
                                        r"days before the newest read".format(youngest / 2, youngest)):
        recency.fresh_items(data_dir, metadata["nitems"], youngest / 2)


def test_a_line_of_batch_pred_lists_only_what_qualifies():
    """Fewer than k items left to recommend (read, never read, too old): the line lists those, not the others."""
    from walsmf import recommend

    seen = datadir.CSR.from_triples([0, 0, 1, 2, 2, 2], [1, 3, 0, 0, 1, 2], np.ones(6), 3)
    offsets = np.array([0, 0, -np.inf, 0], np.float32)  # item 2: too old or no reader
    top = np.array([[0, 2, 1], [3, 1, 0], [3, 0, 1]])
    ok = recommend.qualifying(np.arange(3), top, offsets, seen)
    np.testing.assert_array_equal(ok, [[True, False, False], [True, True, False], [True, False, False]])
    names = np.array([["a", "b", "c"], ["d", "e", "f"], ["g", "h", "i"]], dtype=object)
    assert recommend._kept(names, ok) == [["a"], ["d", "e"], ["g"]]
    assert recommend.qualifying(np.arange(3), top).all()


@pytest.mark.parametrize("instance, message", [
    ({"userId": 1, "contentIds": ["a"]}, "contentIds describe a new visitor's reads, userId 1 asks for"),
    ({"itemId": 2, "contentIds": ["a"]}, "contentIds describe a new visitor's reads, itemId 2 asks for an item's"),
    ({"itemId": 2, "items": [1]}, "items describe a new visitor's reads, itemId 2"),
    ({"visitorId": "v", "itemId": 2}, "visitorId asks for a visitor's articles, itemId 2 for an item's readers"),
    ({"items": [1], "ratings": [1e300]}, "ratings must be a list of numbers within ±1e+06"),
    ({"items": [1], "ratings": [1e7]}, "ratings must be a list of numbers within ±1e+06"),
    ({"items": [1], "durations": [1e39]}, "durations must be a list of numbers within ±3.40282e+38"),
])
def test_instances_naming_two_subjects_or_numbers_float32_cannot_solve_are_refused(instance, message):
    from walsmf.errors import DataError
    from walsmf.instances import check_instance

    with pytest.raises(DataError) as refused:
        check_instance(instance, "instance 0", {"nusers": 5, "nitems": 5})
    assert str(refused.value).startswith("instance 0: " + message)
