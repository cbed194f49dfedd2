# `make demo` and `make test` each create .venv and install from pyproject.toml, pinned by
# constraints.txt. Nothing relies on packages installed by hand.
PYTHON ?= python3
comma := ,
VENV := .venv
BIN := $(VENV)/bin
SHARED_DATA ?= ../shared/data
export GPTJAX_CACHE ?= $(HOME)/.cache/gptjax

.PHONY: demo test lint format bench clean seed-cache notebooks

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The accelerator build of jaxlib: cuda where nvidia-smi sees a GPU (the cuda13 extra when its
# driver reports CUDA 13 or later, else cuda12), tpu where TPU devices exist, else the CPU build
# of constraints.txt. Override with `make demo ACCEL=cpu` (or cuda, cuda12, cuda13, tpu).
ACCEL ?= $(shell if nvidia-smi -L >/dev/null 2>&1; then echo cuda; \
	elif ls /dev/accel0 /dev/vfio/0 >/dev/null 2>&1; then echo tpu; else echo cpu; fi)
CUDA_MAJOR = $(shell nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -1)
CUDA_EXTRA = $(if $(shell [ "0$(CUDA_MAJOR)" -ge 13 ] && echo new),cuda13,cuda12)
EXTRA = $(if $(filter cuda,$(ACCEL)),$(CUDA_EXTRA),$(filter cuda12 cuda13 tpu,$(ACCEL)))

$(VENV)/.runtime: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e '.$(if $(EXTRA),[$(EXTRA)])'
	touch $@

$(VENV)/.test: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e '.[test$(if $(EXTRA),$(comma)$(EXTRA))]'
	touch $@ $(VENV)/.runtime

$(VENV)/.notebooks: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e '.[notebooks$(if $(EXTRA),$(comma)$(EXTRA))]'
	touch $@ $(VENV)/.runtime

# Where an offline copy of the downloads sits beside the project, seed the cache from it
# (files already in the cache are kept); elsewhere the demo downloads what it needs.
seed-cache:
	@if [ -d "$(SHARED_DATA)" ]; then mkdir -p "$(GPTJAX_CACHE)" && \
	  cp -rn "$(SHARED_DATA)"/. "$(GPTJAX_CACHE)"/ && rm -f "$(GPTJAX_CACHE)/README.md"; fi

# Pretrain the tiny GPT on The Verdict for a couple of minutes on CPU (train/recipes/demo.toml),
# then sample from it.
DEMO_OUT ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)
demo: $(VENV)/.runtime seed-cache
	$(BIN)/gptjax pretrain --config train/recipes/demo.toml --out $(DEMO_OUT)
	$(BIN)/gptjax generate --ckpt $(DEMO_OUT) --max-new-tokens 40 --prompt "Every effort moves you"
	@echo "loss plot: $(DEMO_OUT)/loss.png   metrics: $(DEMO_OUT)/metrics.jsonl"

# Two test processes (pytest-xdist): most tests compile, and two cores overlap them. A test goes
# to whichever process is free, except that the tests of a module with costly module fixtures
# stay together (tests/conftest.py). The chapter notebooks run there too, each in a fresh kernel
# (nbmake), first because they are long. Then the `serial` tests alone, collected from the files
# that mark them (collecting every test module would import torch, transformers and lm-eval).
SERIAL = $(shell grep -l "mark.serial" tests/test_*.py)
test: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/pytest -n 2 --dist loadgroup -m "not serial" --durations=15 \
	  --nbmake --nbmake-timeout=600 notebooks tests
	$(BIN)/pytest -m serial --durations=5 $(SERIAL)

# Run each chapter notebook (notebooks/NN_*.py, a jupytext source) top to bottom in a fresh
# kernel and write its .ipynb with the outputs, the copy the repository shows.
notebooks: $(VENV)/.notebooks seed-cache
	cd notebooks && for src in [0-9][0-9]_*.py; do \
	  ../$(BIN)/jupytext --quiet --to ipynb "$$src" && \
	  ../$(BIN)/jupyter-execute --inplace "$${src%.py}.ipynb" || exit 1; done

lint format: $(VENV)/.test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(VENV)/.test seed-cache
	$(BIN)/gptjax bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
