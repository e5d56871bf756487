"""Train WALS on the lab's TFRecords, export it and write batch predictions.

    python -m walsmf.task --input_path data --output_dir wals_trained [--num_epochs 5 ...]

The lab's flags and defaults; runs unchanged as an AI Platform training job
(`gcloud ai-platform jobs submit training --module-name walsmf.task ...`) or
`gcloud ai-platform local train`.
"""
import argparse
import json
import os

from walsmf.errors import DataError, run_cli

PRESETS = {
    # The lab's settings: contrib's defaults, no regularization.
    "lab": {},
    # Searched on a validation split of the lab-sized embedded sample (README,
    # "Recommendation quality"): fit reads rather than durations, 30 factors,
    # popular items weighted down, large batches; 20 epochs of batch 16,384
    # are about 14 sweeps.
    "tuned": {"target": "read", "n_embeds": 30, "regularization": 1.0, "unobserved_weight": 0.1,
              "col_weight_exp": 0.5, "batch_size": 16384, "num_epochs": 20},
}


def build_parser():
    """The trainer's flags (the lab's, then what the lab left at contrib defaults)."""
    parser = argparse.ArgumentParser(prog="python -m walsmf.task", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input_path", required=True,
                        help="directory (local or gs://) with items_for_user, users_for_item "
                             "(and metadata.json, users.csv, items.csv) from walsmf.preprocess")
    parser.add_argument("--output_dir", required=True,
                        help="model directory (local or gs://): checkpoints, export/Servo, batch_pred.txt")
    parser.add_argument("--num_epochs", type=float, default=5,
                        help="training length: train_steps = num_epochs·nusers/batch_size row batches; "
                             "each step is one batch of a sweep, so one epoch is about one "
                             "row sweep plus one column sweep when nitems is much smaller than nusers")
    parser.add_argument("--batch_size", type=int, default=512, help="rows (or columns) per training step")
    parser.add_argument("--n_embeds", type=int, default=10, help="embedding dimension (latent factors)")
    parser.add_argument("--nusers", type=int, help="number of users (default: from metadata.json)")
    parser.add_argument("--nitems", type=int, help="number of items (default: from metadata.json)")
    parser.add_argument("--topk", type=int, default=3, help="recommendations per user in batch_pred.txt")
    parser.add_argument("--job-dir", dest="job_dir", help="accepted (AI Platform passes it); unused")
    parser.add_argument("--regularization", type=float, default=None,
                        help="L2 regularization of the factors (lab: none)")
    parser.add_argument("--unobserved_weight", type=float, default=0.1,
                        help="weight of every unobserved (user, item) entry (contrib default 0.1)")
    parser.add_argument("--row_weight", type=float, default=1.0,
                        help="observed-entry weight factor of every user (contrib default 1)")
    parser.add_argument("--col_weight", type=float, default=1.0,
                        help="observed-entry weight factor of an item of average popularity (contrib default 1)")
    parser.add_argument("--col_weight_exp", type=float, default=0.0,
                        help="item weight = col_weight·(popularity/mean popularity)^-exp; 0 = uniform (lab)")
    parser.add_argument("--target", choices=["rating", "read"], default="rating",
                        help="what WALS fits for an observed (user, item): the lab's duration-based rating, "
                             "or 1 for every read (implicit feedback; finds held-out reads better, README)")
    parser.add_argument("--num_row_shards", type=int, default=1, help="shards of the user factors")
    parser.add_argument("--num_col_shards", type=int, default=1, help="shards of the item factors")
    parser.add_argument("--exclude_seen", action="store_true",
                        help="leave items a user already read out of batch_pred.txt (lab: kept)")
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed of the factors' initialization (default: none, as the lab)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="lab",
                        help="named set of the settings above; explicit flags override it")
    return parser


def resolve_args(argv=None):
    """Parse flags into the lab's args dict (presets, metadata, hyperparameter-tuning trial)."""
    import tensorflow as tf
    from walsmf.preprocess import read_metadata

    parser = build_parser()
    parser.set_defaults(**PRESETS[parser.parse_known_args(argv)[0].preset])
    args = vars(parser.parse_args(argv))
    if args["nusers"] is None or args["nitems"] is None:
        metadata = read_metadata(args["input_path"])
        args["nusers"] = args["nusers"] or metadata["nusers"]
        args["nitems"] = args["nitems"] or metadata["nitems"]
    for flag in ("nusers", "nitems", "batch_size", "n_embeds", "topk", "num_row_shards", "num_col_shards"):
        if args[flag] < 1:
            raise DataError("--{} must be a positive integer, got {}".format(flag, args[flag]))
    if args["num_epochs"] <= 0:
        raise DataError("--num_epochs must be positive, got {}".format(args["num_epochs"]))
    # Hyperparameter tuning: each trial writes to its own directory.
    trial = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("trial", "")
    if trial:
        args["output_dir"] = os.path.join(args["output_dir"], trial)
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.INFO)
    tf.get_logger().addFilter(quiet_tensorflow_log)
    return args


def quiet_tensorflow_log(record):
    """Keep TensorFlow's progress log readable: drop contrib's deprecation notices and its
    "Next fit step starting." line per step."""
    message = record.getMessage()
    return not ("is deprecated and will be removed" in message or message == "Next fit step starting.")


def show_recommendations(args, users=5):
    """Print the first users' recommendations, in original ids when available."""
    import tensorflow as tf
    from walsmf.model import BATCH_PRED_FILE, ORIGINAL_IDS_PRED_FILE

    for name in (ORIGINAL_IDS_PRED_FILE, BATCH_PRED_FILE):
        path = os.path.join(args["output_dir"], name)
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                lines = [next(f).rstrip("\n") for _ in range(min(users, args["nusers"]))]
            print("Top-{} recommendations for the first {} users ({}):".format(args["topk"], len(lines), path))
            print("\n".join("  " + line for line in lines))
            return


def main(argv=None):
    """CLI: train, export and batch-predict."""
    args = resolve_args(argv)
    from walsmf import evaluate, model
    model.train_and_evaluate(args)
    show_recommendations(args)
    if evaluate.has_heldout(args["input_path"]):
        metrics = evaluate.evaluate_model(args["output_dir"], args["input_path"])
        evaluate.write_hptuning_metric(args["output_dir"], metrics, model.training_schedule(args)[0])
        print(evaluate.format_table([("WALS on the held-out split", metrics)], 10))


if __name__ == "__main__":
    run_cli(main)
