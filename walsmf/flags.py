"""One spelling rule for every module's flags.

Each ``--word_word`` flag also answers to ``--word-word`` (gcloud's spelling, as in ``--model-dir``
and ``--job-dir``) and the reverse; ``--help`` lists the first spelling.  The data directory
walsmf.task trains on is ``--input_path`` (the lab's name) and ``--data_dir`` alike wherever a
module reads it.  docs/flags.md lists every module's flags.
"""
import argparse
import copy
import math

# The lab's trainer calls the data directory --input_path; the other modules, --data_dir.
DATA_DIR_FLAGS = ("--data_dir", "--input_path")


def spellings(option):
    """``option`` and its other spelling (``_`` and ``-`` between words swapped), the given one first."""
    if not option.startswith("--"):
        return [option]
    words = option[2:]
    other = "--" + (words.replace("_", "-") if "_" in words else words.replace("-", "_"))
    return [option] if other == option else [option, other]


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Lists each option under the spellings it was declared with, not the ones this module adds."""

    def _format_action_invocation(self, action):
        declared = getattr(action, "declared_options", None)
        if declared:
            action = copy.copy(action)
            action.option_strings = declared
        return super()._format_action_invocation(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose long options take both spellings (see the module's docstring)."""

    def __init__(self, *args, **kwargs):
        kwargs["formatter_class"] = _HelpFormatter
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        """As argparse's; a flag given an empty value (``--output_dir ''``, an unset shell variable) is an error
        naming it, before any work (no walsmf flag takes an empty string)."""
        parsed, rest = super().parse_known_args(args, namespace)
        for action in self._actions:
            if action.option_strings and getattr(parsed, action.dest, None) == "":
                self.error("argument {}: is empty: give a value".format(getattr(action, "declared_options",
                                                                                 action.option_strings)[0]))
        return parsed, rest

    def error(self, message):
        """A flag error as one ``error:`` line naming the flag (and the values it takes), exit 1: the usage block is
        --help's."""
        self.exit(1, "error: {} (python -m {} --help lists the flags)\n".format(message, self.prog.split()[-1]))

    def add_argument(self, *options, **kwargs):
        """As argparse's, with each long option's other spelling added."""
        if not options or not options[0].startswith("-"):
            return super().add_argument(*options, **kwargs)
        every = []
        for option in options:
            every.extend(o for o in spellings(option) if o not in every)
        if "dest" not in kwargs:
            kwargs["dest"] = options[0].lstrip("-").replace("-", "_")
        action = super().add_argument(*every, **kwargs)
        action.declared_options = list(options)
        return action


def integer(text: str) -> int:
    """An integer flag value, exactly as written; "20.0" and "1e3" are 20 and 1000 (tuning services may send
    integers as floats) where the float is exact (below 2^53)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("invalid integer value: {!r}".format(text))
    if not math.isfinite(value) or value != int(value) or abs(value) > 2 ** 53:
        raise argparse.ArgumentTypeError("invalid integer value: {!r}{}".format(
            text, " (write it in digits)" if math.isfinite(value) and value == int(value) else ""))
    return int(value)


# The flags several modules take, declared once: the same spelling, type and meaning everywhere.
# walsmf.progress's levels (it imports TensorFlow, which parsing the flags does not)
VERBOSITIES = ("debug", "info", "warning", "error")
VERBOSITY_HELP = ("what the run prints: info (a line per stage and epoch), debug (TensorFlow's log as well), "
                  "warning or error (those only)")
USERS_HELP = "number of users (default: metadata.json, else the TFRecords)"
ITEMS_HELP = "number of items (default: metadata.json, else the TFRecords)"


def add_id_counts(parser: argparse.ArgumentParser) -> None:
    """--nusers and --nitems: the model's id counts, read from the data when not given."""
    parser.add_argument("--nusers", type=integer, help=USERS_HELP)
    parser.add_argument("--nitems", type=integer, help=ITEMS_HELP)


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    """--verbosity: walsmf's progress lines, or TensorFlow's log as well (walsmf.progress)."""
    parser.add_argument("--verbosity", choices=VERBOSITIES, default="info", help=VERBOSITY_HELP)


def add_seed(parser: argparse.ArgumentParser, help: str, default: int = 0) -> None:
    """--seed, with what it seeds in ``help``."""
    parser.add_argument("--seed", type=integer, default=default, help=help)


def add_model_dir(parser: argparse.ArgumentParser, help: str, **kwargs) -> None:
    """--model-dir (gcloud's spelling; --model_dir too): a trained model or its export."""
    parser.add_argument("--model-dir", dest="model_dir", help=help, **kwargs)


def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    """--scale and --seed of the embedded sample (walsmf.sample writes it; extraction reads it by default)."""
    parser.add_argument("--scale", type=float, default=1.0,
                        help="embedded sample size relative to the lab's data (1 = 82,802 visitors)")
    add_seed(parser, "embedded sample seed (the same seed, the same file)")
