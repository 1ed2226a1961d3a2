"""
The app inside a host, driven as a host maintainer drives it: ``python -m django`` (``django-admin``) with a
host-style settings module (``tests/host_settings.py``, modelled on enterprise-access: every logger on stdout
at INFO, the host's OAuth2 names, the event bus in Django settings, a database of its own), against the dev
stack and the real HTTP catalog stand-in. No ``academy-consumer`` script, no ``academy_consumer.settings``, and
no environment variable of the app's: the host's settings decide.

The dev stack's and the stand-in's addresses are known only at test time, so each test writes a small settings
module into its temporary directory (``from tests.host_settings import *`` and those addresses) and puts that
directory on ``PYTHONPATH``.
"""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests import host_settings

pytestmark = pytest.mark.stack  # every test here runs django-admin as a subprocess

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "academy_consumer" / "samples"
CUSTOMER = str(uuid.uuid4())
MODULE = "host_test_settings"
# What a host's process environment does not hold for the app (the caller's may: the tests' own settings).
APP_ENVIRONMENT = ("ACADEMY_", "EVENT_BUS_", "DATABASE_", "ENTERPRISE_", "BACKEND_SERVICE_", "SOCIAL_AUTH_")


class Host:
    """A host's settings module in ``directory`` and ``django-admin`` runs with it (see the module docstring)."""

    def __init__(self, directory, **overrides):
        self.directory = Path(directory)
        self.secret = overrides.get("BACKEND_SERVICE_EDX_OAUTH2_SECRET",
                                    host_settings.BACKEND_SERVICE_EDX_OAUTH2_SECRET)
        self.overrides = {"DATABASES": {"default": {"ENGINE": "django.db.backends.sqlite3",
                                                    "NAME": str(self.directory / "host.sqlite3")}}, **overrides}
        self.write(MODULE)

    def write(self, module, **changes):
        """Write settings module ``module``: the host's settings, this host's overrides, then ``changes`` (None
        deletes a setting)."""
        lines = ["from tests.host_settings import *  # noqa: F401,F403  pylint: disable=wildcard-import"]
        for name, value in {**self.overrides, **changes}.items():
            lines.append(f"del {name}" if value is None else f"{name} = {value!r}")
        (self.directory / f"{module}.py").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def run(self, *args, env=None, module=MODULE, timeout=120):
        """``python -m django ARGS`` in the host's directory with settings module ``module``."""
        full_env = {key: value for key, value in os.environ.items()
                    if not key.startswith(APP_ENVIRONMENT) and key not in ("DJANGO_SETTINGS_MODULE", "LOG_LEVEL")}
        full_env.update({"DJANGO_SETTINGS_MODULE": module,
                         "PYTHONPATH": os.pathsep.join([str(self.directory), str(REPO)])}, **(env or {}))
        done = subprocess.run([sys.executable, "-m", "django", *args], env=full_env, cwd=self.directory,
                              capture_output=True, text=True, timeout=timeout, check=False)
        assert self.secret not in done.stdout + done.stderr, args
        return done

    def json(self, *args, **kwargs):
        """Run a ``--json`` command: exit 0, and its stdout is one JSON document (returned)."""
        done = self.run(*args, **kwargs)
        assert done.returncode == 0, (args, done.stderr[-3000:])
        try:
            return json.loads(done.stdout), done
        except ValueError as exc:
            raise AssertionError(f"{args}: stdout is not one JSON document ({exc}):\n{done.stdout[:3000]}") from exc


@pytest.fixture
def host_stack(settings, request):
    """The ``devstack`` fixture's stack with the topics a host with ``EVENT_BUS_TOPIC_PREFIX = 'dev'`` uses."""
    settings.EVENT_BUS_TOPIC_PREFIX = host_settings.EVENT_BUS_TOPIC_PREFIX
    return request.getfixturevalue("devstack")


@pytest.fixture
def host(tmp_path, host_stack, catalog_server):
    """A ``Host`` whose settings point at the dev stack and the catalog stand-in (the LMS root, no provider URL)."""
    return Host(
        tmp_path,
        EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS=host_stack.bootstrap_servers,
        EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL=host_stack.stack.schema_registry_url,
        ACADEMY_CONSUMER_KAFKA_CONFIG=json.loads(host_stack.env["ACADEMY_CONSUMER_KAFKA_CONFIG"]),
        ENTERPRISE_CATALOG_URL=catalog_server.url,
        SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT=catalog_server.url,
        BACKEND_SERVICE_EDX_OAUTH2_KEY=catalog_server.client_id,
        BACKEND_SERVICE_EDX_OAUTH2_SECRET=catalog_server.client_secret,
    )


