"""
The embedded dev stack (``academy_devstack``) exercised with the real clients:
confluent_kafka's Producer/Consumer against the librdkafka mock cluster, and its
SchemaRegistryClient / AvroSerializer / AvroDeserializer against the in-process registry.

No Django database is used. Every wait is a poll loop with a deadline; nothing sleeps to
synchronise. Every client is closed before the stack (see the ``clients`` fixture).
"""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time

import pytest
import requests
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from academy_devstack import (
    PARTITION_LOG_MAX_BYTES,
    ApiKey,
    DevStack,
    Err,
    MockKafkaCluster,
    SchemaRegistryServer,
    envfile,
)
from academy_devstack.command import MOCK_CONSUMER_CONFIG
from tests.waiting import wait_for

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
pytestmark = pytest.mark.stack  # the dev stack itself: its mock cluster, its registry, its command

TIMEOUT = 15.0  # upper bound for any single wait; the happy paths take well under a second

ACADEMY_V1 = {
    "type": "record",
    "name": "AcademyEvent",
    "namespace": "org.openedx.enterprise",
    "fields": [
        {"name": "uuid", "type": "string"},
        {"name": "title", "type": "string"},
        {"name": "seq", "type": "int"},
    ],
}
# Backward compatible with V1: the new field has a default.
ACADEMY_V2 = dict(
    ACADEMY_V1,
    fields=ACADEMY_V1["fields"] + [{"name": "tags", "type": {"type": "array", "items": "string"}, "default": []}],
)
ACADEMY_BREAKING = dict(ACADEMY_V1, fields=ACADEMY_V1["fields"] + [{"name": "required_new", "type": "string"}])


def consume(consumer, count, timeout=TIMEOUT, errors=None):
    """
    Poll until ``count`` messages arrived. Kafka errors other than EOF fail the test, unless
    an ``errors`` list is given: then non-fatal ones are appended to it and polling goes on.
    """
    messages = []
    deadline = time.monotonic() + timeout
    while len(messages) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"consumed {len(messages)} of {count} messages within {timeout}s")
        msg = consumer.poll(0.1)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:  # pylint: disable=protected-access
                continue
            if errors is not None and not msg.error().fatal():
                errors.append(msg.error())
                continue
            raise AssertionError(f"consumer error: {msg.error()}")
        messages.append(msg)
    return messages


def drain_nothing(consumer, window=1.0):
    """Poll for ``window`` seconds and return whatever arrives (used to prove absence)."""
    extra = []
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        msg = consumer.poll(0.1)
        if msg is not None and not msg.error():
            extra.append(msg)
    return extra


@pytest.fixture
def stack():
    with DevStack(topics=[("academies", 2), ("plain", 1)]) as s:
        yield s


class Clients:
    """Creates Kafka clients for a stack and closes them all at teardown."""

    def __init__(self, stack):
        self.stack = stack
        self._producers = []
        self._consumers = []

    def producer(self, conf=None):
        """A producer on the stack (``conf`` added), closed at teardown."""
        config = self.stack.producer_config({"linger.ms": 5, "message.timeout.ms": 30000})
        config.update(conf or {})
        producer = Producer(config)
        self._producers.append(producer)
        return producer

    def consumer(self, group, conf=None):
        """A consumer of ``group`` on the stack (``conf`` added), closed at teardown."""
        # The stack's defaults keep session.timeout.ms low: the mock holds an emptied group
        # in rebalance for session.timeout.ms - 1000 before the next member gets in.
        config = self.stack.consumer_config(group, {"enable.auto.commit": False})
        config.update(conf or {})
        consumer = Consumer(config)
        self._consumers.append(consumer)
        return consumer

    def close_consumer(self, consumer):
        self._consumers.remove(consumer)
        consumer.close()

    def close(self):
        """Close every consumer, then purge and close every producer."""
        for consumer in self._consumers:
            consumer.close()
        for producer in self._producers:
            producer.purge()
            producer.close()
        self._consumers.clear()
        self._producers.clear()


