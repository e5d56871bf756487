"""Careless and hostile input: one error line, and nothing of the user's deleted or corrupted."""
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from helpers import held_for_writing, low_rank_ratings, run_in_process, run_module, write_matrix

from walsmf import datadir, model, modeldir, settings, tfexample, trainer
from walsmf.errors import DataError
from walsmf.fileio import staged_directory


def snapshot(directory):
    return sorted((os.path.relpath(os.path.join(root, name), str(directory)),
                   open(os.path.join(root, name), "rb").read())
                  for root, _, names in os.walk(str(directory)) for name in names)


@pytest.mark.subprocess
def test_preprocess_never_replaces_a_directory_walsmf_did_not_write(tmp_path, small_sample):
    mine = tmp_path / "u"
    (mine / "sub").mkdir(parents=True)
    (mine / "important.txt").write_text("x")
    before = snapshot(tmp_path)
    result = run_module("walsmf.preprocess", "--sessions_file", small_sample, "--data_dir", mine)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: {} holds files walsmf did not write (it has no metadata.json): name another directory, or empty it "
        "first".format(mine)]
    assert snapshot(tmp_path) == before and sorted(os.listdir(str(tmp_path))) == ["u"]


@pytest.mark.parametrize("make", ["file", "symlink"])
def test_a_file_or_link_is_never_replaced_by_a_data_directory(tmp_path, make):
    target = tmp_path / "target"
    if make == "file":
        target.write_text("keep")
    else:
        (tmp_path / "elsewhere").mkdir()
        target.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DataError, match="exists and is not a directory walsmf wrote"):
        with staged_directory(str(target), datadir.METADATA_FILE, datadir.written_here):
            pass
    assert (target.read_text() == "keep") if make == "file" else target.is_symlink()
    assert [p for p in os.listdir(str(tmp_path)) if ".tmp-" in p] == []


def test_an_empty_directory_or_one_walsmf_wrote_is_replaced(tmp_path):
    for name, files in (("empty", {}), ("ours", {datadir.METADATA_FILE: "{}", datadir.RAW_FILE: "old"})):
        directory = tmp_path / name
        directory.mkdir()
        for file, text in files.items():
            (directory / file).write_text(text)
        with staged_directory(str(directory), datadir.METADATA_FILE, datadir.written_here) as staged:
            open(os.path.join(staged, "new.csv"), "w").close()
        assert os.listdir(str(directory)) == ["new.csv"]


@pytest.mark.parametrize("exchange", [True, False], ids=["one-step swap", "two renames"])
def test_a_replaced_directory_is_never_missing_where_the_system_swaps_in_one_step(tmp_path, monkeypatch, exchange):
    """The old directory is only removed once the new one is in place; with renameat2's exchange no instant
    finds neither (a process killed there leaves one of them); without it, two renames, the same result."""
    from walsmf import fileio
    directory = tmp_path / "data"
    directory.mkdir()
    (directory / datadir.METADATA_FILE).write_text("old")
    renames = []
    rename = os.rename
    monkeypatch.setattr(fileio.os, "rename", lambda a, b: renames.append((a, b)) or rename(a, b))
    if not exchange:
        monkeypatch.setattr(fileio, "_exchange", lambda first, second: False)
    removed = []
    rmtree = fileio.shutil.rmtree

    def remove(path, ignore_errors=False):
        if os.path.exists(path):  # when the old directory goes, the new one is already in place
            removed.append((open(os.path.join(path, datadir.METADATA_FILE)).read(),
                            (directory / datadir.METADATA_FILE).read_text()))
        rmtree(path, ignore_errors=ignore_errors)
    monkeypatch.setattr(fileio.shutil, "rmtree", remove)
    with staged_directory(str(directory), datadir.METADATA_FILE, datadir.written_here) as staged:
        open(os.path.join(staged, datadir.METADATA_FILE), "w").write("new")
    assert removed == [("old", "new")] and (directory / datadir.METADATA_FILE).read_text() == "new"
    assert len(renames) == (0 if exchange else 2)
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


