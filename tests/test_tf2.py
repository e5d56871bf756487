"""The export loads and answers in TensorFlow 2.21 (the serving environment, `make serve-env`) as in TF 1.15, through
a session (as gcloud feeds it) and through its serving_default signature given every input (as TF Serving 2.x and
Vertex's prebuilt tf2-cpu containers call it)."""
import json
import os
import subprocess

import numpy as np
import pytest
from helpers import ROOT, assert_same_answers, runtime_python

from walsmf import datadir, instances, modeldir, predict

INPUTS_1D = {"userId": -1, "itemId": -1, "visitorId": "", "excludeRead": False, "k": 3}
INPUTS_2D = ("items", "ratings", "contentIds", "durations", "exclude")


def full(feed):
    """A feed that gives every input (as TF Serving requires): the left-out ones at their defaults."""
    n = len(next(iter(feed.values())))
    out = dict(feed)
    for key, value in INPUTS_1D.items():
        out.setdefault(key, np.array([value] * n))
    for key in INPUTS_2D:
        out.setdefault(key, np.zeros((n, 0), np.float32 if key in ("ratings", "durations") else
                                     (np.int64 if key == "items" else object)))
    return out


def listed(feed):
    return {key: np.asarray(value).tolist() for key, value in feed.items()}


@pytest.mark.slow
@pytest.mark.subprocess
def test_tensorflow_2_answers_every_instance_form_as_tensorflow_1_does(trained, tmp_path):
    export = modeldir.latest_export(os.path.join(trained.output_dir, "export", "Servo"))
    info = modeldir.serving_info(export)
    visitors = datadir.read_id_map(os.path.join(trained.input_path, datadir.USERS_FILE))
    contents = datadir.read_id_map(os.path.join(trained.input_path, datadir.ITEMS_FILE))
    forms = [
        [{"userId": 4, "itemId": -1}, {"userId": -1, "itemId": 4}],               # the lab's
        [{"visitorId": visitors[3]}, {"visitorId": "new", "contentIds": [contents[1], "unknown", contents[7]],
                                      "durations": [1000, 20, 300000]}],
        [{"items": [1, 2, 3], "ratings": [0.2, 0.5, 1.0]}, {"userId": 6, "k": 5, "exclude": [contents[0]],
                                                           "excludeRead": True}],
    ]
    feeds = [instances.feed([instances.check_instance(i, "instance", info) for i in form], info) for form in forms]
    feeds += [full(feed) for feed in feeds]
    (tmp_path / "feeds.json").write_text(json.dumps([listed(feed) for feed in feeds]))
    tf2 = subprocess.run([runtime_python("tf2"), os.path.join(ROOT, "scripts",
                          "tf2_check.py"), export, str(tmp_path / "feeds.json")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True, timeout=600)
    assert tf2.returncode == 0, tf2.stderr[-3000:]
    answers = json.loads(tf2.stdout)
    predict_fn = predict.load(export)
    for number, (feed, answer) in enumerate(zip(feeds, answers)):
        tf1 = {key: predict._plain(value) for key, value in predict_fn(feed).items()}
        loaders = [answer["session"]] + ([answer["signature"]] if number >= len(forms) else [])
        assert number < len(forms) or answer["signature"] is not None
        for tf2_answer in loaders:
            assert_same_answers([tf2_answer], [tf1])
