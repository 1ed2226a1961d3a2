# academy-consumer developer commands. Every target sets up what it needs on a fresh machine.
.DEFAULT_GOAL := help
.PHONY: help system-deps requirements test demo clean

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

demo: requirements ## the main job on the embedded default (SQLite)
	$(BIN)/academy-consumer migrate --verbosity 0
	$(BIN)/academy-consumer reconcile_academies --from-file academy_consumer/samples/catalog.json
	$(BIN)/academy-consumer list_academies

clean: ## remove the virtualenv and local databases
	rm -rf $(VENV) academy_consumer.sqlite3 .devstack.env