@pytest.fixture
def matrix_dir(tmp_path):
    write_matrix(str(tmp_path / "d"), low_rank_ratings(np.random.default_rng(0), nusers=20, nitems=9))
    return str(tmp_path / "d")


@pytest.mark.parametrize("flags, message", [
    (["--num_row_shards", "21"], "--num_row_shards 21 is more shards than the 20 users ids: use at most 20"),
    (["--num_col_shards", "10"], "--num_col_shards 10 is more shards than the 9 items ids: use at most 9"),
    (["--regularization", "-1"], "--regularization -1 is outside [0, 1e+06]: give a value in that range"),
    (["--unobserved_weight", "0"], "--unobserved_weight 0 is outside (0, 1e+06]"),
    (["--col_weight", "nan"], "--col_weight nan is outside (0, 1e+06]"),
    (["--num_epochs", "inf"], "--num_epochs inf is outside (0, 1e+06]"),
    # finite numbers float32 cannot hold, or that overflow WALS's float32 solve into a NaN loss
    (["--row_weight", "1e40"], "--row_weight 1e+40 is outside (0, 1e+06]"),
    (["--regularization", "1e39"], "--regularization 1e+39 is outside [0, 1e+06]"),
    (["--col_weight_exp", "1000"], "--col_weight_exp 1000 is outside [-4, 4]"),
    (["--popularity_weight", "1e39"], "--popularity_weight 1e+39 is outside [0, 1000]"),
    (["--max_age_days", "1e300"], "--max_age_days 1e+300 is outside (0, 36500]"),
    (["--num_epochs", "0.01"], "--num_epochs 0.01 is less than one training step (20 users in batches of 8)"),
    (["--nusers", "0"], "--nusers 0 is fewer than the 20 users of"),
])
def test_settings_walsmf_cannot_train_are_refused(matrix_dir, tmp_path, flags, message):
    with pytest.raises(DataError) as error:
        trainer.resolve(settings.parse(["--input_path", matrix_dir, "--output_dir", str(tmp_path / "o"),
                                        "--batch_size", "8"] + flags))
    assert str(error.value).startswith(message)


def write_records(path, records):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for key, indices, values in records:
            writer.write(tfexample.encode_example(key, indices, values))


def test_a_record_with_more_values_than_indices_is_named(matrix_dir):
    write_records(os.path.join(matrix_dir, datadir.ROWS_FILE), [(0, [1], [0.5]), (1, [2], [0.5, 0.7])])
    with pytest.raises(DataError, match=r"items_for_user: the record of key 1 has 1 indices and 2 values"):
        datadir.read_interactions(matrix_dir, 2, 9)


@pytest.mark.training
def test_a_truncated_tfrecord_is_one_line_saying_regenerate(matrix_dir, tmp_path):
    path = os.path.join(matrix_dir, datadir.COLS_FILE)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
    result = run_in_process("walsmf.task", "--input_path", matrix_dir, "--output_dir", tmp_path / "o", "--batch_size",
                            8)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: {} is truncated or corrupt".format(path)) and "walsmf.preprocess" in last
    assert not (tmp_path / "o").exists()


def test_a_negative_id_is_not_called_a_small_vocabulary(matrix_dir):
    write_records(os.path.join(matrix_dir, datadir.ROWS_FILE), [(0, [-3], [0.5])])
    with pytest.raises(DataError, match=r"items_for_user: itemId -3 is negative"):
        datadir.read_interactions(matrix_dir, 1, 9)


