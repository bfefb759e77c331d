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

# Fits the bundled DeepMind routed runs (dense + three routers, hierarchical over arch) with the
# shipped hypothesis and its own sampler settings, and extrapolates to a 13B-parameter model
# with a plot of loss vs compute (about 2 minutes).
demo: $(VENV)/.core
	$(BIN)/bayes-scaling datasets list
	$(BIN)/bayes-scaling datasets show deepmind-routing
	mkdir -p out
	$(BIN)/bayes-scaling models list
	$(BIN)/bayes-scaling fit --dataset deepmind-routing --model wang2024 --out out/deepmind.nc
	$(BIN)/bayes-scaling predict out/deepmind.nc --n-active 1.3e10 --tokens 1.3e11 --experts 64 --arch moe-sbase --plot out/deepmind.png

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
