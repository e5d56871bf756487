"""Print the flag tables of docs/flags.md from the modules' own parsers (a test checks the page matches).

    .venv/bin/python scripts/flags_doc.py > docs/flags.md
"""
import argparse
import importlib

from walsmf import flags

MODULES = ("walsmf.sample", "walsmf.extract", "walsmf.preprocess", "walsmf.task", "walsmf.evaluate", "walsmf.tune",
           "walsmf.refresh", "walsmf.replay", "walsmf.predict",
           "walsmf.serve")
HEADER = """# Flags

Every module spells a flag the same way: words joined by `_`, and each flag also answers to the
`-` spelling (`--model-dir` and `--model_dir`, `--job-dir` and `--job_dir`; gcloud's spelling is the
one it documents). The directory `walsmf.task` trains on is `--input_path` (the lab's name) or
`--data_dir`, in `walsmf.task` and `walsmf.tune` alike. This page is printed from the modules'
parsers by `scripts/flags_doc.py`; every module's `--help` says the same.
"""


class _Parsed(Exception):
    """Carries the parser a module's main() built, before it parses anything."""


def parser_of(module):
    """The flags.Parser that ``module``'s main() builds."""
    def capture(self, *args, **kwargs):
        raise _Parsed(self)
    original, flags.Parser.parse_known_args = flags.Parser.parse_known_args, capture
    try:
        importlib.import_module(module).main([])
    except _Parsed as parsed:
        return parsed.args[0]
    finally:
        flags.Parser.parse_known_args = original
    raise RuntimeError("{}.main() built no flags.Parser".format(module))


def table(parser):
    """The markdown table of a parser's flags."""
    lines = ["| flag | default | meaning |", "|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        names = ", ".join("`{}`".format(o) for o in getattr(action, "declared_options", action.option_strings))
        if action.required:
            default = "required"
        elif action.default is None or action.default is argparse.SUPPRESS or action.default is False:
            default = ""
        else:
            default = "`{}`".format(action.default)
        lines.append("| {} | {} | {} |".format(names, default, (action.help or "").replace("|", "\\|")))
    return "\n".join(lines)


def page():
    """docs/flags.md's text."""
    return HEADER + "".join("\n## `python -m {}`\n\n{}\n".format(m, table(parser_of(m))) for m in MODULES)


if __name__ == "__main__":
    print(page(), end="")