@pytest.mark.subprocess
def test_sigterm_mid_preprocess_removes_the_staging_directory_and_a_killed_runs_is_swept(tmp_path, small_data):
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from helpers import ROOT

    from walsmf.sample import write_sample
    sample = write_sample(str(tmp_path / "s.parquet"), scale=0.3, seed=0)

    def staging():
        return [p for p in os.listdir(str(tmp_path)) if p.startswith(".d.tmp-")]
    for _ in range(3):  # the staging directory lives about 2 s: a run stopped after it is run again
        process = subprocess.Popen([sys.executable, "-m", "walsmf.preprocess", "--sessions_file", sample,
                                    "--data_dir", str(tmp_path / "d")], cwd=ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, universal_newlines=True)
        deadline = time.time() + 120
        while not staging() and process.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGSTOP)  # held where it is, so the SIGTERM lands while the directory is staged
        if staging():
            break
        process.send_signal(signal.SIGCONT)
        process.communicate(timeout=120)
        shutil.rmtree(str(tmp_path / "d"), ignore_errors=True)
    else:
        pytest.fail("three runs of preprocess were each past their staging directory when stopped")
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGCONT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted")
    assert sorted(os.listdir(str(tmp_path))) == ["s.parquet"]
    # what SIGKILL leaves behind is swept by the next run into the same parent
    (tmp_path / ".d.tmp-{}-abc".format(2 ** 22 + 12345)).mkdir()
    with staged_directory(str(tmp_path / "d"), datadir.METADATA_FILE, datadir.written_here):
        pass
    assert sorted(os.listdir(str(tmp_path))) == ["d", "s.parquet"]


def _in_a_staged_directory(tmp_path):
    with staged_directory(str(tmp_path / "d"), datadir.METADATA_FILE, datadir.written_here):
        pass


def _in_a_temporary_directory(tmp_path):
    from walsmf.fileio import temporary_directory
    with temporary_directory(".x-", str(tmp_path)):
        pass


def _serving_copies(tmp_path):
    from walsmf.versions import Snapshots
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"")  # an export's marker: the copies' root is made first
    Snapshots(str(tmp_path / "1"))


@pytest.mark.parametrize("make", [_in_a_staged_directory, _in_a_temporary_directory, _serving_copies])
def test_an_interrupt_as_a_temporary_directory_is_made_leaves_none_behind(tmp_path, monkeypatch, make):
    import atexit
    import signal
    import tempfile

    from walsmf import errors
    made, at_exit, mkdtemp = [], [], tempfile.mkdtemp

    def made_then_interrupted(*args, **kwargs):  # the worst moment: it exists, and its name is not yet returned
        made.append(mkdtemp(*args, **kwargs))
        os.kill(os.getpid(), signal.SIGTERM)
        return made[-1]
    monkeypatch.setattr(tempfile, "mkdtemp", made_then_interrupted)
    monkeypatch.setattr(atexit, "register", lambda function, *args: at_exit.append((function, args)))
    previous = signal.signal(signal.SIGTERM, errors._terminate)  # as run_cli sets it
    try:
        with pytest.raises(KeyboardInterrupt):
            make(tmp_path)
    finally:
        signal.signal(signal.SIGTERM, previous)
        errors._signalled.clear()
    for function, args in at_exit:  # what the process's exit runs
        function(*args)
    assert len(made) == 1 and not os.path.exists(made[0])


@pytest.mark.training
def test_a_second_training_into_a_busy_output_dir_refuses_naming_the_first(tmp_path):
    from walsmf.fileio import LOCK_FILE, exclusive_directory
    with exclusive_directory(str(tmp_path), "walsmf.task training"):
        assert (tmp_path / LOCK_FILE).read_text().split()[0] == str(os.getpid())
    assert not (tmp_path / LOCK_FILE).exists()
    # a lock file naming a live process that holds no lock (a killed run's pid, reused since; pid 1 lives as long
    # as the machine) is free; one held is refused, naming the holder and the lock file
    (tmp_path / LOCK_FILE).write_text("1 walsmf.task training\n")
    with exclusive_directory(str(tmp_path), "walsmf.task training"):
        with pytest.raises(DataError, match=r"is in use by another walsmf.task training \(process {} walsmf.task "
                                            r"training; its lock {}\)".format(os.getpid(), tmp_path / LOCK_FILE)):
            with exclusive_directory(str(tmp_path), "walsmf.task training"):
                pass
    assert not (tmp_path / LOCK_FILE).exists()
    # a file where the directory belongs is refused and left as it was
    (tmp_path / "model").write_text("mine\n")
    with pytest.raises(DataError, match=r"^{} exists and is not a directory: walsmf.refresh needs a directory "
                                        r"there".format(tmp_path / "model")):
        with exclusive_directory(str(tmp_path / "model"), "walsmf.refresh"):
            pass
    assert (tmp_path / "model").read_text() == "mine\n"


