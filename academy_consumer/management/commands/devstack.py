"""
Run the embedded dev stack: ``academy-consumer devstack [--partitions N] [--env-file PATH]``.

Starts, on loopback and in this process, librdkafka's mock Kafka cluster (with the academy topic and
its dead-letter topic created) and a Confluent-Schema-Registry-compatible server. Prints the settings
that point the other commands at it, writes them to ``.devstack.env`` in the working directory (which
every ``academy-consumer`` command run from there reads for settings its environment does not set),
then one ``ready:`` line. Runs until SIGTERM/SIGINT, then shuts down and removes the file. Everything
is in memory.

The mock keeps at most 5 MiB (or 100,000 produce batches) per partition and silently evicts the oldest
events past that; it cannot be configured otherwise (see ``academy_consumer.devstack.mock_kafka``). So
the dev stack watches every partition's low watermark and, the moment one leaves 0, prints an
``EVENTS LOST`` line and stops with exit status 1, rather than go on serving a log with a hole in it.

``academy-consumer devstack --wait [--timeout S]`` starts nothing: it waits until a dev stack started
from this directory (another process) has written its env file and its broker and registry answer,
then exits 0 (exit 1 after ``--timeout`` seconds, default 30).
"""

import json
import math
import os
import signal
import sys
import tempfile
import threading
import time

import requests
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from edx_event_bus_kafka.internal.config import get_full_topic

from academy_consumer import conf
from academy_consumer.devstack import (
    BOOTSTRAP_ENV,
    PARTITION_LOG_MAX_BATCHES,
    PARTITION_LOG_MAX_BYTES,
    SCHEMA_REGISTRY_ENV,
    DevStack,
)
from academy_consumer.management.base import EXIT_NOT_READY, AcademyCommand, fail

# Consumer settings suited to the mock broker (see DevStack.consumer_config): its group members linger
# for a whole session after a crash, so keep sessions short; it holds idle fetches for fetch.wait.max.ms.
MOCK_CONSUMER_CONFIG = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 100,
                        "reconnect.backoff.max.ms": 1000}
MAX_PARTITIONS = 1000
WATCH_SECONDS = 0.5  # how often the low watermarks are checked
DEFAULT_WAIT_SECONDS = 30.0


def partitions(text):
    """argparse type of ``--partitions``: 1 to MAX_PARTITIONS (the mock aborts the process on fewer than 1)."""
    import argparse  # pylint: disable=import-outside-toplevel

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text[:40]!r}") from None
    if not 1 <= value <= MAX_PARTITIONS:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_PARTITIONS}, not {value}")
    return value


def seconds(text):
    """argparse type of ``--timeout``: a positive, finite number of seconds."""
    import argparse  # pylint: disable=import-outside-toplevel

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {text[:40]!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text[:40]}")
    return value


def read_env_file(path):
    """``{NAME: value}`` of a dev stack env file, or None while it does not exist (or is not complete)."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return None
    values = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return values if BOOTSTRAP_ENV in values and SCHEMA_REGISTRY_ENV in values else None


KAFKA_CONFIG_ENV = "ACADEMY_CONSUMER_KAFKA_CONFIG"
ENV_FILE_NAMES = {BOOTSTRAP_ENV, SCHEMA_REGISTRY_ENV, KAFKA_CONFIG_ENV}  # what a dev stack writes, nothing else


def own_env_file(path):
    """
    The ``{NAME: value}`` of ``path`` when it is an env file a dev stack wrote (only ``NAME=value`` lines
    of the names it writes, among them the broker's), else None: a file holding anything else is a
    user's, never to be overwritten or removed.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(1024 * 1024)
    except (OSError, UnicodeDecodeError):
        return None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not all("=" in line and line.split("=", 1)[0] in ENV_FILE_NAMES for line in lines):
        return None
    values = dict(line.split("=", 1) for line in lines)
    return values if values.get(BOOTSTRAP_ENV) and values.get(SCHEMA_REGISTRY_ENV) else None


def check_env_file(path):
    """Refuse (exit 2), before anything starts, an --env-file this dev stack must not or cannot write."""
    if not path.strip():
        raise fail("--env-file must name a file, not an empty string")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise fail(f"--env-file {path}: the folder {folder} does not exist")
    if os.path.isdir(path):
        raise fail(f"--env-file {path} is a folder")
    if os.path.lexists(path):
        values = own_env_file(path)
        if values is None:
            raise fail(f"--env-file {path} exists and is not a dev stack env file: it is left as it is; "
                       f"remove it or name another file")
        if answers(values):
            raise fail(f"a dev stack is already running from {path} (Kafka {values[BOOTSTRAP_ENV]} answers): "
                       f"use it, stop it, or name another --env-file")
        # A stale one (its dev stack is gone): overwritten below.
    try:  # really create and remove a file there: os.access says yes to root even on /proc
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".probe"):
            pass
    except OSError as error:
        raise fail(f"--env-file {path}: cannot write in the folder {folder} ({error.strerror or error})") from None


