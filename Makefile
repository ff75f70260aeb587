# llm-workbook: `make run` executes every notebook on the tiny profile, `make test` lints and tests.
# Both create .venv and install what they need the first time (CPU-only, pinned by constraints/ci-cpu.txt).
# They need Python 3.11 or newer: `make PYTHON=python3.12 setup` picks another interpreter.

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

.PHONY: setup system-check setup-llama run test test-fast test-other-cpu test-colab gpu-check gpu-check-smoke gpu-wheels lint lab data student constraints constraints-gpu clean help

help:
	@echo "make run      execute every solution notebook (papermill, tiny profile); summary in build/summary.md"
	@echo "make test     ruff, then pytest: unit tests, release checks, data rebuild, every notebook executed once"
	@echo "make test-fast  the same without the slow tests (no notebook execution, no data rebuild)"
	@echo "make test-other-cpu  make test as a CPU without AVX-512 BF16 runs it (torch's AVX2 kernels, bitsandbytes' generic one)"
	@echo "make test-colab the colab profile rehearsed on the CPU: every notebook against hub stand-ins (build/colab/)"
	@echo "make gpu-check  the GPU measurements on a CUDA machine, with its own torch (build/gpu/results.json)"
	@echo "make gpu-wheels  the wheels gpu-check needs offline, in batches of at most 40 MB (needs PyPI)"
	@echo "make lab      JupyterLab on the workbook"
	@echo "make data     rebuild data/ from scratch (corpora, tokenizer, tiny checkpoints)"
	@echo "make student  regenerate notebooks/ from solutions/"
	@echo "make setup-llama  also install llama-cpp-python (builds llama.cpp: minutes); notebook 06 and its tests use it"

setup: system-check $(STAMP)

# System packages pip cannot install, said before anything runs. bubblewrap is the grader's sandbox: without it
# `make test` skips the sandbox tests (CI fails them) and `python -m course_utils grade` refuses to start. The install
# line is course_utils.course.sandbox.INSTALL_BUBBLEWRAP (tests/test_sandbox_required.py keeps them the same).
system-check:
	@command -v bwrap >/dev/null || echo "note: bubblewrap (bwrap) is not installed: the grader's sandbox tests will be \
skipped and grading refuses to run. Install it: Debian/Ubuntu: sudo apt-get install bubblewrap; Fedora: sudo dnf \
install bubblewrap; Arch: sudo pacman -S bubblewrap" >&2

# The same words for an interpreter that is too old, whether it is $(PYTHON) or the one inside an old .venv.
OLD_PYTHON = echo "llm-workbook needs Python 3.11 or newer (transformers 5, numpy 2.4 and pandas 3 do); $(1) is \
$$($(1) -c 'import platform; print(platform.python_version())' 2>/dev/null || echo missing). On macOS /usr/bin/python3 is 3.9: \
install 3.12 (python.org, \`brew install python@3.12\` or \`uv python install 3.12\`) and run \
\`make PYTHON=python3.12 setup\`$(2)." >&2; exit 1
NEW_ENOUGH = -c 'import sys; sys.exit(sys.version_info < (3, 11))'

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@$(PYTHON) $(NEW_ENOUGH) 2>/dev/null || { $(call OLD_PYTHON,$(PYTHON),); }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) $(NEW_ENOUGH) || { $(call OLD_PYTHON,$(PY), after removing the old $(VENV) (rm -rf $(VENV))); }
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned, as a CPU build where PyTorch's CPU index answers (see course_utils/course/install_torch.py):
	# from PyPI, Linux torch is a CUDA build of several GB.
	$(PY) -m course_utils.course.install_torch --constraints $(CONSTRAINTS)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

# The `llama` extra: pip builds llama.cpp from source (cmake, a C++ compiler), several minutes on two cores.
setup-llama: $(LLAMA_STAMP)

$(LLAMA_STAMP): $(STAMP)
	@command -v cmake >/dev/null && { command -v c++ || command -v g++ || command -v clang++; } >/dev/null || { \
	  echo "setup-llama builds llama.cpp and needs cmake and a C++ compiler: Debian/Ubuntu: sudo apt-get install \
cmake g++; Fedora: sudo dnf install cmake gcc-c++; macOS: xcode-select --install && brew install cmake" >&2; exit 1; }
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[llama]'
	touch $(LLAMA_STAMP)

run: $(STAMP)
	$(PY) -m course_utils run --profile tiny

lint: $(STAMP)
	$(PY) -m ruff check .

