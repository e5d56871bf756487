"""Replay a news site's last day window by window: how each way of recommending would have scored the reads that
came next.

    python -m walsmf.replay --extracted_csv reads.csv --workdir replay [--window_hours 1]
    python -m walsmf.replay --data_dir data --workdir replay

The reads (visitorId,contentId,session_duration,read_time: what
``walsmf.extract --output`` writes; or a data directory's, with read times,
each pair's duration taken back from its rating) are cut at the midnight (UTC) before the
newest read: a model is trained on what came before (the lab's settings, or
``--preset``), then the following day is stepped through in windows.  As a
window opens, each visitor who reads in it is recommended 10 articles, and
their first read in the window of an article they had not read is scored
(HR@10: whether it is among them; NDCG@10), by

* frozen: the model trained at the cut (a known visitor: their factor; one
  it has never seen: folded in from what they read today so far), which is
  also the full retrain every 24 hours, for a day;
* refreshed: the same model with every window's reads folded in as the
  window closes (walsmf.refresh);
* most read in the last 1, 3 and 24 hours as the window opens, and most
  popular (every read before the cut);

leaving out what the visitor read before.  Known visitors (who read before
the cut) and new ones are scored apart, each with its standard error; then
the refreshed model against each other method read by read, the standard
error of the differences (both score the same reads, so what they share
cancels).  The share of the scored reads on articles nobody read before the
cut says how much a frozen model cannot see.

The blend with the recent reads (score + weight·log(1 + reads in the last
hours), the reads counted as they are or at each article's rate since its
first read: --popularity_rate) is chosen first on the day before the last,
replayed the same way with the refreshed model: among BLENDS, the best HR@10
of every visitor's next read that day; the last day is then replayed with it
(``--blend_as_given``: the settings' own blend).
"""
import collections
import itertools
import math
import os
import time

import numpy as np
import pandas as pd
import tensorflow as tf

from walsmf import datadir, flags, growth, model, modeldir, preprocess, progress, refresh
from walsmf import settings as settings_module
from walsmf.errors import DataError, run_cli
from walsmf.export_numpy import ExportAnswers
from walsmf.extract import TIME_COLUMN, read_extracted_csv, utc_text
from walsmf.fileio import refuse_nested
from walsmf.ratings import duration_of
from walsmf.recency import DAY_MS, recent_counts

HOUR_MS = 3600 * 1000
K = 10
MOST_READ_HOURS = (1, 3, 24)
# The blends the day before the last chooses among: (popularity_weight, the hours of reads counted, whether as
# rates), the first none; score + weight·log(1 + reads) ranks fresh popular articles up, the weight saying how far.
BLENDS = ((0.0, 1, False),) + tuple((weight, hours, rate) for weight in (1.0, 3.0, 10.0, 30.0, 100.0)
                                    for hours in (3, 6, 12, 24) for rate in (False, True))


def scores(ranked, truth):
    """(hit, NDCG) at K of one ranked list against the article read next."""
    ranked = list(ranked)[:K]
    if truth not in ranked:
        return 0.0, 0.0
    return 1.0, 1.0 / math.log2(ranked.index(truth) + 2)


def hit_of(ranked, read, truth):
    """scores() of ``ranked`` with the articles of ``read`` left out."""
    return scores(itertools.islice((i for i in ranked if i not in read), K), truth)


def summary(values):
    """(mean, standard error) of a list of per-read scores."""
    values = np.asarray(values, np.float64)
    if not len(values):
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0


def most_read(reads, begin, end):
    """The articles of ``reads`` read in [begin, end), the most read first."""
    window = reads[(reads[TIME_COLUMN] >= begin) & (reads[TIME_COLUMN] < end)]
    return list(window["contentId"].value_counts().index)


def next_reads(day, begin, end, history):
    """Each visitor reading in [begin, end): (visitorId, the first article read there not in their ``history``)."""
    window = day[(day[TIME_COLUMN] >= begin) & (day[TIME_COLUMN] < end)].sort_values(TIME_COLUMN, kind="stable")
    out = {}
    for visitor, content in zip(window["visitorId"], window["contentId"]):
        if visitor not in out and content not in history.get(visitor, ()):
            out[visitor] = content
    return out