@pytest.fixture
def clients(stack):
    c = Clients(stack)
    yield c
    c.close()


@pytest.fixture
def registry_client(stack):
    client = SchemaRegistryClient({"url": stack.schema_registry_url})
    yield client
    client.close()


def fresh_client(stack):
    """A client with empty caches, so that every call reaches the server."""
    return SchemaRegistryClient({"url": stack.schema_registry_url})


def avro_schema(definition):
    return Schema(json.dumps(definition), "AVRO")


def ctx(topic, headers=None, field=MessageField.VALUE):
    return SerializationContext(topic, field, headers)


# ---------------------------------------------------------------------------------------
# The stack itself
# ---------------------------------------------------------------------------------------


def test_env_lines_and_env_file(stack, tmp_path):
    lines = stack.env_lines()
    assert lines == [
        f"EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS={stack.bootstrap_servers}",
        f"EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL={stack.schema_registry_url}",
    ]
    path = stack.write_env_file(tmp_path / "devstack.env")
    with open(path, encoding="utf-8") as written:
        assert written.read().splitlines() == lines


def test_cluster_listens_on_loopback_and_has_the_topics(clients):
    with MockKafkaCluster(num_brokers=3) as cluster:
        cluster.create_topic("spread", partitions=6, replication_factor=3)
        hosts = [hp.rpartition(":")[0] for hp in cluster.bootstrap_servers.split(",")]
        assert hosts == ["127.0.0.1"] * 3
        producer = Producer({"bootstrap.servers": cluster.bootstrap_servers})
        try:
            metadata = producer.list_topics(timeout=TIMEOUT)
            assert sorted(metadata.brokers) == [1, 2, 3]
            assert {b.host for b in metadata.brokers.values()} == {"127.0.0.1"}
            assert len(metadata.topics["spread"].partitions) == 6
        finally:
            producer.close()
    assert cluster.closed
    cluster.close()  # idempotent

    metadata = clients.producer().list_topics(timeout=TIMEOUT)
    assert len(metadata.topics["academies"].partitions) == 2
    assert len(metadata.topics["plain"].partitions) == 1


def test_stack_close_is_idempotent():
    stack = DevStack(topics=["t"])
    url = stack.schema_registry_url
    assert requests.get(f"{url}/subjects", timeout=5).json() == []
    stack.close()
    stack.close()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/subjects", timeout=5)


# ---------------------------------------------------------------------------------------
# Kafka + Avro end to end
# ---------------------------------------------------------------------------------------


def test_avro_round_trip_with_keys_headers_and_committed_group_offsets(stack, clients, registry_client):
    topic = "academies"
    serializer = AvroSerializer(registry_client, json.dumps(ACADEMY_V1))
    deserializer = AvroDeserializer(registry_client)
    producer = clients.producer()
    delivered = []

    def produce(seq):
        headers = [("event_type", b"org.openedx.enterprise.academy.created.v1"), ("seq", str(seq).encode())]
        record = {"uuid": f"uuid-{seq}", "title": f"Academy {seq}", "seq": seq}
        producer.produce(
            topic,
            key=f"uuid-{seq}".encode(),
            value=serializer(record, ctx(topic, headers)),
            headers=headers,
            on_delivery=lambda err, msg: delivered.append((err, msg)),
        )

    for seq in range(6):
        produce(seq)
    assert producer.flush(TIMEOUT) == 0
    assert [err for err, _ in delivered] == [None] * 6

    # The default (associated-with-fallback) subject strategy ends up on "<topic>-value".
    assert registry_client.get_subjects() == [f"{topic}-value"]

    first = clients.consumer("academy-consumers")
    first.subscribe([topic])
    messages = consume(first, 6)
    decoded = {}
    for msg in messages:
        value = deserializer(msg.value(), ctx(topic, msg.headers()))
        headers = dict(msg.headers())
        assert msg.key().decode() == value["uuid"]
        assert headers["event_type"] == b"org.openedx.enterprise.academy.created.v1"
        assert int(headers["seq"]) == value["seq"]
        decoded[value["seq"]] = value
    assert sorted(decoded) == list(range(6))
    assert decoded[3] == {"uuid": "uuid-3", "title": "Academy 3", "seq": 3}

    committed = first.commit(asynchronous=False)
    assert all(tp.error is None for tp in committed)
    stored = first.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=TIMEOUT)
    positions = {tp.partition: tp.offset for tp in stored}
    assert sum(positions.values()) == 6
    clients.close_consumer(first)

    for seq in range(6, 9):
        produce(seq)
    assert producer.flush(TIMEOUT) == 0

    second = clients.consumer("academy-consumers")
    second.subscribe([topic])
    resumed = consume(second, 3)
    seqs = sorted(deserializer(m.value(), ctx(topic, m.headers()))["seq"] for m in resumed)
    assert seqs == [6, 7, 8]
    assert drain_nothing(second, window=0.5) == []  # nothing before the committed offsets is redelivered