def answers(values):
    """True when the broker and the schema registry of these settings both answer."""
    try:
        if requests.get(f"{values[SCHEMA_REGISTRY_ENV]}/subjects", timeout=1).status_code != 200:
            return False
    except requests.RequestException:
        return False
    admin = AdminClient({"bootstrap.servers": values[BOOTSTRAP_ENV], "log_level": 0,
                         "logger": _Silent(), "socket.connection.setup.timeout.ms": 1000})
    try:
        admin.list_topics(timeout=1)
    except KafkaException:
        return False
    return True


class _Silent:
    """A librdkafka ``logger`` that drops its lines: a dev stack not up yet is what --wait waits for."""

    def log(self, *args, **kwargs):
        pass


def write_env_file(path, lines):
    """Write the file whole or not at all, so that ``--wait`` never reads half of it (no partial file is left)."""
    partial = f"{path}.partial"
    try:
        with open(partial, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        os.replace(partial, path)
    except OSError as error:
        try:
            os.remove(partial)
        except OSError:
            pass
        raise fail(f"--env-file {path}: cannot write it ({error.strerror or error})") from None


def remove_env_file(path):
    """Remove the env file at shutdown; a failure is one line on stderr, never a traceback."""
    try:
        if os.path.lexists(path):
            os.remove(path)
    except OSError as error:
        sys.stderr.write(f"could not remove --env-file {path} ({error.strerror or error}): remove it by hand\n")


def eviction_line(evicted):
    where = ", ".join(f"{topic} [{partition}] (offsets 0-{low - 1})" for (topic, partition), low in
                      sorted(evicted.items()))
    return (f"EVENTS LOST: the embedded broker evicted the oldest events of {where}: librdkafka's mock cluster "
            f"keeps at most {PARTITION_LOG_MAX_BYTES // (1024 * 1024)} MiB or {PARTITION_LOG_MAX_BATCHES:,} "
            f"produce batches per partition and cannot be configured to keep more. The dev stack stops: start it "
            f"again and produce less per partition (or more partitions: --partitions), or use a real Kafka "
            f"(docker-compose.yml)")


class Command(AcademyCommand):
    """``devstack``: run the embedded dev stack, or (``--wait``) wait for one."""
    help = "Run an embedded Kafka (librdkafka mock cluster) and schema registry for development and tests."
    needs_database = False

    def add_arguments(self, parser):
        parser.add_argument("--partitions", type=partitions, default=3,
                            help=f"Partitions of the academy topic, 1 to {MAX_PARTITIONS} (default 3).")
        parser.add_argument("--env-file", default=".devstack.env", help="Where to write (or, with --wait, read) "
                            "the settings (default .devstack.env).")
        parser.add_argument("--wait", action="store_true", help="Start nothing: wait until a running dev stack "
                            "has written its env file and answers, then exit 0 (1 on timeout).")
        parser.add_argument("--timeout", type=seconds, help=f"With --wait: seconds to wait (default "
                            f"{DEFAULT_WAIT_SECONDS:.0f}).")

    def handle(self, *args, **options):
        path = options["env_file"]
        if options["wait"]:
            return self.wait(path, options["timeout"] or DEFAULT_WAIT_SECONDS)
        if options["timeout"] is not None:
            raise fail("--timeout is only for --wait")
        check_env_file(path)
        return self.run(path, options["partitions"])

    def run(self, path, partition_count):
        """Run the dev stack until a signal; its settings are in ``path`` meanwhile."""
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        topic = get_full_topic(conf.topic())
        dlq = get_full_topic(conf.dlq_topic())
        with DevStack([(topic, partition_count), (dlq, 1)]) as stack:
            lines = stack.env_lines() + [f"{KAFKA_CONFIG_ENV}={json.dumps(MOCK_CONSUMER_CONFIG)}"]
            write_env_file(path, lines)
            try:
                for line in lines:
                    self.stdout.write(line)
                self.stdout.write(f"ready: Kafka {stack.bootstrap_servers} (topics {topic}, {partition_count} "
                                  f"partition(s), and {dlq}), schema registry {stack.schema_registry_url}; settings "
                                  f"in {path}; Ctrl-C or SIGTERM stops the dev stack")
                self.stdout.flush()
                while not stop.wait(WATCH_SECONDS):
                    try:
                        evicted = stack.evicted(timeout=5)
                    except KafkaException:
                        continue  # (its own broker; asked again in a moment)
                    if evicted:
                        raise fail(eviction_line(evicted), EXIT_NOT_READY)
            finally:
                remove_env_file(path)

    def wait(self, path, timeout):
        """Return once a dev stack whose settings are in ``path`` answers (exit 1 after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            values = read_env_file(path)
            if values and answers(values):
                self.stdout.write(f"ready: dev stack at {values[BOOTSTRAP_ENV]}, schema registry "
                                  f"{values[SCHEMA_REGISTRY_ENV]} (settings in {path})")
                return
            if time.monotonic() >= deadline:
                what = (f"the dev stack of {path} does not answer" if values else f"no dev stack wrote {path}")
                raise fail(f"{what} after {timeout:g} s: start `academy-consumer devstack` in this directory",
                           EXIT_NOT_READY)
            time.sleep(0.1)  # polling for another process's file and ports
