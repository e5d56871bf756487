"""One error type for what the user must fix, and the CLI wrapper that shows it."""
import sys
import warnings


class DataError(Exception):
    """Bad input or a failed external call, described in one line for the user."""


def run_cli(main, argv=None):
    """Run ``main(argv)``; turn a DataError into one line on stderr and exit 1."""
    # Google's client libraries warn on import that they no longer update for Python 3.7; TF 1.15 needs it
    warnings.filterwarnings("ignore", message=".*non-supported Python version.*", category=FutureWarning)
    try:
        main(argv)
    except DataError as err:
        print("error: {}".format(err), file=sys.stderr)
        sys.exit(1)
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        sys.stderr.close()
