# academy-consumer developer commands. Every target sets up what it needs on a fresh machine.
.DEFAULT_GOAL := help
.PHONY: help system-deps requirements test test-fast fault demo reconcile-demo bench clean

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.requirements-installed

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

system-deps: ## Debian packages needed to build mysqlclient (skipped when present)
	@pkg-config --exists libmariadb 2>/dev/null || pkg-config --exists mysqlclient 2>/dev/null || { \
		echo "installing libmariadb-dev and pkg-config (needed to build mysqlclient)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libmariadb-dev pkg-config >/dev/null; }

$(STAMP): requirements/test.txt requirements/base.txt setup.cfg
	$(MAKE) system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements/test.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

requirements: $(STAMP) ## create .venv and install the pinned requirements and the package

test: requirements ## run the test suite (DATABASE_URL selects the database; default SQLite)
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: requirements ## the unit tests only, in seconds: no dev stack, no subprocess, no server (tests marked `stack` left out)
	ACADEMY_TEST_FAST=1 ACADEMY_DIFF_MAX_EXAMPLES=$${ACADEMY_DIFF_MAX_EXAMPLES:-30} $(BIN)/pytest -m "not stack" $(PYTEST_ARGS)

FAULT_DATABASES ?= sqlite://:memory: postgres://root@127.0.0.1:5432/test mysql://root@127.0.0.1:3306/test

fault: requirements ## the fault-injection suite on each of FAULT_DATABASES, then the Guarantees table
	@rm -f .fault-results.jsonl; set -e; for url in $(FAULT_DATABASES); do \
		echo "== fault suite with DATABASE_URL=$$url"; \
		DATABASE_URL=$$url ACADEMY_FAULT_SUITE=1 ACADEMY_FAULT_RESULTS=$(CURDIR)/.fault-results.jsonl \
			$(BIN)/pytest tests/fault $(PYTEST_ARGS); \
	done; \
	echo "== Guarantees"; $(BIN)/python -m tests.fault.report .fault-results.jsonl

demo: requirements ## the main job on the embedded default: dev stack -> Kafka events -> consumer -> SQLite
	@set -e; \
	echo "== migrate the SQLite database (academy_consumer.sqlite3)"; \
	$(BIN)/academy-consumer migrate --verbosity 0; \
	echo "== start the embedded dev stack (mock Kafka + schema registry)"; \
	rm -f .devstack.env; \
	$(BIN)/academy-consumer devstack > .devstack.log 2>&1 & stack=$$!; \
	trap 'kill $$stack 2>/dev/null; wait $$stack 2>/dev/null || true' EXIT; \
	$(BIN)/academy-consumer devstack --wait --timeout 30 || { cat .devstack.log; exit 1; }; \
	cat .devstack.env; \
	echo "== produce: 4 academies created, 1 renamed, 1 deleted"; \
	$(BIN)/academy-consumer produce_academy_event --action created --file academy_consumer/samples/academies.jsonl; \
	$(BIN)/academy-consumer produce_academy_event --action updated --file academy_consumer/samples/changes.jsonl; \
	$(BIN)/academy-consumer produce_academy_event --action deleted --file academy_consumer/samples/deleted.json; \
	echo "== consume until idle"; \
	$(BIN)/academy-consumer consume_academy_events --until-idle 3; \
	echo "== the EnterpriseAcademy table"; \
	$(BIN)/academy-consumer list_academies

reconcile-demo: requirements ## reconcile the bundled sample catalog file into SQLite
	$(BIN)/academy-consumer migrate --verbosity 0
	$(BIN)/academy-consumer reconcile_academies --from-file academy_consumer/samples/catalog.json
	$(BIN)/academy-consumer list_academies

bench: requirements ## throughput side by side on the dev stack: raw consume, decoders, stock loop, consumer, reconcile (BENCH_ARGS, see bench/README.md)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean: ## remove the virtualenv and local databases
	rm -rf $(VENV) academy_consumer.sqlite3 .devstack.env .devstack.log
