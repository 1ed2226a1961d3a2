"""
docker-compose.yml without a Docker engine: the start order (the consumer waits for the migrate one-shot and
for the topics), the settings by their real names, the metrics port and healthcheck, and the topic names
``init-topics`` creates, which must be the ones the app computes from EVENT_BUS_TOPIC_PREFIX and
ACADEMY_EVENTS_TOPIC. (The file's schema is checked by ``make quality``: check-jsonschema with the Compose
specification's schema; the image's commands by tests/test_image.py.)
"""

import os
import stat
import subprocess
from urllib.parse import urlsplit

import dj_database_url
import pytest
from django.test import override_settings
from edx_event_bus_kafka.internal.config import get_full_topic

from academy_consumer import conf
from tests import deploy_files
from tests.helpers import settings_reference

reference = settings_reference()  # docs/settings_reference.py

APP_SERVICES = ("migrate", "consumer", "produce-samples", "reconcile")


@pytest.fixture(scope="module")
def services():
    return deploy_files.compose()["services"]


def test_the_consumer_starts_after_the_migrate_one_shot_and_the_topics(services):
    depends = services["consumer"]["depends_on"]
    assert depends["migrate"] == {"condition": "service_completed_successfully"}
    assert depends["init-topics"] == {"condition": "service_completed_successfully"}
    assert depends["schema-registry"] == {"condition": "service_healthy"}
    migrate = services["migrate"]
    assert migrate["command"][0] == "migrate" and migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert services["init-topics"]["depends_on"]["kafka"] == {"condition": "service_healthy"}
    assert services["init-topics"]["restart"] == "no"


def test_every_app_service_runs_the_one_image_with_the_same_settings(services):
    consumer = services["consumer"]
    for name in APP_SERVICES:
        assert (services[name]["image"], services[name]["build"]) == (consumer["image"], ".")
        shared = {key: value for key, value in services[name]["environment"].items()
                  if not key.startswith("ACADEMY_CONSUMER_METRICS_")}
        assert shared == services["migrate"]["environment"], name
    assert services["produce-samples"]["profiles"] == ["smoke"]
    assert services["reconcile"]["profiles"] == ["reconcile"]
    assert services["reconcile"]["command"] == ["reconcile_academies", "--deactivate-missing"]


def test_every_variable_given_to_the_app_is_a_setting_it_reads():
    annotated = reference.annotations()
    for name in APP_SERVICES:
        service = deploy_files.compose()["services"][name]
        unknown = sorted(set(service["environment"]) - set(annotated))
        assert unknown == [], f"{name}: {unknown} are no settings of academy_consumer (docs/reference/settings.md)"
    environment = deploy_files.compose()["services"]["consumer"]["environment"]
    for credential in ("EVENT_BUS_KAFKA_API_KEY", "EVENT_BUS_KAFKA_API_SECRET",
                       "EVENT_BUS_KAFKA_SCHEMA_REGISTRY_API_KEY", "EVENT_BUS_KAFKA_SCHEMA_REGISTRY_API_SECRET",
                       "BACKEND_SERVICE_EDX_OAUTH2_KEY", "BACKEND_SERVICE_EDX_OAUTH2_SECRET"):
        assert credential in environment
    secret = "s3cr3t-from-the-shell"
    given = deploy_files.compose({"EVENT_BUS_KAFKA_API_SECRET": secret})["services"]["consumer"]["environment"]
    assert given["EVENT_BUS_KAFKA_API_SECRET"] == secret
    assert secret not in deploy_files.COMPOSE_FILE.read_text(encoding="utf-8")


def test_the_database_is_the_postgres_service_the_settings_take(services):
    url = services["migrate"]["environment"]["DATABASE_URL"]
    assert dj_database_url.parse(url)["ENGINE"] == "django.db.backends.postgresql"
    host = urlsplit(url).hostname
    assert services[host]["image"] == "postgres:15"
    assert services[host]["environment"]["POSTGRES_PASSWORD"] == urlsplit(url).password


def test_the_consumer_publishes_the_images_metrics_port_and_checks_healthz(services):
    image = deploy_files.image_config()
    consumer = services["consumer"]
    port = consumer["environment"]["ACADEMY_CONSUMER_METRICS_PORT"]
    assert port == image["env"]["ACADEMY_CONSUMER_METRICS_PORT"] and image["expose"] == [port]
    assert consumer["environment"]["ACADEMY_CONSUMER_METRICS_HOST"] == "0.0.0.0"
    assert consumer["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert f"http://127.0.0.1:{port}/healthz" in " ".join(consumer["healthcheck"]["test"])
    assert consumer["command"] == image["cmd"] == ["consume_academy_events"]
    # A batch in its retry backoff (up to ACADEMY_CONSUMER_RETRY_MAX_SECONDS, 30 s) ends before a stop kills it.
    assert int(consumer["stop_grace_period"].rstrip("s")) > conf.retry_max_seconds()


FAKE_KAFKA_TOPICS = """#!/bin/sh
printf '%s\\n' "$*" >> "$KAFKA_TOPICS_LOG"
"""


@pytest.mark.stack  # runs init-topics' script in bash, with a stand-in for kafka-topics
@pytest.mark.parametrize("shell_env", [
    {},
    {"EVENT_BUS_TOPIC_PREFIX": ""},
    {"EVENT_BUS_TOPIC_PREFIX": "stage", "ACADEMY_EVENTS_TOPIC": "academies"},
    {"EVENT_BUS_TOPIC_PREFIX": "edx", "ACADEMY_EVENTS_DLQ_TOPIC": "academy-dead-letters"},
])
def test_init_topics_creates_the_topics_the_app_consumes_and_dead_letters_to(tmp_path, shell_env):
    service = deploy_files.compose(shell_env)["services"]["init-topics"]
    fake = tmp_path / "kafka-topics"
    fake.write_text(FAKE_KAFKA_TOPICS, encoding="utf-8")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "calls.log"
    env = {**service["environment"], "PATH": f"{tmp_path}:{os.environ['PATH']}", "KAFKA_TOPICS_LOG": str(log)}
    env = {key: str(value) for key, value in env.items()}
    done = subprocess.run([*service["entrypoint"], *service["command"]], env=env, capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    calls = [line.split() for line in log.read_text(encoding="utf-8").splitlines()]
    created = [call[call.index("--topic") + 1] for call in calls]

    settings = service["environment"]
    with override_settings(EVENT_BUS_TOPIC_PREFIX=settings["EVENT_BUS_TOPIC_PREFIX"],
                           ACADEMY_EVENTS_TOPIC=settings["ACADEMY_EVENTS_TOPIC"],
                           ACADEMY_EVENTS_DLQ_TOPIC=settings["ACADEMY_EVENTS_DLQ_TOPIC"]):
        assert created == [get_full_topic(conf.topic()), get_full_topic(conf.dlq_topic())]
    assert all(call[call.index("--bootstrap-server") + 1] == "kafka:9092" and "--if-not-exists" in call
               for call in calls)
    assert calls[0][calls[0].index("--partitions") + 1] == "3"
    assert "retention.ms=2592000000" in calls[1]   # 30 days of dead letters to redrive
