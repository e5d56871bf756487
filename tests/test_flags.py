"""Every module takes the same spelling for the same thing: words joined by _ or -, --data_dir or --input_path."""
import argparse
import os
import re

import pytest
from helpers import ROOT

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


def flags_doc():
    """scripts/flags_doc.py: every module's parser."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("flags_doc", os.path.join(ROOT, "scripts", "flags_doc.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_flags_page_is_what_the_parsers_say():
    with open(os.path.join(ROOT, "docs", "flags.md")) as f:
        assert f.read() == flags_doc().page(), \
            "a flag changed: run .venv/bin/python scripts/flags_doc.py > docs/flags.md"


def test_an_integer_flag_is_the_integer_written_in_every_module():
    assert flags.integer("99999999999999999999999") == 99999999999999999999999  # not float's 99999999999999991611392
    assert (flags.integer("20.0"), flags.integer("1e3"), flags.integer("-4")) == (20, 1000, -4)
    for text in ("1e30", "2.5", "nan", "inf", "ten", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="invalid integer value"):
            flags.integer(text)
    doc = flags_doc()
    read_by_int = ["{} {}".format(module, action.option_strings[0]) for module in doc.MODULES
                   for action in doc.parser_of(module)._actions if action.type is int]
    assert not read_by_int  # int() refuses "1e3", which tuning services send


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


def shown_commands():
    """(page, module, its words) for each `python -m walsmf.X ...` the README and docs show: in shell blocks
    (whole commands, ``whole`` True) and in inline code (often a part: optional [...] parts and "..." dropped)."""
    import glob
    import shlex

    found = []
    for page in ["README.md"] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))):
        with open(os.path.join(ROOT, page)) as f:
            text = f.read()
        blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
        lines = [re.sub(r"(^|\s)#.*", "", line) for block in blocks for line in block.replace("\\\n", " ").splitlines()]
        spans = re.findall(r"`([^`]*python -m walsmf\.[^`]*)`", re.sub(r"```.*?```", "", text, flags=re.S).replace(
            "\n", " "))
        for whole, commands in ((True, lines), (False, spans)):
            for command in commands:
                match = re.search(r"python -m (walsmf\.\w+)(.*)", command)
                if match:
                    words = shlex.split(re.sub(r"\[[^\]]*\]|\.\.\.", " ", match.group(2)))
                    found.append((os.path.basename(page), match.group(1), words, whole))
    return found


def spelled(flag):
    """A flag's name as its parser's dest spells it: --model-dir → model_dir."""
    return flag.lstrip("-").replace("-", "_")


def test_every_command_the_docs_show_takes_the_flags_it_is_shown_with():
    shown = shown_commands()
    assert len(shown) > 40 and {"walsmf.refresh", "walsmf.replay", "walsmf.serve"} <= {m for _, m, _, _ in shown}
    parsers = {}
    for page, module, words, whole in shown:
        if module not in parsers:
            parsers[module] = flags_doc().parser_of(module)
        parser = parsers[module]
        known = {spelled(o) for o in parser._option_string_actions}
        if module == "walsmf.preprocess" and "--runner" in words:  # the rest are Beam's pipeline options
            from apache_beam.options.pipeline_options import PipelineOptions

            known |= set(PipelineOptions([]).get_all_options())
        unknown = [w for w in words if w.startswith("--") and spelled(w.split("=")[0]) not in known]
        assert not unknown, "{} shows python -m {} with {}, which it does not take".format(page, module, unknown)
        if whole:  # a whole command parses: its values fit their flags, nothing required lacks
            parser.parse_known_args(words)
