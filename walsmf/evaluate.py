"""How good are the recommendations? Write a held-out split, or score a model and baselines on one.

    python -m walsmf.evaluate --split_from data --data_dir data_split     # write the split
    python -m walsmf.task --input_path data_split --output_dir wals_split  # train on it, unchanged
    python -m walsmf.evaluate --data_dir data_split --model_dir wals_split [--implicit]

The split holds out, for each user with at least 3 interactions, a fixed
number of them (default 1, at most a fifth of the user's): random ones
(chosen with a seed), or with ``--latest_from TIMES.csv`` (visitorId,
contentId, time: a number or a date) each user's latest.  The training part
is written in the lab's formats (TFRecords, collab_mapped.csv,
metadata.json); the held-out part as heldout.csv (walsmf.splits).

Metrics at k (default 10), over held-out users only, each user's training
items left out of the ranking: precision, recall, MAP, NDCG, and catalogue
coverage (walsmf.metrics); baselines: most popular and implicit's ALS
(walsmf.baselines).
"""


from walsmf import flags
from walsmf.baselines import implicit_als, most_read_recently_of, popularity_factors
from walsmf.datadir import HELDOUT_FILE, data_counts
from walsmf.errors import DataError, run_cli
from walsmf.metrics import evaluate_factors, evaluate_model, format_table
from walsmf.splits import has_times, read_mapped, write_split


def main(argv=None):
    """CLI: write a split, or score a trained model (and baselines) on one."""
    parser = flags.Parser(prog="python -m walsmf.evaluate", description=__doc__.split("\n\n")[0],
                          epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--data_dir", required=True, help="a split directory (written with --split_from)")
    parser.add_argument("--split_from", help="write a held-out split of this data directory into --data_dir")
    parser.add_argument("--holdout", type=flags.integer, default=1, help="interactions held out per user "
                        "(at most a fifth of a user's, one at least)")
    flags.add_seed(parser, "seed of the held-out choice")
    parser.add_argument("--held_out", choices=["latest", "random"],
                        help="with --split_from: each user's latest reads (the default where the data has "
                             "times.csv or --latest_from is given) or random ones")
    parser.add_argument("--latest_from", metavar="TIMES_CSV",
                        help="with --split_from: the read times (visitorId,contentId,time) to hold out by, "
                             "instead of the data's own times.csv")
    flags.add_id_counts(parser)
    flags.add_model_dir(parser, "a WALS model trained on --data_dir (walsmf.task --output_dir)")
    parser.add_argument("--k", type=flags.integer, default=10, help="length of the recommendation lists")
    parser.add_argument("--implicit", action="store_true", help="also score implicit's ALS (10 factors)")
    args = parser.parse_args(argv)
    if (args.latest_from or args.held_out) and not args.split_from:
        parser.error("--latest_from and --held_out choose the held-out reads of a new split: give --split_from "
                     "DATA too")
    if args.k < 1:
        raise DataError("--k {} must be 1 or more: the length of each recommendation list".format(args.k))
    if args.split_from:
        write_split(args.split_from, args.data_dir, args.holdout, args.seed, times_csv=args.latest_from,
                    held_out=args.held_out, nusers=args.nusers, nitems=args.nitems)
        return
    train, test = read_mapped(args.data_dir), read_mapped(args.data_dir, HELDOUT_FILE)
    counts = data_counts(args.data_dir, args.nusers, args.nitems)
    nusers, nitems = counts["nusers"], counts["nitems"]

    def score(factors, fit=train, check=test):
        return evaluate_factors(*factors, fit, check, nusers, args.k)
    rows = []
    if args.model_dir:
        rows.append(("WALS ({})".format(args.model_dir), evaluate_model(args.model_dir, args.data_dir, args.k)))
    rows.append(("most popular", score(popularity_factors(train, nusers, nitems))))
    if has_times(args.data_dir):
        factors, days = most_read_recently_of(args.data_dir, train, nusers, nitems, args.k)
        rows.append(("most read, last {}".format("{} days".format(days) if days else "period"), score(factors)))
    if args.implicit:
        rows.append(("implicit ALS", score(implicit_als(train, nusers, nitems))))
    print("{} held-out interactions of {} users; k = {}".format(len(test), test["userId"].nunique(), args.k))
    print(format_table(rows, args.k))


if __name__ == "__main__":
    run_cli(main)