@pytest.mark.subprocess
def test_any_failure_is_one_error_line(capsys, monkeypatch):
    from walsmf.errors import DEBUG_ENV, run_cli

    def broken(argv):
        raise OSError(28, "No space left on device")
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(broken)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: OSError: [Errno 28] No space left on device (set WALSMF_DEBUG=1 for the traceback)"]


@pytest.mark.subprocess
@pytest.mark.training
def test_a_killed_training_resumes_to_the_same_final_step_with_an_export(small_data, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from helpers import ROOT, batch_pred
    data_dir, metadata = small_data
    out = tmp_path / "out"
    command = [sys.executable, "-m", "walsmf.task", "--input_path", data_dir, "--output_dir", str(out),
               "--num_epochs", "400", "--batch_size", "16", "--seed", "3"]
    run = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and run.poll() is None:
        checkpoint = tf.train.latest_checkpoint(str(out))
        if checkpoint and int(checkpoint.rsplit("-", 1)[1]) > 0:
            break
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = int(tf.train.latest_checkpoint(str(out)).rsplit("-", 1)[1])
    assert not (out / modeldir.BATCH_PRED_FILE).exists()
    again = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert again.returncode == 0, again.stderr[-2000:]
    args = settings.make(input_path=data_dir, output_dir=str(out), nusers=metadata["nusers"],
                         nitems=metadata["nitems"], num_epochs=400, batch_size=16)
    final = tf.train.latest_checkpoint(str(out))
    assert 0 < killed_at < model.training_schedule(args)[0] == int(final.rsplit("-", 1)[1])
    assert tf.io.gfile.glob(str(out / "export" / "Servo" / "*" / "saved_model.pb"))
    assert batch_pred(out).shape == (metadata["nusers"], 3)


def test_odd_files_and_values_are_one_line_saying_what_to_do(trained, tmp_path):
    from walsmf import predict, sample
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"userId": 4, "itemId": -1, "x": "\xff"}\n')
    with pytest.raises(DataError, match="not UTF-8 text"):
        predict.read_instances(str(bad))
    export = tmp_path / "export"
    import shutil
    shutil.copytree(modeldir.latest_export(os.path.join(trained.output_dir, "export", "Servo")), str(export))
    (export / "saved_model.pb").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable SavedModel.*export it again"):
        predict.predict(str(export), [(4, -1)])
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(DataError, match="is not a directory: name one"):
        trainer.resolve(trained.replace(output_dir=str(tmp_path / "a_file")))
    for scale in (0, -1, float("nan")):
        with pytest.raises(DataError, match="is not a size"):
            sample.generate_sessions(scale=scale)
    with pytest.raises(DataError, match="negative"):
        sample.generate_sessions(scale=0.001, seed=-1)
    meta = tmp_path / "d"
    meta.mkdir()
    for text, message in (('{"nusers": ', "is not JSON"), ('{"nusers": "x", "nitems": 3}', "nusers is 'x'"),
                          ("[1, 2]", "no JSON object"), ('{"nusers": 0, "nitems": 3}', "not a positive count")):
        (meta / datadir.METADATA_FILE).write_text(text)
        with pytest.raises(DataError, match=message):
            datadir.read_metadata(str(meta))


def test_more_factors_than_items_without_regularization_is_refused_before_training(tmp_path):
    write_matrix(str(tmp_path / "d"), low_rank_ratings(np.random.default_rng(3), nusers=30, nitems=6))
    args = settings.make(input_path=str(tmp_path / "d"), output_dir=str(tmp_path / "o"), nusers=30, nitems=6,
                         n_embeds=10)
    with pytest.raises(DataError, match="--n_embeds 10 is more than the 6 items with reads.*--regularization"):
        model.prepare_training(args)
    assert model.prepare_training(args.replace(regularization=0.1))[0].interactions.by_item.n_rows == 6


