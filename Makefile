# Every target installs what it needs into .venv first (pinned: requirements*.txt + constraints.txt).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
RECORDS ?= 20000

export CDR_HOME ?= $(CURDIR)/var
export AIRFLOW_HOME ?= $(CURDIR)/var/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__LOGGING__LOGGING_LEVEL ?= INFO
export CDR_DEFAULT_REGION ?= PK

.PHONY: install system demo demo-s3 test test-fast ui ui-stop lint format bench clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=25"
	$(PY) -m pip install -q -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# The whole ingest through the real Airflow DAG on the embedded default: a local folder as
# object store (var/store), SQLite for Airflow (var/airflow), a local keyring (var/keyring).
# The run's logical date is the real time now (UTC); the generated files' times without an
# offset are UTC, and say so (CDR_SOURCE_TIMEZONE). The demo drops one unreadable upload on
# purpose: its mapped task fails (quarantined whole), the other files' tasks succeed.
DEMO_BAD_FILE := landing/operator-b/truncated-upload.bin
demo: install
	@mkdir -p $(CDR_HOME)
	$(PY) -m pipeline demo --records $(RECORDS) --landing-only
	@$(VENV)/bin/airflow db migrate > $(CDR_HOME)/airflow-migrate.log 2>&1 || { cat $(CDR_HOME)/airflow-migrate.log; exit 1; }
	@$(VENV)/bin/airflow pools set cdr_store 8 "S3 and KMS calls of CDR tasks" > /dev/null
	@echo "running DAG cdr_ingest with Airflow (log: $(CDR_HOME)/demo-airflow.log) ..."
	@CDR_SOURCE_TIMEZONE=$${CDR_SOURCE_TIMEZONE:-UTC} $(VENV)/bin/airflow dags test cdr_ingest "$$(date -u +%Y-%m-%dT%H:%M:%S+00:00)" > $(CDR_HOME)/demo-airflow.log 2>&1 \
	  || grep -q "DagRun Finished" $(CDR_HOME)/demo-airflow.log || { tail -50 $(CDR_HOME)/demo-airflow.log; exit 1; }
	@set -o pipefail; $(PY) -m cdr_airflow.demo_report --expect-failed $(DEMO_BAD_FILE) 2>&1 | grep -v '^20[0-9][0-9]-'
	@echo
	$(PY) -m pipeline summary

# `make demo` against S3 on this machine: moto's server on 127.0.0.1, a versioned data bucket and
# an Object Lock bucket for bronze; it ends by listing what the day's purge left behind (nothing).
demo-s3: install
	$(PY) -m cdr_airflow.demo_s3 --records $(RECORDS)

# Tools the tests use besides Python, from Debian's packages when absent: docker-compose (v1:
# validates the compose file without an engine), PostgreSQL and Redis (the distributed test),
# Chromium (the browser test drives Airflow's UI with Playwright on it).
SYSTEM_PACKAGES := docker-compose postgresql redis-server chromium
system:
	@command -v docker-compose >/dev/null && command -v pg_ctlcluster >/dev/null \
	  && command -v redis-server >/dev/null && command -v chromium >/dev/null || { \
	  echo "installing $(SYSTEM_PACKAGES) (apt-get) ..."; \
	  apt-get install -y -q --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null \
	  || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends \
	       $(SYSTEM_PACKAGES) >/dev/null; }; }

test: install system
	$(PY) -m pytest

# The developer's inner loop: everything but the slow tests (distributed stack, browser, fault
# suites, whole-pipeline end-to-end runs). `make test` still runs everything.
test-fast: install
	$(PY) -m pytest -m "not slow and not distributed and not browser"

# Airflow's UI on http://127.0.0.1:$(UI_PORT) with this project's DAGs (LocalExecutor, SQLite, the
# demo's store and keyring), an officer and an approver; Ctrl-C stops every process it started.
UI_PORT ?= $(or $(CDR_UI_PORT),8080)
ui: install
	@mkdir -p $(CDR_HOME)
	CDR_SOURCE_TIMEZONE=$${CDR_SOURCE_TIMEZONE:-UTC} $(PY) -m cdr_airflow.ui --port $(UI_PORT)

# Stops a `make ui` started in another terminal.
ui-stop: install
	$(PY) -m cdr_airflow.ui --stop

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# the revision `make bench` checks the working tree's outputs against, row for row
BENCH_AGAINST ?= HEAD

bench: install system
	$(PY) bench/run.py
	$(PY) bench/same_outputs.py --against $(BENCH_AGAINST)
	$(PY) bench/stages.py
	$(PY) bench/export.py
	$(PY) bench/workers.py
	$(PY) bench/detector.py
	$(PY) bench/risk.py
	$(PY) bench/deliveries.py
	$(PY) bench/small_files.py

clean:
	rm -rf var bench/data
