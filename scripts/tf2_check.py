"""Answer a walsmf export's feeds with TensorFlow 2 (as TF Serving 2.x loads a SavedModel): run in a TF 2 Python.

    .venv-serve/bin/python scripts/tf2_check.py EXPORT_DIR FEEDS.json > ANSWERS.json

FEEDS.json is a list of feeds ({input: nested list}); each is answered twice, through
tf.compat.v1.saved_model.loader.load in a session (partial feeds allowed, as gcloud feeds) and, for feeds
that give every input, through tf.saved_model.load's serving_default signature.  Prints a list of
{"session": {output: value}, "signature": {output: value} or null}.
"""
import json
import sys

import numpy as np
import tensorflow as tf

DTYPES = {tf.int64: np.int64, tf.float32: np.float32, tf.bool: bool, tf.string: object}


def plain(value):
    value = np.asarray(value)
    if value.dtype == object:
        return np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(value).tolist()
    return value.tolist()


def main(export_dir, feeds_path):
    with open(feeds_path) as f:
        feeds = json.load(f)
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], export_dir)
    signature = meta.signature_def["serving_default"]
    inputs = {key: graph.get_tensor_by_name(info.name) for key, info in signature.inputs.items()}
    outputs = {key: graph.get_tensor_by_name(info.name) for key, info in signature.outputs.items()}
    loaded = tf.saved_model.load(export_dir)
    serving = loaded.signatures["serving_default"]
    answers = []
    for feed in feeds:
        arrays = {key: np.array(value, DTYPES[inputs[key].dtype]) for key, value in feed.items()}
        by_session = session.run(outputs, {inputs[key]: array for key, array in arrays.items()})
        by_signature = None
        if set(feed) == set(inputs):
            by_signature = serving(**{key: tf.constant(array, inputs[key].dtype) for key, array in arrays.items()})
        answers.append({"session": {k: plain(v) for k, v in by_session.items()},
                        "signature": None if by_signature is None else {k: plain(v.numpy())
                                                                        for k, v in by_signature.items()}})
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main(*sys.argv[1:])
