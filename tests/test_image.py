"""
The Docker image's commands, run without a Docker engine (there is none here): the build context by
.dockerignore (Docker's own matching rules, from the Docker SDK for Python), the build stage's ``pip wheel``
run in that context, the runtime stage's ``pip install`` of those wheels only into a fresh virtualenv, and
then the image's command lines read from the Dockerfile (ENV, ENTRYPOINT, CMD) and from docker-compose.yml
(the migrate one-shot, the smoke test's producer): they start, migrate creates the table, ``--help`` works,
and the consumer the CMD starts serves /healthz and /readyz and applies the bundled samples produced to the
embedded dev stack (standing in for Kafka and the schema registry).

What stays untested here: the base image, apt packages, the non-root user and the bind mount of the wheels
(hadolint lints those lines); the test's interpreter stands in for the image's Python.
"""

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths

from tests import deploy_files
from tests.helpers import http_get
from tests.waiting import wait_for

ROOT = deploy_files.ROOT
SAMPLES = ROOT / "academy_consumer" / "samples"

# A checkout that has been worked in: what .dockerignore must leave out of the build context ...
ACCUMULATED = [
    ".git/config", ".venv/bin/python", ".tox/py311/x", "build/lib/academy_consumer/x.py", "dist/x.whl",
    "academy_consumer.egg-info/PKG-INFO", "academy_consumer/__pycache__/conf.cpython-311.pyc",
    "academy_consumer/build/x.py", "academy_consumer/x.egg-info/PKG-INFO", "signals/__pycache__/x.pyc",
    "bench/.work/ref/setup.cfg", "bench/run.py", "academy_consumer.sqlite3", "academy_consumer/x.sqlite3",
    ".devstack.env", ".devstack.log", "academy_consumer/.devstack.env", ".hypothesis/examples/x",
    ".pytest_cache/v/x", "academy_consumer/.pytest_cache/x", "tests/test_x.py", "devstack/x.py", "demo.out",
    ".fault-results.jsonl", "requirements/test.txt", "docs/runbook.md", "docker-compose.yml", ".env",
]
# ... and what the build stage copies.
NEEDED = ["pyproject.toml", "setup.cfg", "README.md", "requirements/base.txt", "requirements/db.txt",
          "academy_consumer/__init__.py", "academy_consumer/samples/academies.jsonl", "signals/__init__.py",
          "signals/schemas/x.avsc"]


def build_context(source, target):
    """Copy the files of ``source`` that .dockerignore lets into a build context to ``target``; their paths."""
    included = exclude_paths(str(source), deploy_files.dockerignore_patterns())
    files = sorted(path for path in included if (source / path).is_file())
    for path in files:
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / path, target / path)
    return files


def test_the_build_context_leaves_out_what_a_checkout_accumulates(tmp_path):
    for path in ACCUMULATED + NEEDED + ["Dockerfile"]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x", encoding="utf-8")
    included = exclude_paths(str(tmp_path), deploy_files.dockerignore_patterns())
    assert sorted(path for path in included if (tmp_path / path).is_file()) == sorted(NEEDED + ["Dockerfile"])


def test_the_build_stage_copies_only_what_the_context_holds_to_the_same_paths():
    copies = [i.words() for i in deploy_files.dockerfile() if i.stage == "build" and i.keyword == "COPY"]
    assert copies, "the build stage copies nothing"
    for words in copies:
        *sources, target = words
        for source in sources:
            assert not source.startswith("--"), words  # no --from: the build stage builds from the context
            assert target.rstrip("/") in (source.rstrip("/"), ".", Path(source).parent.as_posix()), words
    assert not [i for i in deploy_files.dockerfile() if i.stage != "build" and i.keyword == "COPY"], \
        "the runtime stage copies from the context: its files would bypass the wheel"


