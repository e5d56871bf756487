"""walsmf.refresh: new reads folded into a trained model. Old ids keep their numbers; an article's and a visitor's
folded-in factor is numpy's solve of WALS's equation with the other side fixed; untouched factors stay; the new
export knows the new visitors and articles; bad input is one error line and changes nothing."""
import os
import shutil
import signal

import numpy as np
import pandas as pd
import pytest
from helpers import assert_same_answers, closed_form, held_for_writing, run_module

from walsmf import datadir, model, modeldir, predict, recommend, refresh, settings
from walsmf.errors import run_cli
from walsmf.export_numpy import ExportAnswers
from walsmf.extract import read_extracted_csv
from walsmf.fileio import exclusive_directory
from walsmf.instances import check_instance


@pytest.fixture(scope="module")
def trained_once(small_data, tmp_path_factory):
    """A model trained on a copy of the small data, once for this module: its Settings."""
    where = tmp_path_factory.mktemp("refresh")
    data_dir = str(where / "data")
    shutil.copytree(small_data[0], data_dir)
    metadata = datadir.read_metadata(data_dir)
    args = settings.make(input_path=data_dir, output_dir=str(where / "model"), num_epochs=2, batch_size=64,
                         nusers=metadata["nusers"], nitems=metadata["nitems"], seed=3)
    model.train_and_evaluate(args)
    return args


@pytest.fixture
def trained_copy(trained_once, tmp_path):
    """A copy of that model and its data (a refresh grows both), its record naming the copied data: its Settings."""
    copy_model(trained_once, tmp_path / "trained")
    return trained_once.replace(input_path=str(tmp_path / "trained" / "data"),
                                output_dir=str(tmp_path / "trained" / "model"))


def copy_model(trained, where):
    """A copy of the trained model and its data directory under ``where`` (data/, model/), the copy's training
    record naming the copied data."""
    shutil.copytree(trained.input_path, str(where / "data"))
    shutil.copytree(trained.output_dir, str(where / "model"))
    modeldir.record_training(trained.replace(input_path=str(where / "data"), output_dir=str(where / "model")),
                             datadir.read_interactions(str(where / "data"), trained.nusers, trained.nitems))
    return where


def new_reads(trained, path, n=120, seed=0):
    """A CSV of reads: known visitors reading known and new articles, new visitors; with read times."""
    rng = np.random.RandomState(seed)
    visitors = datadir.read_id_map(os.path.join(trained.input_path, datadir.USERS_FILE))
    contents = datadir.read_id_map(os.path.join(trained.input_path, datadir.ITEMS_FILE))
    rows = [(visitors[rng.randint(len(visitors))] if n % 3 else "new-visitor-{}".format(n % 7),
             "new-article-{}".format(rng.randint(3)) if n % 4 == 0 else contents[rng.randint(len(contents))],
             int(rng.randint(1000, 300000)), 1700000000000 + n) for n in range(n)]
    pd.DataFrame(rows, columns=["visitorId", "contentId", "session_duration", "read_time"]).to_csv(path, index=False)
    return rows


def dense(data_dir, nusers, nitems):
    """The data directory's ratings as a dense matrix, and which entries are observed."""
    interactions = datadir.read_interactions(data_dir, nusers, nitems)
    ratings, observed = np.zeros((nusers, nitems)), np.zeros((nusers, nitems), bool)
    for user in range(nusers):
        begin, end = interactions.by_user.offsets[user], interactions.by_user.offsets[user + 1]
        ratings[user, interactions.by_user.indices[begin:end]] = interactions.by_user.values[begin:end]
        observed[user, interactions.by_user.indices[begin:end]] = True
    return ratings, observed


