"""Every CLI over a table of bad inputs, as a user types them: one true `error:` line that names the input, a
non-zero exit, and every file the user has (data, model, their own files) exactly as it was.

The commands run in this process through walsmf.errors.run_cli, the path `python -m walsmf.<cli>` takes
(one subprocess each would cost minutes); random files go through the same path (hypothesis)."""
import os
import shutil
import socket

import pytest
from helpers import run_in_process
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st


def snapshot(top):
    """Every file under ``top``: its path and bytes (what the user has)."""
    return {os.path.relpath(os.path.join(root, name), top): open(os.path.join(root, name), "rb").read()
            for root, _, names in os.walk(top) for name in names}


@pytest.fixture(scope="module")
def site(tmp_path_factory, small_sample, small_data, trained):
    """A user's folder: a data directory D, a trained model M (with its export), and files of their own."""
    top = tmp_path_factory.mktemp("site")
    shutil.copytree(small_data[0], str(top / "D"))
    shutil.copytree(trained.output_dir, str(top / "M"))
    own = top / "w"
    (own / "adir").mkdir(parents=True)
    shutil.copytree(small_data[0], str(own / "untimed_data"))  # a data directory of reads without times
    os.remove(str(own / "untimed_data" / "times.csv"))
    shutil.copy(small_sample, str(own / "in.parquet"))
    for name, data in {"bin.parquet": b"\x00\x01garbage", "empty.csv": b"", "cols.csv": b"a,b\n1,2\n",
                       "header.csv": b"visitorId,contentId,session_duration\n",
                       "neg.csv": b"visitorId,contentId,session_duration\na,x,-5\nb,y,0\n",
                       "text.csv": b"visitorId,contentId,session_duration\na,x,abc\n",
                       "texttime.csv": b"visitorId,contentId,session_duration,read_time\na,x,100,yesterday\n",
                       "blankids.csv": b"visitorId,contentId,session_duration\n,x,100\na,,200\n",
                       "file.txt": b"hi\n", "i.json": b'{"userId": 1}\n', "empty.json": b"",
                       "bin.json": b"\xff\xfe{}", "params.json": b'{"num_epochs": "many"}',
                       "times.csv": b"visitorId,contentId,time\nnobody,nothing,yesterday\n",
                       # 2023-11-14 01:46 UTC; then reads on 2023-11-14, -15 and -16
                       "untimed.csv": b"visitorId,contentId,session_duration\na,x,100\n",
                       "oneday.csv": b"visitorId,contentId,session_duration,read_time\na,x,100,1700000000000\n",
                       "days.csv": b"visitorId,contentId,session_duration,read_time\na,x,100,1700000000000\n"
                                   b"b,x,100,1700090000000\nc,y,100,1700180000000\n"}.items():
        (own / name).write_bytes(data)
    return top


def run(cli, argv):
    """(exit code, stderr lines, stdout) of one CLI run, as `python -m walsmf.<cli>` gives them."""
    result = run_in_process("walsmf." + cli, *argv)
    return result.returncode, [line for line in result.stderr.splitlines() if line.strip()], result.stdout


