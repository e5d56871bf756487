"""Fold new reads into a trained model: new visitors and articles get the next ids, their factors (and those of
the visitors and articles the reads touch) one exact WALS solve each, and a new export version.

    python -m walsmf.refresh --model_dir wals_trained --extracted_csv new_reads.csv

The reads are a CSV of visitorId,contentId,session_duration[,read_time] (what
``walsmf.extract --output`` writes), or the extraction query's rows from a
local export (``--sessions_file``) or BigQuery (``--source bigquery``, a date
window; GA4's ``events_intraday_*`` tables for today's reads).  The model directory records the data
directory it was trained on (training_settings.json); the refresh

1. rates the new reads with the training median (the lab's rule) and merges
   them into that data directory: old ids keep their numbers, new visitors
   and articles get the next ones (users.csv and items.csv only grow), a pair
   read again keeps its higher rating; the directory is rebuilt beside the
   old one and swapped in whole, as preprocessing does, the lines and records
   the new reads leave unchanged copied as bytes (walsmf.growth);
2. folds in: every article with a new read is solved against the visitors'
   factors (new visitors count with zero factors), then every visitor with a
   new read against the articles' factors so updated, each the closed-form
   WALS solve of training's equations (walsmf.export_numpy.fold_in); every
   other factor stays as it was;
3. writes a checkpoint of the grown model, a new export version
   ``export/Servo/<version>/`` (complete before it appears) and
   batch_pred.txt / batch_pred_original_ids.txt (the lines of the visitors
   folded in; every line after sweeps, --keep_days, or where the blend's
   popularity or --max_age_days moves every score), printing each stage's time.
"""
import contextlib
import json
import math
import os
import time

import numpy as np
import pandas as pd
import tensorflow as tf

from walsmf import datadir, flags, growth, model, modeldir, progress, recommend
from walsmf import settings as settings_module
from walsmf.errors import DataError, interrupted_line, run_cli
from walsmf.export_graph import observed_values
from walsmf.export_numpy import fold_in_many
from walsmf.extract import (
    TIME_COLUMN,
    add_source_arguments,
    check_times_past,
    extract,
    query_of,
    read_extracted_csv,
    utc_text,
)
from walsmf.fileio import atomic_write_text, exclusive_directory, staged_directory, writing_directory
from walsmf.ratings import rating_of
from walsmf.recency import of_reads
from walsmf.topk import rows_items


def trained_settings(model_dir):
    """The Settings a model directory was trained with (training_settings.json, serving_info.json), its data
    directory as input_path and itself as output_dir."""
    if not tf.io.gfile.isdir(model_dir):
        raise DataError("--model_dir {} {}: give the --output_dir of a walsmf.task training".format(
            model_dir, "is not a directory" if tf.io.gfile.exists(model_dir) else "does not exist"))
    record, info = modeldir.training_record(model_dir), modeldir.serving_info(model_dir)
    if not record.get("data_dir") or not info:
        raise DataError("{} does not record the data directory it was trained on: train it with python -m "
                        "walsmf.task (which records it), then refresh".format(model_dir))
    if not tf.io.gfile.exists(os.path.join(record["data_dir"], datadir.METADATA_FILE)):
        raise DataError("{} was trained on {}, which holds no data directory now: refresh needs the data the model "
                        "was trained on".format(model_dir, record["data_dir"]))
    metadata = datadir.read_metadata(record["data_dir"])
    changed = datadir.changed_id_maps(record["data_dir"], record.get("id_maps", {}))
    if changed or metadata.get("nusers", 0) < record["nusers"] or metadata.get("nitems", 0) < record["nitems"]:
        raise DataError("{} is no longer the data {} was trained on ({} renumbered: preprocessed again since): "
                        "train a model on it as it is (python -m walsmf.task --input_path {} --output_dir NEW), then "
                        "refresh that one".format(record["data_dir"], model_dir, " and ".join(changed) or "its ids",
                                                  record["data_dir"]))
    trained = {name: record[name] for name in modeldir.TRAINING_SETTINGS}
    served = {name: info.get(name) for name in ("topk", "exclude_seen", "popularity_weight", "popularity_days",
                                                 "max_age_days")}
    served["popularity_rate"] = bool(info.get("popularity_rate"))  # an export from before the rate has none
    return settings_module.make(input_path=record["data_dir"], output_dir=model_dir, **trained, **served)