def test_consumer_without_commit_starts_over(clients):
    producer = clients.producer()
    for i in range(3):
        producer.produce("plain", key=b"k", value=f"v{i}".encode())
    assert producer.flush(TIMEOUT) == 0

    first = clients.consumer("no-commit")
    first.subscribe(["plain"])
    assert [m.value() for m in consume(first, 3)] == [b"v0", b"v1", b"v2"]
    clients.close_consumer(first)

    second = clients.consumer("no-commit")
    second.subscribe(["plain"])
    assert [m.value() for m in consume(second, 3)] == [b"v0", b"v1", b"v2"]


def test_messages_produced_while_the_broker_is_down_are_delivered_after_it_is_up(stack, clients):
    producer = clients.producer()
    assert producer.list_topics(timeout=TIMEOUT).topics["plain"]  # connected once

    delivered = []
    stack.kafka.broker_down(1)
    for i in range(3):
        producer.produce(
            "plain", key=b"down", value=f"while-down-{i}".encode(), on_delivery=lambda e, m: delivered.append((e, m))
        )
    # While the broker is down nothing gets acknowledged.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        producer.poll(0.1)
    assert delivered == []
    assert len(producer) == 3

    stack.kafka.broker_up(1)
    assert producer.flush(TIMEOUT) == 0
    assert [(err, msg.value()) for err, msg in delivered] == [(None, f"while-down-{i}".encode()) for i in range(3)]

    consumer = clients.consumer("after-outage")
    consumer.subscribe(["plain"])
    assert [m.value() for m in consume(consumer, 3)] == [f"while-down-{i}".encode() for i in range(3)]


def test_injected_fetch_errors_are_survived(stack, clients):
    producer = clients.producer()
    for i in range(20):
        producer.produce("academies", key=f"k{i}".encode(), value=f"v{i}".encode())
    assert producer.flush(TIMEOUT) == 0

    stack.kafka.start_request_tracking()
    errors = [Err.NOT_LEADER_FOR_PARTITION, Err.REQUEST_TIMED_OUT, Err._TRANSPORT,  # pylint: disable=protected-access
              Err.UNKNOWN_LEADER_EPOCH]
    stack.kafka.push_request_errors(ApiKey.FETCH, errors)

    consumer = clients.consumer("fetch-errors")
    consumer.subscribe(["academies"])
    surfaced = []
    values = sorted(m.value() for m in consume(consumer, 20, errors=surfaced))
    assert values == sorted(f"v{i}".encode() for i in range(20))
    # Some fetch errors are handed to the application as non-fatal, informational
    # consumer errors (REQUEST_TIMED_OUT is); the consumer carries on by itself.
    assert {e.code() for e in surfaced} <= set(errors) | {KafkaError._TRANSPORT}  # pylint: disable=protected-access

    fetches = [r for r in stack.kafka.get_requests() if r.api_key == ApiKey.FETCH]
    assert len(fetches) > len(errors)  # every injected error was answered to some Fetch
    stack.kafka.stop_request_tracking()
    assert drain_nothing(consumer, window=0.3) == []


