# Two commands do all set-up: `make demo` and `make test`. Each creates .venv
# from pyproject.toml on first use.

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SOURCE ?= synthetic
EVENTS ?= 20000

.PHONY: demo test lint clean deploy-tools bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m scorer demo --source $(SOURCE) --events $(EVENTS)

# The performance benchmark, every section, median of 3 runs (about 16 minutes;
# the first run also trains its model into .bench/). BENCH_ARGS adds flags,
# e.g. BENCH_ARGS="--quick --runs 1" or BENCH_ARGS="--sections 2,4".
bench: $(STAMP)
	$(PY) -m scorer bench $(BENCH_ARGS)

test: $(STAMP) deploy-tools
	$(PY) -m pytest $(PYTEST_ARGS)

# The deployment checks need Debian's prometheus (prometheus and promtool) and
# docker-compose (v1 validates a compose file without a Docker engine). They are
# installed when missing and we are root; otherwise those checks skip and say why.
deploy-tools:
	@if command -v promtool >/dev/null && command -v prometheus >/dev/null \
	    && command -v docker-compose >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "deploy-tools: not root or no apt-get; deployment checks will skip"; \
	  exit 0; fi; \
	echo "deploy-tools: apt-get install prometheus docker-compose"; \
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends prometheus docker-compose >/dev/null; } \
	  || echo "deploy-tools: apt-get failed; deployment checks will skip"

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy txrisk scorer trainer

clean:
	rm -rf $(VENV) .demo .pytest_cache