def grown_factors(factors, settings, interactions):
    """``factors`` (modeldir.Factors) grown to ``settings``' id counts: zero factors for the new ids, the row weight
    for new users, every item's weight from its readers as training weighs them."""
    dim = factors.rows.shape[1]
    rows = np.zeros((settings.nusers, dim), np.float32)
    rows[:len(factors.rows)] = factors.rows
    cols = np.zeros((settings.nitems, dim), np.float32)
    cols[:len(factors.cols)] = factors.cols
    row_weights = np.full(settings.nusers, settings.row_weight, np.float32)
    row_weights[:len(factors.row_weights)] = factors.row_weights
    col_weights = model.item_weights(interactions.by_item.counts, settings.col_weight, settings.col_weight_exp)
    return modeldir.Factors(rows, cols, row_weights, col_weights)


def fold_in_side(own, other, csr, ids, own_weights, other_weights, settings):
    """Solve the factors of ``ids`` (rows of ``own``, in place) against ``other``'s, from their reads in ``csr``."""
    gramian = other.astype(np.float64).T @ other.astype(np.float64)
    ids = np.asarray(ids, np.int64)
    offsets = np.concatenate([[0], np.cumsum(csr.counts[ids])])
    own[ids] = fold_in_many(other, gramian, offsets, rows_items(csr.offsets, csr.indices, ids)[1],
                            rows_items(csr.offsets, csr.values, ids)[1], other_weights, own_weights[ids],
                            settings.unobserved_weight, settings.regularization)


def write_checkpoint(model_dir, factors, settings):
    """A checkpoint of the grown model beside the trained ones (the step after the recorded checkpoint's), every
    variable of that one kept, the factors', weights' and Gramians' grown or recomputed; returns its path."""
    last = modeldir.recorded_checkpoint(model_dir)
    reader = tf.train.load_checkpoint(last)
    step = int(reader.get_tensor("global_step")) + 1
    sides = {"row": (factors.rows, factors.row_weights, settings.num_row_shards, settings.nusers),
             "col": (factors.cols, factors.col_weights, settings.num_col_shards, settings.nitems)}
    values = {}
    for side, (side_factors, weights, shards, count) in sides.items():
        bounds = np.cumsum(model.shard_sizes(count, shards))[:-1]
        for number, (part, part_weights) in enumerate(zip(np.split(side_factors, bounds), np.split(weights, bounds))):
            values["{}_factors_shard_{}".format(side, number)] = part
            values["{}_weights_shard_{}".format(side, number)] = part_weights
        values[side + "_gramian"] = (side_factors.T @ side_factors).astype(np.float32)
    for name in reader.get_variable_to_shape_map():
        if name in values:
            continue
        value = reader.get_tensor(name)
        if name in ("processed_rows", "processed_cols"):  # a sweep's bookkeeping: the new ids not yet processed
            value = np.concatenate([value, np.zeros(sides[name[10:13]][3] - len(value), value.dtype)])
        values[name] = np.int64(step) if name == "global_step" else value
    graph = tf.Graph()
    with graph.as_default():
        feeds = {}
        variables = []
        for name, value in sorted(values.items()):
            feed = tf.compat.v1.placeholder(tf.as_dtype(np.asarray(value).dtype), np.shape(value))
            feeds[feed] = value
            variables.append(tf.compat.v1.Variable(feed, name=name))
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer(), feeds)
            return tf.compat.v1.train.Saver(variables, max_to_keep=None, save_relative_paths=True).save(
                session, os.path.join(model_dir, "model.ckpt"), global_step=step, write_meta_graph=False)


def check_new_reads(extracted, user_ids, item_ids, settings, ledger):
    """Refuse new reads a refresh cannot fold in: none of whose visitors or articles the model knows (another
    site's ids, or another schema's), or all older than the data's newest read (trained on already, or stale)."""
    if not ((user_ids < settings.nusers).any() or (item_ids < settings.nitems).any()):
        raise DataError("none of the {:,} new reads' visitors or articles is one the model knows: they are not this "
                        "site's reads of {} (another export, or --content_param); preprocess and train them "
                        "instead".format(len(extracted), settings.input_path))
    if ledger.time is not None:
        if TIME_COLUMN not in extracted:
            raise DataError("{} has read times ({}), the new reads have none: give the CSV its {} column".format(
                settings.input_path, datadir.TIMES_FILE, TIME_COLUMN))
        newest = ledger.time.max(initial=0)
        if extracted[TIME_COLUMN].max() < newest:
            raise DataError("all {:,} new reads are older than the newest read the model was trained on ({}): "
                            "they are in it already, or stale; give the reads since".format(len(extracted),
                                                                                         utc_text(newest)))


