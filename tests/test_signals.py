"""SIGTERM and Ctrl-C end each stage of a training run, and a tuning, with exit 130 and nothing half-made: no
export/Servo/temp-*, no batch_pred.txt, no staging left; the next run completes."""
import os
import signal
import subprocess
import sys

import pytest
from helpers import ROOT

from walsmf import modeldir

# The first line each stage logs to stderr: the signal is sent as it appears.
TASK_STAGES = {"training": "loss = ", "export": "Assets added to graph.", "just exported": "SavedModel written to",
               "batch prediction": "[batch_pred] "}


def signalled_at(command, marker, signum):
    """Run ``command``, send ``signum`` when an output line holds ``marker``; (exit code, output, marker seen)."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               universal_newlines=True)
    lines, seen = [], False
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            process.send_signal(signum)
            seen = True
            break
    lines.append(process.stdout.read())
    return process.wait(timeout=300), "".join(lines), seen


def leftovers(top):
    """Temporary names under ``top``: an export's temp-*, atomic outputs' .tmp-*, staging directories."""
    return [os.path.join(where, name) for where, dirs, files in os.walk(str(top)) for name in dirs + files
            if name.startswith("temp-") or ".tmp-" in name]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("stage", list(TASK_STAGES))
def test_a_signal_at_each_stage_of_task_ends_it_with_exit_130_and_nothing_half_made(small_data, tmp_path, stage,
                                                                                  signum):
    out = tmp_path / "out"
    # 200,000 users (most without reads) make batch prediction last a second: time to land in it
    command = [sys.executable, "-m", "walsmf.task", "--input_path", small_data[0], "--output_dir", str(out),
               "--nusers", "200000", "--batch_size", "16384", "--num_epochs", "3", "--verbosity", "debug"]
    code, stderr, seen = signalled_at(command, TASK_STAGES[stage], signum)
    assert seen, "the run never reached {}: {}".format(stage, stderr[-1500:])
    assert code == 130, stderr[-2000:]
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted"), stderr[-2000:]
    assert leftovers(tmp_path) == []
    assert not (out / modeldir.BATCH_PRED_FILE).exists() and not (out / modeldir.ORIGINAL_IDS_PRED_FILE).exists()
    again = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           universal_newlines=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / modeldir.BATCH_PRED_FILE).exists() and leftovers(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_a_tuning_trial_ends_it_with_exit_130_and_no_staging(small_data, tmp_path, signum):
    command = [sys.executable, "-m", "walsmf.tune", "--input_path", small_data[0], "--output_dir",
               str(tmp_path / "tune"), "--max_trials", "4"]
    code, stderr, seen = signalled_at(command, "trial 1/4", signum)
    assert seen, stderr[-1500:]
    assert code == 130, stderr[-2000:]
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted"), stderr[-2000:]
    assert leftovers(tmp_path) == []


@pytest.mark.subprocess
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_the_package_loads_its_error_handling_is_the_one_line_and_exit_130(signum):
    # `python -m walsmf.<command>` as the package sees it (argv[0] "-m"), the signal sent from inside the
    # first import walsmf.errors makes: before its handlers can exist
    starting = ("import builtins, os, sys\n"
                "sys.argv[:1] = ['-m']\n"
                "load = builtins.__import__\n"
                "def signalled(name, *args, **kwargs):\n"
                "    if name == 'json':\n"
                "        builtins.__import__ = load\n"
                "        os.kill(os.getpid(), {})\n"
                "    return load(name, *args, **kwargs)\n"
                "builtins.__import__ = signalled\n"
                "import walsmf\n"
                "print('not reached')\n").format(int(signum))
    done = subprocess.run([sys.executable, "-c", starting], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60)
    assert done.returncode == 130 and done.stdout == "", done.stderr
    assert done.stderr.strip().splitlines() == ["error: interrupted; earlier outputs are as they were, run the same "
                                                "command again"], done.stderr


@pytest.mark.subprocess
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("after", [0.1, 0.5, 1.5])
def test_a_signal_in_a_commands_first_seconds_is_its_one_line_and_exit_130(tmp_path, signum, after):
    import time

    # a sample large enough to take several seconds: the signal lands while imports or the generation run
    process = subprocess.Popen([sys.executable, "-m", "walsmf.sample", "--scale", "3", "--output",
                                str(tmp_path / "s.parquet")], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, universal_newlines=True)
    time.sleep(after)
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.strip().splitlines() == ["error: interrupted; earlier outputs are as they were, run the same command "
                                        "again"], err
    assert not (tmp_path / "s.parquet").exists()


@pytest.mark.subprocess
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_after_a_command_finished_exits_0_with_its_output_whole(signum):
    # a refresh interrupted as Python tore down after "[refresh] done" exited 130 with no line
    script = ("import os, signal, sys, time\nfrom walsmf.errors import run_cli\n"
              "run_cli(lambda argv: print('done', flush=False))\n"
              "os.kill(os.getpid(), {})\ntime.sleep(5)\nprint('after the signal')\n".format(int(signum)))
    ended = subprocess.run([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=60)
    assert (ended.returncode, ended.stdout, ended.stderr) == (0, "done\n", "")
