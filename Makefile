# Two commands on a fresh machine (Python 3.11 + make): `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# pytest-xdist processes for `make test` (a module's tests stay together: its fixtures run once).
# Much of the suite waits on servers and subprocesses, so 2 fill 2 cores.
TEST_WORKERS ?= 2
DATA_DIR ?= $(CURDIR)/data
HOST ?= 127.0.0.1
PORT ?= 8000
# PROFILE=redis or PROFILE=spark switch every target to another feature store profile (core/settings.py).
PROFILE ?= embedded
export DATA_DIR HOST PORT PROFILE

.PHONY: install sysdeps demo pipeline serve monitor replay test docs bench feast ui mlflow clean help cluster-up cluster-down

help:
	@echo "make demo       set up, run the whole pipeline, start the server on $(HOST):$(PORT), query it"
	@echo "make test       set up and run the test suite (lint, import layers, the docs site built --strict, pytest)"
	@echo "make docs       serve the design notes (docs/, MkDocs) on $(HOST):$(DOCS_PORT)"
	@echo "make pipeline   the pipeline without the server (ingest -> features -> apply -> materialize -> train -> promote)"
	@echo "make serve      only the server (gunicorn), serving the promoted model"
	@echo "make monitor    the monitoring report (skew, drift, freshness, quality) of the served traffic; exit 1 on an alert"
	@echo "make replay     replay 2013 day by day as if live (REPLAY_POLICY=static|periodic|triggered, REPLAY_DAYS=N, REPLAY_FEED=push|events)"
	@echo "make bench      every benchmark in bench/ (results in bench/results/, tables in README and docs/benchmarks.md)"
	@echo "make feast ARGS='plan'   the Feast CLI on feature_repo/ with this DATA_DIR and PROFILE's YAML"
	@echo "make ui         Feast's web UI over this DATA_DIR's registry (PROFILE's YAML) on $(HOST):$(UI_PORT)"
	@echo "make mlflow     MLflow's UI over the tracked training runs (DATA_DIR/mlflow) on $(HOST):$(MLFLOW_PORT)"
	@echo "PROFILE=redis|spark make ...   any target on another profile (Redis online store; Spark + Redis + SQL registry)"
	@echo "make cluster-up   a local cluster under DATA_DIR (Spark master + 2 workers, PostgreSQL, Redis) PROFILE=spark then uses"
	@echo "make cluster-down stop it and remove DATA_DIR/cluster"
	@echo "make clean      remove DATA_DIR ($(DATA_DIR))"

# The packages are installed by uv (itself from PyPI, into the venv): pip's work, several times
# faster on a fresh machine (MLflow's UI alone: ~20 s instead of ~100 s).
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[test,spark]'
	touch $@

# MLflow's UI (make mlflow) in a venv of its own inside the project's: the full `mlflow`
# package pins a gunicorn older than the one serving needs; training logs its runs through
# the client (mlflow-skinny, in pyproject.toml).
MLFLOW_UI := $(VENV)/mlflow-ui
$(MLFLOW_UI)/.installed: $(BIN)/.installed
	test -x $(MLFLOW_UI)/bin/python || $(PYTHON) -m venv $(MLFLOW_UI)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(MLFLOW_UI)/bin/python 'mlflow>=3,<4'
	touch $@

install: $(BIN)/.installed $(MLFLOW_UI)/.installed

# System packages the tests and the spark profile use: redis-server, Java (for Spark), PostgreSQL
# (the local cluster's SQL registry; Debian keeps its server programs off PATH),
# Chromium (the monitoring report's rendering test, Feast's UI) and Prometheus with promtool
# (the alert rules' tests), from Debian's packages when missing and when we are root (as CI is).
sysdeps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v java >/dev/null || missing="$$missing default-jre-headless"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || missing="$$missing postgresql"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	{ command -v prometheus && command -v promtool; } >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing:$$missing (install them, e.g. sudo apt-get install$$missing)"; fi; \
	fi

# A local cluster for PROFILE=spark (core/cluster.py): Spark standalone master and workers,
# PostgreSQL, redis-server on free ports, recorded in DATA_DIR/cluster/cluster.json; PROFILE=spark
# commands with this DATA_DIR use it. CLUSTER_WORKERS, CLUSTER_WORKER_CORES, CLUSTER_WORKER_MEMORY,
# CLUSTER_DAEMON_MEMORY size it.
cluster-up: install
	$(BIN)/python -m core.cluster up

cluster-down:
	$(BIN)/python -m core.cluster down

pipeline: install
	$(BIN)/pipeline run

serve: install
	$(BIN)/serving serve

monitor: install
	$(BIN)/monitoring report $(ARGS)

# The day-by-day replay of the history under one training policy; report in DATA_DIR/reports/replay/.
REPLAY_POLICY ?= periodic
REPLAY_DAYS ?=
replay: install
	$(BIN)/replay run --policy $(REPLAY_POLICY) $(if $(REPLAY_DAYS),--days $(REPLAY_DAYS)) $(ARGS)

demo: pipeline
	$(BIN)/serving demo

test: install sysdeps
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir .site
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope

# The design notes (docs/, mkdocs.yml), served with live reload; `make test` builds them
# with --strict, so a broken link or a page missing from the navigation fails.
# NO_MKDOCS_2_WARNING: mute mkdocs-material's banner about MkDocs' future (nothing to act on).
DOCS_PORT ?= 8001
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr $(HOST):$(DOCS_PORT)

bench: install
	@set -e; for script in bench/bench_*.py; do \
	  [ -e "$$script" ] || continue; echo "== $$script"; $(BIN)/python "$$script"; done
	$(BIN)/python bench/report.py

# The settings say which YAML the profile uses and what it reads (${DATA_DIR}, ...); a bad
# setting stops here with its message (exit 2).
feast: install
	@exports="$$($(BIN)/python -m core.settings shell)" && eval "$$exports" && \
	  $(BIN)/feast -c feature_repo -f "$$FEAST_YAML" $(ARGS)

# Feast's web UI (feature views, services, entities, sources, lineage) over the registry the
# pipeline applied, run like `make feast` (tests/cli/test_feast_ui.py opens it in Chromium).
# It needs only the project's venv (not MLflow's UI).
UI_PORT ?= 8888
ui: $(BIN)/.installed
	@exports="$$($(BIN)/python -m core.settings shell)" && eval "$$exports" && \
	  $(BIN)/feast -c feature_repo -f "$$FEAST_YAML" ui --host $(HOST) --port $(UI_PORT)

# MLflow's UI over the runs every training logs (training/tracking.py): the local store under
# DATA_DIR/mlflow (with MLFLOW_TRACKING_URI set to a server, that server has its own UI).
MLFLOW_PORT ?= 5000
mlflow: install
	$(BIN)/training mlflow-ui --host $(HOST) --port $(MLFLOW_PORT) --mlflow $(MLFLOW_UI)/bin/mlflow

clean:
	rm -rf "$(DATA_DIR)"