def test_injected_commit_error_surfaces_and_a_retry_succeeds(stack, clients):
    producer = clients.producer()
    producer.produce("plain", value=b"one")
    assert producer.flush(TIMEOUT) == 0
    consumer = clients.consumer("commit-errors")
    consumer.subscribe(["plain"])
    msg = consume(consumer, 1)[0]

    stack.kafka.push_request_errors(ApiKey.OFFSET_COMMIT, [Err.GROUP_AUTHORIZATION_FAILED])
    with pytest.raises(KafkaException) as excinfo:
        consumer.commit(message=msg, asynchronous=False)
    assert excinfo.value.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED

    committed = consumer.commit(message=msg, asynchronous=False)
    assert [(tp.partition, tp.offset, tp.error) for tp in committed] == [(0, 1, None)]


# ---------------------------------------------------------------------------------------
# Schema registry
# ---------------------------------------------------------------------------------------


def test_same_schema_registers_once(stack, registry_client):
    first = registry_client.register_schema("academies-value", avro_schema(ACADEMY_V1))
    # A client with cold caches, and a differently formatted text of the same schema.
    with fresh_client(stack) as other:
        again = other.register_schema("academies-value", Schema(json.dumps(ACADEMY_V1, indent=2), "AVRO"))
        # The same schema under another subject keeps its global id.
        elsewhere = other.register_schema("other-value", avro_schema(ACADEMY_V1))
        assert other.get_versions("academies-value") == [1]
        looked_up = other.lookup_schema("academies-value", avro_schema(ACADEMY_V1))
    assert first == again == elsewhere
    assert (looked_up.schema_id, looked_up.version, looked_up.subject) == (first, 1, "academies-value")


def test_a_second_version_gets_a_new_id_and_incompatible_changes_are_refused(stack, registry_client):
    v1 = registry_client.register_schema("academies-value", avro_schema(ACADEMY_V1))
    v2 = registry_client.register_schema("academies-value", avro_schema(ACADEMY_V2))
    assert v2 != v1

    with fresh_client(stack) as other:
        assert other.get_versions("academies-value") == [1, 2]
        latest = other.get_latest_version("academies-value")
        assert (latest.version, latest.schema_id) == (2, v2)
        assert json.loads(latest.schema.schema_str) == ACADEMY_V2
        assert other.get_version("academies-value", 1).schema_id == v1
        assert json.loads(other.get_schema(v1).schema_str) == ACADEMY_V1

        with pytest.raises(SchemaRegistryError) as excinfo:
            other.register_schema("academies-value", avro_schema(ACADEMY_BREAKING))
        assert (excinfo.value.http_status_code, excinfo.value.error_code) == (409, 409)

        other.set_compatibility("academies-value", "NONE")
        assert other.get_compatibility("academies-value") == "NONE"
        assert other.get_compatibility() == "BACKWARD"
        v3 = other.register_schema("academies-value", avro_schema(ACADEMY_BREAKING))
        assert v3 not in (v1, v2)
        assert other.get_versions("academies-value") == [1, 2, 3]


def test_data_written_with_v1_reads_with_a_v2_reader(stack, registry_client):
    registry_client.register_schema("academies-value", avro_schema(ACADEMY_V1))
    writer = AvroSerializer(registry_client, json.dumps(ACADEMY_V1))
    payload = writer({"uuid": "u", "title": "t", "seq": 1}, ctx("academies"))
    registry_client.register_schema("academies-value", avro_schema(ACADEMY_V2))
    with fresh_client(stack) as other:
        reader = AvroDeserializer(other, json.dumps(ACADEMY_V2))
        assert reader(payload, ctx("academies")) == {"uuid": "u", "title": "t", "seq": 1, "tags": []}


