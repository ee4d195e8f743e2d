# The two commands of the README: `make run` and `make test`.
# Each bootstraps .venv with pip on first use, and again whenever pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint fault-drill mutation clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --progress-bar off -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash workflow/run_default.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

test: lint
	$(BIN)/python -m pytest -q

# Jobs killed at fault points and rerun (tests/test_fault_drill.py, ~11 min); `make test` skips it.
fault-drill: $(STAMP)
	FDM_FAULT_DRILL=1 $(BIN)/python -m pytest -q -m fault_drill

# Mutation testing of the core packages with mutmut (bench/mutation.py, docs/benchmarks.md); `make test`
# does not run it. MUTATION_ARGS passes options, e.g. MUTATION_ARGS="--only src/fdm/metrics/scores.py".
mutation: $(STAMP)
	$(BIN)/python -m pip install --quiet --progress-bar off -e '.[mutation]'
	$(BIN)/python bench/mutation.py $(MUTATION_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mutation