# (cli, arguments, what the one line must say); {W}: the user's files, {D}: data, {M}: model, {E}: its exports
CASES = [
    ("sample", "--scale 0 --output {W}/s.parquet", r"--scale 0.0 is not a size: give a positive number"),
    ("sample", "--scale nan --output {W}/s.parquet", r"--scale nan is not a size"),
    # a size, a count or a length beyond what the machine holds: refused before any work, naming the flag
    ("sample", "--scale 1e9 --output {W}/s.parquet", r"--scale 1e\+09's ga360 sample would take about [0-9.]+ GB to "
                                                     r"generate and this machine has .* give a smaller --scale"),
    ("sample", "--schema ga4 --scale 1e8 --output {W}/s.parquet", r"--scale 1e\+08's ga4 sample would take about"),
    ("task", "--input_path {D} --output_dir {W}/o --nitems 10000000000000", r"[0-9,]+ users' and 10,000,000,000,000 "
                                                                            r"items' factors of 10 would take about "
                                                                            r".* \(leave --nusers and --nitems out"),
    ("task", "--input_path {D} --output_dir {W}/o --topk 100000", r"--topk 100000 is more recommendations than the "
                                                                  r"[0-9]+ items: give at most"),
    ("serve", "--model-dir {E} --workers 1000000", r"1000000 worker processes would take about .* give fewer "
                                                   r"--workers"),
    ("sample", "--output {W}/adir", r"--output {W}/adir is a directory: give a file name"),
    ("sample", "--output {W}/file.txt/s.parquet", r"cannot be written: {W}/file.txt is a file"),
    ("sample", "--output /proc/s.parquet", r"--output /proc/s.parquet cannot be written \("),
    ("extract", "--sessions_file {W}/none.parquet --output {W}/o.csv", r"sessions file {W}/none.parquet does not "
                                                                         r"exist"),
    ("extract", "--sessions_file {W}/adir --output {W}/o.csv", r"--sessions_file {W}/adir is a directory"),
    ("extract", "--sessions_file {W}/bin.parquet --output {W}/o.csv", r"{W}/bin.parquet is not a Parquet file"),
    ("extract", "--sessions_file {W}/empty.csv --output {W}/o.csv", r"{W}/empty.csv is not a Parquet file"),
    ("extract", "--sessions_file '{W}/*.nothing'", r"no file matches --sessions_file"),
    ("extract", "--start_date 20241301", r"--start_date '20241301' is not a date: give YYYYMMDD"),
    ("extract", "--start_date 20240105 --end_date 20240101", r"--end_date 20240101 is before --start_date"),
    ("extract", "--content_index 0", r"--content_index 0 is not a custom dimension index"),
    ("extract", "--schema ga4 --content_param a-b", r"--content_param 'a-b' is not an event parameter name"),
    ("extract", "--schema ga4 --content_pattern '('", r"--content_pattern '\(' is not a regular expression"),
    ("extract", "--schema ga4 --content_pattern ''", r"argument --content_pattern: is empty"),
    ("extract", "--schema ga4 --scale 0.01 --content_pattern /video/", r"no content of .* matches "
                                                                       r"--content_pattern '/video/'"),
    ("extract", "--source bigquery --project p --table 'p.d.t; DROP' --print_sql", r"--table 'p.d.t; DROP' is not"),
    ("extract", "--output {W}/adir", r"--output {W}/adir is a directory"),
    ("extract", "--output /proc/o.csv", r"--output /proc/o.csv cannot be written"),
    ("extract", "--sessions_file {W}/in.parquet --output {W}/in.parquet", r"--output {W}/in.parquet is this "
                                                                         r"command's input"),
    ("extract", "--sessions_file {W}/in.parquet --output {D}/rows.csv", r"--output {D}/rows.csv is inside the data "
                                                                        r"directory {D}, which walsmf writes whole"),
    ("sample", "--output {D}/metadata.json", r"--output {D}/metadata.json is inside the data directory {D}"),
    ("preprocess", "--extracted_csv {D}/collab_raw.csv --data_dir {D}", r"--extracted_csv {D}/collab_raw.csv is "
                                                                          r"inside --data_dir {D}, which this run "
                                                                          r"replaces whole"),
    ("preprocess", "--extracted_csv {W}/none.csv --data_dir {W}/d", r"extracted CSV {W}/none.csv does not exist"),
    ("preprocess", "--extracted_csv {W}/adir --data_dir {W}/d", r"--extracted_csv {W}/adir is a directory"),
    ("preprocess", "--extracted_csv {W}/empty.csv --data_dir {W}/d", r"{W}/empty.csv is not a CSV of visitorId"),
    ("preprocess", "--extracted_csv {W}/cols.csv --data_dir {W}/d", r"{W}/cols.csv has no columns visitorId, "
                                                                      r"contentId, session_duration"),
    ("preprocess", "--extracted_csv {W}/header.csv --data_dir {W}/d", r"{W}/header.csv holds no \(visitor, "
                                                                        r"article\) row"),
    ("preprocess", "--extracted_csv {W}/neg.csv --data_dir {W}/d", r"{W}/neg.csv holds no \(visitor, article\)"),
    ("preprocess", "--extracted_csv {W}/blankids.csv --data_dir {W}/d", r"row with both ids"),
    ("preprocess", "--extracted_csv {W}/text.csv --data_dir {W}/d", r"{W}/text.csv: session_duration 'abc' is "
                                                                      r"not a number: give session_duration as "
                                                                      r"numbers \(milliseconds read\)"),
    ("preprocess", "--extracted_csv {W}/texttime.csv --data_dir {W}/d", r"{W}/texttime.csv: read_time 'yesterday' "
                                                                          r"is not a number: give read_time as "
                                                                          r"numbers \(ms since the epoch\)"),
    ("preprocess", "--scale 0.02 --data_dir {W}", r"{W} holds files walsmf did not write"),
    ("preprocess", "--scale 0.02 --data_dir {W}/file.txt", r"{W}/file.txt exists and is not a directory"),
    ("preprocess", "--scale 0.02 --data_dir {M}", r"{M} holds files walsmf did not write"),
    # a directory written inside one walsmf writes whole (replacing that one would delete it)
    ("preprocess", "--scale 0.02 --data_dir {D}/sub", r"{D}/sub is inside the data directory {D}, which walsmf "
                                                        r"writes whole: name a directory elsewhere"),
    ("task", "--input_path {D} --output_dir {M}/sub", r"--output_dir {M}/sub is inside the model directory {M}"),
    ("evaluate", "--split_from {D} --data_dir {M}/split", r"{M}/split is inside the model directory {M}"),
    ("tune", "--input_path {D} --output_dir {M}/tuned", r"{M}/tuned is inside the model directory {M}"),
    ("replay", "--extracted_csv {W}/days.csv --workdir {D}/r", r"--workdir {D}/r is inside the data directory {D}"),
    ("task", "--input_path {W}/none --output_dir {W}/o", r"{W}/none/metadata.json does not exist"),
    ("task", "--input_path {D} --output_dir {D}", r"--output_dir {D} is --input_path {D} or inside it"),
    ("task", "--input_path {D} --output_dir {D}/model", r"--output_dir {D}/model is --input_path {D} or inside"),
    ("task", "--input_path {D} --output_dir {W}/file.txt", r"--output_dir {W}/file.txt is not a directory"),
    ("task", "--input_path {D} --output_dir /proc/m", r"--output_dir /proc/m cannot be written"),
    ("task", "--input_path {D} --output_dir {W}/o --num_epochs 0", r"--num_epochs 0 is outside \(0, 1e\+06\]"),
    ("task", "--input_path {D} --output_dir {W}/o --n_embeds 0", r"--n_embeds must be a positive integer"),
    ("task", "--input_path {D} --output_dir {W}/o --topk -2", r"--topk must be a positive integer"),
    ("task", "--input_path {D} --output_dir {W}/o --unobserved_weight nan", r"--unobserved_weight nan is outside "
                                                                              r"\(0, 1e\+06\]"),
    ("task", "--input_path {D} --output_dir {W}/o --row_weight 1e40", r"--row_weight 1e\+40 is outside"),
    ("task", "--input_path {D} --output_dir {W}/o --params_file {W}", r"--params_file {W} is a directory: give a "
                                                                      r"JSON file"),
    ("task", "--input_path {D} --output_dir ''", r"argument --output_dir: is empty: give a value"),
    ("preprocess", "--data_dir ''", r"argument --data_dir: is empty: give a value"),
    ("task", "--input_path {D} --output_dir {W}/o --nusers 10", r"--nusers 10 is fewer than the [0-9,]+ users of "
                                                                r"{D} \(metadata.json\): leave --nusers out"),
    ("task", "--input_path {D} --output_dir {W}/o --params_file {W}/file.txt", r"--params_file {W}/file.txt is "
                                                                                 r"not JSON"),
    ("task", "--input_path {D} --output_dir {W}/o --params_file {W}/params.json", r"num_epochs"),
    ("task", "--input_path {D} --output_dir {W}/o --nitems 3", r"--nitems 3 is fewer than the [0-9,]+ items of {D}"),
    ("task", "--input_path {D} --output_dir {M} --regularization 7", r"{M} holds a model trained with other"),
    ("predict", "--model-dir {W}/none --json-instances {W}/i.json", r"{W}/none is not an exported model"),
    ("predict", "--model-dir {D} --json-instances {W}/i.json", r"{D} is not an exported model"),
    ("predict", "--model-dir {E} --json-instances {W}/none.json", r"instances file {W}/none.json does not exist"),
    ("predict", "--model-dir {E} --json-instances {W}/adir", r"instances file {W}/adir is a directory"),
    ("predict", "--model-dir {E} --json-instances {W}/empty.json", r"instances file {W}/empty.json holds no"),
    ("predict", "--model-dir {E} --json-instances {W}/bin.json", r"{W}/bin.json line 1 is not UTF-8 text"),
    ("predict", "--model-dir {E} --json-instances {W}/file.txt", r"{W}/file.txt line 1: not JSON"),
    ("evaluate", "--data_dir {W}/none --model_dir {M}", r"{W}/none/collab_mapped.csv does not exist"),
    ("evaluate", "--data_dir {D} --model_dir {M}", r"{D}/heldout.csv does not exist: make one with"),
    ("evaluate", "--split_from {D} --data_dir {D}", r"--data_dir {D} is --split_from {D} or inside it"),
    ("evaluate", "--split_from {D} --data_dir {W}/s --holdout 0", r"--holdout 0 holds out nothing"),
    ("evaluate", "--split_from {D} --data_dir {W}/s --k 0", r"--k 0 must be 1 or more"),
    ("evaluate", "--split_from {D} --data_dir {W}/s --latest_from {W}/adir", r"times file {W}/adir is a directory"),
    ("evaluate", "--split_from {D} --data_dir {W}/s --latest_from {W}/times.csv", r"'yesterday' is neither a "
                                                                                    r"number nor a date"),
    ("evaluate", "--split_from {D} --data_dir {W}/file.txt", r"{W}/file.txt exists and is not a directory"),
    ("tune", "--data_dir {D} --output_dir {D}/tune", r"--output_dir {D}/tune is --data_dir {D} or inside it"),
    ("tune", "--data_dir {D} --output_dir {W}/t --max_trials 0", r"--max_trials 0 must be at least 1"),
    ("tune", "--data_dir {W}/none --output_dir {W}/t", r"{W}/none/collab_mapped.csv does not exist"),
    ("tune", "--data_dir {D} --output_dir {W}", r"{W} holds files walsmf did not write"),
    ("serve", "--model-dir {W}/none", r"--model-dir {W}/none is not a directory"),
    ("serve", "--model-dir {D} --port 1", r"{D} is not an exported model"),
    ("serve", "--model-dir {E} --port 70000", r"--port 70000 is not a TCP port"),
    ("serve", "--model-dir {E} --workers 0", r"--workers 0 is not a number of processes"),
    ("serve", "--model-dir {E} --max_request_bytes 0", r"--max_request_bytes 0 answers no request"),
    ("serve", "--model-dir {E} --max_request_bytes 100000000000", r"--max_request_bytes 100000000000 is more than a "
                                                                  r"worker should hold: give 1 to"),
    ("serve", "--model-dir {E} --poll_seconds inf", r"--poll_seconds inf is not a polling interval: give 0 \(never\)"),
    ("serve", "--model-dir {E} --poll_seconds 1e-9", r"--poll_seconds 1e-09 is not a polling interval"),
    ("replay", "--extracted_csv {W}/days.csv --workdir {W}/r --window_hours 0", r"--window_hours 0.0 is not a "
                                                                                r"window of the day"),
    ("replay", "--extracted_csv {W}/cols.csv --workdir {W}/r", r"{W}/cols.csv .*visitorId"),
    ("replay", "--extracted_csv {W}/days.csv --workdir {W}/file.txt", r"--workdir {W}/file.txt exists and is not a "
                                                                        r"directory: name a new or empty directory"),
    ("replay", "--extracted_csv {W}/untimed.csv --workdir {W}/r", r"{W}/untimed.csv has no read_time column"),
    ("replay", "--extracted_csv {W}/oneday.csv --workdir {W}/r", r"{W}/oneday.csv holds reads of 1 UTC day\(s\) "
                                                                 r"\(2023-11-14 to 2023-11-14\): the replay needs 3"),
    ("replay", "--extracted_csv {W}/oneday.csv --workdir {W}/r --blend_as_given", r"holds reads of 1 UTC day\(s\) "
                                                                                  r".*: the replay needs 2"),
    ("replay", "--extracted_csv {W}/days.csv --workdir {D}", r"--workdir {D} is not empty: .* give a new directory"),
    ("replay", "--extracted_csv {W}/days.csv --workdir {W}/r --params_file {W}/params.json", r"num_epochs"),
    ("replay", "--data_dir {W}/adir --workdir {W}/r", r"--data_dir {W}/adir holds no data directory \(no "
                                                       r"metadata.json\): give one walsmf.preprocess wrote"),
    ("replay", "--data_dir {W}/none --workdir {W}/r", r"--data_dir {W}/none holds no data directory"),
    ("replay", "--data_dir {W}/untimed_data --workdir {W}/r", r"{W}/untimed_data has no read times \(times.csv\): "
                                                               r"the replay steps through the reads' times"),
    ("replay", "--data_dir {D} --extracted_csv {W}/days.csv --workdir {W}/r", r"not allowed with argument"),
    ("replay", "--data_dir {D} --workdir {D}", r"--workdir {D} is not empty: .* give a new directory"),
    ("refresh", "--model-dir {M} --extracted_csv {W}/text.csv", r"{W}/text.csv: session_duration 'abc' is not a "
                                                                  r"number: give session_duration as numbers"),
    ("refresh", "--model-dir {M} --extracted_csv {W}/texttime.csv", r"{W}/texttime.csv: read_time 'yesterday' is not "
                                                                      r"a number"),
    ("refresh", "--model-dir {W}/none --extracted_csv {W}/text.csv", r"--model_dir {W}/none does not exist: give the "
                                                                       r"--output_dir of a walsmf.task training"),
    ("refresh", "--model-dir {W}/file.txt --extracted_csv {W}/text.csv", r"--model_dir {W}/file.txt is not a "
                                                                           r"directory"),
    ("refresh", "--model-dir {M} --extracted_csv {W}/neg.csv --sweeps -1", r"--sweeps -1 is not a number of sweeps"),
    ("refresh", "--model-dir {M} --extracted_csv {W}/neg.csv --keep_days nan", r"--keep_days nan is not a number of "
                                                                                r"days: give more than 0"),
    ("serve", "--model-dir {E} --host 127.0.0.1 --port {BUSY}", r"cannot listen on 127.0.0.1:{BUSY} \(Address "
                                                                 r"already in use\)"),
]


