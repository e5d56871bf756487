"""Execute notebooks/wals.ipynb headless with papermill, in its own directory.

    .venv/bin/python scripts/execute_notebook.py            # in place, lab scale: the committed outputs
    .venv/bin/python scripts/execute_notebook.py OUT -p SCALE 0.01 -p NUM_EPOCHS 2

The executed notebook is stamped with the hash of its code cells, so a test
can tell that committed outputs come from the current cell sources.
"""
import argparse
import ast
import hashlib
import json
import os
import time

import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join("notebooks", "wals.ipynb")


def source_hash(notebook):
    """sha256 of the notebook's code cell sources (papermill's injected cell excluded)."""
    sources = [cell.source for cell in notebook.cells
               if cell.cell_type == "code" and "injected-parameters" not in cell.metadata.get("tags", [])]
    return hashlib.sha256(json.dumps(sources).encode()).hexdigest()


def execute(output, parameters=None, cwd=None):
    """Run the notebook into ``output``; parameters override the `parameters` cell."""
    import papermill

    cells = sum(cell.cell_type == "code" for cell in nbformat.read(NOTEBOOK, as_version=4).cells)
    started, done = time.time(), []

    def progress(cell, cell_index):
        """A line as each code cell starts (papermill's own bar is one line that a log never shows)."""
        if cell.cell_type == "code" and "injected-parameters" not in cell.metadata.get("tags", []):
            done.append(cell_index)
            print("cell {} of {} ({:.0f} s)".format(len(done), cells, time.time() - started), flush=True)
    papermill.execute_notebook(NOTEBOOK, output, parameters=parameters or {}, kernel_name="python3",
                               cwd=cwd or os.path.join(ROOT, "notebooks"), progress_bar=False,
                               on_cell_start=progress)
    notebook = nbformat.read(output, as_version=4)
    notebook.metadata["walsmf"] = {"source_sha256": source_hash(notebook)}
    notebook.metadata.pop("papermill", None)  # run timings and paths of this machine
    for cell in notebook.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    nbformat.write(notebook, output)
    return notebook


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", nargs="?", default=NOTEBOOK)
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    args = parser.parse_args()
    os.chdir(ROOT)
    execute(args.output, {name: ast.literal_eval(value) if value[:1] not in "'\"" and not value.isalpha()
                          else value.strip("'\"") for name, value in args.p})


if __name__ == "__main__":
    main()