@pytest.mark.training
def test_a_refresh_keeps_old_ids_and_folds_in_each_new_id_by_the_wals_solve(trained_copy, tmp_path):
    trained = trained_copy
    before = modeldir.trained_factors(trained.output_dir)
    old_users = open(os.path.join(trained.input_path, datadir.USERS_FILE)).read()
    old_items = open(os.path.join(trained.input_path, datadir.ITEMS_FILE)).read()
    rows = new_reads(trained, str(tmp_path / "new.csv"))
    old_pred = {name: open(os.path.join(trained.output_dir, name)).read().splitlines()
                for name in (modeldir.BATCH_PRED_FILE, modeldir.ORIGINAL_IDS_PRED_FILE)}
    trained_export = modeldir.latest_export(os.path.join(trained.output_dir, modeldir.EXPORTS_DIR))
    export = refresh.refresh(trained.output_dir, read_extracted_csv(str(tmp_path / "new.csv")), log=lambda _: None)
    assert modeldir.latest_export(os.path.dirname(trained_export)) == export != trained_export

    users_csv = open(os.path.join(trained.input_path, datadir.USERS_FILE)).read()
    items_csv = open(os.path.join(trained.input_path, datadir.ITEMS_FILE)).read()
    assert users_csv.startswith(old_users) and items_csv.startswith(old_items)
    nusers, nitems = trained.nusers + 7, trained.nitems + 3
    assert datadir.read_metadata(trained.input_path)["nusers"] == nusers
    assert datadir.read_metadata(trained.input_path)["nitems"] == nitems
    after = modeldir.trained_factors(trained.output_dir)
    assert after.rows.shape == (nusers, trained.n_embeds) and after.cols.shape == (nitems, trained.n_embeds)

    visitors = list(datadir.read_id_map(os.path.join(trained.input_path, datadir.USERS_FILE)))
    contents = list(datadir.read_id_map(os.path.join(trained.input_path, datadir.ITEMS_FILE)))
    touched_users = sorted({visitors.index(v) for v, _, _, _ in rows})
    touched_items = sorted({contents.index(c) for _, c, _, _ in rows})
    untouched_users = np.setdiff1d(np.arange(trained.nusers), touched_users)
    untouched_items = np.setdiff1d(np.arange(trained.nitems), touched_items)
    np.testing.assert_array_equal(after.rows[untouched_users], before.rows[untouched_users])
    np.testing.assert_array_equal(after.cols[untouched_items], before.cols[untouched_items])

    # the articles against the visitors' factors before the refresh (new visitors zero), then the visitors
    ratings, observed = dense(trained.input_path, nusers, nitems)
    users_then = np.zeros((nusers, trained.n_embeds))
    users_then[:trained.nusers] = before.rows
    columns = closed_form(ratings.T, users_then, trained.unobserved_weight, np.ones(nitems), np.ones(nusers),
                          observed=observed.T)
    np.testing.assert_allclose(after.cols[touched_items], columns[touched_items], rtol=1e-4, atol=1e-6)
    rows_now = closed_form(ratings, after.cols.astype(np.float64), trained.unobserved_weight, np.ones(nusers),
                           np.ones(nitems), observed=observed)
    np.testing.assert_allclose(after.rows[touched_users], rows_now[touched_users], rtol=1e-4, atol=1e-6)

    # the new export knows the new ids, and its numpy answers are its graph's
    info = modeldir.serving_info(export)
    assert (info["nusers"], info["nitems"]) == (nusers, nitems)
    instances = [{"visitorId": "new-visitor-1"}, {"contentIds": ["new-article-2"]}, {"userId": 0}]
    answers = predict.predict(export, instances)
    assert answers[0]["known_visitor"] and answers[1]["unknown_content_ids"] == 0
    assert_same_answers(ExportAnswers(export, info).answer([check_instance(i, "i", info) for i in instances]),
                        answers)
    # batch prediction: the untouched visitors' lines as they were, the others' what ranking every visitor gives
    everyone = str(tmp_path / "everyone")
    shutil.copytree(trained.output_dir, everyone)
    grown = trained.replace(output_dir=everyone, nusers=nusers, nitems=nitems)
    recommend.batch_predict(grown, model.load_data(grown), log=lambda _: None)
    moved = sorted(set(touched_users) | set(range(trained.nusers, nusers)))
    for name in (modeldir.BATCH_PRED_FILE, modeldir.ORIGINAL_IDS_PRED_FILE):
        lines = open(os.path.join(trained.output_dir, name)).read().splitlines()
        assert len(lines) == nusers
        assert [lines[u] for u in untouched_users] == [old_pred[name][u] for u in untouched_users]
        ranked = open(os.path.join(everyone, name)).read().splitlines()
        assert [lines[u] for u in moved] == [ranked[u] for u in moved]


