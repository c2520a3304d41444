# Two commands on a fresh machine (Python 3.11 + make): `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= $(CURDIR)/data
HOST ?= 127.0.0.1
PORT ?= 8000
export DATA_DIR HOST PORT

.PHONY: install system-deps demo pipeline serve test bench feast clean help

help:
	@echo "make demo       set up, run the whole pipeline, start the server on $(HOST):$(PORT), query it"
	@echo "make test       set up and run the test suite"
	@echo "make pipeline   the pipeline without the server (ingest -> features -> apply -> materialize -> train -> promote)"
	@echo "make serve      only the server (gunicorn), serving the promoted model"
	@echo "make bench      every benchmark in bench/ (results in bench/results/, table in README)"
	@echo "make feast ARGS='plan'   the Feast CLI on feature_repo/ with this DATA_DIR"
	@echo "make clean      remove DATA_DIR ($(DATA_DIR))"

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

# redis-server (Debian package) for the Redis online-store tests. Installed when missing and
# we are root with apt-get (as in CI); otherwise those tests skip locally (and FAIL when CI=true).
system-deps:
	@if ! command -v redis-server >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "note: redis-server is missing; Redis tests will skip (install it: apt-get install -y redis-server)"; \
	  fi; \
	fi

pipeline: install
	$(BIN)/pipeline run

serve: install
	$(BIN)/serving serve

demo: pipeline
	$(BIN)/serving demo

test: install system-deps
	$(BIN)/python -m pytest

bench: install
	@set -e; for script in bench/bench_*.py; do \
	  [ -e "$$script" ] || continue; echo "== $$script"; $(BIN)/python "$$script"; done
	$(BIN)/python bench/report.py

feast: install
	$(BIN)/feast -c feature_repo $(ARGS)

clean:
	rm -rf "$(DATA_DIR)"