# One math thread per pytest worker: two workers with two OpenMP threads each on two cores spin against each other
# (measured: a notebook took 6x the CPU time), and every notebook kernel inherits the setting.
# nbval executes every solution notebook once, in the venv's kernel, a test per cell (lax: only the cells marked
# `# NBVAL_CHECK_OUTPUT` are compared, through tests/nbval_sanitize.cfg); course_utils.course.nbval_plugin records
# each notebook's key figures in build/nbval/ and checks them after its last cell. loadscope keeps a notebook's
# cells on one worker, and solutions/ comes first so that the long notebooks start first.
NBVAL := --nbval-lax --nbval-current-env --nbval-cell-timeout 300 --nbval-sanitize-with=tests/nbval_sanitize.cfg
PYTEST_ALL = OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadscope $(NBVAL) solutions tests
test: system-check lint
	$(PYTEST_ALL)

test-fast: lint
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n $(PYTEST_WORKERS) -m "not slow" tests

# The other CPU branches, on this machine: torch's AVX2 kernels (x86; elsewhere its plain ones) and bitsandbytes'
# generic 4-bit kernel, which CPUs without AVX-512 BF16 run. On such a CPU, `make test` itself covers them.
# oneDNN is capped too: torch's kernels compiled for AVX2 still ask it what the hardware has, and on an AVX-512/AMX
# host they would then take a packing path that only exists in the AVX-512 build (bf16 SDPA: "pack_vnni2 is only
# supported when avx512 is supported"), which no real AVX2 CPU meets.
X86 := $(filter x86_64 amd64,$(shell uname -m))
OTHER_CPU_CAPABILITY := $(if $(X86),avx2,default)
test-other-cpu: lint
	PYTHONPATH=$(CURDIR)/tests/probes/other_cpu ATEN_CPU_CAPABILITY=$(OTHER_CPU_CAPABILITY) \
	  $(if $(X86),ONEDNN_MAX_CPU_ISA=AVX2) $(PYTEST_ALL)

# The colab profile on this CPU: hub-shaped stand-ins in a temporary HF_HOME, every notebook on PROFILE="colab",
# DEVICE="cpu", the smallest step counts, in virtual environments holding Colab's versions (build/colab-venv for
# 00-05, build/colab-gpu-venv for 05-06, each built once and reused). COLAB_ONLY="00 03" runs some notebooks only.
test-colab: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m course_utils rehearse $(if $(COLAB_ONLY),--only $(COLAB_ONLY))

# On a CUDA machine, with the torch already installed there (not .venv's CPU build): PYTHON=/path/to/python.
# The batches of `make gpu-wheels` (build/gpu/wheels), where present, are installed first (no network needed).
# Sections: GPU_CHECK_ARGS="--only ladder"; a results file elsewhere: GPU_CHECK_ARGS="--results DIR/results.json".
GPU_WHEELS ?= $(wildcard build/gpu/wheels)
gpu-check:
	PYTHONUNBUFFERED=1 $(PYTHON) scripts/gpu_check.py $(if $(GPU_WHEELS),--wheels $(GPU_WHEELS)) $(GPU_CHECK_ARGS)

# The same sections at their smallest size on the CPU, with the partial-results write and the wheel plan (CI).
gpu-check-smoke: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) scripts/gpu_check.py --smoke

# Where PyPI answers: the wheels gpu-check needs on a machine without network, in batches of at most 40 MB
# (build/gpu/wheels/batch-NN). GPU_WHEELS_ARGS=--dry-run prints the plan only.
gpu-wheels: $(STAMP)
	PYTHON=$(PY) bash scripts/gpu_wheels.sh $(GPU_WHEELS_ARGS)

lab: $(STAMP)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev,lab]'
	$(VENV)/bin/jupyter lab

data: $(STAMP)
	$(PY) -m course_utils data

student: $(STAMP)
	$(PY) -m course_utils release

constraints: $(STAMP)
	{ echo "# Exact versions CI installs (CPU only, Python 3.11). Regenerate with: make constraints"; \
	  $(VENV)/bin/pip freeze --exclude-editable | grep -v '^-e' | sed 's/^torch==\(.*\)+cpu$$/torch==\1/' | sort -f; \
	} > $(CONSTRAINTS)

# Colab's setup-cell constraints (colab.txt, colab-gpu.txt): resolved with uv on Colab's published runtime
# (constraints/colab-runtime.txt: its Python, Linux x86_64) against PyPI as of a fixed date.
constraints-gpu: $(STAMP)
	$(PY) scripts/colab_gpu_constraints.py

clean:
	rm -rf build .pytest_cache .ruff_cache