@pytest.mark.subprocess
def test_an_interrupt_that_lands_inside_a_c_call_is_still_an_interrupt(capsys):
    """SIGTERM during numpy's C code surfaces as a SystemError caused by the KeyboardInterrupt."""
    from walsmf.errors import run_cli

    def main(argv):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise SystemError("<built-in method item> returned a result with an error set") from interrupt
    with pytest.raises(SystemExit) as exit:
        run_cli(main)
    assert exit.value.code == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: interrupted; earlier outputs are as they were, run the same command again"]


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_signal_swallowed_by_a_weakref_callback_still_ends_the_run_before_its_next_block(capsys, signum):
    """Python prints and drops an exception raised in a weakref callback (TensorFlow's teardown has them): the
    signal must still stop the run at batch prediction's next block, and exit 130."""
    import signal
    import weakref

    from walsmf import errors, recommend
    blocks = []

    class Session:
        pass

    def main(argv):
        session = Session()
        weakref.finalize(session, lambda: os.kill(os.getpid(), getattr(signal, signum)) or sum(range(10 ** 5)))
        del session  # the signal arrives inside the callback, whose KeyboardInterrupt Python drops
        factors = np.ones((3000, 2), np.float32)
        blocks.extend(recommend.top_k_blocks(factors, factors[:5], 2))
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with pytest.raises(SystemExit) as exit:
            errors.run_cli(main)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
        del errors._signalled[:]
    assert exit.value.code == 130 and blocks == []
    err = capsys.readouterr().err
    assert "KeyboardInterrupt" in err  # Python's own report of the callback's exception, then ours
    assert err.strip().splitlines()[-1].startswith("error: interrupted")


@pytest.mark.parametrize("where", ["/proc/walsmf", "/dev/null/walsmf"])
def test_a_data_dir_where_nothing_can_be_written_is_one_line(tmp_path, where):
    with pytest.raises(DataError, match="cannot write {} .*a place you can write".format(where)):
        with staged_directory(where, datadir.METADATA_FILE, datadir.written_here):
            pass


def reads_csv(path, rows):
    path.write_text("visitorId,contentId,session_duration\n" + "".join("{},{},{}\n".format(*r) for r in rows))
    return str(path)


def test_a_data_dir_being_read_is_not_replaced_until_its_reader_ends(tmp_path):
    from walsmf import preprocess
    from walsmf.fileio import reading_directory
    data_dir = str(tmp_path / "d")
    first = reads_csv(tmp_path / "a.csv", [("v{}".format(u), "c{}".format(u % 3), 1000 + u) for u in range(9)])
    other = reads_csv(tmp_path / "b.csv", [("w{}".format(u), "x{}".format(u % 4), 900 + u) for u in range(9)])
    preprocess.main(["--extracted_csv", first, "--data_dir", data_dir])
    before = snapshot(data_dir)
    with reading_directory(data_dir, datadir.METADATA_FILE), reading_directory(data_dir, datadir.METADATA_FILE):
        with pytest.raises(DataError, match="d is being read by a walsmf run .*: wait for it to end"):
            preprocess.main(["--extracted_csv", other, "--data_dir", data_dir])
        assert snapshot(data_dir) == before and sorted(os.listdir(str(tmp_path))) == ["a.csv", "b.csv", "d"]
    preprocess.main(["--extracted_csv", other, "--data_dir", data_dir])
    assert datadir.read_id_map(os.path.join(data_dir, datadir.ITEMS_FILE)).tolist() == ["x0", "x1", "x2", "x3"]