def logged(done):
    """The host's log lines (its format: ``... INFO <pid> [logger] ...``) a command wrote."""
    return [line for line in (done.stdout + done.stderr).splitlines() if " INFO " in line and "[user " in line]


@pytest.mark.slow
def test_a_host_runs_the_app_through_django_admin(host, host_stack, catalog_server):
    done = host.run("check")
    assert done.returncode == 0 and "System check identified no issues" in done.stdout, done.stderr
    assert host.run("migrate").returncode == 0

    # reconcile from the catalog API: the token where the host's own clients get theirs
    catalog_server.add_academies(2, enterprise_customer=CUSTOMER, prefix="Reconciled")
    catalog_server.add_academies(1, enterprise_customer=str(uuid.uuid4()), prefix="Other")
    report, _ = host.json("reconcile_academies", "--enterprise-customer", CUSTOMER, "--json")
    assert (report["created"], report["errors"], report["source"]) == (2, 0, catalog_server.url)
    assert [request.path for request in catalog_server.token_requests] == ["/oauth2/access_token"]

    # the bundled samples, produced to the host's (prefixed) topic and consumed
    for action, name in (("created", "academies.jsonl"), ("updated", "changes.jsonl"), ("deleted", "deleted.json")):
        done = host.run("produce_academy_event", "--action", action, "--file", str(SAMPLES / name))
        assert done.returncode == 0, done.stderr
    assert len(host_stack.read_topic()) == 6 and host_stack.topic.startswith("dev-")  # 4 created, 1 updated, 1 deleted
    consumed, done = host.json("consume_academy_events", "--until-idle", "3", "--json")
    assert consumed["events"] == 6 and consumed["outcomes"] == {"created": 4, "updated": 1, "deactivated": 1}
    assert logged(done) and not logged(done)[0] in done.stdout  # the host's INFO lines went to stderr

    rows, _ = host.json("list_academies", "--json")
    assert {row["name"]: row["is_active"] for row in rows} == {
        "Reconciled 01": True, "Reconciled 02": True,  # reconcile's
        "Data Academy": True, "AI & Machine Learning Academy": True, "Leadership Académie": False,  # the samples'
        "Legacy Cloud Academy": False,
    }
    lag, _ = host.json("consumer_lag", "--json")
    assert (lag["topic"], lag["total_lag"]) == (host_stack.topic, 0)
    letters, _ = host.json("dead_letters", "list", "--json")
    assert letters == {"count": 0, "letters": []}
    redriven, _ = host.json("dead_letters", "redrive", "--dry-run", "--json")
    assert redriven["counts"] == {} and redriven["letters"] == []
    repaired, _ = host.json("repair_future_timestamps", "--dry-run", "--json")
    assert repaired["repaired"] == 0

    listed = host.run("help").stdout
    assert "[academy_consumer]" in listed
    for command in ("consume_academy_events", "consumer_lag", "dead_letters", "list_academies",
                    "produce_academy_event", "reconcile_academies", "repair_future_timestamps"):
        assert f"    {command}\n" in listed
    assert "devstack" not in listed  # a development tool (devstack/), never a command of the host


@pytest.mark.slow
def test_every_json_output_parses_whatever_the_host_logs(host, host_stack, tmp_path):
    """
    A host logging everything at DEBUG with DEBUG on (every SQL statement) and librdkafka's broker debugging on
    (its lines come through the app's loggers), so that every command logs: every ``--json`` command still
    prints only its JSON on stdout, and the log lines (on stderr) prove that the host's logging wrote meanwhile.
    """
    console = {**host_settings.LOGGING["handlers"]["console"], "level": "DEBUG"}
    loggers = {name: {**config, "level": "DEBUG"} for name, config in host_settings.LOGGING["loggers"].items()}
    host.write("host_noisy_settings", DEBUG=True,
               LOGGING={**host_settings.LOGGING, "handlers": {"console": console}, "loggers": loggers},
               ACADEMY_CONSUMER_KAFKA_CONFIG={**host.overrides["ACADEMY_CONSUMER_KAFKA_CONFIG"], "debug": "broker"})
    assert host.run("migrate", module="host_noisy_settings").returncode == 0
    (tmp_path / "catalog.json").write_text((SAMPLES / "catalog.json").read_text(encoding="utf-8"), encoding="utf-8")

    produced = host.run("produce_academy_event", "--action", "created", "--file", str(SAMPLES / "academies.jsonl"),
                        module="host_noisy_settings")
    assert produced.returncode == 0, produced.stderr

    for args in (["consume_academy_events", "--until-idle", "1", "--json"], ["consumer_lag", "--json"],
                 ["dead_letters", "list", "--json"], ["dead_letters", "redrive", "--dry-run", "--json"],
                 ["reconcile_academies", "--from-file", "catalog.json", "--json"], ["list_academies", "--json"],
                 ["repair_future_timestamps", "--json"]):
        _, done = host.json(*args, module="host_noisy_settings")
        assert " DEBUG " in done.stderr, (args, "the host logged nothing: the test would prove nothing")


