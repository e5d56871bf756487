"""notebooks/wals.ipynb runs headless top to bottom, and its committed outputs match its sources."""
import importlib.util
import json
import os
import re

import nbformat
import pytest
from helpers import ROOT

spec = importlib.util.spec_from_file_location("execute_notebook", os.path.join(ROOT, "scripts", "execute_notebook.py"))
execute_notebook = importlib.util.module_from_spec(spec)
spec.loader.exec_module(execute_notebook)
COMMITTED = nbformat.read(os.path.join(ROOT, execute_notebook.NOTEBOOK), as_version=4)


def errors(notebook):
    return [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


@pytest.mark.subprocess
def test_notebook_runs_offline_at_small_scale(tmp_path):
    # a model of another run left in the module step's directory: the step starts afresh, as step 8 does
    (tmp_path / "wals_trained_module").mkdir()
    (tmp_path / "wals_trained_module" / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-9"\n')
    notebook = execute_notebook.execute(
        str(tmp_path / "wals.ipynb"), {"SCALE": 0.01, "NUM_EPOCHS": 2, "BATCH_SIZE": 64, "TUNE_TRIALS": 2},
        cwd=str(tmp_path))
    assert errors(notebook) == []
    assert len((tmp_path / "tuned" / "trials.csv").read_text().splitlines()) == 1 + 2
    metadata = json.loads((tmp_path / "data" / "metadata.json").read_text())
    lines = (tmp_path / "wals_trained" / "batch_pred.txt").read_text().splitlines()
    assert len(lines) == metadata["nusers"] and all(len(set(line.split(","))) == 3 for line in lines)
    assert (tmp_path / "wals_trained_module" / "batch_pred.txt").exists()
    text = json.dumps([c.outputs for c in notebook.cells if c.cell_type == "code"])
    assert "PROJECTION" in text and "Will train for" in text


def test_committed_outputs_come_from_the_current_cells():
    code = [c for c in COMMITTED.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert COMMITTED.metadata["walsmf"]["source_sha256"] == execute_notebook.source_hash(COMMITTED), \
        "cells changed since the outputs were made: run .venv/bin/python scripts/execute_notebook.py"
    assert errors(COMMITTED) == []
    pictures = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert pictures >= 4  # durations and ratings, long tails, training loss, item factors


def test_committed_notebook_is_a_lab_scale_run_with_no_machine_paths():
    text = nbformat.writes(COMMITTED)
    assert re.search(r'"/(work|root|tmp|home)/', text) is None
    assert "5668 items, 82802 users" in text
