"""Every module takes the same spelling for the same thing: words joined by _ or -, --data_dir or --input_path."""
import re

import pytest

from walsmf import evaluate, flags, predict, settings, tune
from walsmf.errors import DataError


def test_each_long_option_answers_to_both_spellings_and_help_shows_the_declared_one(capsys):
    parser = flags.Parser(prog="p")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--num_epochs", type=float, default=1.0)
    assert vars(parser.parse_args(["--model_dir", "m", "--num-epochs", "2"])) == {"model_dir": "m", "num_epochs": 2.0}
    assert vars(parser.parse_args(["--model-dir", "m"])) == {"model_dir": "m", "num_epochs": 1.0}
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    shown = capsys.readouterr().out
    assert "--model-dir MODEL_DIR" in shown and "--model_dir" not in shown and "--num-epochs" not in shown


def test_the_trainer_takes_the_data_directory_by_either_name_and_gclouds_job_dir():
    for data_flag in flags.DATA_DIR_FLAGS:
        for job_flag in ("--job-dir", "--job_dir"):
            parsed = settings.parse([data_flag, "d", "--output-dir", "o", job_flag, "gs://b/j"])
            assert (parsed.input_path, parsed.output_dir, parsed.job_dir) == ("d", "o", "gs://b/j")


@pytest.mark.parametrize("main, argv, message", [
    (predict.main, ["--model_dir", "{tmp}/none", "--json_instances", "{tmp}/none.json"], "not an export"),
    (evaluate.main, ["--data-dir", "{tmp}/none", "--model-dir", "{tmp}/m"], "does not exist"),
    (tune.main, ["--data_dir", "{tmp}/none", "--output-dir", "{tmp}/t"], "does not exist"),
])
def test_other_spellings_reach_the_modules_own_checks(tmp_path, main, argv, message):
    with pytest.raises(DataError, match=message):
        main([a.format(tmp=tmp_path) for a in argv])


def test_docs_flags_page_is_what_the_parsers_say():
    import importlib.util
    import os

    from helpers import ROOT

    spec = importlib.util.spec_from_file_location("flags_doc", os.path.join(ROOT, "scripts", "flags_doc.py"))
    flags_doc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(flags_doc)
    with open(os.path.join(ROOT, "docs", "flags.md")) as f:
        assert f.read() == flags_doc.page(), "a flag changed: run .venv/bin/python scripts/flags_doc.py > docs/flags.md"


@pytest.mark.parametrize("module", ["best_trial", "evaluate", "extract", "predict", "preprocess", "refresh", "replay",
                                    "sample", "serve", "task", "tune"])
@pytest.mark.parametrize("argv, named", [
    (["--no_such_flag", "1"], r"(unrecognized arguments: --no_such_flag 1|the following arguments are required: --)"),
    (["--seed"], r"argument --[\w-]+(/--[\w-]+)?: expected one argument"), (["--help"], None)])
def test_a_flag_error_is_one_error_line_naming_it_and_exit_1_and_help_keeps_the_usage(capsys, module, argv, named):
    import importlib

    main = importlib.import_module("walsmf." + module).main
    if argv == ["--seed"] and module in ("best_trial", "predict", "serve", "refresh", "replay", "extract"):
        argv = ["--" + {"best_trial": "job_json", "predict": "json-instances", "serve": "port", "refresh": "sweeps",
                        "replay": "window_hours", "extract": "schema"}[module]]
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    out, err = capsys.readouterr()
    if named is None:
        assert stopped.value.code == 0 and out.startswith("usage: python -m walsmf." + module)
        return
    lines = err.strip().splitlines()
    assert stopped.value.code == 1 and out == "" and len(lines) == 1, err
    assert re.match("error: " + named, lines[0]) and lines[0].endswith(
        "(python -m walsmf.{} --help lists the flags)".format(module))
