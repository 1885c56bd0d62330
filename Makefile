# The README's quick start: `make sweep` (set up + main job) and `make test` (set up + tests).
VENV ?= .venv
PY := $(VENV)/bin/python
export RAY_USAGE_STATS_ENABLED := 0
export TOKENIZERS_PARALLELISM := false

.PHONY: setup sweep test test-unit mutation clean

setup: $(VENV)/.installed

# torch first: the pinned CPU build lies on this disk; an unpinned torch would pull a CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $@

sweep: setup
	$(PY) -m orchestrator.sweep --space full_grid

test: setup
	$(PY) -m pytest -q --durations=20 tests

test-unit: setup
	$(PY) -m pytest -q -m "not integration" tests

# Mutation testing of the core modules (tools/mutation.py; tens of minutes, not part of CI):
# `make mutation` runs them all, `make mutation MODULES="loop retune"` some. Results and
# survivors are kept in .mutation/<module>/; docs/MUTATION.md records the last full run.
mutation: setup
	$(PY) -m pip install -q -e '.[mutation]'
	$(PY) -m tools.mutation $(MODULES)
	$(PY) -m tools.named_mutants

clean:
	rm -rf ray_results mlruns mlflow.db reports .cache .pytest_cache
