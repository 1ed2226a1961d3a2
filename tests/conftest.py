"""
Shared test set-up.

The database is chosen by ``DATABASE_URL`` (see ``academy_consumer/settings.py``); the default is SQLite.
``.ci/run`` runs the suite once per database. A database that is configured but unreachable makes
the run fail: pytest-django's test-database creation raises, it is never turned into a skip.
"""

import itertools
import json
import os
import time

import pytest
from edx_django_utils.cache import TieredCache

from tests.catalog_server import CatalogServer
from tests.helpers import CLI, cli_env

# The fault suite (tests/fault) runs on its own: `make fault`, which sets ACADEMY_FAULT_SUITE=1.
collect_ignore = [] if os.environ.get("ACADEMY_FAULT_SUITE") else ["fault"]

# `make test-fast` runs the unit tests only: ``-m "not stack"`` with ACADEMY_TEST_FAST=1. A test is a stack test
# (marked ``stack`` at collection) when it uses one of these fixtures, directly or through another fixture: the
# dev stack, a command run as a subprocess, an HTTP server (the catalog stand-in, the schema registry).
STACK_FIXTURES = frozenset({
    "devstack", "cli", "cli_popen", "catalog_server", "catalog_env", "other_host",  # here and test_catalog_client
    "stack", "background_devstack",  # test_devstack
    "server", "registry",  # the schema registry of test_schema_registry_subset and test_decode
})


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "stack: needs the dev stack, a subprocess or an HTTP server (left out by `make test-fast`); set "
                   "from STACK_FIXTURES, or by hand on a test that starts one itself")


def pytest_collection_modifyitems(items):
    for item in items:
        if STACK_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)


@pytest.fixture(autouse=True)
def _unit_tests_start_no_stack(request, monkeypatch):
    """
    Under ``make test-fast`` (ACADEMY_TEST_FAST=1), a test not marked ``stack`` that starts a subprocess, a
    server or the mock Kafka cluster fails, naming the marker: a new stack test cannot slip into the quick run.
    """
    if not os.environ.get("ACADEMY_TEST_FAST") or request.node.get_closest_marker("stack"):
        yield
        return
    # pylint: disable=import-outside-toplevel
    import socketserver
    import subprocess

    from academy_devstack.mock_kafka import MockKafkaCluster

    def refuse(what):
        def refused(*args, **kwargs):
            raise AssertionError(f"{request.node.nodeid} starts {what}: mark it @pytest.mark.stack (or use a fixture "
                                 f"of tests/conftest.py's STACK_FIXTURES), `make test-fast` runs unit tests only")
        return refused

    monkeypatch.setattr(subprocess, "Popen", refuse("a subprocess"))
    monkeypatch.setattr(socketserver.TCPServer, "__init__", refuse("a server"))
    monkeypatch.setattr(MockKafkaCluster, "__new__", refuse("the mock Kafka cluster"))
    yield


@pytest.fixture(autouse=True)
def _clear_caches():
    """Empty the request cache and Django's cache around every test, so a cached OAuth token never leaks."""
    TieredCache.dangerous_clear_all_tiers()
    yield
    TieredCache.dangerous_clear_all_tiers()


@pytest.fixture
def catalog_server(settings):
    """
    A running ``tests.catalog_server.CatalogServer`` (stopped at teardown), with the catalog and OAuth2
    settings pointing at it for the duration of the test, named as a host names them:
    ``ENTERPRISE_CATALOG_URL``, the LMS root ``SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT`` (no
    ``BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL``), ``BACKEND_SERVICE_EDX_OAUTH2_KEY`` / ``_SECRET``.
    """
    server = CatalogServer().start()
    settings.ENTERPRISE_CATALOG_URL = server.url
    settings.SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT = server.url
    settings.BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL = None
    settings.BACKEND_SERVICE_EDX_OAUTH2_KEY = server.client_id
    settings.BACKEND_SERVICE_EDX_OAUTH2_SECRET = server.client_secret
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def catalog_env(catalog_server):
    """Environment variables pointing a subprocess (the standalone settings) at the test catalog server."""
    return {
        "ENTERPRISE_CATALOG_URL": catalog_server.url,
        "SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT": catalog_server.url,
        "BACKEND_SERVICE_EDX_OAUTH2_KEY": catalog_server.client_id,
        "BACKEND_SERVICE_EDX_OAUTH2_SECRET": catalog_server.client_secret,
    }