def check_flags(sweeps, keep_days):
    """Refuse a negative --sweeps or a --keep_days that is no number of days, before any work."""
    if sweeps < 0:
        raise DataError("--sweeps {} is not a number of sweeps: give 0 (the fold-in alone) or more".format(sweeps))
    if keep_days is not None and not (0 < keep_days < math.inf):
        raise DataError("--keep_days {} is not a number of days: give more than 0 (leave it out to keep every "
                        "read)".format(keep_days))


def refresh(model_dir, extracted, log=progress.say, sweeps=0, keep_days=None):
    """Fold the reads of ``extracted`` (checked rows, as walsmf.extract returns them) into the model of
    ``model_dir`` (see the module's docstring), then ``sweeps`` full WALS sweeps from the factors so found,
    keeping the reads of the last ``keep_days`` days only (None: all); return the new export's path."""
    check_flags(sweeps, keep_days)
    start = time.time()

    def stage(name):
        nonlocal start
        log("      {}: {:.1f}s".format(name, time.time() - start))
        start = time.time()
    with exclusive_directory(model_dir, "walsmf.refresh"), contextlib.ExitStack() as held:
        modeldir.remove_unfinished_writes(model_dir)  # a killed or disk-full run's temporaries
        recorded = modeldir.training_record(model_dir).get("data_dir")
        if recorded and tf.io.gfile.isdir(recorded):  # no other run replaces it from its first read to its swap
            held.enter_context(writing_directory(recorded))
        settings = trained_settings(model_dir)
        data_dir = settings.input_path
        metadata = datadir.read_metadata(data_dir)
        median = metadata.get("median_duration_ms")
        if not median:
            raise DataError("{} has no median read time (metadata.json): new reads' durations cannot be rated; "
                            "preprocess the data again".format(data_dir))
        known = [datadir.read_id_map(os.path.join(data_dir, name)) for name in (datadir.USERS_FILE, datadir.ITEMS_FILE)]
        ledger = growth.read_ledger(data_dir, *known)
        visitors, user_ids = growth.grown_ids(known[0], extracted["visitorId"].astype(str).values)
        contents, item_ids = growth.grown_ids(known[1], extracted["contentId"].astype(str).values)
        check_new_reads(extracted, user_ids, item_ids, settings, ledger)
        merged = growth.merge(ledger, user_ids, item_ids,
                              rating_of(extracted["session_duration"].values.astype(np.float64), median),
                              extracted[TIME_COLUMN].values if ledger.time is not None else None, len(contents),
                              keep_days)
        stage("checked {:,} new reads".format(len(extracted)))
        grown = settings.replace(nusers=len(visitors), nitems=len(contents))
        # the new reads' ids, and every id the recorded model has no factor for: ids a refresh interrupted after
        # its merge added, whether that refresh is run again or other reads come first
        touched = (np.union1d(user_ids, np.arange(settings.nusers, grown.nusers)),
                   np.union1d(item_ids, np.arange(settings.nitems, grown.nitems)))
        return _refresh(model_dir, settings, grown, metadata, ledger, merged, (visitors, contents), touched,
                        [len(ids) for ids in known], stage, sweeps, keep_days)


