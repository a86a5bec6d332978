# Set-up is automatic: the first `make test` / `make demo` / `make bench` creates .venv and installs into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch and torchvision are pinned to the releases this machine carries on disk (pip takes them offline).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?= -m "not slow"

.PHONY: test test-all demo bench lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev,experiments]'
	touch $@

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

test-all: $(VENV)/.installed
	$(PY) -m pytest -m ""

# Until the experiment engine lands (issue 3), the main job is the loss benchmark.
demo: bench

bench: $(VENV)/.installed
	$(PY) benchmarks/loss.py

lint: $(VENV)/.installed
	$(PY) -m ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis
