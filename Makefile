# regiongate developer tasks. `make demo` and `make test` are the README's quick start.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup data demo test check lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m compileall -q src  # as a wheel's install does (see docs/performance.md)
	touch $(STAMP)

setup: $(STAMP)

# Fetch, verify and compile the IP data into $REGIONGATE_HOME (idempotent: fast when current).
data: setup
	$(BIN)/regiongate data install

# The main job on embedded defaults: the gateway (installed data, api-2024) in front of the
# bundled demo API on 127.0.0.1:8080, printing curl commands to try. Ctrl-C stops both.
demo: data
	$(BIN)/regiongate demo

lint: setup
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/python -m pytest -q

# The README's test command: set up, install the data, lint, type-check, run the tests.
test: data lint typecheck unit

check: test

bench: data
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
