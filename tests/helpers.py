"""
Helpers shared by the tests and the fault suite (``tests/fault``): running ``academy-consumer`` as a
subprocess on the test database, producing and consuming through the real commands (``Bus``) or the real
producer path, reading the consumer's summary line and the table. (Test data is made in ``tests/factories.py``,
waiting on conditions is in ``tests/waiting.py``, the fixtures are in ``tests/conftest.py``.)
"""

import contextlib
import functools
import importlib.util
import json
import os
import re
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# ``academy-consumer ARGS`` as users run it: the console script's module, with this interpreter.
CLI = (sys.executable, "-m", "academy_consumer.cli")

# ``--until-idle`` of the consumer runs in the tests: the dev stack answers in milliseconds, so 2 s without events
# means "done".
IDLE = "2"
# The consumer's environment in the tests: it waits up to ACADEMY_CONSUMER_BATCH_WAIT_SECONDS (1 s by default) to
# fill a batch, which with the handful of events a test produces is idle time.
CONSUMER_ENV = {"ACADEMY_CONSUMER_BATCH_WAIT_SECONDS": "0.2"}
# Where faults are injected: transient failures retried at most 2 s apart, so a scenario does not wait out the
# backoff of its last fault.
FAULT_CONSUMER_ENV = {**CONSUMER_ENV, "ACADEMY_CONSUMER_RETRY_MAX_SECONDS": "2"}
# ``--until-idle`` of the fault suite's last runs, which end while the producer of the scenario may still pause
# between pieces.
FAULT_IDLE = "3"


def subprocess_database_url():
    """A DATABASE_URL naming the database the tests run on (for commands run as subprocesses)."""
    from django.db import connection  # pylint: disable=import-outside-toplevel

    conf = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{conf['NAME']}"
    scheme = {"postgresql": "postgres", "mysql": "mysql"}[connection.vendor]
    auth = conf["USER"] + (f":{conf['PASSWORD']}" if conf["PASSWORD"] else "")
    return f"{scheme}://{auth}@{conf['HOST']}:{conf['PORT']}/{conf['NAME']}"


def cli_env(env=None):
    """
    The environment of a command run as a subprocess: this one, on the test database, without the
    caller's ``DJANGO_SETTINGS_MODULE`` (the script's own settings), plus ``env``.
    """
    full_env = {**os.environ, "DATABASE_URL": subprocess_database_url(), **(env or {})}
    full_env.pop("DJANGO_SETTINGS_MODULE", None)
    return full_env


class Bus:
    """
    ``produce_academy_event`` and ``consume_academy_events`` run as subprocesses (the ``cli`` fixture) against a
    dev stack (the ``devstack`` fixture); each asserts a zero exit status. The ``bus`` fixture makes one.
    """

    def __init__(self, devstack, cli):
        self.devstack = devstack
        self.cli = cli

    def produce(self, action, items, event_time=None):
        """Produce one event per item (JSON lines on stdin); ``event_time`` is ``--time`` (ISO 8601)."""
        args = ["produce_academy_event", "--action", action, "--file", "-"]
        if event_time is not None:
            args += ["--time", event_time]
        lines = "\n".join(json.dumps(item) for item in items) + "\n"
        done = self.cli(*args, env=self.devstack.env, input=lines)
        assert done.returncode == 0, done.stderr
        assert f"produced {len(items)} " in done.stdout
        return done

    def consume(self, *args, group="academy-test", extra_env=None):
        """Consume until idle for ``IDLE`` seconds with consumer group ``group``."""
        done = self.cli("consume_academy_events", "--group-id", group, "--until-idle", IDLE, *args,
                        env={**self.devstack.env, **CONSUMER_ENV, **(extra_env or {})})
        assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done


def academy_table():
    """The academy table as a user sees it: uuid -> (name, is_active)."""
    from academy_consumer.models import EnterpriseAcademy  # pylint: disable=import-outside-toplevel

    return {str(row.uuid): (row.name, row.is_active) for row in EnterpriseAcademy.objects.all()}


def consumer_counts(stdout):
    """``consumed N event(s) in B batch(es): created 2, stale 1`` -> {"events": N, "created": 2, "stale": 1}."""
    match = re.search(r"consumed (\d+) event\(s\) in \d+ batch\(es\): (.*)", stdout)
    assert match, stdout
    counts = {"events": int(match.group(1))}
    if match.group(2).strip() != "no events":
        for part in match.group(2).split(", "):
            name, _, number = part.rpartition(" ")
            counts[name] = int(number)
    return counts