@pytest.mark.training
def test_reads_a_refresh_cannot_fold_in_are_one_error_line_and_nothing_changes(trained_copy, tmp_path, capsys):
    trained = trained_copy
    rows = new_reads(trained, str(tmp_path / "new.csv"))
    (tmp_path / "empty.csv").write_text("visitorId,contentId,session_duration\n")
    pd.DataFrame([("stranger-{}".format(n), "elsewhere-{}".format(n), 1000, 1750000000000) for n in range(5)],
                 columns=["visitorId", "contentId", "session_duration", "read_time"]).to_csv(
        tmp_path / "other_site.csv", index=False)
    pd.DataFrame([(v, c, d, 1000) for v, c, d, _ in rows], columns=["visitorId", "contentId", "session_duration",
                                                                    "read_time"]).to_csv(tmp_path / "old.csv",
                                                                                         index=False)
    # a read dated a century ahead (a wrong clock or unit) would stale every article and refuse every later refresh
    pd.DataFrame([(v, c, d, t + 100 * 365 * 86400000 * (n == 3)) for n, (v, c, d, t) in enumerate(rows)],
                 columns=["visitorId", "contentId", "session_duration", "read_time"]).to_csv(
        tmp_path / "future.csv", index=False)
    cases = [("empty.csv", "holds no"), ("other_site.csv", "is one the model knows"),
             ("old.csv", "older than the newest read the model was trained on (2017-"),
             ("future.csv", "future.csv: 1 read(s) are dated after now, e.g. visitor {} and content {} at 2123-".format(
                 *rows[3][:2]))]

    def listing():
        return [sorted(os.listdir(d)) + [open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))
                                         if os.path.isfile(os.path.join(d, f))]
                for d in (trained.output_dir, trained.input_path)]
    before = listing()

    def refused(*argv):
        """walsmf.refresh's CLI in this process: (exit code, what it printed on stderr)."""
        saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            with pytest.raises(SystemExit) as stopped:
                run_cli(refresh.main, ["--model_dir", trained.output_dir] + [str(a) for a in argv])
        finally:
            for number, handler in saved.items():
                signal.signal(number, handler)
        return stopped.value.code, capsys.readouterr().err
    for name, message in cases:
        code, err = refused("--extracted_csv", tmp_path / name)
        assert code == 1 and err.count("\n") == 1 and message in err, err
    code, err = refused()
    assert code == 1 and "no new reads: give --extracted_csv" in err
    with exclusive_directory(trained.output_dir, "another walsmf.refresh"):
        code, err = refused("--extracted_csv", tmp_path / "new.csv")
    assert code == 1 and "another walsmf.refresh" in err and err.count("\n") == 1
    # its data directory being written by another run (a preprocess into it, a refresh of another model on it)
    with held_for_writing(trained.input_path) as holder:
        code, err = refused("--extracted_csv", tmp_path / "new.csv")
    assert code == 1 and err == "error: {} is being written by another walsmf run (process {} walsmf; its lock {}): " \
        "wait for it to end, or write to another directory\n".format(
            trained.input_path, holder, os.path.join(os.path.dirname(trained.input_path), ".data.walsmf-lock")), err
    moved = str(tmp_path / "moved")
    shutil.move(trained.input_path, moved)
    code, err = refused("--extracted_csv", tmp_path / "new.csv")
    assert code == 1 and err.count("\n") == 1
    assert "holds no data directory now" in err and err.startswith("error: ")
    # the data preprocessed again since, its visitors numbered otherwise (two swapped, as many as before; then
    # fewer visitors than the model has): the model's factors are not theirs
    shutil.copytree(moved, trained.input_path)
    users = os.path.join(trained.input_path, datadir.USERS_FILE)
    lines = open(users).read().splitlines(keepends=True)
    first, second = (line.split(",")[0] for line in lines[:2])
    renumbered = [second + lines[0][len(first):], first + lines[1][len(second):]] + lines[2:]
    for users_lines, metadata in ((renumbered, {}), (lines[:-1], {"nusers": trained.nusers - 1})):
        open(users, "w").write("".join(users_lines))
        datadir.write_metadata(trained.input_path, dict(datadir.read_metadata(moved), **metadata))
        code, err = refused("--extracted_csv", tmp_path / "new.csv")
        assert code == 1 and err.count("\n") == 1, err
        assert err.startswith("error: {} is no longer the data {} was trained on (".format(
            trained.input_path, trained.output_dir)) and "python -m walsmf.task --input_path" in err, err
    shutil.rmtree(trained.input_path)
    shutil.move(moved, trained.input_path)
    assert listing() == before


