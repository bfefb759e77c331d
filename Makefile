# The two commands of the README: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-slow lint install clean

# Refuse an old interpreter with a clear message rather than a failed install.
$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else "bayes_scaling needs Python >= 3.12; with pyenv, the .python-version file selects 3.12")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Core install: enough for the demo.
$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# Everything the tests need: dev tools and the trainer's torch.
$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,train]'
	touch $@ $(VENV)/.core

install: $(VENV)/.dev

# The report on the bundled DeepMind routed runs (dense + three routers, hierarchical over arch):
# fits the shipped hypothesis with its own sampler settings, decides at 10x and 100x the largest
# run's compute, and writes one HTML page with its summary.json (a few minutes on 2 cores).
demo: $(VENV)/.core
	$(BIN)/bayes-scaling datasets list
	$(BIN)/bayes-scaling models list
	$(BIN)/bayes-scaling report --out out/report

# The fast tier (the default); pytest's exit status 5 ("no tests collected") fails make too.
test: $(VENV)/.dev
	$(BIN)/python -m pytest

test-slow: $(VENV)/.dev
	$(BIN)/python -m pytest -m slow

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy bayes_scaling

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
