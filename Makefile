# Two commands do all set-up: `make demo` and `make test`. Each creates .venv
# from pyproject.toml on first use.

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SOURCE ?= synthetic
EVENTS ?= 20000

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m scorer demo --source $(SOURCE) --events $(EVENTS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy txrisk scorer trainer

clean:
	rm -rf $(VENV) .demo .pytest_cache