@pytest.mark.training
def test_sweeps_after_the_fold_in_are_training_sweeps_from_the_folded_in_factors(trained_copy, tmp_path):
    trained = trained_copy
    other = copy_model(trained, tmp_path / "copy")
    new_reads(trained, str(tmp_path / "new.csv"))
    reads = read_extracted_csv(str(tmp_path / "new.csv"))
    refresh.refresh(trained.output_dir, reads, log=lambda _: None)
    folded = modeldir.trained_factors(trained.output_dir)
    # the same refresh with one sweep: every article against the folded-in visitors, then every visitor
    lines = []
    refresh.refresh(str(other / "model"), reads, log=lines.append, sweeps=1)
    assert any("sweep 1 of 1" in line for line in lines)
    swept = modeldir.trained_factors(str(other / "model"))
    nusers, nitems = folded.rows.shape[0], folded.cols.shape[0]
    ratings, observed = dense(str(other / "data"), nusers, nitems)
    columns = closed_form(ratings.T, folded.rows.astype(np.float64), trained.unobserved_weight, np.ones(nitems),
                          np.ones(nusers), observed=observed.T)
    rows = closed_form(ratings, columns, trained.unobserved_weight, np.ones(nusers), np.ones(nitems),
                       observed=observed)
    np.testing.assert_allclose(swept.cols, columns, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(swept.rows, rows, rtol=1e-3, atol=1e-5)
    assert not np.allclose(swept.rows, folded.rows, atol=1e-4)  # a sweep moves the untouched factors too


@pytest.mark.training
def test_keep_days_drops_the_older_reads_and_their_articles_are_no_longer_recommended(trained_copy, tmp_path):
    trained = trained_copy
    times = pd.read_csv(os.path.join(trained.input_path, datadir.TIMES_FILE), dtype={"visitorId": str,
                                                                                     "contentId": str})
    newest = int(times["time"].max())
    visitors = list(datadir.read_id_map(os.path.join(trained.input_path, datadir.USERS_FILE)))
    contents = list(datadir.read_id_map(os.path.join(trained.input_path, datadir.ITEMS_FILE)))
    pd.DataFrame({"visitorId": [visitors[0], "someone-new"], "contentId": [contents[0], contents[1]],
                  "session_duration": [60000, 60000], "read_time": [newest + 1000, newest + 2000]}).to_csv(
        str(tmp_path / "new.csv"), index=False)
    keep = (newest - times["time"].quantile(0.95)) / (86400 * 1000)  # about the last 5 % of the reads
    refresh.refresh(trained.output_dir, read_extracted_csv(str(tmp_path / "new.csv")), log=lambda _: None,
                    keep_days=keep)
    kept = pd.read_csv(os.path.join(trained.input_path, datadir.TIMES_FILE), dtype={"visitorId": str,
                                                                                    "contentId": str})
    bound = newest + 2000 - keep * 86400 * 1000
    expected = times[times["time"] >= bound]
    assert len(kept) == len(expected) + 2 and kept["time"].min() >= bound
    raw = pd.read_csv(os.path.join(trained.input_path, datadir.RAW_FILE), header=None, dtype=str)
    assert len(raw) == len(kept)
    # ids stay: every old visitor and article keeps its number; an article no one read in the window has no reader
    assert list(datadir.read_id_map(os.path.join(trained.input_path, datadir.ITEMS_FILE))) == contents
    gone = sorted(set(contents) - set(kept["contentId"]))
    assert gone
    recommended = {c for line in open(os.path.join(trained.output_dir, modeldir.ORIGINAL_IDS_PRED_FILE))
                   for c in line.rstrip("\n").split("\t")[1].split(",")}
    assert not recommended & set(gone)


@pytest.mark.training
def test_a_refresh_moves_the_blends_window_to_the_new_reads_each_counted_at_its_articles_rate(trained_copy, tmp_path):
    hours = 6
    blended = trained_copy.replace(output_dir=str(tmp_path / "blended"), popularity_weight=1.0,
                                   popularity_days=hours / 24, popularity_rate=True)
    model.train_and_evaluate(blended)
    new_reads(blended, str(tmp_path / "new.csv"))
    export = refresh.refresh(blended.output_dir, read_extracted_csv(str(tmp_path / "new.csv")), log=lambda _: None)
    # by hand from the grown data's times.csv: each article's reads of the last 6 hours times 6 over (the hours
    # since its first read, at most 6, plus one)
    times = pd.read_csv(os.path.join(blended.input_path, datadir.TIMES_FILE), dtype={"contentId": str})
    contents = list(datadir.read_id_map(os.path.join(blended.input_path, datadir.ITEMS_FILE)))
    newest = times["time"].max()
    recent = times[times["time"] >= newest - hours * 3.6e6]["contentId"].value_counts()
    since = np.minimum((newest - times.groupby("contentId")["time"].min()) / 3.6e6, hours)
    expected = (recent * hours / (since + 1)).reindex(contents).fillna(0).values
    assert 0 < (expected > 0).sum() < len(contents)
    np.testing.assert_allclose(modeldir.read_asset(export, modeldir.POPULARITY_FILE, np.dtype("<f4")), expected,
                               rtol=1e-6)
    assert modeldir.serving_info(export)["popularity_rate"] is True


# The line each stage of walsmf.refresh prints as it ends: the process is killed there, in the next stage.
REFRESH_STAGES = {"merging": "checked ", "folding in": "merged: ", "writing the model": "folded in ",
                  "batch prediction": "checkpoint and export "}


def refresh_signalled(trained, tmp_path, stage, signum):
    """Refresh ``trained`` with new reads, sending ``signum`` as ``stage`` begins: (the command, its exit code,
    its stderr lines)."""
    import subprocess
    import sys

    from helpers import ROOT

    new_reads(trained, str(tmp_path / "new.csv"))
    command = [sys.executable, "-m", "walsmf.refresh", "--model_dir", trained.output_dir, "--extracted_csv",
               str(tmp_path / "new.csv")]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               universal_newlines=True)
    for line in process.stdout:
        if REFRESH_STAGES[stage] in line:
            process.send_signal(signum)
            break
    process.stdout.read()
    said = process.stderr.read().strip().splitlines()
    return command, process.wait(), said