def test_unknown_schema_id_is_a_404_that_the_deserializer_surfaces(stack, registry_client):
    response = requests.get(f"{stack.schema_registry_url}/schemas/ids/4242", timeout=5)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == CONTENT_TYPE
    assert response.json()["error_code"] == 40403

    with pytest.raises(SchemaRegistryError) as excinfo:
        registry_client.get_schema(4242)
    assert (excinfo.value.http_status_code, excinfo.value.error_code) == (404, 40403)

    # A Confluent-framed payload (magic byte 0, 4-byte schema id) naming an unknown id:
    # the deserializer lets the registry's 404 through.
    framed = b"\x00" + struct.pack(">I", 4242) + b"\x02x"
    with pytest.raises(SchemaRegistryError) as excinfo:
        AvroDeserializer(registry_client)(framed, ctx("academies"))
    assert (excinfo.value.http_status_code, excinfo.value.error_code) == (404, 40403)


def test_rest_shapes_errors_and_tolerated_query_params(stack):
    url = stack.schema_registry_url
    headers = {"Content-Type": CONTENT_TYPE}
    body = {"schema": json.dumps(ACADEMY_V1)}

    registered = requests.post(
        f"{url}/subjects/a%2Fb-value/versions?normalize=false&unknown=1", json=body, headers=headers, timeout=5
    )
    assert registered.status_code == 200
    schema_id = registered.json()["id"]

    listed = requests.get(f"{url}/subjects?deleted=false&deleted_only=false&offset=0&limit=-1", timeout=5)
    assert listed.json() == ["a/b-value"]
    lookup = requests.post(f"{url}/subjects/a%2Fb-value?normalize=False&deleted=False", json=body, timeout=5).json()
    assert lookup["subject"] == "a/b-value" and lookup["id"] == schema_id and lookup["version"] == 1
    assert json.loads(lookup["schema"]) == ACADEMY_V1
    by_id = requests.get(f"{url}/schemas/ids/{schema_id}?subject=a%2Fb-value&format=serialized", timeout=5).json()
    assert json.loads(by_id["schema"]) == ACADEMY_V1
    assert requests.get(f"{url}/subjects/a%2Fb-value/versions/latest?deleted=true", timeout=5).json()["version"] == 1

    def error(method, path, **kwargs):
        response = requests.request(method, f"{url}{path}", timeout=5, **kwargs)
        assert response.headers["Content-Type"] == CONTENT_TYPE
        return response.status_code, response.json()["error_code"]

    assert error("GET", "/subjects/missing/versions") == (404, 40401)
    assert error("GET", "/subjects/a%2Fb-value/versions/7") == (404, 40402)
    assert error("GET", "/subjects/a%2Fb-value/versions/x") == (422, 42202)
    assert error("POST", "/subjects/missing", json=body) == (404, 40401)
    assert error("POST", "/subjects/a%2Fb-value", json={"schema": json.dumps(ACADEMY_V2)}) == (404, 40403)
    assert error("POST", "/subjects/s/versions", json={"schema": "{not json"}) == (422, 42201)
    unknown_type = {"type": "record", "name": "x", "fields": [{"name": "a", "type": "strin"}]}
    assert error("POST", "/subjects/s/versions", json={"schema": json.dumps(unknown_type)}) == (422, 42201)
    assert error("PUT", "/config", json={"compatibility": "SOMETIMES"}) == (422, 42203)
    assert error("GET", "/config/a%2Fb-value") == (404, 40408)
    assert error("GET", "/no/such/endpoint") == (404, 404)

    assert requests.get(f"{url}/config", timeout=5).json() == {"compatibilityLevel": "BACKWARD"}
    changed = requests.put(f"{url}/config/a%2Fb-value", json={"compatibility": "full"}, timeout=5)
    assert changed.json() == {"compatibility": "FULL"}
    assert requests.get(f"{url}/config/a%2Fb-value", timeout=5).json() == {"compatibilityLevel": "FULL"}
    fallback = requests.get(f"{url}/config/other?defaultToGlobal=true", timeout=5)
    assert fallback.json() == {"compatibilityLevel": "BACKWARD"}