@pytest.mark.subprocess
@pytest.mark.training
def test_a_preprocess_into_the_data_a_training_reads_is_refused_and_the_predictions_keep_their_ids(tmp_path):
    import subprocess
    import sys

    from helpers import ROOT
    data_dir, out = tmp_path / "d", tmp_path / "out"
    rows = [("v{}".format(u), "c{}".format((u * 7 + i) % 40), 500 + 37 * i + u) for u in range(300) for i in range(4)]
    assert run_module("walsmf.preprocess", "--extracted_csv", reads_csv(tmp_path / "a.csv", rows), "--data_dir",
                      data_dir).returncode == 0
    training = subprocess.Popen([sys.executable, "-m", "walsmf.task", "--input_path", str(data_dir), "--output_dir",
                                 str(out), "--num_epochs", "80", "--batch_size", "32"], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    for line in training.stdout:
        if line.strip().startswith("epoch "):  # training, with 79 epochs to go
            break
    renamed = [("r" + v, "new" + c, d) for v, c, d in rows]
    during = run_module("walsmf.preprocess", "--extracted_csv", reads_csv(tmp_path / "b.csv", renamed),
                        "--data_dir", data_dir)
    training.stdout.read()
    assert training.wait() == 0
    assert during.returncode == 1 and during.stderr.strip().splitlines() == [
        "error: {} is being read by a walsmf run (a training on it, say): wait for it to end, or write the new data "
        "to another directory".format(data_dir)]
    predicted = {c for line in (out / modeldir.ORIGINAL_IDS_PRED_FILE).read_text().splitlines()
                 for c in line.split("\t")[1].split(",")}
    assert predicted and predicted <= {c for _, c, _ in rows}


@pytest.mark.parametrize("present, named", [
    ({"notes.txt": "mine"}, "notes.txt"),                                              # any file of the user's
    ({"batch_pred.txt": "mine", "graph.pbtxt": "mine"}, "batch_pred.txt, graph.pbtxt"),  # walsmf's names, unmarked
    ({"serving_info.json": "{}"}, "serving_info.json"),
    ({modeldir.TRAINING_SETTINGS_FILE: "{}", "notes.txt": "mine"}, "notes.txt"),        # a model, and a user's file
], ids=["user-file", "walsmf-names-unmarked", "serving-info-unmarked", "model-with-user-file"])
def test_training_into_a_directory_holding_what_walsmf_did_not_write_is_refused(small_data, tmp_path, present,
                                                                                named):
    out = tmp_path / "out"
    out.mkdir()
    for name, text in present.items():
        (out / name).write_text(text)
    args = settings.make(input_path=small_data[0], output_dir=str(out))
    with pytest.raises(DataError, match="holds {} that no walsmf training wrote there".format(named)):
        trainer.resolve(args)
    assert {p.name: p.read_text() for p in out.iterdir()} == present


def test_a_users_temp_directory_under_export_servo_is_not_an_unfinished_export(tmp_path):
    servo = tmp_path / "export" / "Servo"
    for name in ("temp-1500000000", "temp-mywork", "1500000001"):
        (servo / name).mkdir(parents=True)
    modeldir.remove_unfinished_writes(str(tmp_path))
    assert sorted(p.name for p in servo.iterdir()) == ["1500000001", "temp-mywork"]


def test_the_temporaries_a_disk_full_or_killed_run_left_go_with_the_next_run(trained, tmp_path):
    import shutil

    out = tmp_path / "m"
    shutil.copytree(trained.output_dir, str(out))
    uuid = "0123456789abcdef0123456789abcdef"
    left = ["graph.pbtxt.tmp" + uuid, "checkpoint.tmp" + uuid, "batch_pred.txt.tmp-4242"]
    for name in left:
        (out / name).write_text("half")
    (out / ("model.ckpt-9_temp_" + uuid)).mkdir()
    (out / "notes.tmp").write_text("the user's")  # not a temporary name of a walsmf or TensorFlow write
    again = ["--input_path", trained.input_path, "--output_dir", out, "--num_epochs", trained.num_epochs,
             "--batch_size", 64, "--seed", trained.seed]
    result = run_module("walsmf.task", *again)
    assert "notes.tmp" in result.stderr and result.returncode == 1  # refused, the user's file named
    (out / "notes.tmp").unlink()
    result = run_module("walsmf.task", *again)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not [name for name in os.listdir(str(out)) if "tmp" in name or "_temp_" in name]


def test_tuning_into_a_directory_holding_a_users_file_is_refused(small_data, tmp_path):
    from walsmf import tune

    out = tmp_path / "tuned"
    out.mkdir()
    (out / tune.BEST_PARAMS_FILE).write_text("{}")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="holds notes.txt that walsmf did not write"):
        tune.tune(small_data[0], str(out), max_trials=1)
    assert sorted(p.name for p in out.iterdir()) == [tune.BEST_PARAMS_FILE, "notes.txt"]