def _venv_env(bin_dir, extra=None):
    """The environment of the image's commands: the Dockerfile's ENV, this machine's PATH after the venv's."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV", "PYTHONPATH", "DATABASE_URL")}
    env.update(deploy_files.image_config()["env"])
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env.update(extra or {})
    return env


def _pip(words, python, wheels):
    """A Dockerfile ``pip ...`` line run by ``python``, with the image's /wheels at ``wheels``."""
    return [python, "-m", *[str(wheels) if word == "/wheels" else word for word in words]]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """
    The runtime image's Python environment, built as the Dockerfile builds it: yields the venv's bin folder.
    (pip's cache stays on, against the Dockerfile's --no-cache-dir: the test rebuilds what did not change.)
    """
    work = tmp_path_factory.mktemp("image")
    context, wheels, venv = work / "context", work / "wheels", work / "venv"
    build_context(ROOT, context)
    build = [word for word in deploy_files.pip_command("build", "wheel") if word != "--no-cache-dir"]
    done = subprocess.run(_pip(build, sys.executable, wheels), cwd=context, capture_output=True, text=True,
                          timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    install = [word for word in deploy_files.pip_command("runtime", "install") if word != "--no-cache-dir"]
    done = subprocess.run(_pip(install, str(venv / "bin" / "python"), wheels), cwd=work, capture_output=True,
                          text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return venv / "bin"


def _image_python():
    """The image's Python version, ``"3.11"``, from the Dockerfile's ``ARG PYTHON_IMAGE=python:3.11-...``."""
    (argument,) = [i.text for i in deploy_files.dockerfile() if i.keyword == "ARG" and "PYTHON_IMAGE=" in i.text]
    return re.fullmatch(r"PYTHON_IMAGE=python:(\d+\.\d+)-slim-\w+", argument).group(1)


def image_test(test):
    """Mark a test of the image's commands: a stack test (subprocesses), slow (the image's venv is built once
    per module, ~40 s), run on the SQLite pass only, and by the image's Python version (see the reasons)."""
    marks = [pytest.mark.stack, pytest.mark.slow, pytest.mark.skipif(
        not (os.environ.get("DATABASE_URL") or "sqlite").startswith("sqlite"),
        reason="the image's commands run on a SQLite file of their own, never on DATABASE_URL: run once, on the "
               "SQLite pass of CI (make test), not again on each database"), pytest.mark.skipif(
        f"{sys.version_info.major}.{sys.version_info.minor}" != _image_python(),
        reason="this interpreter stands in for the image's Python, whose version it is not (the image's pins, "
               "requirements/base.txt, are compiled for that version)")]
    for mark in marks:
        test = mark(test)
    return test


@image_test
def test_the_image_holds_the_standalone_extras_and_no_development_package(image):
    done = subprocess.run([str(image / "python"), "-m", "pip", "list", "--format=json"], capture_output=True,
                          text=True, timeout=120, check=True)
    installed = {item["name"].lower().replace("_", "-") for item in json.loads(done.stdout)}
    assert {"academy-consumer", "dj-database-url", "prometheus-client", "psycopg2-binary", "mysqlclient"} <= installed
    assert not installed & {"pytest", "hypothesis", "pytest-django", "pip-tools", "tox", "docker", "pylint"}
    probe = ("import importlib.util, MySQLdb, psycopg2, prometheus_client, dj_database_url; "
             "print(importlib.util.find_spec('academy_devstack'))")
    done = subprocess.run([str(image / "python"), "-c", probe], capture_output=True, text=True, timeout=60,
                          check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "None"), done.stderr  # the drivers load; no dev stack


def _image_command(image, words, tmp_path, env=None, timeout=120):
    """``words`` (the image's ENTRYPOINT + a command line) run in a working folder, as the image runs them."""
    return subprocess.run([str(image / words[0]), *words[1:]], cwd=tmp_path, env=_venv_env(image, env),
                          capture_output=True, text=True, timeout=timeout, check=False)


@image_test
def test_help_works(image, tmp_path):
    done = _image_command(image, [*deploy_files.image_config()["entrypoint"], "--help"], tmp_path)
    assert done.returncode == 0, done.stderr
    for command in ("consume_academy_events", "reconcile_academies", "migrate", "dead_letters"):
        assert command in done.stdout


@image_test
def test_the_migrate_one_shot_creates_the_table(image, tmp_path):
    migrate = [*deploy_files.image_config()["entrypoint"], *deploy_files.compose()["services"]["migrate"]["command"]]
    database = tmp_path / "academy.sqlite3"
    for _ in range(2):  # a second run (an upgrade with nothing new) has nothing to do, and exits 0 too
        done = _image_command(image, migrate, tmp_path, {"DATABASE_URL": f"sqlite:///{database}"})
        assert done.returncode == 0, done.stderr
    with sqlite3.connect(database) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "academy_consumer_enterpriseacademy" in tables


def _smoke_producer(image):
    """The produce-samples service's script, the bundled samples at /samples (its bind mount)."""
    service = deploy_files.compose()["services"]["produce-samples"]
    assert service["volumes"] == ["./academy_consumer/samples:/samples:ro"]
    return [*service["entrypoint"], *[part.replace("/samples/", f"{SAMPLES}/") for part in service["command"]]]


@image_test
def test_the_cmd_serves_healthz_and_the_smoke_test_applies_the_samples(image, tmp_path, devstack):
    config = deploy_files.image_config()
    database = tmp_path / "academy.sqlite3"
    env = {**devstack.env, "DATABASE_URL": f"sqlite:///{database}", "ACADEMY_CONSUMER_METRICS_PORT": "0"}
    assert config["env"]["ACADEMY_CONSUMER_METRICS_HOST"] == "0.0.0.0"
    migrate = [*config["entrypoint"], *deploy_files.compose()["services"]["migrate"]["command"]]
    assert _image_command(image, migrate, tmp_path, env).returncode == 0

    log = tmp_path / "consumer.log"
    with open(log, "w", encoding="utf-8") as output:
        consumer = subprocess.Popen(  # pylint: disable=consider-using-with
            [str(image / config["entrypoint"][0]), *config["entrypoint"][1:], *config["cmd"]], cwd=tmp_path,
            env=_venv_env(image, env), stdout=output, stderr=subprocess.STDOUT)
    try:
        def logged():
            return log.read_text(encoding="utf-8")

        served = wait_for(lambda: re.search(r"metrics on http://0\.0\.0\.0:(\d+)/metrics", logged()), 60,
                          lambda: f"the metrics server's line in\n{logged()}")
        base = f"http://127.0.0.1:{served.group(1)}"
        wait_for(lambda: http_get(f"{base}/readyz")[0] == 200, 60, lambda: f"/readyz 200: {http_get(base + '/readyz')}")
        assert http_get(f"{base}/healthz")[0] == 200

        done = subprocess.run(_smoke_producer(image), cwd=tmp_path, env=_venv_env(image, env), capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr

        def applied():
            metrics = http_get(f"{base}/metrics")[1]
            return 'academy_consumer_events_total{outcome="deactivated"} 1.0' in metrics

        wait_for(applied, 60, lambda: f"the samples applied; the consumer logged\n{logged()}")
        listed = _image_command(image, [*config["entrypoint"], "list_academies", "--json"], tmp_path, env)
        rows = {row["name"]: row["is_active"] for row in json.loads(listed.stdout)}
        assert rows == {"Data Academy": True, "AI & Machine Learning Academy": True,  # renamed
                        "Leadership Académie": False,  # deleted
                        "Legacy Cloud Academy": False}  # created inactive
    finally:
        consumer.send_signal(signal.SIGTERM)
        returncode = consumer.wait(timeout=60)
    assert returncode == 0, log.read_text(encoding="utf-8")
