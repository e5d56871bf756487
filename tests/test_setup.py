"""The project's setup script: it finds Python 3.7 or says in one line that there is none."""
import os
import shutil
import subprocess

import pytest
from helpers import ROOT


@pytest.mark.subprocess
def test_setup_without_python37_stops_with_one_clear_line(tmp_path):
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    for name in ("scripts/setup-env", "requirements.lock", "setup.py"):
        shutil.copy(os.path.join(ROOT, name), str(checkout / name))
    empty = tmp_path / "no-pyenv"
    empty.mkdir()
    result = subprocess.run(["bash", str(checkout / "scripts" / "setup-env")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(empty), "PYENV_ROOT": str(empty)})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: walsmf needs Python 3.7")
    assert not (checkout / ".venv").exists()


@pytest.mark.subprocess
def test_sdist_carries_the_package(tmp_path):
    import sys
    import tarfile
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(tmp_path)], cwd=ROOT, check=True,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    (archive,) = tmp_path.glob("walsmf-*.tar.gz")
    names = tarfile.open(str(archive)).getnames()
    for module in ("task", "model", "predict", "preprocess", "evaluate"):
        assert any(n.endswith("walsmf/{}.py".format(module)) for n in names)


@pytest.mark.subprocess
@pytest.mark.training
def test_trainer_imports_nothing_ai_platform_runtime_lacks():
    """A job's Python has TensorFlow, numpy and pandas; setup.py asks for protobuf<4 only; extras stay optional."""
    import sys
    code = ("import sys\n"
            "for name in ('duckdb', 'sqlglot', 'pyarrow', 'google.cloud.bigquery', 'implicit', 'matplotlib',\n"
            "             'apache_beam', 'hypertune'):\n"
            "    sys.modules[name] = None\n"
            "import walsmf.task, walsmf.trainer, walsmf.model, walsmf.evaluate, walsmf.predict, walsmf.cluster\n")
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.subprocess
@pytest.mark.training
@pytest.mark.parametrize("content", [[], pytest.param(["CONTENT_PARAM=page_location"], marks=pytest.mark.slow)],
                         ids=["article_id", "page_location"])
def test_make_run_on_the_ga4_sample_is_quiet_and_recommends_articles(tmp_path, content):
    import re

    result = subprocess.run(["make", "run", "SCHEMA=ga4", "SCALE=0.02", "NUM_EPOCHS=2",
                             "DATA_DIR={}".format(tmp_path / "data"), "OUTPUT_DIR={}".format(tmp_path / "out")] +
                            content, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=600,
                            env={k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))})
    assert result.returncode == 0, result.stdout[-3000:]
    lines = result.stdout.strip().splitlines()
    generated = [line for line in lines if line.startswith("Generating ") or "rows generated" in line]
    # 25 at most on a fresh clone: with the setup's line and the sample generation's two
    assert len(lines) - len(generated) <= 22, result.stdout
    assert "tensorflow" not in result.stdout.lower().replace("tensorflow 1.15", "")
    with open(str(tmp_path / "out" / "batch_pred_original_ids.txt")) as f:
        recommended = {c for line in f for c in line.rstrip("\n").split("\t")[1].split(",")}
    if content:  # page URLs: articles' pages, never the site's root
        assert recommended and all(re.fullmatch(r"https://news\.example/[a-z]+/[0-9]+", c) for c in recommended)
    else:  # the sample's article ids
        assert recommended and all(c.isdigit() for c in recommended)