@pytest.fixture(scope="session")
def django_db_modify_db_settings(tmp_path_factory):
    """
    On SQLite, put the test database in a file instead of memory, so that ``academy-consumer``
    commands run as subprocesses (the way users run them) see the same database as the test.
    """
    from django.conf import settings  # pylint: disable=import-outside-toplevel

    default = settings.DATABASES["default"]
    if default["ENGINE"] == "django.db.backends.sqlite3":
        default.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("db") / "test.sqlite3")


@pytest.fixture
def cli(transactional_db, tmp_path):
    """
    Run ``academy-consumer ARGS...`` as a separate process on the test database, the way a user does.

    Returns the ``subprocess.CompletedProcess`` (text mode). ``env`` adds environment variables;
    ``input`` is sent to stdin: text, or bytes (then stdout and stderr are decoded as UTF-8, errors replaced).
    """
    import subprocess  # pylint: disable=import-outside-toplevel

    def run(*args, env=None, input=None, timeout=120):  # pylint: disable=redefined-builtin
        text = not isinstance(input, bytes)
        done = subprocess.run([*CLI, *args], env=cli_env(env), input=input, capture_output=True, text=text,
                              cwd=tmp_path, timeout=timeout, check=False)
        if not text:
            done.stdout, done.stderr = (out.decode("utf-8", "replace") for out in (done.stdout, done.stderr))
        return done

    return run


