# `make demo` and `make test` each create .venv and install from pyproject.toml, pinned by
# constraints.txt. Nothing relies on packages installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED_DATA ?= ../shared/data
export GPTJAX_CACHE ?= $(HOME)/.cache/gptjax

.PHONY: demo test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.runtime: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e .
	touch $@

$(VENV)/.test: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $@ $(VENV)/.runtime

# Where an offline copy of the downloads sits beside the project, seed the cache from it
# (files already in the cache are kept); elsewhere the demo downloads what it needs.
seed-cache:
	@if [ -d "$(SHARED_DATA)" ]; then mkdir -p "$(GPTJAX_CACHE)" && \
	  cp -rn "$(SHARED_DATA)"/. "$(GPTJAX_CACHE)"/ && rm -f "$(GPTJAX_CACHE)/README.md"; fi

demo: $(VENV)/.runtime seed-cache
	$(BIN)/python -m gptjax.demo

test: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

lint format: $(VENV)/.test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(VENV)/.test seed-cache
	$(BIN)/python -m gptjax.bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