def test_the_marker_names_are_those_of_the_modules_that_write_them():
    from walsmf import fileio, tune
    assert [markers for markers, _ in fileio.OWNED_DIRECTORY_MARKERS] == [
        (datadir.METADATA_FILE,), (modeldir.TRAINING_SETTINGS_FILE,), (tune.TRIALS_FILE, tune.BEST_PARAMS_FILE)]


@pytest.mark.parametrize("owner, markers", [("data", ["metadata.json"]), ("model", ["training_settings.json"]),
                                            ("tuning", ["trials.csv", "best_params.json"])])
@pytest.mark.parametrize("module, output", [("walsmf.extract", "reads.csv"), ("walsmf.sample", "sample.parquet"),
                                            ("walsmf.best_trial", "best_params.json")])
def test_a_file_output_inside_a_directory_walsmf_writes_whole_is_refused(tmp_path, owner, markers, module, output):
    import importlib
    root = tmp_path / owner
    (root / "export" / "Servo").mkdir(parents=True)
    for marker in markers:
        (root / marker).write_text("{}")
    before = snapshot(tmp_path)
    for path in (root / output, root / "export" / "Servo" / output):
        with pytest.raises(DataError, match="is inside the {} directory {}, which walsmf writes whole".format(
                owner, root)):
            importlib.import_module(module).main(["--output", str(path)])
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("module, kind, theirs, ours", [
    ("walsmf.extract", "an extracted CSV", b"my notes\n", b"visitorId,contentId,session_duration,read_time\n"),
    ("walsmf.sample", "a Parquet file", b"visitorId,contentId\n", b"PAR1"),
    ("walsmf.best_trial", "a params file", b"n_embeds: 5\n", b'{"n_embeds": 5}\n')])
def test_a_file_output_replaces_only_a_file_of_its_own_kind(tmp_path, module, kind, theirs, ours):
    import importlib

    from walsmf.fileio import check_writable, starts_with
    target = tmp_path / "out"
    target.write_bytes(theirs)
    with pytest.raises(DataError, match="--output {} exists and is not {}".format(target, kind)):
        importlib.import_module(module).main(["--output", str(target)])
    assert target.read_bytes() == theirs
    target.write_bytes(ours)  # its own kind, or an empty file, may be replaced
    check_writable(str(target), "--output", replaces=(kind, starts_with(ours[:4])))
    target.write_bytes(b"")
    check_writable(str(target), "--output", replaces=(kind, starts_with(ours[:4])))


@pytest.mark.parametrize("module, flag, kind", [
    ("walsmf.extract", "--output", "file"), ("walsmf.sample", "--output", "file"),
    ("walsmf.best_trial", "--output", "file"), ("walsmf.preprocess", "--data_dir", "directory"),
    ("walsmf.task", "--output_dir", "directory")])
def test_an_output_that_is_a_pipe_is_refused_and_stays_a_pipe(tmp_path, small_data, module, flag, kind):
    import importlib
    import stat
    pipe = tmp_path / "pipe"
    os.mkfifo(str(pipe))
    extra = ["--data_dir", small_data[0]] if module == "walsmf.task" else []
    with pytest.raises(DataError, match="{} {} is (a device, pipe or socket, )?not a {}".format(flag, pipe, kind)):
        importlib.import_module(module).main(extra + [flag, str(pipe)])
    assert stat.S_ISFIFO(os.lstat(str(pipe)).st_mode) and os.listdir(str(tmp_path)) == ["pipe"]


def test_a_device_is_never_an_output():
    from walsmf.fileio import check_writable
    for directory in (False, True):
        with pytest.raises(DataError, match="--output /dev/null is a device, pipe or socket"):
            check_writable("/dev/null", "--output", directory=directory)