def test_schema_registry_server_standalone_restart_and_port():
    server = SchemaRegistryServer()
    with pytest.raises(RuntimeError):
        _ = server.url
    with server:
        assert server.url.startswith("http://127.0.0.1:")
        with SchemaRegistryClient({"url": server.url}) as client:
            assert client.register_schema("x-value", avro_schema(ACADEMY_V1)) == 1
    assert not server.running


# ---------------------------------------------------------------------------------------
# The mock's per-partition log limit, and the devstack command
# ---------------------------------------------------------------------------------------

BIG = 512 * 1024  # big values, few messages: the limit is in bytes


def produce_big(producer, topic, count, start=0):
    """``count`` messages of ``BIG`` bytes to partition 0 of ``topic``, each value naming its number."""
    for n in range(start, start + count):
        producer.produce(topic, value=str(n).encode().ljust(BIG, b"."), partition=0)
    assert producer.flush(TIMEOUT) == 0


def read_partition(clients, topic, end):
    """Every message of partition 0 of ``topic`` up to ``end``, by assignment from the earliest offset held."""
    consumer = clients.consumer("read-back", {"enable.partition.eof": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    return [int(m.value().split(b".", 1)[0]) for m in consume(consumer, end)]


def test_the_mock_evicts_past_5_mib_per_partition_and_the_stack_says_so(stack, clients):
    producer = clients.producer({"message.max.bytes": 2 * BIG, "linger.ms": 0})
    below = PARTITION_LOG_MAX_BYTES // BIG - 1  # 4.5 MiB: all kept
    produce_big(producer, "plain", below)
    assert stack.watermarks()[("plain", 0)] == (0, below)
    assert stack.evicted() == {}
    assert read_partition(clients, "plain", below) == list(range(below))

    # Well past the limit: librdkafka's mock (rd_kafka_mock_msgset_new) drops the oldest, which cannot be
    # configured away; the stack reports it (the devstack command stops on it, see the next test).
    produce_big(producer, "plain", 8, start=below)
    low, high = stack.watermarks()[("plain", 0)]
    assert (low > 0, high) == (True, below + 8)
    assert stack.evicted() == {("plain", 0): low}
    assert stack.watermarks()[("academies", 1)] == (0, 0)  # the other partitions are untouched


def devstack_command(tmp_path, *args):
    """``academy-consumer devstack ARGS`` as a user starts it, in ``tmp_path``, in the background."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE" and not k.startswith("EVENT_BUS_")}
    out, err = open(tmp_path / "devstack.out", "wb"), open(tmp_path / "devstack.err", "wb")
    with out, err:
        return subprocess.Popen([sys.executable, "-m", "academy_consumer.cli", "devstack", *args], cwd=tmp_path,
                                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)


def run_devstack(tmp_path, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "academy_consumer.cli", "devstack", *args], cwd=tmp_path,
                          env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def background_devstack(tmp_path):
    """``start(*args)`` -> the running ``devstack`` process; whatever still runs is stopped at teardown."""
    started = []

    def start(*args):
        started.append(devstack_command(tmp_path, *args))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


@pytest.mark.parametrize("args, says", [
    (["--partitions", "-3"], "argument --partitions: must be 1 to 1000, not -3"),
    (["--partitions", "0"], "argument --partitions: must be 1 to 1000, not 0"),
    (["--partitions", "three"], "argument --partitions: must be a whole number, not 'three'"),
    (["--env-file", "no/such/folder/.devstack.env"], "the folder"),
    (["--wait", "--timeout", "nan"], "argument --timeout: must be a positive number of seconds"),
    (["--timeout", "5"], "--timeout is only for --wait"),
])
def test_devstack_bad_arguments_are_one_line_and_exit_2(tmp_path, args, says):
    result = run_devstack(tmp_path, *args)
    assert (result.returncode, result.stdout) == (2, ""), result
    assert len(result.stderr.splitlines()) == 1 and says in result.stderr, result.stderr
    assert os.listdir(tmp_path) == []  # nothing started, nothing written


def test_devstack_wait_ready_line_and_shutdown(tmp_path, background_devstack):
    started = time.monotonic()
    waited = run_devstack(tmp_path, "--wait", "--timeout", "1")
    assert waited.returncode == 1 and "no dev stack wrote .devstack.env after 1 s" in waited.stderr, waited
    assert time.monotonic() - started < 15

    stack = background_devstack()
    waited = run_devstack(tmp_path, "--wait", "--timeout", "30")
    assert waited.returncode == 0, waited
    settings = envfile.read(tmp_path / ".devstack.env")
    assert waited.stdout.startswith(f"ready: dev stack at {settings['EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS']}")
    # The stack's own last line says it is ready, once the file is written.
    assert (tmp_path / "devstack.out").read_text().splitlines()[-1].startswith(
        f"ready: Kafka {settings['EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS']}")
    assert requests.get(f"{settings['EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL']}/subjects", timeout=5).json() == []

    stack.send_signal(signal.SIGTERM)
    assert stack.wait(timeout=30) == 0
    assert not (tmp_path / ".devstack.env").exists()
    # A file left by a dev stack that is gone is not a ready dev stack.
    envfile.write(tmp_path / ".devstack.env", settings)
    waited = run_devstack(tmp_path, "--wait", "--timeout", "2")
    assert waited.returncode == 1 and "does not answer after 2 s" in waited.stderr, waited


def sourced(tmp_path, script):
    """What ``sh -c SCRIPT`` prints in ``tmp_path`` (a POSIX shell: dash on Debian)."""
    return subprocess.run(["sh", "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True,
                          timeout=30).stdout


def test_devstack_env_file_is_sourced_by_a_posix_shell(tmp_path, background_devstack):
    (tmp_path / "a folder").mkdir()
    spaced = "a folder/dev stack.env"
    stacks = [background_devstack(), background_devstack("--env-file", spaced)]
    for path in (".devstack.env", spaced):
        assert run_devstack(tmp_path, "--wait", "--timeout", "30", "--env-file", path).returncode == 0
    default, other = envfile.read(tmp_path / ".devstack.env"), envfile.read(tmp_path / spaced)
    assert default["EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS"] != other["EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS"]
    assert sourced(tmp_path, '. ./.devstack.env; printf %s "$EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS"') == \
        default["EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS"]
    assert sourced(tmp_path, '. "./a folder/dev stack.env"; printf %s "$EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS"') == \
        other["EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS"]
    # The consumer config is JSON, quoted: the shell hands the consumer exactly what the dev stack wrote.
    config = sourced(tmp_path, '. ./.devstack.env; printf %s "$ACADEMY_CONSUMER_KAFKA_CONFIG"')
    assert json.loads(config) == MOCK_CONSUMER_CONFIG
    for stack in stacks:
        stack.send_signal(signal.SIGTERM)
        assert stack.wait(timeout=30) == 0
    assert sorted(os.listdir(tmp_path / "a folder")) == []


def test_devstack_stops_loudly_when_the_broker_evicts_events(tmp_path, background_devstack):
    stack = background_devstack("--partitions", "1")
    assert run_devstack(tmp_path, "--wait", "--timeout", "30").returncode == 0
    settings = envfile.read(tmp_path / ".devstack.env")
    producer = Producer({"bootstrap.servers": settings["EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS"],
                         "message.max.bytes": 2 * BIG, "linger.ms": 0})
    try:
        produce_big(producer, "enterprise-academy-lifecycle", PARTITION_LOG_MAX_BYTES // BIG + 4)
    finally:
        producer.close()
    wait_for(lambda: stack.poll() is not None, TIMEOUT, "the dev stack to stop")
    stderr = (tmp_path / "devstack.err").read_text()
    assert stack.returncode == 1, stderr
    assert "EVENTS LOST: the embedded broker evicted the oldest events of enterprise-academy-lifecycle [0]" in stderr
    assert len(stderr.splitlines()) == 1, stderr
    assert not (tmp_path / ".devstack.env").exists()


def assert_refused(result, says):
    """One line on stderr, exit 2, nothing on stdout."""
    assert (result.returncode, result.stdout) == (2, ""), result
    assert len(result.stderr.splitlines()) == 1 and says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_devstack_envfile_holding_other_data_is_refused_and_left_untouched(tmp_path):
    important = tmp_path / "important.txt"
    important.write_bytes(b"precious data\nPASSWORD=x\n")
    result = run_devstack(tmp_path, "--env-file", "important.txt")
    assert_refused(result, "important.txt exists and is not a dev stack env file")
    assert important.read_bytes() == b"precious data\nPASSWORD=x\n"
    # Not even a file that also names the broker, when it holds anything else.
    (tmp_path / ".devstack.env").write_text("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:1\n"
                                            "EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL=http://127.0.0.1:1\nSECRET=1\n")
    before = (tmp_path / ".devstack.env").read_bytes()
    assert_refused(run_devstack(tmp_path), ".devstack.env exists and is not a dev stack env file")
    assert (tmp_path / ".devstack.env").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [".devstack.env", "important.txt"]


def test_devstack_envfile_of_a_running_stack_is_refused_and_a_stale_one_overwritten(tmp_path, background_devstack):
    first = background_devstack()
    assert run_devstack(tmp_path, "--wait", "--timeout", "30").returncode == 0
    written = (tmp_path / ".devstack.env").read_text()
    assert_refused(run_devstack(tmp_path), "a dev stack is already running from .devstack.env")
    assert (tmp_path / ".devstack.env").read_text() == written
    assert first.poll() is None  # the running one is untouched

    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    (tmp_path / ".devstack.env").write_text(written)  # as a dev stack killed with -9 leaves it: stale
    second = background_devstack()
    wait_for(lambda: (tmp_path / ".devstack.env").read_text() != written, TIMEOUT, "the stale file to be replaced")
    assert run_devstack(tmp_path, "--wait", "--timeout", "30").returncode == 0
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0
    assert not (tmp_path / ".devstack.env").exists()


@pytest.mark.parametrize("path, says", [
    ("", "--env-file must name a file"),
    ("/proc/version", "/proc/version exists and is not a dev stack env file"),
    ("/proc/devstack.env", "--env-file /proc/devstack.env: cannot write in the folder /proc"),
])
def test_devstack_envfile_unusable_is_one_line_before_anything_starts(tmp_path, path, says):
    result = run_devstack(tmp_path, "--env-file", path)
    assert_refused(result, says)
    assert os.listdir(tmp_path) == []  # nothing written, no .partial left


def test_devstack_envfile_that_cannot_be_removed_at_shutdown_is_one_line(tmp_path, background_devstack):
    stack = background_devstack()
    assert run_devstack(tmp_path, "--wait", "--timeout", "30").returncode == 0
    (tmp_path / ".devstack.env").unlink()
    (tmp_path / ".devstack.env").mkdir()  # os.remove cannot remove it
    stack.send_signal(signal.SIGTERM)
    assert stack.wait(timeout=30) == 0
    stderr = (tmp_path / "devstack.err").read_text()
    assert len(stderr.splitlines()) == 1 and "could not remove --env-file .devstack.env" in stderr, stderr
    assert (tmp_path / ".devstack.env").is_dir()
