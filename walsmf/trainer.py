"""What one `python -m walsmf.task` run does once its flags are parsed: resolve, train, report."""
import json
import os

import tensorflow as tf

from walsmf import cluster, metrics, model, modeldir, progress, splits
from walsmf import settings as settings_module
from walsmf.datadir import METADATA_FILE, data_counts
from walsmf.errors import DataError
from walsmf.fileio import check_writable, exclusive_directory, reading_directory, refuse_inside
from walsmf.modeldir import BATCH_PRED_FILE, ORIGINAL_IDS_PRED_FILE


def resolve(settings, trial=""):
    """Fill nusers/nitems from metadata.json, validate the settings, and give a tuning ``trial`` its own
    output_dir."""
    if tf.io.gfile.exists(os.path.join(settings.input_path, METADATA_FILE)):
        # fewer ids than the data's is an error of the counts, whatever else (the epochs, say) also looks wrong
        counts = data_counts(settings.input_path)
        for flag, ids in (("nusers", "users"), ("nitems", "items")):
            if getattr(settings, flag) is not None and getattr(settings, flag) < counts[flag]:
                raise DataError("--{} {} is fewer than the {:,} {} of {} (metadata.json): leave --{} out, or give "
                                "at least {}".format(flag, getattr(settings, flag), counts[flag], ids,
                                                     settings.input_path, flag, counts[flag]))
    if settings.nusers is None or settings.nitems is None:
        settings = settings.replace(**data_counts(settings.input_path, settings.nusers, settings.nitems))
    settings_module.validate(settings)
    if trial:
        settings = settings.replace(output_dir=os.path.join(settings.output_dir, trial))
    if tf.io.gfile.exists(settings.output_dir) and not tf.io.gfile.isdir(settings.output_dir):
        raise DataError("--output_dir {} is not a directory: name one (new, or one walsmf.task trained into)".format(
            settings.output_dir))
    refuse_inside(settings.output_dir, "--output_dir", settings.input_path, "--input_path", "a model")
    check_writable(settings.output_dir, "--output_dir", directory=True)
    modeldir.check_output_dir(settings.output_dir)
    return settings


def show_recommendations(settings, users=5):
    """Print the first users' recommendations, in original ids when available."""
    for name in (ORIGINAL_IDS_PRED_FILE, BATCH_PRED_FILE):
        path = os.path.join(settings.output_dir, name)
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                lines = [next(f).rstrip("\n") for _ in range(min(users, settings.nusers))]
            print("Top-{} recommendations for the first {} users ({}):".format(settings.topk, len(lines), path))
            print("\n".join("  " + line for line in lines))
            return


def run(settings, environ=os.environ):
    """Do this process's part of a training job with the parsed settings.

    Alone or as the cluster's primary: train, export and batch-predict (on a
    split, also score the held-out reads).  A parameter server serves the
    factor shards; workers and evaluators end (WALS trains on one replica).
    """
    progress.set_verbosity(settings.verbosity)
    me = cluster.role(environ)
    if me.kind != cluster.SINGLE:
        progress.say("walsmf: this process is the {}".format(me.describe()))
    if me.kind in (cluster.WORKER, cluster.EVALUATOR):
        progress.say("walsmf: WALS trains on the primary replica only (its factors on the parameter servers); this "
                     "{} has nothing to do and ends".format(me.kind))
        return
    # contrib.learn reads the cluster from TF_CONFIG: the primary as master, the PS tasks, nothing else
    environ["TF_CONFIG"] = json.dumps(me.estimator_tf_config())
    if me.kind == cluster.PS:
        cluster.serve_parameters(me)
        return
    settings = resolve(settings, me.trial)
    # the data stays as it was until batch prediction has read its id maps: a preprocess into it is refused
    with reading_directory(settings.input_path, METADATA_FILE), \
            exclusive_directory(settings.output_dir, "walsmf.task training"):
        try:
            model.train_and_evaluate(settings)
        except tf.compat.v1.train.NanLossDuringTrainingError:
            raise DataError("the loss became NaN while training: the float32 solves overflowed with --row_weight {}, "
                            "--col_weight {}, --col_weight_exp {}, --unobserved_weight {}, --regularization {}; use "
                            "smaller ones".format(settings.row_weight, settings.col_weight, settings.col_weight_exp,
                                                  settings.unobserved_weight, settings.regularization))
        except tf.errors.InvalidArgumentError as err:
            if "invertible" not in err.message:
                raise
            raise DataError("WALS's equations became singular while training ({}): these weights leave some "
                            "factors undetermined; add --regularization 0.1 (or more), or use milder "
                            "--row_weight/--col_weight/--col_weight_exp".format(err.message.splitlines()[0]))
    show_recommendations(settings)
    if splits.has_heldout(settings.input_path):
        scores = metrics.evaluate_model(settings.output_dir, settings.input_path)
        steps = model.training_schedule(settings)[0]
        metrics.write_hptuning_metric(settings.output_dir, scores, steps)
        metrics.report_hypertune_metric(scores, steps)
        print(metrics.format_table([("WALS on the held-out split", scores)], 10))