def test_an_output_through_a_symbolic_link_replaces_the_file_it_names_and_keeps_the_link(tmp_path):
    from walsmf.fileio import atomic_write_text
    (tmp_path / "elsewhere").mkdir()
    target = tmp_path / "elsewhere" / "params.json"
    target.write_text("old")
    link = tmp_path / "params.json"
    link.symlink_to(target)
    atomic_write_text(str(link), "new")
    assert link.is_symlink() and target.read_text() == "new"
    assert sorted(os.listdir(str(tmp_path / "elsewhere"))) == ["params.json"]


def test_an_extracted_csv_read_from_a_pipe_is_read_once_whole(tmp_path):
    import threading

    from walsmf.extract import read_extracted_csv
    pipe = tmp_path / "reads.csv"
    os.mkfifo(str(pipe))
    rows = ["v{},a{},{}".format(n, n % 7, 1000 + n) for n in range(5000)]
    writer = threading.Thread(target=lambda: pipe.write_text("visitorId,contentId,session_duration\n" +
                                                             "\n".join(rows) + "\n"))
    writer.start()
    extracted = read_extracted_csv(str(pipe))
    writer.join()
    assert len(extracted) == 5000 and extracted["session_duration"].sum() == sum(1000 + n for n in range(5000))


def test_a_sessions_file_that_is_a_pipe_is_one_line_saying_save_it(tmp_path):
    from walsmf.local_export import local_files
    pipe = tmp_path / "events.parquet"
    os.mkfifo(str(pipe))
    with pytest.raises(DataError, match="--sessions_file {} is a pipe or device: .* save it to a file".format(pipe)):
        local_files(str(pipe))


def test_an_error_quoting_a_huge_value_keeps_its_start_and_its_remedy(tmp_path, capsys):
    from walsmf import preprocess
    from walsmf.errors import LONGEST_LINE, run_cli

    reads = tmp_path / "reads.csv"  # a visitor id of a megabyte, in the row whose read_time is blank
    reads.write_text("visitorId,contentId,session_duration,read_time\nv1,c1,100,1500000000000\n" +
                     "v" * 10 ** 6 + ",c1,100,\n")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(preprocess.main, ["--extracted_csv", str(reads), "--data_dir", str(tmp_path / "data")])
    said = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 1 and len(said) == 1 and len(said[0]) < LONGEST_LINE + 100
    assert said[0].startswith("error: read_time is blank for visitor vvvv")
    assert said[0].endswith("and content c1: give every row its time, or drop the column")
    assert "[... 99" in said[0] and not (tmp_path / "data").exists()


@pytest.mark.subprocess
def test_a_directory_another_run_is_writing_is_refused_to_every_writer_before_its_work(small_data, tmp_path):
    """A preprocess, a split and a tuning into a directory another run writes each refuse in one line, naming
    that run, and leave it as it was; once it ends, the same preprocess runs."""
    data, split, tuned = tmp_path / "data", tmp_path / "split", tmp_path / "tuned"
    shutil.copytree(small_data[0], str(data))
    before = sorted((p.name, p.read_bytes()) for p in data.iterdir())
    commands = [(data, "walsmf.preprocess", "--scale", "0.01", "--data_dir", data),
                (split, "walsmf.evaluate", "--split_from", data, "--data_dir", split),
                (tuned, "walsmf.tune", "--input_path", data, "--output_dir", tuned, "--max_trials", "1")]
    for target, module, *argv in commands:
        with held_for_writing(target) as holder:
            result = run_in_process(module, *argv)
        assert result.returncode == 1 and result.stderr == (
            "error: {} is being written by another walsmf run (process {} walsmf; its lock {}): wait for it to end, "
            "or write to another directory\n".format(target, holder, tmp_path / ".{}.walsmf-lock".format(
                target.name))), result.stderr
    assert sorted((p.name, p.read_bytes()) for p in data.iterdir()) == before
    assert sorted(os.listdir(str(tmp_path))) == ["data"]  # no lock, split or tuning left
    assert run_in_process("walsmf.preprocess", "--scale", "0.01", "--data_dir", data).returncode == 0

