# academy-consumer developer commands. Every target sets up what it needs on a fresh machine.
.DEFAULT_GOAL := help
.PHONY: help system-deps requirements upgrade test test-fast test-matrix quality fault demo reconcile-demo bench clean \
	settings-reference

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

# The development-only dev stack (devstack/, import name academy_devstack: `academy-consumer devstack`, the tests'
# embedded Kafka and schema registry) is installed here and in every tox env, never with the package itself.
$(STAMP): requirements/test.txt requirements/db.txt requirements/tox.txt setup.cfg devstack/pyproject.toml
	$(MAKE) system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements/test.txt -r requirements/db.txt -r requirements/tox.txt
	$(BIN)/pip install -q --no-deps -e . -e ./devstack
	touch $(STAMP)

requirements: $(STAMP) ## create .venv and install the pinned requirements, the package and the dev stack (devstack/)

# pip-compile runs in tool venvs of its own (pip-tools pinned in requirements/pip-tools.txt), one per
# Python line: every requirements/X.in is compiled to X.txt by Python 3.11, and the two Python 3.12 pin
# files of the tox matrix by Python 3.12 (openedx-events 11 needs Python >= 3.12), as is host-test.txt (the
# tox env `host`: enterprise-access runs Python 3.12).
PY312_ONLY := host-test
PYTHON312 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12.*/bin/python3.12) python3.12)
TOOLS311 := $(abspath $(VENV))/tools-py311/bin
TOOLS312 := $(abspath $(VENV))/tools-py312/bin
UPGRADE_ARGS ?= --upgrade
PIP_COMPILE_OPTS = --quiet --no-emit-find-links --no-emit-index-url --strip-extras $(UPGRADE_ARGS)

upgrade: export CUSTOM_COMPILE_COMMAND = make upgrade
upgrade: ## recompile requirements/*.txt from requirements/*.in with pip-compile (UPGRADE_ARGS, default --upgrade)
	test -x $(TOOLS311)/python || $(PYTHON) -m venv $(dir $(TOOLS311))
	test -x $(TOOLS312)/python || $(PYTHON312) -m venv $(dir $(TOOLS312))
	$(TOOLS311)/pip install -q -r requirements/pip-tools.txt
	$(TOOLS312)/pip install -q -r requirements/pip-tools.txt
	cd requirements && set -e; for name in $(filter-out $(PY312_ONLY),$(sort $(basename $(notdir $(wildcard requirements/*.in))))); do \
		$(TOOLS311)/pip-compile $(PIP_COMPILE_OPTS) -o $$name.txt $$name.in; done
	cd requirements && $(TOOLS312)/pip-compile $(PIP_COMPILE_OPTS) -o test-py312.txt test.in
	cd requirements && $(TOOLS312)/pip-compile $(PIP_COMPILE_OPTS) -o test-py312-django42.txt test-django42.in
	cd requirements && $(TOOLS312)/pip-compile $(PIP_COMPILE_OPTS) -o host-test.txt host-test.in

# tox finds the interpreters on PATH: put pyenv's 3.11-3.13 there (they are not on it by default).
MATRIX_PATH := $(subst $(eval) ,:,$(strip $(dir $(wildcard $(HOME)/.pyenv/versions/3.1[123].*/bin/python3))))

test-matrix: requirements ## the tox matrix on SQLite: Python 3.11-3.13 x Django 4.2/5.2, and min (TOX_ARGS, e.g. -e py312-django52 -- -m "not slow")
	PATH="$(MATRIX_PATH):$$PATH" $(BIN)/tox $(TOX_ARGS)

# The suite runs on TEST_WORKERS parallel workers (pytest-xdist): most of its time is spent waiting on the dev
# stack and on commands run as subprocesses, so more workers than the 2 cores of the CI machine pay (measured in
# docs/testing.md); TEST_WORKERS=0 runs it in this one process (for pdb). worksteal hands a worker that ran out
# of tests some of the queue of another, so one long file does not finish alone at the end.
TEST_WORKERS ?= 4
XDIST_ARGS = $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist worksteal,-p no:xdist)
# On PostgreSQL and MariaDB (a DATABASE_URL that is not sqlite), `make test` runs the tests marked `database`
# only: those that use the database (marked at collection, tests/conftest.py); the others cannot reach the
# database (pytest-django refuses them) and run on SQLite. TEST_MARKERS= runs them all there too.
TEST_MARKERS ?= $(if $(filter-out sqlite%,$(DATABASE_URL)),database)

