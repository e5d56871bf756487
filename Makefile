# walsmf: `make run` sets up and runs the lab end to end on the embedded
# sample; `make test` sets up and runs the tests.  See README.md.
PY := .venv/bin/python
DATA_DIR ?= data
OUTPUT_DIR ?= wals_trained
SCALE ?= 1
NUM_EPOCHS ?= 5
# ga360 (the lab's Universal Analytics sessions) or ga4 (GA4 events): which embedded sample runs
SCHEMA ?= ga360
# GA4: the event parameter naming the article (the embedded sample's pages carry article_id; page_location is the
# URL) and a regular expression the articles' ids match (e.g. /article/), passed to walsmf.preprocess
CONTENT_PARAM ?= $(if $(filter ga4,$(SCHEMA)),article_id,)
CONTENT_PATTERN ?=

.PHONY: setup serve-env data run test test-slow lint bench notebook clean

setup:
	@scripts/setup-env

# The serving environment (.venv-serve): walsmf.serve and walsmf.predict on Python 3.12 and TensorFlow 2.21.
serve-env:
	@scripts/setup-serve-env

data: setup
	$(PY) -m walsmf.preprocess --data_dir $(DATA_DIR) --scale $(SCALE) --schema $(SCHEMA)$(if \
	  $(CONTENT_PARAM), --content_param $(CONTENT_PARAM))$(if $(CONTENT_PATTERN), --content_pattern '$(CONTENT_PATTERN)')

# As the lab does, train into a fresh output directory.
run: data
	@rm -rf $(OUTPUT_DIR)
	$(PY) -m walsmf.task --input_path $(DATA_DIR) --output_dir $(OUTPUT_DIR) --num_epochs $(NUM_EPOCHS)

# Three workers on the machines' two cores: many tests wait on a subprocess, a server or a poll, and a third
# worker fills those waits (the suite, run back to back: 357 s on three, 420 s on two; 397 s on four).
TEST_WORKERS ?= 3

# The server's tests run on both runtimes: the lab's (.venv) and the serving environment (.venv-serve).
test: setup serve-env
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow" tests

# Style and errors pyflakes finds, configured once in ruff.toml.
lint: setup
	.venv/bin/ruff check .

# Second variants of what `make test` covers (a full sdist install, gcloud with other counts); CI runs them too.
test-slow: setup serve-env
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m slow tests

bench: data
	$(PY) benchmarks/bench_scale.py --scales 1 10
	$(PY) benchmarks/bench_model.py --data_dir $(DATA_DIR)
	$(PY) benchmarks/bench_training.py --data_dir $(DATA_DIR)
	$(PY) benchmarks/bench_quality.py

notebook: setup
	.venv/bin/jupyter notebook notebooks/wals.ipynb

clean:
	rm -rf $(DATA_DIR) $(OUTPUT_DIR) samples