@pytest.mark.subprocess
@pytest.mark.training
@pytest.mark.parametrize("stage", [pytest.param(s, marks=() if s == "writing the model" else pytest.mark.slow)
                                   for s in REFRESH_STAGES])
def test_a_refresh_killed_at_any_stage_leaves_a_whole_model_and_data_and_runs_again(trained_copy, tmp_path, stage):
    import signal

    trained = trained_copy
    reference = copy_model(trained, tmp_path / "reference")
    command, ended, _ = refresh_signalled(trained, tmp_path, stage, signal.SIGKILL)
    assert ended == -signal.SIGKILL, "the refresh ended before {}".format(stage)
    # whole: the data directory reads with its own counts, the model's latest export answers, its factors load
    metadata = datadir.read_metadata(trained.input_path)
    interactions = datadir.read_interactions(trained.input_path, metadata["nusers"], metadata["nitems"])
    assert len(datadir.read_id_map(os.path.join(trained.input_path, datadir.USERS_FILE))) == metadata["nusers"]
    assert interactions.by_user.offsets[-1] == metadata["interactions"]
    export = modeldir.latest_export(os.path.join(trained.output_dir, modeldir.EXPORTS_DIR))
    info = modeldir.serving_info(export)
    assert ExportAnswers(export, info).answer([check_instance({"userId": 0}, "i", info)])[0]["top_k_ids"]
    modeldir.trained_factors(trained.output_dir)
    # and the same refresh run again gives what one uninterrupted refresh gives
    again = run_module(*command[2:])
    assert again.returncode == 0, again.stderr[-2000:]
    refresh.refresh(str(reference / "model"), read_extracted_csv(str(tmp_path / "new.csv")), log=lambda _: None)
    for name in (modeldir.BATCH_PRED_FILE, modeldir.ORIGINAL_IDS_PRED_FILE):
        assert open(os.path.join(trained.output_dir, name)).read() == open(str(reference / "model" / name)).read()
    for name in (datadir.USERS_FILE, datadir.ITEMS_FILE, datadir.MAPPED_FILE):
        assert open(os.path.join(trained.input_path, name)).read() == open(str(reference / "data" / name)).read()


