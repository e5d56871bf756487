"""walsmf.replay: the metrics by hand, the next unread read of each visitor, and a replay of a small news-shaped
stream in which the frozen model can never recommend an article published after its training."""
import math
import os
import re
import sys

import numpy as np
import pandas as pd
import pytest
from helpers import ROOT, run_in_process, run_module

from walsmf import modeldir, replay, settings
from walsmf.extract import read_extracted_csv

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from news_stream import news_stream  # noqa: E402 (the benchmarks' generator)


def test_the_stream_generator_writes_an_extracted_csv_and_replaces_nothing_else(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    for argv, message in ((["--output", notes], "--output {} exists and is not an extracted CSV".format(notes)),
                          (["--output", tmp_path / "s.csv", "--days", "0"], "--days 0 is not a count: give 1 or more")):
        result = run_in_process("news_stream", *argv)
        assert result.returncode == 1 and result.stderr.startswith("error: " + message), result.stderr
    assert notes.read_text() == "mine\n" and sorted(os.listdir(str(tmp_path))) == ["notes.txt"]
    for seed in (1, 2):  # its own output it replaces, whole
        assert run_in_process("news_stream", "--output", tmp_path / "s.csv", "--days", "2", "--visitors", "50",
                              "--seed", seed).returncode == 0
        written = pd.read_csv(tmp_path / "s.csv", dtype={"visitorId": str, "contentId": str})
        expected = news_stream(days=2, visitors=50, seed=seed)
        assert written.astype(str).values.tolist() == expected.astype(str).values.tolist()


def test_the_table_gives_each_method_and_visitors_hr_and_ndcg_with_their_standard_errors():
    results = {("frozen", "known"): [(1, 0.5, False), (0, 0.0, True)], ("frozen", "new"): [(1, 1.0, True)] * 3}
    header, known, new = replay.format_results(results).splitlines()
    assert header.split() == ["method", "visitors", "reads", "HR@10", "±", "NDCG@10", "±"]
    # HR 1/2, its standard error √(1/2 / 2) = 0.5 (sample variance over 2 reads); NDCG 0.25 ± 0.25
    assert known.split() == ["frozen", "known", "2", "0.5000", "0.5000", "0.2500", "0.2500"]
    assert new.split() == ["frozen", "new", "3", "1.0000", "0.0000", "1.0000", "0.0000"]


def test_the_refreshed_model_is_compared_with_each_method_read_by_read():
    hits = {"refreshed": [1, 1, 0, 1], "most read, last 3 h": [1, 0, 0, 0], "frozen": [1, 1, 0, 1]}
    results = {(method, "known"): [(hit, 0.0, False) for hit in values] for method, values in hits.items()}
    results["refreshed", "new"] = [(1, 1.0, True)]
    results["frozen", "new"] = [(0, 0.0, True)]
    title, header, *rows = replay.format_paired(results).splitlines()
    assert title.startswith("refreshed against each, read by read")
    assert header.split() == ["method", "visitors", "reads", "HR@10", "±", "SEs"]
    # differences 0, 1, 0, 1: mean 0.5, sample deviation √(1/3), standard error √(1/3)/2 = 0.2887, 1.7 of them; the
    # same hits throughout differ by nothing; one read has no spread to divide by
    assert [row.rsplit(None, 5) for row in rows] == [
        ["most read, last 3 h", "known", "4", "+0.5000", "0.2887", "+1.7"],
        ["frozen", "known", "4", "+0.0000", "0.0000", "-"],
        ["frozen", "new", "1", "+1.0000", "0.0000", "-"]]
    assert replay.format_paired({("frozen", "known"): [(1, 1.0, False)]}) == ""


def test_hit_and_ndcg_at_10_by_hand():
    assert replay.scores(["a", "b", "c"], "a") == (1.0, 1.0)
    assert replay.scores(["a", "b", "c"], "c") == (1.0, 0.5)  # 1 / log2(2 + 2)
    assert replay.scores([str(i) for i in range(20)], "12") == (0.0, 0.0)  # past the 10th
    assert replay.summary([1, 0, 0, 1]) == (0.5, pytest.approx(math.sqrt(1 / 3) / 2))


def test_each_visitors_next_read_is_their_first_unread_one_in_the_window():
    day = pd.DataFrame({"visitorId": ["v", "v", "w", "v", "x"], "contentId": ["a", "b", "c", "d", "e"],
                        "read_time": [5, 3, 4, 9, 20]})
    assert replay.next_reads(day, 0, 10, {"v": {"b"}}) == {"v": "a", "w": "c"}


def test_a_data_directorys_reads_are_its_pairs_with_their_times_and_durations_that_rate_as_its_ratings(tmp_path):
    from walsmf import preprocess

    stream = news_stream(days=2, visitors=300, articles_per_day=30)
    preprocess.write_data_dir(stream, str(tmp_path / "data"), log=lambda _: None)
    reads = replay.reads_of_data_dir(str(tmp_path / "data"))
    both = stream.merge(reads, on=["visitorId", "contentId"], suffixes=("", "_back"))
    assert len(both) == len(stream) == len(reads)  # a row per pair, as the stream has
    assert (both["read_time"] == both["read_time_back"]).all()
    # the lab's rule by hand, 0.3·(1 + (d − median)/median) at most 1: each duration rates as the stream's did
    median = stream["session_duration"].median()
    np.testing.assert_allclose(np.minimum(0.3 * both["session_duration_back"] / median, 1),
                               np.minimum(0.3 * both["session_duration"] / median, 1), rtol=1e-9)


@pytest.mark.subprocess
@pytest.mark.training
def test_a_replay_scores_every_method_and_the_frozen_model_never_names_a_newer_article(tmp_path):
    news_stream(days=3, visitors=600, articles_per_day=60).to_csv(tmp_path / "news.csv", index=False)
    lines = []
    results = replay.replay(read_extracted_csv(str(tmp_path / "news.csv")), "news.csv", str(tmp_path / "work"),
                            window_hours=12, log=lines.append)
    # a line per stage and window: the day before's (where the blend is chosen), the blend, then the last day's
    windows = [re.match(r"(the day before: )?  window (\d)/2 \((\d\d:\d\d) to (\d\d:\d\d) UTC\): [\d,]+ next reads "
                        r"scored, ([\d,]+) reads folded in", line).groups()
               for line in lines if re.search(r"window \d", line)]
    assert [w[:4] for w in windows] == [(day, n, begin, end) for day in ("the day before: ", None)
                                        for n, begin, end in (("1", "00:00", "12:00"), ("2", "12:00", "00:00"))]
    assert [w[4] != "0" for w in windows] == [True, False, True, False]  # the last window is not folded in
    chosen_line = next(line for line in lines if line.startswith("blend chosen"))
    assert lines.index(chosen_line) == 3 and lines[0].startswith("the day before: trained on")
    # the blend was chosen on the day before, by the refreshed model's hits there, and the last day's model has it
    chosen = re.match(r"blend chosen on the day before \(([\d,]+) scored reads\): popularity_weight ([\d.]+) with "
                      r"the last ([\d.]+) hours' reads( as rates)?", chosen_line)
    weight, hours, rate = float(chosen.group(2)), float(chosen.group(3)), bool(chosen.group(4))
    assert (weight, hours, rate) in replay.BLENDS and int(chosen.group(1).replace(",", "")) > 50
    info = modeldir.serving_info(str(tmp_path / "work" / "model"))
    assert (info["popularity_weight"], info["popularity_days"], info["popularity_rate"]) == (
        weight, pytest.approx(hours / 24), rate)
    # the flags it names train that blend
    named = settings.parse(["--input_path", "d", "--output_dir", "o"] + chosen_line.split("walsmf.task ")[1].split(
        " (each")[0].split())
    assert (named.popularity_weight, named.popularity_days, named.popularity_rate) == (
        weight, pytest.approx(hours / 24), rate)
    assert os.path.isdir(str(tmp_path / "work" / "validation" / "model"))
    methods = {method for method, _ in results}
    assert methods == {"frozen", "refreshed", "most popular", "most read, last 1 h", "most read, last 3 h",
                       "most read, last 24 h"}
    counts = {side: {len(results[m, side]) for m in methods} for side in ("known", "new")}
    assert all(len(c) == 1 for c in counts.values()) and counts["known"].pop() > 50
    assert any(young for _, _, young in results["frozen", "known"])
    assert not any(hit for hit, _, young in results["frozen", "known"] + results["frozen", "new"] if young)
    # read by read, the refreshed model's lead over each method is the difference of their HR@10s
    rows = [row.rsplit(None, 5) for row in replay.format_paired(results).splitlines()[2:]]
    assert len(rows) == 2 * (len(methods) - 1)
    for method, side, reads, difference, _, _ in rows:
        assert int(reads.replace(",", "")) == len(results[method, side])
        assert float(difference) == pytest.approx(np.mean([h for h, *_ in results["refreshed", side]])
                                                  - np.mean([h for h, *_ in results[method, side]]), abs=6e-5)
    # the command refuses a used --workdir: its data and models stay as they are
    done = run_module("walsmf.replay", "--extracted_csv", tmp_path / "news.csv", "--workdir", tmp_path / "work")
    assert done.returncode == 1 and re.fullmatch(r"error: --workdir .* is not empty: .*\n", done.stderr), done.stderr