test: requirements ## the test suite on TEST_WORKERS workers; DATABASE_URL selects the database (default SQLite; on PostgreSQL/MariaDB only the tests marked `database`)
	$(BIN)/pytest $(XDIST_ARGS) $(if $(TEST_MARKERS),-m "$(TEST_MARKERS)") $(PYTEST_ARGS)

test-fast: requirements ## the unit tests only, in seconds: no dev stack, no subprocess, no server (tests marked `stack` left out)
	ACADEMY_TEST_FAST=1 ACADEMY_DIFF_MAX_EXAMPLES=$${ACADEMY_DIFF_MAX_EXAMPLES:-30} $(BIN)/pytest -p no:xdist -m "not stack" $(PYTEST_ARGS)

QUALITY_STAMP := $(VENV)/.quality-installed
LINT_PATHS := academy_consumer signals devstack/academy_devstack tests bench requirements/hosts/check_installed.py \
	docs/settings_reference.py
# Off for tests/ only (the rest of edx-lint's pylintrc applies there as everywhere): pytest hands fixtures to
# tests by parameter name, so a test's parameter shadows the fixture function of its module
# (redefined-outer-name), a test asks for some fixtures only for what they set up (unused-argument), and a
# scenario takes as many fixtures as it uses (too-many-positional-arguments: pylint's newer half of the
# too-many-arguments that edx-lint's pylintrc already turns off); and `assert x == []` checks the type and the
# emptiness at once, where pylint's `not x` would pass for None (use-implicit-booleaness-not-comparison).
TESTS_PYLINT_DISABLE := redefined-outer-name,unused-argument,too-many-positional-arguments,use-implicit-booleaness-not-comparison
# No Docker engine is needed for the image's checks: hadolint lints the Dockerfile (its rules in .hadolint.yaml),
# check-jsonschema validates docker-compose.yml against the Compose specification's JSON schema that it vendors
# (both pinned in requirements/quality.txt); tests/test_image.py and tests/test_compose.py run the rest.
SETTING_ANNOTATIONS = $$($(BIN)/python -c 'import code_annotations.contrib.config as c, os; print(os.path.dirname(c.__file__))')/setting_annotations.yaml

$(QUALITY_STAMP): $(STAMP) requirements/quality.txt
	$(BIN)/pip install -q -r requirements/quality.txt
	touch $(QUALITY_STAMP)

quality: $(QUALITY_STAMP) ## pylint (edx-lint's pylintrc), pycodestyle, isort --check, PII and setting annotation checks, the settings reference, hadolint, docker-compose.yml against the Compose schema
	$(BIN)/pylint -j 2 academy_consumer signals devstack/academy_devstack bench requirements/hosts/check_installed.py \
		docs/settings_reference.py
	$(BIN)/pylint -j 2 --disable=$(TESTS_PYLINT_DISABLE) tests
	$(BIN)/pycodestyle $(LINT_PATHS)
	$(BIN)/isort --check-only --diff $(LINT_PATHS)
	DJANGO_SETTINGS_MODULE=academy_consumer.settings $(BIN)/code_annotations django_find_annotations \
		--config_file .pii_annotations.yml --lint --coverage
	$(BIN)/code_annotations static_find_annotations --config_file "$(SETTING_ANNOTATIONS)" \
		--source_path academy_consumer --no_report
	$(BIN)/python docs/settings_reference.py --check
	$(BIN)/hadolint Dockerfile
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

settings-reference: requirements ## rewrite docs/reference/settings.md from the `.. setting_name:` annotations (tests/test_settings_reference.py checks it)
	$(BIN)/python docs/settings_reference.py

FAULT_DATABASES ?= sqlite://:memory: postgres://root@127.0.0.1:5432/test mysql://root@127.0.0.1:3306/test

fault: requirements ## the fault-injection suite on each of FAULT_DATABASES (on TEST_WORKERS workers), then the Guarantees table
	@rm -f .fault-results.jsonl; set -e; for url in $(FAULT_DATABASES); do \
		echo "== fault suite with DATABASE_URL=$$url"; \
		DATABASE_URL=$$url ACADEMY_FAULT_SUITE=1 ACADEMY_FAULT_RESULTS=$(CURDIR)/.fault-results.jsonl \
			$(BIN)/pytest tests/fault $(XDIST_ARGS) $(PYTEST_ARGS); \
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