@pytest.fixture(scope="module")
def busy_port():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        yield listening.getsockname()[1]


@pytest.mark.training
@pytest.mark.parametrize("cli, argv, says", CASES, ids=["{}: {}".format(c, a) for c, a, _ in CASES])
def test_a_bad_input_is_one_true_error_line_a_failed_exit_and_nothing_of_the_users_changed(site, busy_port, cli,
                                                                                           argv, says):
    import re
    import shlex
    places = {"W": str(site / "w"), "D": str(site / "D"), "M": str(site / "M"),
              "E": str(site / "M" / "export" / "Servo"), "BUSY": str(busy_port)}
    before = snapshot(str(site))
    code, lines, _ = run(cli, [a.format(**places) for a in shlex.split(argv)])
    assert code not in (0, None) and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert re.search(says.format(**{k: re.escape(v) for k, v in places.items()}), lines[0]), lines[0]
    assert "Error:" not in lines[0].split(":", 2)[1], "a bare exception name: " + lines[0]
    assert snapshot(str(site)) == before


RANDOM_FILES = hsettings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
LINES = st.lists(st.one_of(st.text(max_size=30), st.sampled_from(
    ["visitorId,contentId,session_duration", "a,x,1000", "b,y,", ",,", "c,z,1e400", "d,x,-0", "e,x,1.5",
     '{"userId": 1}', '{"userId": -1, "contentIds": ["x"]}', '{"k": 0}', "[]", "null"])), max_size=6)


