# `make test` and `make demo` work on a fresh machine: they build .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
INFINITY := .venv-infinity
# llama-cpp-python has no binary wheel on PyPI: take the one built in ../shared/wheels when it is
# there, else build it from PyPI's source (about 22 min on 2 cores, once: pip caches the wheel).
# GGML_NATIVE=OFF: a native build crashes on CPUs with AMX (README, "Serving").
LLAMA_CPP := llama-cpp-python[server]==0.3.36
LLAMA_WHEELS := $(wildcard ../shared/wheels/llama_cpp_python-*.whl)

export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install test demo lint bench clean-demo paper

$(STAMP): requirements.txt requirements-infinity.txt src/model_files.py pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" $(PY) -m pip install -q "$(LLAMA_CPP)" \
		$(if $(LLAMA_WHEELS),--find-links ../shared/wheels)
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m src.model_files --install
	# Chromium, the real browser the /dashboard test drives (Debian's package; skipped where apt-get may not run)
	command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		(export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)); } \
		|| echo "Chromium not installed: the /dashboard browser test will skip"
	# Infinity, a real embedding server for the gateway's tests (--embedding_url); its pins need a venv of its own
	test -x $(INFINITY)/bin/python || $(PYTHON) -m venv $(INFINITY)
	$(INFINITY)/bin/pip install -q --no-deps -r requirements-infinity.txt
	touch $(STAMP)
	@echo "Built $(VENV). To type the README's commands yourself: source $(VENV)/bin/activate"

install: $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks alpaca tutorials
	$(PY) -m pytest -q

# The demo is the README's pipeline, command for command, on the built-in demo task:
# SmolLM2-135M-Instruct answers with 4 prompts; Smoothie picks a prompt with no labels.
DEMO := --dataset_config dataset_configs/demo.yaml --model smollm2-135m --multi_prompt
demo: $(STAMP)
	@echo "== 1/5 build the demo dataset (offline, from dataset_configs/demo_data)"
	$(PY) -m src.make_dataset --dataset_config dataset_configs/demo.yaml
	@echo "== 2/5 generate: SmolLM2-135M-Instruct x 4 prompts, train and test"
	$(PY) -m src.get_generations $(DEMO) --batch_size 16
	@echo "== 3/5 route with Smoothie (Global and Local), no labels"
	$(PY) -m src.run_smoothie $(DEMO) --type sample_independent
	$(PY) -m src.run_smoothie $(DEMO) --type sample_dependent --k 1
	@echo "== 4/5 baselines: random, Best-on-Val, labelled kNN, MBR"
	$(PY) -m src.pick_random_baseline $(DEMO)
	$(PY) -m src.labeled_oracle $(DEMO)
	$(PY) -m src.labeled_knn $(DEMO)
	$(PY) -m src.mbr_baseline $(DEMO)
	@echo "== 5/5 evaluate and report"
	$(PY) -m src.evaluate.evaluate $(DEMO)
	$(PY) -m src.report $(DEMO) --output results/demo/report.md

# Every experiment of the paper (GPU and hub needed for the generations): see README, "Every experiment".
paper: $(STAMP)
	$(PY) -m src.paper.reproduce

bench: $(STAMP)
	$(PY) benchmarks/bench_estimator.py

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks alpaca tutorials