@pytest.mark.subprocess
@pytest.mark.training
def test_ctrl_c_after_the_merge_says_the_data_holds_the_new_reads_and_to_run_again(trained_copy, tmp_path):
    import signal

    trained = trained_copy
    _, ended, said = refresh_signalled(trained, tmp_path, "batch prediction", signal.SIGINT)
    assert ended == 130 and said == [
        "error: interrupted after the new reads were merged into {}: run the same command again to finish the "
        "refresh (its checkpoint, export version and batch_pred.txt)".format(trained.input_path)]


@pytest.mark.training
def test_a_refresh_after_one_interrupted_past_its_merge_folds_in_the_ids_that_one_added(trained_copy, tmp_path):
    trained = trained_copy
    before = copy_model(trained, tmp_path / "before")
    first = new_reads(trained, str(tmp_path / "first.csv"))
    refresh.refresh(trained.output_dir, read_extracted_csv(str(tmp_path / "first.csv")), log=lambda _: None)
    # what a refresh interrupted after its merge leaves: the data grown, the model as it was trained
    shutil.rmtree(trained.output_dir)
    shutil.copytree(str(before / "model"), trained.output_dir)
    modeldir.record_training(trained, datadir.read_interactions(str(before / "data"), trained.nusers, trained.nitems))
    # then a refresh of other reads, not the interrupted one again
    visitors = list(datadir.read_id_map(os.path.join(trained.input_path, datadir.USERS_FILE)))
    contents = list(datadir.read_id_map(os.path.join(trained.input_path, datadir.ITEMS_FILE)))
    pd.DataFrame([(visitors[0], contents[0], 60000, 1700000009000)],
                 columns=["visitorId", "contentId", "session_duration", "read_time"]).to_csv(
        str(tmp_path / "second.csv"), index=False)
    refresh.refresh(trained.output_dir, read_extracted_csv(str(tmp_path / "second.csv")), log=lambda _: None)
    factors = modeldir.trained_factors(trained.output_dir)
    added_visitors = sorted({row[0] for row in first} - set(visitors[:trained.nusers]))
    added_articles = sorted({row[1] for row in first} - set(contents[:trained.nitems]))
    assert added_visitors and added_articles
    assert all(np.abs(factors.rows[visitors.index(v)]).sum() > 0 for v in added_visitors)
    assert all(np.abs(factors.cols[contents.index(c)]).sum() > 0 for c in added_articles)