def test_missing_or_unusable_catalog_settings_are_one_line_exit_2(tmp_path):
    """Under the host's settings, reconcile's catalog settings: one line naming what to set, exit 2, no traceback."""
    host = Host(tmp_path)
    assert host.run("migrate").returncode == 0
    cases = [
        ("host_no_catalog", {"ENTERPRISE_CATALOG_URL": ""}, "set ENTERPRISE_CATALOG_URL"),
        ("host_no_lms_root", {"SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT": None}, "set SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT (or"),
        ("host_placeholder", {"SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT": "replace-me"},
         "SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT must be an http:// or https:// URL, not 'replace-me'"),
        ("host_no_client", {"BACKEND_SERVICE_EDX_OAUTH2_KEY": "", "BACKEND_SERVICE_EDX_OAUTH2_SECRET": None},
         "set BACKEND_SERVICE_EDX_OAUTH2_KEY, BACKEND_SERVICE_EDX_OAUTH2_SECRET"),
        ("host_ftp_catalog", {"ENTERPRISE_CATALOG_URL": f"ftp://u:{host.secret}@catalog"},
         "ENTERPRISE_CATALOG_URL must be an http:// or https:// URL, not 'ftp://***@catalog'"),
    ]
    for module, overrides, words in cases:
        host.write(module, **overrides)
        done = host.run("reconcile_academies", "--enterprise-customer", CUSTOMER, module=module)
        assert done.returncode == 2, (module, done.stderr)
        assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr, (module, done.stderr)
        assert done.stderr.startswith("CommandError: bad setting: ") and words in done.stderr, (module, done.stderr)
        assert "or give --from-file PATH; nothing was written" in done.stderr


def test_environment_variables_do_not_reach_a_hosts_settings(tmp_path):
    """
    The app's environment variables are the standalone settings': under a host's settings
    ``ACADEMY_CONSUMER_BATCH_SIZE=0`` does nothing, while the same value in the host's settings is refused (one
    line, exit 2) and shown by ``check``. Standalone, the variable is refused.
    """
    host = Host(tmp_path)
    assert host.run("migrate").returncode == 0
    done = host.run("list_academies", "--json", env={"ACADEMY_CONSUMER_BATCH_SIZE": "0"})
    assert done.returncode == 0 and json.loads(done.stdout) == [], done.stderr

    host.write("host_bad_batch", ACADEMY_CONSUMER_BATCH_SIZE=0)
    done = host.run("list_academies", "--json", module="host_bad_batch")
    assert done.returncode == 2 and done.stderr.splitlines() == [
        "CommandError: bad setting: ACADEMY_CONSUMER_BATCH_SIZE must be an integer from 1 to 1000000, not '0'"]
    done = host.run("check", module="host_bad_batch")
    assert done.returncode == 1 and "ACADEMY_CONSUMER_BATCH_SIZE: (academy_consumer.E005)" in done.stderr

    standalone = subprocess.run([sys.executable, "-m", "academy_consumer.cli", "list_academies"], cwd=tmp_path,
                                env={**{key: value for key, value in os.environ.items()
                                        if key != "DJANGO_SETTINGS_MODULE" and not key.startswith(APP_ENVIRONMENT)},
                                     "ACADEMY_CONSUMER_BATCH_SIZE": "0"},
                                capture_output=True, text=True, timeout=120, check=False)
    assert standalone.returncode == 2 and "bad setting: ACADEMY_CONSUMER_BATCH_SIZE" in standalone.stderr