def reads_of_data_dir(data_dir):
    """The reads of a data directory with read times as walsmf.extract returns them: a row per pair, its duration
    the one its rating was given for (ratings.duration_of, by the directory's median), its latest read time."""
    if not tf.io.gfile.exists(os.path.join(data_dir, datadir.METADATA_FILE)):
        raise DataError("--data_dir {} holds no data directory (no {}): give one walsmf.preprocess wrote, or the "
                        "reads themselves with --extracted_csv".format(data_dir, datadir.METADATA_FILE))
    metadata = datadir.read_metadata(data_dir)
    median = metadata.get("median_duration_ms")
    if not median:
        raise DataError("{} records no median read time (metadata.json), so its ratings cannot be taken back to "
                        "durations: replay the reads themselves (--extracted_csv, from python -m walsmf.extract "
                        "--output)".format(data_dir))
    visitors, contents = (datadir.read_id_map(os.path.join(data_dir, name))
                          for name in (datadir.USERS_FILE, datadir.ITEMS_FILE))
    ledger = growth.read_ledger(data_dir, visitors, contents)
    if ledger.time is None:
        raise DataError("{} has no read times ({}): the replay steps through the reads' times; preprocess reads "
                        "with their {} column".format(data_dir, datadir.TIMES_FILE, TIME_COLUMN))
    return pd.DataFrame({"visitorId": np.asarray(visitors, object)[ledger.user],
                         "contentId": np.asarray(contents, object)[ledger.item],
                         "session_duration": duration_of(ledger.rating, median), TIME_COLUMN: ledger.time})


def replay(reads, source, workdir, window_hours=1.0, preset="lab", params=None, choose_blend=True,
           log=progress.say):
    """Run the replay (see the module's docstring) on ``reads`` (rows as walsmf.extract returns them, from
    ``source``, named in errors); return {(method, "known" or "new"): [(hit, ndcg, whether the article read was
    new since the cut), ...]}, a tuple per scored read.  With ``choose_blend``, the blend with the recent reads
    (--popularity_weight, --popularity_days, --popularity_rate) is first chosen on the day before the last."""
    if TIME_COLUMN not in reads:
        raise DataError("{} has no {} column: the replay steps through the reads' times".format(
            source, TIME_COLUMN))
    reads = reads.assign(visitorId=reads["visitorId"].astype(str), contentId=reads["contentId"].astype(str))
    cut = int(reads[TIME_COLUMN].max()) // DAY_MS * DAY_MS
    days_before = 2 if choose_blend else 1
    first = int(reads[TIME_COLUMN].min())
    days = cut // DAY_MS - first // DAY_MS + 1  # the UTC days the reads fall on, first to last
    if days <= days_before:
        raise DataError("{} holds reads of {} UTC day(s) ({} to {}): the replay needs {} (it trains on the days before "
                        "the last{}); give reads of more days".format(
                            source, days, utc_text(first)[:10], utc_text(cut)[:10], days_before + 1,
                            ", and chooses the blend on the day before it, or give --blend_as_given"
                            if choose_blend else ""))
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise DataError("--workdir {} exists and is not a directory: name a new or empty directory".format(workdir))
    refuse_nested(workdir, "--workdir")
    if os.path.isdir(workdir) and os.listdir(workdir):
        raise DataError("--workdir {} is not empty: the replay writes a data directory and a model there; give a "
                        "new directory".format(workdir))
    params = dict(params or {})
    if choose_blend:
        scored = replay_day(reads, cut - DAY_MS, os.path.join(workdir, "validation"), window_hours, preset, params,
                            log=lambda line: log("the day before: " + line), blends=BLENDS)
        (weight, hours, rate), hits = max(scored.items(), key=lambda item: (float(np.mean(item[1])), -item[0][0]))
        params.update(popularity_weight=weight, popularity_days=hours / 24.0, popularity_rate=rate)
        log("blend chosen on the day before ({:,} scored reads): popularity_weight {:g} with the last {:g} hours' "
            "reads{}, HR@10 {:.4f} ± {:.4f} (without a blend: {:.4f}); train with it: walsmf.task "
            "--popularity_weight {:g} --popularity_days {:g}{} (each refresh keeps it)".format(
                len(hits), weight, hours, " as rates" if rate else "", *summary(hits),
                float(np.mean(scored[BLENDS[0]])), weight, hours / 24.0, " --popularity_rate" if rate else ""))
    return replay_day(reads, cut, workdir, window_hours, preset, params, log)