@pytest.mark.training
def test_random_files_are_read_or_refused_in_one_line_never_half_written(site, tmp_path):
    """Any file as --extracted_csv or --json-instances: a data directory (or an answer), or one error line and
    nothing written."""
    export = str(site / "M" / "export" / "Servo")

    @RANDOM_FILES
    @given(LINES, st.booleans())
    def check(lines, as_bytes):
        path = tmp_path / "input"
        data = "\n".join(lines).encode("utf-8")
        path.write_bytes(data[::-1] if as_bytes else data)  # reversed: broken UTF-8 and odd CSV alike
        shutil.rmtree(str(tmp_path / "d"), ignore_errors=True)
        for cli, argv, output in (("preprocess", ["--extracted_csv", str(path), "--data_dir", str(tmp_path / "d")],
                                   tmp_path / "d"),
                                  ("predict", ["--model-dir", export, "--json-instances", str(path)], None)):
            code, err, out = run(cli, argv)
            if code in (0, None):
                assert err == [] and (output is None or (output / "metadata.json").exists()), err
            else:
                assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
                assert "Error:" not in err[0].split(":", 2)[1], err[0]
                assert not output.exists() if output else out == ""  # no half answer printed
            assert sorted(os.listdir(str(tmp_path))) in (["input"], ["d", "input"])
    check()