def _refresh(model_dir, settings, grown, metadata, ledger, merged, ids, touched, old_counts, stage, sweeps,
             keep_days):
    """The refresh's writing and solving, once the new reads are merged and checked (refresh's)."""
    pairs = growth.grown_ledger(ledger, merged)
    interactions = datadir.interactions_of(pd.DataFrame({"userId": pairs.user, "itemId": pairs.item,
                                                         "rating": np.round(pairs.rating, 2)}),
                                           grown.nusers, grown.nitems)
    with staged_directory(settings.input_path, datadir.METADATA_FILE, datadir.written_here) as staged:
        growth.write_grown(staged, settings.input_path, ledger, merged, pairs, *ids, interactions, old_counts)
        datadir.write_metadata(staged, dict(metadata, nusers=grown.nusers, nitems=grown.nitems,
                                            interactions=len(pairs.user), source="refresh"))
        stage("merged: {:,} new visitors, {:,} new articles, {:,} reads in all".format(
            grown.nusers - settings.nusers, grown.nitems - settings.nitems, len(pairs.user)))
        data = datadir.TrainingData(interactions, list(ids[0]), list(ids[1]), metadata["median_duration_ms"],
                                    *of_reads(pairs.item, pairs.time, grown.nitems, grown.popularity_days,
                                              grown.max_age_days, settings.input_path, grown.popularity_rate))
        # the model already holds these reads where a refresh of them was killed after writing the model: then
        # only its export and batch prediction are made again
        held = datadir.reads_fingerprint(interactions) == modeldir.training_record(model_dir).get(
            "reads_fingerprint")
        fitted = observed_values(interactions, settings.target)
        # from the checkpoint of the model as last trained or refreshed, not one a killed refresh left after it
        factors = grown_factors(modeldir.trained_factors(model_dir, modeldir.recorded_checkpoint(model_dir)), grown,
                                interactions)
        users, items = touched
        if not held:
            fold_in_side(factors.cols, factors.rows, fitted.by_item, items, factors.col_weights, factors.row_weights,
                         grown)
            fold_in_side(factors.rows, factors.cols, fitted.by_user, users, factors.row_weights,
                         factors.col_weights, grown)
            stage("folded in {:,} articles and {:,} visitors".format(len(items), len(users)))
        for sweep in range(0 if held else sweeps):  # training's sweeps, warm-started: every column, every row
            fold_in_side(factors.cols, factors.rows, fitted.by_item, np.arange(grown.nitems), factors.col_weights,
                         factors.row_weights, grown)
            fold_in_side(factors.rows, factors.cols, fitted.by_user, np.arange(grown.nusers), factors.row_weights,
                         factors.col_weights, grown)
            stage("sweep {} of {}".format(sweep + 1, sweeps))
    interrupted_line("error: interrupted after the new reads were merged into {}: run the same command again "
                     "to finish the refresh (its checkpoint, export version and batch_pred.txt)".format(
                         settings.input_path))
    # The data directory is swapped in first: it is what the model is refreshed from.  Killed after the swap, the
    # same refresh run again folds in from the recorded checkpoint again; killed after the model is recorded, it
    # writes the export and batch prediction; the export serving meanwhile is the previous one (a new version
    # appears only complete).
    if not held:
        modeldir.record_training(grown, interactions, write_checkpoint(model_dir, factors, grown))
    atomic_write_text(os.path.join(model_dir, modeldir.SERVING_INFO_FILE), json.dumps(modeldir.serving_info_of(grown)))
    export = model.export(factors, data, grown)
    stage("checkpoint and export {}".format(export))
    # only the visitors whose factors moved are ranked again, unless anyone's ranking moved: after sweeps, with
    # reads dropped (--keep_days: articles left unread), or with the blend's popularity or the fresh articles,
    # which move with every hour's reads
    moved = None if sweeps or keep_days or grown.popularity_weight or grown.max_age_days is not None else users
    ranked = recommend.batch_predict(grown, data, log=lambda _: None, users=moved)
    stage("batch prediction of {:,} visitors".format(ranked))
    return export


def main(argv=None):
    """CLI: fold new reads into a trained model."""
    parser = flags.Parser(prog="python -m walsmf.refresh", description=__doc__.split("\n\n")[0])
    flags.add_model_dir(parser, "the model to refresh (a walsmf.task --output_dir)", required=True)
    parser.add_argument("--extracted_csv",
                        help="the new reads: a CSV of visitorId,contentId,session_duration[,read_time], instead "
                             "of running the query on --sessions_file or BigQuery (--source bigquery with "
                             "--start_date/--end_date; GA4's events_intraday_* tables hold today's reads)")
    parser.add_argument("--sweeps", type=flags.integer, default=0,
                        help="after the fold-in, this many full WALS sweeps (every article, then every visitor) "
                             "from the current factors (default 0: the fold-in only; every factor may then move)")
    parser.add_argument("--keep_days", type=float,
                        help="keep only the reads of the last N days before the newest (needs read times): old "
                             "articles then have no reader and are not recommended (default: every read)")
    add_source_arguments(parser)
    args = parser.parse_args(argv)
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
    check_flags(args.sweeps, args.keep_days)
    query = query_of(args)
    if not (args.extracted_csv or args.sessions_file or args.source == "bigquery"):
        raise DataError("no new reads: give --extracted_csv FILE, --sessions_file EXPORT or --source bigquery "
                        "(the embedded sample holds no new reads)")
    trained_settings(args.model_dir)  # a model that cannot be refreshed is refused before any reads are read
    print("[refresh] {} with {}".format(args.model_dir, args.extracted_csv or query.describe()), flush=True)
    extracted = read_extracted_csv(args.extracted_csv) if args.extracted_csv else extract(query)
    check_times_past(extracted, args.extracted_csv or query.describe())
    print("      {:,} new reads".format(len(extracted)), flush=True)
    export = refresh(args.model_dir, extracted, sweeps=args.sweeps, keep_days=args.keep_days)
    print("[refresh] done: {}".format(export), flush=True)


if __name__ == "__main__":
    run_cli(main)