class GroupOffsets:
    """
    The end offsets of the academy topic of a ``devstack`` and what consumer group ``group`` committed there, read
    with a consumer that never joins the group. A context manager (or ``close()`` it).
    """

    def __init__(self, devstack, group):
        from confluent_kafka import Consumer  # pylint: disable=import-outside-toplevel

        self.topic = devstack.topic
        self.consumer = Consumer(devstack.stack.consumer_config(group, {"enable.auto.commit": False}))
        metadata = self.consumer.list_topics(self.topic, timeout=10)
        self.partitions = sorted(metadata.topics[self.topic].partitions)

    def _each(self):
        from confluent_kafka import TopicPartition  # pylint: disable=import-outside-toplevel

        return [TopicPartition(self.topic, p) for p in self.partitions]

    def ends(self):
        """{partition: end offset (high watermark)}."""
        return {tp.partition: self.consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in self._each()}

    def committed(self):
        """{partition: committed offset}, negative (``OFFSET_INVALID``) where the group committed nothing."""
        return {tp.partition: tp.offset for tp in self.consumer.committed(self._each(), timeout=10)}

    def total_committed(self):
        """The committed offsets summed over the partitions: how many events the group acknowledged."""
        return sum(max(offset, 0) for offset in self.committed().values())

    def positions(self):
        """{partition: (committed offset, end offset)}."""
        ends, committed = self.ends(), self.committed()
        return {p: (committed[p], ends[p]) for p in self.partitions}

    def lag(self):
        """Events not covered by a committed offset (a partition never committed counts in full)."""
        return sum(end - max(committed, 0) for committed, end in self.positions().values())

    def close(self):
        self.consumer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def point_producer_at(settings, devstack):
    """``send_academy_events`` produces with the Django settings: point them (pytest-django's) at the dev stack."""
    settings.EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS = devstack.bootstrap_servers
    settings.EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL = devstack.stack.schema_registry_url


def produce_events(events, chunk=5000):
    """
    Produce ``events`` (anything with ``action``, ``academy`` and ``time``: ``tests.factories.Event``) in
    order through the real producer path, each with its own time, ``chunk`` per ``send_academy_events`` call.
    """
    from academy_consumer.producer import encode, send_academy_events  # pylint: disable=import-outside-toplevel

    for start in range(0, len(events), chunk):
        send_academy_events([(*encode(e.action, e.academy), e.time) for e in events[start:start + chunk]])


def without_packages(directory, *modules):
    """
    The environment (``PYTHONPATH``) of a command run as a subprocess in which ``import <module>`` fails for each
    of ``modules`` as it does where the package is not installed (a package of that name in ``directory``, ahead of
    site-packages, raises ``ModuleNotFoundError``): a host without the `metrics` extra, a standalone service
    without the `standalone` extra, in any environment the suite runs in.
    """
    for module in modules:
        package = Path(directory) / "without-packages" / module
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(
            f"raise ModuleNotFoundError({f'No module named {module!r}'!r}, name={module!r})\n", encoding="utf-8")
    paths = [str(Path(directory) / "without-packages"), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(path for path in paths if path)}


@contextlib.contextmanager
def refused_port():
    """
    A loopback port that refuses connections for the duration of the ``with`` block: bound but never listening, so
    that no other process (another test worker's server, say) can take it meanwhile, as it could a port found free
    and closed again.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def kill_default_connection():
    """
    Kill the default database connection's server session from a second connection (the server side of an outage):
    PostgreSQL and MariaDB.
    """
    # pylint: disable=import-outside-toplevel
    from django.db import DEFAULT_DB_ALIAS, connection, connections

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()" if connection.vendor == "postgresql" else "SELECT CONNECTION_ID()")
        backend = cursor.fetchone()[0]
    other = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        with other.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SELECT pg_terminate_backend(%s, 10000)", [backend])  # waits until it is gone
            else:
                cursor.execute(f"KILL CONNECTION {int(backend)}")
    finally:
        other.close()


@functools.cache
def settings_reference():
    """docs/settings_reference.py (the generator of docs/reference/settings.md, not a package) as a module."""
    spec = importlib.util.spec_from_file_location("settings_reference", ROOT / "docs" / "settings_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def http_get(url):
    """``(status, body)`` of a GET on one of the product's endpoints (a 503 is an answer, not an error)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
