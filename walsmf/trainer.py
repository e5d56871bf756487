"""What one `python -m walsmf.task` run does once its flags are parsed: resolve, train, report."""
import json
import math
import os

import tensorflow as tf

from walsmf import cluster, evaluate, model
from walsmf.datadir import BATCH_PRED_FILE, ORIGINAL_IDS_PRED_FILE, read_metadata
from walsmf.errors import DataError
from walsmf.fileio import exclusive_directory


def resolve(args, trial=""):
    """Fill nusers/nitems from metadata.json, check the values, and give a tuning ``trial`` its own output_dir."""
    if args.nusers is None or args.nitems is None:
        metadata = read_metadata(args.input_path)
        args = args.replace(nusers=metadata["nusers"] if args.nusers is None else args.nusers,
                            nitems=metadata["nitems"] if args.nitems is None else args.nitems)
    for flag in ("nusers", "nitems", "batch_size", "n_embeds", "topk", "num_row_shards", "num_col_shards"):
        if getattr(args, flag) < 1:
            raise DataError("--{} must be a positive integer, got {}".format(flag, getattr(args, flag)))
    for flag, ids in (("num_row_shards", "nusers"), ("num_col_shards", "nitems")):
        if getattr(args, flag) > getattr(args, ids):
            raise DataError("--{} {} is more shards than the {} {} ids: use at most {}".format(
                flag, getattr(args, flag), getattr(args, ids), ids[1:], getattr(args, ids)))
    if not (math.isfinite(args.num_epochs) and args.num_epochs > 0):
        raise DataError("--num_epochs must be a positive number, got {}".format(args.num_epochs))
    if model.training_schedule(args)[0] < 1:
        raise DataError("--num_epochs {} is less than one training step ({} users in batches of {}): use at "
                        "least {:.3g}".format(args.num_epochs, args.nusers, args.batch_size,
                                              0.5 * args.batch_size / args.nusers))
    for flag in ("unobserved_weight", "row_weight", "col_weight"):
        if not (math.isfinite(getattr(args, flag)) and getattr(args, flag) > 0):
            raise DataError("--{} must be a positive number (a weight of 0 leaves WALS's solve singular), "
                            "got {}".format(flag, getattr(args, flag)))
    if args.regularization is not None and not (math.isfinite(args.regularization) and args.regularization >= 0):
        raise DataError("--regularization must be 0 or more, got {}".format(args.regularization))
    if not math.isfinite(args.col_weight_exp):
        raise DataError("--col_weight_exp must be a number, got {}".format(args.col_weight_exp))
    if trial:
        args = args.replace(output_dir=os.path.join(args.output_dir, trial))
    if tf.io.gfile.exists(args.output_dir) and not tf.io.gfile.isdir(args.output_dir):
        raise DataError("--output_dir {} is a file: name a directory (new, or one walsmf.task trained into)".format(
            args.output_dir))
    return args


def quiet_tensorflow_log(record):
    """Keep TensorFlow's progress log readable: drop contrib's deprecation notices and its
    "Next fit step starting." line per step."""
    message = record.getMessage()
    return not ("is deprecated and will be removed" in message or message == "Next fit step starting.")


def show_recommendations(args, users=5):
    """Print the first users' recommendations, in original ids when available."""
    for name in (ORIGINAL_IDS_PRED_FILE, BATCH_PRED_FILE):
        path = os.path.join(args.output_dir, name)
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                lines = [next(f).rstrip("\n") for _ in range(min(users, args.nusers))]
            print("Top-{} recommendations for the first {} users ({}):".format(args.topk, len(lines), path))
            print("\n".join("  " + line for line in lines))
            return


def run(args, environ=os.environ):
    """Do this process's part of a training job with the parsed settings.

    Alone or as the cluster's primary: train, export and batch-predict (on a
    split, also score the held-out reads).  A parameter server serves the
    factor shards; workers and evaluators end (WALS trains on one replica).
    """
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.INFO)
    tf.get_logger().addFilter(quiet_tensorflow_log)
    me = cluster.role(environ)
    tf.compat.v1.logging.info("walsmf: this process is the %s", me.describe())
    if me.kind in (cluster.WORKER, cluster.EVALUATOR):
        tf.compat.v1.logging.info("walsmf: WALS trains on the primary replica only (its factors on the parameter "
                                  "servers); this %s has nothing to do and ends", me.kind)
        return
    # contrib.learn reads the cluster from TF_CONFIG: the primary as master, the PS tasks, nothing else
    environ["TF_CONFIG"] = json.dumps(me.estimator_tf_config())
    if me.kind == cluster.PS:
        cluster.serve_parameters(me)
        return
    args = resolve(args, me.trial)
    with exclusive_directory(args.output_dir, "walsmf.task training"):
        model.train_and_evaluate(args)
    show_recommendations(args)
    if evaluate.has_heldout(args.input_path):
        metrics = evaluate.evaluate_model(args.output_dir, args.input_path)
        steps = model.training_schedule(args)[0]
        evaluate.write_hptuning_metric(args.output_dir, metrics, steps)
        evaluate.report_hypertune_metric(metrics, steps)
        print(evaluate.format_table([("WALS on the held-out split", metrics)], 10))
