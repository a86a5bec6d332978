# Set-up is automatic: the first `make test` / `make demo` / `make bench` creates .venv and installs into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch and torchvision are pinned to the releases this machine carries on disk (pip takes them offline).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?= -m "not slow"
DEMO_LOSSES ?= ce,ce_ls,poly1,el,el(log_end=1.0),el(log_end=1.0, bonus_floor=1e-5)
# The offline datasets beside the checkout are found without a flag (a user's own setting wins).
export ENCOURAGING_DATA ?= $(if $(wildcard ../shared/data/fashion_mnist),$(abspath ../shared/data))

.PHONY: test test-all demo results bench lint docs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev,experiments,graph,translation,docs,trackers,cluster]'
	$(PY) -m pip install -q --no-deps 'torchattacks>=3.5' 'tqdm>=4.56'  # the attacks extra (see pyproject.toml)
	# the loss's compiled CPU kernel, built once here (~30 s); without a compiler it warns, the eager path serves
	$(PY) -c "from encouraging.losses import cpu_kernel; cpu_kernel.available()"
	touch $@

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

test-all: $(VENV)/.installed
	$(PY) -m pytest -m ""

# The main job: a real CE-vs-EL comparison (6 losses x 3 seeds), then the table and the report path.
# Fashion-MNIST comes from ../shared/data when it is there; otherwise torchvision fetches it into the cache once.
demo: $(VENV)/.installed
	$(PY) -m encouraging.cli compare configs/demo.yaml --seeds 3 --losses "$(DEMO_LOSSES)" \
		--out runs/demo --report reports/demo

# The results tables of README.md and docs/*.md, regenerated from the committed records in results/.
results: $(VENV)/.installed
	$(PY) -m encouraging.cli docs

bench: $(VENV)/.installed
	$(PY) benchmarks/loss.py

lint: $(VENV)/.installed
	$(PY) -m ruff check src tests benchmarks

# The documentation site (guides, README as home page, API reference from the docstrings) into site/; --strict fails
# on a broken link, anchor or docstring reference. Browse it with: $(PY) -m mkdocs serve
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis
