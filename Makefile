# llm-workbook: `make run` executes every notebook on the tiny profile, `make test` lints and tests.
# Both create .venv and install what they need the first time (CPU-only, pinned by constraints/ci-cpu.txt).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONSTRAINTS ?= constraints/ci-cpu.txt
STAMP := $(VENV)/.installed
LLAMA_STAMP := $(VENV)/.llama-installed
PYTEST_WORKERS ?= 2
# CI and these commands always run offline: everything comes from data/.
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# OpenMP threads that wait by sleeping, not spinning: on a busy CPU (pytest -n 2, a shared runner) spinning threads
# made small-model training several times slower in CPU time and wall time alike.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup setup-llama run test test-fast lint lab data student constraints clean help

help:
	@echo "make run      execute every solution notebook (papermill, tiny profile); summary in build/summary.md"
	@echo "make test     ruff, then pytest: unit tests, release checks, data rebuild, notebooks (papermill + nbval)"
	@echo "make test-fast  the same without the slow tests (no notebook execution, no data rebuild)"
	@echo "make lab      JupyterLab on the workbook"
	@echo "make data     rebuild data/ from scratch (corpora, tokenizer, tiny checkpoints)"
	@echo "make student  regenerate notebooks/ from solutions/"
	@echo "make setup-llama  also install llama-cpp-python (builds llama.cpp: minutes); notebook 06 and its tests use it"

setup: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch would pull gigabytes of CUDA packages.
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) torch
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

# The `llama` extra: pip builds llama.cpp from source (cmake, a C++ compiler), several minutes on two cores.
setup-llama: $(LLAMA_STAMP)

$(LLAMA_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[llama]'
	touch $(LLAMA_STAMP)

run: $(STAMP)
	$(PY) -m course_utils run --profile tiny

lint: $(STAMP)
	$(PY) -m ruff check .

# One math thread per pytest worker: two workers with two OpenMP threads each on two cores spin against each other
# (measured: a notebook took 6x the CPU time), and every notebook kernel inherits the setting.
test: lint
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadscope --nbval-lax tests solutions

test-fast: lint
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n $(PYTEST_WORKERS) -m "not slow" tests

lab: $(STAMP)
	$(VENV)/bin/jupyter lab

data: $(STAMP)
	$(PY) -m course_utils data

student: $(STAMP)
	$(PY) -m course_utils release

constraints: $(STAMP)
	{ echo "# Exact versions CI installs (CPU only, Python 3.11). Regenerate with: make constraints"; \
	  $(VENV)/bin/pip freeze --exclude-editable | grep -v '^-e' | sed 's/^torch==\(.*\)+cpu$$/torch==\1/' | sort -f; \
	} > $(CONSTRAINTS)

clean:
	rm -rf build .pytest_cache .ruff_cache