class RunningCommand:
    """
    An ``academy-consumer`` command started in the background by the ``cli_popen`` fixture.

    Its stdout/stderr go to files (a consumer logs a line per event: a pipe could fill up and block it).
    """

    def __init__(self, process, stdout_path, stderr_path):
        self.process = process
        self._stdout_path = stdout_path
        self._stderr_path = stderr_path

    @property
    def pid(self):
        return self.process.pid

    def running(self):
        return self.process.poll() is None

    def send_signal(self, signum):
        self.process.send_signal(signum)

    def wait(self, timeout=60):
        """Wait for the command to exit; returns its exit status."""
        return self.process.wait(timeout=timeout)

    def kill(self):
        if self.running():
            self.process.kill()
            self.process.wait(timeout=30)

    @property
    def stdout(self):
        return self._stdout_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self):
        return self._stderr_path.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def cli_popen(transactional_db, tmp_path):
    """
    Start ``academy-consumer ARGS...`` in the background on the test database (as ``cli`` runs it, but
    without waiting): returns a ``RunningCommand``. ``env`` adds environment variables. Commands still
    running at teardown are killed (before the test database is flushed).
    """
    import subprocess  # pylint: disable=import-outside-toplevel

    started = []
    numbers = itertools.count(1)

    def start(*args, env=None):
        number = next(numbers)
        stdout_path, stderr_path = tmp_path / f"popen-{number}.out", tmp_path / f"popen-{number}.err"
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            process = subprocess.Popen(  # pylint: disable=consider-using-with
                [*CLI, *args], env=cli_env(env), cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        command = RunningCommand(process, stdout_path, stderr_path)
        started.append(command)
        return command

    yield start
    for command in started:
        command.kill()


class EventBusStack:
    """
    What the ``devstack`` fixture yields: a running ``DevStack`` with the academy topic and its
    dead-letter topic, the environment that points ``academy-consumer`` commands at it, and helpers to
    read topics and to produce raw messages (poison messages a real producer would never send).
    """

    def __init__(self, stack, topic, dlq_topic, kafka_config):
        self.stack = stack
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.env = {
            "EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers,
            "EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL": stack.schema_registry_url,
            "ACADEMY_CONSUMER_KAFKA_CONFIG": json.dumps(kafka_config),
        }
        self._reader_groups = itertools.count(1)

    @property
    def bootstrap_servers(self):
        return self.stack.bootstrap_servers

    def read_topic(self, topic=None, timeout=15.0):
        """
        Every message of ``topic`` (default: the academy topic), from the beginning to the current end,
        as ``KafkaRecord`` s sorted by (partition, offset). Reads by assignment: no group is joined.
        """
        from confluent_kafka import Consumer, KafkaError, TopicPartition  # pylint: disable=import-outside-toplevel

        topic = topic or self.topic
        consumer = Consumer(self.stack.consumer_config(
            f"test-reader-{next(self._reader_groups)}", {"enable.auto.commit": False, "enable.partition.eof": False}))
        try:
            metadata = consumer.list_topics(topic, timeout=timeout)
            partitions = sorted(metadata.topics[topic].partitions)
            ends = {}
            for partition in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
                if high > low:
                    ends[partition] = high
            consumer.assign([TopicPartition(topic, p, 0) for p in ends])
            records, positions = [], {p: 0 for p in ends}
            deadline = time.monotonic() + timeout
            while any(positions[p] < end for p, end in ends.items()):
                if time.monotonic() > deadline:
                    raise AssertionError(f"read {len(records)} messages of {topic} within {timeout}s; "
                                         f"positions {positions}, ends {ends}")
                message = consumer.poll(0.1)
                if message is None:
                    continue
                if message.error():
                    if message.error().code() == KafkaError._PARTITION_EOF:  # pylint: disable=protected-access
                        continue
                    raise AssertionError(f"reading {topic}: {message.error()}")
                positions[message.partition()] = message.offset() + 1
                records.append(KafkaRecord.of(message))
        finally:
            consumer.close()
        return sorted(records, key=lambda r: (r.partition, r.offset))

    def read_dlq(self, timeout=15.0):
        """Every message of the dead-letter topic, from the beginning (``KafkaRecord`` s with headers)."""
        return self.read_topic(self.dlq_topic, timeout=timeout)

    def produce_raw(self, value, *, headers=None, key=None, partition=None, topic=None):
        """Produce one message of raw bytes (and headers) to the academy topic; waits for the broker."""
        from confluent_kafka import Producer  # pylint: disable=import-outside-toplevel

        failures = []
        producer = Producer(self.stack.producer_config({"message.timeout.ms": 15000}))
        try:
            kwargs = {} if partition is None else {"partition": partition}
            producer.produce(topic or self.topic, value=value, key=key, headers=headers or [],
                             on_delivery=lambda err, msg: failures.append(err) if err else None, **kwargs)
            remaining = producer.flush(15)
        finally:
            producer.close()
        assert not failures and not remaining, f"raw message not delivered: {failures or 'timed out'}"

    def track_requests(self):
        """Start (or restart) recording the requests the mock cluster receives (see ``requests_seen``)."""
        self.stack.kafka.start_request_tracking()
        self.stack.kafka.clear_requests()

    def requests_seen(self, api_key):
        """How many requests of ``api_key`` (``academy_devstack.ApiKey``) arrived since tracking started."""
        return sum(1 for request in self.stack.kafka.get_requests() if request.api_key == api_key)


class KafkaRecord:
    """One message read back from a topic: where it is, its key, value, timestamp and headers."""

    def __init__(self, topic, partition, offset, *, key, value, headers, timestamp_ms):
        self.topic, self.partition, self.offset = topic, partition, offset
        self.key, self.value, self.timestamp_ms = key, value, timestamp_ms
        self.header_list = headers
        self.headers = {name: (data.decode("utf-8", "replace") if data is not None else None)
                        for name, data in headers}

    @classmethod
    def of(cls, message):
        return cls(message.topic(), message.partition(), message.offset(), key=message.key(), value=message.value(),
                   headers=list(message.headers() or []), timestamp_ms=message.timestamp()[1])

    def __repr__(self):
        return f"<KafkaRecord {self.topic}[{self.partition}]@{self.offset} {self.headers.get('ce_type')}>"


@pytest.fixture
def devstack():
    """
    A fresh ``DevStack`` per test (it starts in milliseconds): the academy topic (3 partitions) and its
    ``-dlq`` topic, named as the commands name them by default (no ``EVENT_BUS_TOPIC_PREFIX``). Yields an
    ``EventBusStack``; ``.env`` holds the variables that point subprocess commands at it, with
    ``ACADEMY_CONSUMER_KAFKA_CONFIG`` set to the mock-friendly ``MOCK_CONSUMER_CONFIG`` of the
    ``devstack`` command. Request ``devstack`` before ``cli``/``cli_popen``, so background commands are
    stopped before the stack.
    """
    # pylint: disable=import-outside-toplevel
    from edx_event_bus_kafka.internal.config import get_full_topic

    from academy_consumer import conf
    from academy_devstack import DevStack
    from academy_devstack.command import MOCK_CONSUMER_CONFIG

    topic, dlq_topic = get_full_topic(conf.topic()), get_full_topic(conf.dlq_topic())
    with DevStack([(topic, 3), (dlq_topic, 1)]) as stack:
        yield EventBusStack(stack, topic, dlq_topic, MOCK_CONSUMER_CONFIG)
        # The mock evicts the oldest events past 5 MiB per partition: no test may pass on a log with a hole.
        evicted = stack.evicted()
        assert not evicted, f"the embedded broker evicted events (low watermarks {evicted}): produce less per test"