def replay_day(reads, cut, workdir, window_hours, preset, params, log=progress.say, blends=None):
    """Train on ``reads`` before ``cut`` into ``workdir``, then step through the day after it (the module's
    docstring): replay's results; with ``blends`` [(popularity_weight, hours, whether as rates)], instead each
    blend's hits of the refreshed model (known and new visitors) as {blend: [hit, ...]}."""
    before, day = reads[reads[TIME_COLUMN] < cut], reads[(reads[TIME_COLUMN] >= cut) &
                                                         (reads[TIME_COLUMN] < cut + DAY_MS)]
    data_dir, model_dir = os.path.join(workdir, "data"), os.path.join(workdir, "model")
    start = time.time()
    preprocess.write_data_dir(before.reset_index(drop=True), data_dir, log=lambda _: None)
    metadata = datadir.read_metadata(data_dir)
    trained = settings_module.make(**dict(dict(preset=preset, seed=0), **params, input_path=data_dir,
                                          output_dir=model_dir, nusers=metadata["nusers"], nitems=metadata["nitems"]))
    with progress.quiet():  # the replay's own lines
        model.train_and_evaluate(trained)
    log("trained on {:,} reads before the cut ({:.0f} s); replaying {:,} reads of the next day in {:g}-hour "
        "windows".format(len(before), time.time() - start, len(day), window_hours))
    frozen = _answers(model_dir)
    refreshed = frozen
    known = set(before["visitorId"])
    old_articles = set(before["contentId"])
    history = collections.defaultdict(set)
    for visitor, content in zip(before["visitorId"], before["contentId"]):
        history[visitor].add(content)
    today = collections.defaultdict(list)
    results = collections.defaultdict(list)
    window = int(window_hours * HOUR_MS)
    popular = most_read(before, 0, cut)
    windows = range(cut, cut + DAY_MS, window)
    for number, begin in enumerate(windows, 1):
        end, start = begin + window, time.time()
        lately = {"most read, last {} h".format(hours): most_read(reads, begin - hours * HOUR_MS, begin)
                  for hours in MOST_READ_HOURS}
        nexts = next_reads(day, begin, end, history)
        for blend in blends or ():  # a blend at a time: its offsets made once for the window
            chosen = (blend[0], refreshed.popularity(reads[reads[TIME_COLUMN] < begin], *blend[1:]))
            for visitor, truth in nexts.items():
                results[blend].append(hit_of(refreshed(visitor, today[visitor], chosen), history[visitor], truth)[0])
        for visitor, truth in () if blends else nexts.items():
            side = "known" if visitor in known else "new"
            read = history[visitor]
            ranked = dict(lately, **{"frozen": frozen(visitor, today[visitor]),
                                     "refreshed": refreshed(visitor, today[visitor]), "most popular": popular})
            for method, items in ranked.items():
                results[method, side].append(hit_of(items, read, truth) + (truth not in old_articles,))
        arrived = day[(day[TIME_COLUMN] >= begin) & (day[TIME_COLUMN] < end)]
        for visitor, content in zip(arrived["visitorId"], arrived["contentId"]):
            history[visitor].add(content)
            today[visitor].append(content)
        if len(arrived) and end < cut + DAY_MS:
            with progress.quiet():
                refresh.refresh(model_dir, arrived)
            refreshed = _answers(model_dir)
        log("  window {}/{} ({} to {} UTC): {:,} next reads scored, {:,} reads folded in ({:.1f} s)".format(
            number, len(windows), utc_text(begin)[11:16], utc_text(end)[11:16], len(nexts),
            len(arrived) if end < cut + DAY_MS else 0, time.time() - start))
    if blends:
        return results
    young = [entry[2] for method, side in results if method == "frozen" for entry in results[method, side]]
    log("share of the scored reads on articles nobody read before the cut: {:.3f} of {:,}".format(
        float(np.mean(young)) if young else float("nan"), len(young)))
    return results


def _answers(model_dir):
    """A function of (visitorId, what they read today[, a blend (popularity_weight, the items' popularity)]) to
    the model's top-K contentIds for them, their reads left out: a known visitor's factor, or a new one folded in
    from today's reads; its ``popularity(reads, hours, rate)`` is the items' popularity of those reads (an
    extracted frame) as a refresh of them counts it with --popularity_days hours/24 and --popularity_rate."""
    export = modeldir.latest_export(os.path.join(model_dir, modeldir.EXPORTS_DIR))
    info = modeldir.serving_info(export)
    answers = ExportAnswers(export, info)
    known = set(answers.users.index)
    exported = (info["popularity_weight"], answers.popularity)
    applied = [exported]  # the blend answers ranks with (ExportAnswers made the exported one)

    def recommend(visitor, read_today, blend=None):
        instance = {"visitorId": visitor, "k": K, "excludeRead": True, "exclude": list(read_today)}
        if visitor not in known:
            instance["contentIds"] = list(read_today)
        blend = blend or exported
        if blend is not applied[0]:
            answers.blend(*blend)
            applied[0] = blend
        return [c for c in answers.answer([instance])[0]["top_k_content_ids"] if c]

    def popularity(reads, hours, rate):
        contents = answers.items.originals[:-1]
        items = pd.Index(contents).get_indexer(reads["contentId"])
        held = items >= 0
        return recent_counts(items[held], reads[TIME_COLUMN].values[held], len(contents), hours / 24.0,
                             rate).astype(np.float32)
    recommend.popularity = popularity
    return recommend


