"""
The example manifests of docs/how-tos/deploy-on-kubernetes.md against the code: they load as YAML, name only
settings the app reads, run the image's commands (the Dockerfile's CMD, the compose file's migrate and
reconcile), probe /healthz and /readyz on the port the image exposes, give the consumer a grace period longer
than its retry backoff and the memory it needs, keep replicas at most the topic's partitions, and name the
topics as the app computes them.
"""

import re
from pathlib import Path

import pytest
import yaml
from django.test import override_settings
from edx_event_bus_kafka.internal.config import get_full_topic

from academy_consumer import conf
from tests import deploy_files
from tests.helpers import settings_reference

reference = settings_reference()  # docs/settings_reference.py

PAGE = Path(__file__).resolve().parent.parent / "docs" / "how-tos" / "deploy-on-kubernetes.md"
CREDENTIALS = ("DATABASE_URL", "SECRET_KEY", "EVENT_BUS_KAFKA_API_KEY", "EVENT_BUS_KAFKA_API_SECRET",
               "EVENT_BUS_KAFKA_SCHEMA_REGISTRY_API_KEY", "EVENT_BUS_KAFKA_SCHEMA_REGISTRY_API_SECRET",
               "BACKEND_SERVICE_EDX_OAUTH2_KEY", "BACKEND_SERVICE_EDX_OAUTH2_SECRET")
PEAK_RSS_MIB = 120  # the consumer's peak RSS at the default batch of 500, as `make bench` measures it


@pytest.fixture(scope="module")
def manifests():
    """Every document of every ```yaml block of the page, by (kind, name)."""
    blocks = re.findall(r"^```yaml\n(.*?)^```", PAGE.read_text(encoding="utf-8"), re.S | re.M)
    documents = [doc for block in blocks for doc in yaml.safe_load_all(block) if doc]
    found = {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents}
    assert len(found) == len(documents), "two manifests of the same kind and name"
    return found


def _pod(manifest):
    spec = manifest["spec"]
    if manifest["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def _mebibytes(quantity):
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()
    return int(number) * (1024 if unit == "Gi" else 1)


def test_the_page_has_every_workload_and_its_configuration(manifests):
    kinds = {kind for kind, _ in manifests}
    assert kinds == {"ConfigMap", "Secret", "Deployment", "Service", "StatefulSet", "Job", "CronJob", "KafkaTopic"}


def test_the_manifests_set_only_settings_the_app_reads_and_credentials_come_from_the_secret(manifests):
    annotated = set(reference.annotations())
    config = manifests[("ConfigMap", "academy-consumer")]["data"]
    secret = manifests[("Secret", "academy-consumer")]["stringData"]
    assert set(config) <= annotated and set(secret) <= annotated
    assert set(CREDENTIALS) <= set(secret)
    assert not set(CREDENTIALS) & set(config)
    for manifest in manifests.values():
        if manifest["kind"] in ("Deployment", "StatefulSet", "Job", "CronJob"):
            for container in _pod(manifest)["containers"]:
                assert {source.get("secretRef", {}).get("name") for source in container["envFrom"]} >= \
                       {"academy-consumer"}
                assert {item["name"] for item in container.get("env", [])} <= annotated


def test_the_workloads_run_the_images_commands_as_its_user(manifests):
    image = deploy_files.image_config()
    services = deploy_files.compose()["services"]
    expected = {
        ("Deployment", "academy-consumer"): image["cmd"],
        ("StatefulSet", "academy-consumer"): image["cmd"],
        ("Job", "academy-consumer-migrate-1-0-0"): services["migrate"]["command"],
        ("CronJob", "academy-consumer-reconcile"): services["reconcile"]["command"],
    }
    uid = int(image["user"].split(":")[0])
    for key, args in expected.items():
        pod = _pod(manifests[key])
        assert [container["args"] for container in pod["containers"]] == [args], key
        assert pod["securityContext"]["runAsUser"] == uid and pod["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
def test_the_consumer_probes_grace_period_and_memory(manifests, kind):
    pod = _pod(manifests[(kind, "academy-consumer")])
    (container,) = pod["containers"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
    assert [str(port)] == deploy_files.image_config()["expose"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert pod["terminationGracePeriodSeconds"] >= conf.retry_max_seconds() + 30
    resources = container["resources"]
    request, limit = _mebibytes(resources["requests"]["memory"]), _mebibytes(resources["limits"]["memory"])
    assert PEAK_RSS_MIB < request <= limit


def test_static_membership_takes_the_pod_name(manifests):
    (container,) = _pod(manifests[("StatefulSet", "academy-consumer")])["containers"]
    assert {"name": "ACADEMY_CONSUMER_GROUP_INSTANCE_ID",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]
    assert manifests[("StatefulSet", "academy-consumer")]["spec"]["serviceName"] in \
        {name for kind, name in manifests if kind == "Service"}


def test_the_topics_are_named_as_the_app_names_them_with_replicas_at_most_partitions(manifests):
    config = manifests[("ConfigMap", "academy-consumer")]["data"]
    with override_settings(EVENT_BUS_TOPIC_PREFIX=config["EVENT_BUS_TOPIC_PREFIX"],
                           ACADEMY_EVENTS_TOPIC=config["ACADEMY_EVENTS_TOPIC"]):
        topic, dlq = get_full_topic(conf.topic()), get_full_topic(conf.dlq_topic())
    topics = {name: doc["spec"] for (kind, name), doc in manifests.items() if kind == "KafkaTopic"}
    assert set(topics) == {topic, dlq}
    for kind in ("Deployment", "StatefulSet"):
        assert manifests[(kind, "academy-consumer")]["spec"]["replicas"] <= topics[topic]["partitions"]
    assert topics[dlq]["config"]["cleanup.policy"] == "delete"
    assert topics[dlq]["config"]["retention.ms"] >= topics[topic]["config"]["retention.ms"]
