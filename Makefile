# The two quickstart commands are `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export JOBQUEUE_STORE_TEST_PG ?= postgresql://postgres@127.0.0.1:5432/test

.PHONY: install run test lint typecheck pytest bench screenshots clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,fast]'
	touch $@

run: install
	$(BIN)/jobqueue-store serve

lint: install
	$(BIN)/ruff check jobqueue_store tests bench examples
	$(BIN)/ruff format --check jobqueue_store tests bench examples

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

test: lint typecheck pytest

# Refreshes docs/screenshots/*.png (shown in README.md) from the browser tests.
screenshots: install
	JOBQUEUE_STORE_SCREENSHOTS=$(CURDIR)/docs/screenshots $(BIN)/pytest -q tests/browser

# The harness's Celery + Flower row needs the `bench` extra (and Redis on 127.0.0.1:6379).
bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench.run

$(VENV)/.bench-installed: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test,fast,bench]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