def format_results(results):
    """The replay's table: HR@10 and NDCG@10 with standard errors, and the reads scored, per method and visitors."""
    lines = ["{:<24}{:<7}{:>8}{:>10}{:>8}{:>10}{:>8}".format("method", "visitors", "reads", "HR@10", "±", "NDCG@10",
                                                            "±")]
    for side in ("known", "new"):
        for (method, which), values in results.items():
            if which != side:
                continue
            (hr, hr_se), (ndcg, ndcg_se) = (summary([v[n] for v in values]) for n in (0, 1))
            lines.append("{:<24}{:<7}{:>8,}{:>10.4f}{:>8.4f}{:>10.4f}{:>8.4f}".format(
                method, side, len(values), hr, hr_se, ndcg, ndcg_se))
    return "\n".join(lines)


def format_paired(results, against="refreshed"):
    """The ``against`` method's HR@10 minus each other method's, read by read on the same reads (so the standard
    error is of the differences: what the two share cancels), known and new visitors apart; "" without it."""
    lines = []
    for side in ("known", "new"):
        if (against, side) not in results:
            continue
        ours = np.array([hit for hit, *_ in results[against, side]])
        for (method, which), values in results.items():
            if which == side and method != against:
                difference, error = summary(ours - np.array([hit for hit, *_ in values]))
                lines.append("{:<24}{:<7}{:>8,}{:>+10.4f}{:>8.4f}{:>8}".format(
                    method, side, len(values), difference, error,
                    "{:+.1f}".format(difference / error) if error else "-"))
    if not lines:
        return ""
    return "\n".join(["{} against each, read by read (HR@10 difference, its standard error, and their ratio):".format(
        against), "{:<24}{:<7}{:>8}{:>10}{:>8}{:>8}".format("method", "visitors", "reads", "HR@10", "±", "SEs")]
        + lines)


def main(argv=None):
    """CLI: replay the last day of an extracted CSV or a data directory."""
    parser = flags.Parser(prog="python -m walsmf.replay", description=__doc__.split("\n\n")[0])
    reads = parser.add_mutually_exclusive_group(required=True)
    reads.add_argument("--extracted_csv",
                       help="the reads: visitorId,contentId,session_duration,read_time (the last day is replayed)")
    reads.add_argument("--data_dir", help="or a data directory with read times (walsmf.preprocess's): its reads, "
                                          "each pair's duration the one its rating was given for")
    parser.add_argument("--workdir", required=True, help="where the model and its data are written")
    parser.add_argument("--window_hours", type=float, default=1.0, help="window length (default 1 hour)")
    parser.add_argument("--preset", default="lab", choices=sorted(settings_module.PRESETS),
                        help="the trainer's settings (default: the lab's)")
    parser.add_argument("--params_file", help="a JSON object of walsmf.task settings over the preset "
                                              "(best_params.json, or e.g. {\"max_age_days\": 2})")
    parser.add_argument("--blend_as_given", action="store_true",
                        help="use --params_file's blend (popularity_weight, popularity_days, popularity_rate) as "
                             "it is, rather than choosing it on the day before the last")
    args = parser.parse_args(argv)
    if not 0 < args.window_hours <= 24:
        raise DataError("--window_hours {} is not a window of the day: give more than 0 and at most 24".format(
            args.window_hours))
    progress.set_verbosity()
    params = settings_module.params_as_settings(settings_module.read_params_file(args.params_file),
                                                args.params_file) if args.params_file else None
    reads = read_extracted_csv(args.extracted_csv) if args.extracted_csv else reads_of_data_dir(args.data_dir)
    results = replay(reads, args.extracted_csv or args.data_dir, args.workdir, args.window_hours, args.preset, params,
                     not args.blend_as_given)
    print(format_results(results))
    print(format_paired(results))


if __name__ == "__main__":
    run_cli(main)
