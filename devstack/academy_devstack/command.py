"""
Run the embedded dev stack: ``academy-consumer devstack [--partitions N] [--env-file PATH]``.

Starts, on loopback and in this process, librdkafka's mock Kafka cluster (with the academy topic and
its dead-letter topic created) and a Confluent-Schema-Registry-compatible server. Prints the settings
that point the other commands at it, writes them to ``.devstack.env`` in the working directory (which
every ``academy-consumer`` command run from there reads for settings its environment does not set;
values quoted for a POSIX shell, so ``. ./.devstack.env`` works too), then one ``ready:`` line. Runs
until SIGTERM/SIGINT, then shuts down and removes the file (exit 0). Everything is in memory.

The mock keeps at most 5 MiB (or 100,000 produce batches) per partition and silently evicts the oldest
events past that; it cannot be configured otherwise (see :mod:`academy_devstack.mock_kafka`). So
the dev stack watches every partition's low watermark and, the moment one leaves 0, prints an
``EVENTS LOST`` line and stops with exit status 1, rather than go on serving a log with a hole in it.

``academy-consumer devstack --wait [--timeout S]`` starts nothing: it waits until a dev stack started
from this directory (another process) has written its env file and its broker and registry answer,
then exits 0 (exit 1 after ``--timeout`` seconds, default 30).

Bad arguments, a bad setting, or an ``--env-file`` it must not or cannot write: one line on stderr,
exit 2, before anything starts. ``--env-file`` never overwrites or removes a file a dev stack did not write.

How it is run: ``academy_consumer.cli`` (the ``academy-consumer`` script) hands the ``devstack``
subcommand and its arguments to :func:`main` when this package is installed; it is not a Django
management command, so a host service that installs the app has no ``devstack`` command. It needs no
database and no Django app registry. Only to start a stack does it read Django's settings (the ones
``academy-consumer`` chose: ``academy_consumer.settings`` by default, ``--settings`` or
``DJANGO_SETTINGS_MODULE`` otherwise): the topic names (``ACADEMY_EVENTS_TOPIC``,
``ACADEMY_EVENTS_DLQ_TOPIC``, ``EVENT_BUS_TOPIC_PREFIX``), through the app's own accessors and
edx-event-bus-kafka's ``get_full_topic``, so that the stack's topics are the ones the consumer and
the producer use under the same settings. ``--wait`` reads nothing but its env file.
"""
from __future__ import annotations

import argparse
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

from . import (
    BOOTSTRAP_ENV,
    PARTITION_LOG_MAX_BATCHES,
    PARTITION_LOG_MAX_BYTES,
    SCHEMA_REGISTRY_ENV,
    DevStack,
    MockKafkaUnavailable,
    envfile,
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
PROG = "academy-consumer devstack"

# Consumer settings suited to the mock broker (see DevStack.consumer_config): its group members linger
# for a whole session after a crash, so keep sessions short; it holds idle fetches for fetch.wait.max.ms.
MOCK_CONSUMER_CONFIG = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 100,
                        "reconnect.backoff.max.ms": 1000}
KAFKA_CONFIG_ENV = "ACADEMY_CONSUMER_KAFKA_CONFIG"
ENV_FILE_NAMES = {BOOTSTRAP_ENV, SCHEMA_REGISTRY_ENV, KAFKA_CONFIG_ENV}  # what a dev stack writes, nothing else
MAX_PARTITIONS = 1000
WATCH_SECONDS = 0.5  # how often the low watermarks are checked
DEFAULT_WAIT_SECONDS = 30.0
ENV_FILE_MAX_BYTES = 1024 * 1024  # an env file is a few hundred bytes: more is not one of ours


class Failure(Exception):
    """What stops the command: its one line for stderr, and the exit status."""

    def __init__(self, message, code=EXIT_USAGE):
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``<prog>: error: ...``) and exit 2, without the usage."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(EXIT_USAGE)


def partitions(text):
    """argparse type of ``--partitions``: 1 to MAX_PARTITIONS (the mock aborts the process on fewer than 1)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text[:40]!r}") from None
    if not 1 <= value <= MAX_PARTITIONS:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_PARTITIONS}, not {value}")
    return value


def seconds(text):
    """argparse type of ``--timeout``: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {text[:40]!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text[:40]}")
    return value


def parser(prog=PROG):
    """The command line of ``devstack``."""
    made = _Parser(prog=prog, description="Run an embedded Kafka (librdkafka mock cluster) and schema registry "
                   "for development and tests (a development tool: not part of the installed app).")
    made.add_argument("--partitions", type=partitions, default=3,
                      help=f"Partitions of the academy topic, 1 to {MAX_PARTITIONS} (default 3).")
    made.add_argument("--env-file", default=".devstack.env", help="Where to write (or, with --wait, read) "
                      "the settings (default .devstack.env).")
    made.add_argument("--wait", action="store_true", help="Start nothing: wait until a running dev stack "
                      "has written its env file and answers, then exit 0 (1 on timeout).")
    made.add_argument("--timeout", type=seconds, help=f"With --wait: seconds to wait (default "
                      f"{DEFAULT_WAIT_SECONDS:.0f}).")
    # Applied by academy-consumer before it hands the command over, as for every command: they choose the
    # settings that name the topics.
    made.add_argument("--settings", help="The Django settings module whose topic names the stack creates "
                      "(default: DJANGO_SETTINGS_MODULE, else academy_consumer.settings).")
    made.add_argument("--pythonpath", help="A directory to add to the Python path (for --settings).")
    return made


def main(argv, prog=PROG):
    """Run ``devstack`` with the arguments ``argv``; returns its exit status (failures: one line on stderr)."""
    options = parser(prog).parse_args(argv)
    if options.settings:  # as Django's handle_default_options (academy-consumer has applied them already)
        os.environ["DJANGO_SETTINGS_MODULE"] = options.settings
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "academy_consumer.settings")
    if options.pythonpath:
        sys.path.insert(0, options.pythonpath)
    try:
        if options.wait:
            wait(options.env_file, options.timeout or DEFAULT_WAIT_SECONDS)
        else:
            if options.timeout is not None:
                raise Failure("--timeout is only for --wait")
            check_env_file(options.env_file)
            run(options.env_file, options.partitions, academy_topics())
    except MockKafkaUnavailable as exc:  # a confluent-kafka whose librdkafka lacks the mock API this binds
        sys.stderr.write(f"{prog}: the embedded Kafka cannot start: {' '.join(str(exc).split())}\n")
        return EXIT_FAILURE
    except Failure as failure:
        sys.stderr.write(f"{prog}: {failure}\n")
        return failure.code
    return EXIT_OK


def academy_topics():
    """
    ``(topic, dead-letter topic)`` as the consumer names them under the current Django settings (with
    ``EVENT_BUS_TOPIC_PREFIX``); ``Failure`` (exit 2) when the app's settings do not check out.
    """
    # pylint: disable=import-outside-toplevel  # only a starting stack reads settings: --wait and --help do not
    from django.core.exceptions import ImproperlyConfigured
    from edx_event_bus_kafka.internal.config import get_full_topic

    from academy_consumer import conf

    try:
        conf.check_all()
        return get_full_topic(conf.topic()), get_full_topic(conf.dlq_topic())
    except ImproperlyConfigured as exc:
        raise Failure(f"bad setting: {' '.join(str(exc).split())}") from None


def read_env_file(path):
    """``{NAME: value}`` of a dev stack env file, or None while it does not exist (or is not complete)."""
    try:
        values = envfile.read(path, ENV_FILE_MAX_BYTES)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return values if values.get(BOOTSTRAP_ENV) and values.get(SCHEMA_REGISTRY_ENV) else None


def own_env_file(path):
    """
    The ``{NAME: value}`` of ``path`` when it is an env file a dev stack wrote (only assignments of the
    names it writes, among them the broker's and the registry's), else None: a file holding anything else
    is a user's, never to be overwritten or removed.
    """
    values = read_env_file(path)
    return values if values is not None and set(values) <= ENV_FILE_NAMES else None


def check_env_file(path):
    """Refuse (exit 2), before anything starts, an --env-file this dev stack must not or cannot write."""
    if not path.strip():
        raise Failure("--env-file must name a file, not an empty string")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise Failure(f"--env-file {path}: the folder {folder} does not exist")
    if os.path.isdir(path):
        raise Failure(f"--env-file {path} is a folder")
    if os.path.lexists(path):
        values = own_env_file(path)
        if values is None:
            raise Failure(f"--env-file {path} exists and is not a dev stack env file: it is left as it is; "
                          f"remove it or name another file")
        if answers(values):
            raise Failure(f"a dev stack is already running from {path} (Kafka {values[BOOTSTRAP_ENV]} answers): "
                          f"use it, stop it, or name another --env-file")
        # A stale one (its dev stack is gone): overwritten when the stack is up.
    try:  # really create and remove a file there: os.access says yes to root even on /proc
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".probe"):
            pass
    except OSError as error:
        raise Failure(f"--env-file {path}: cannot write in the folder {folder} ({error.strerror or error})") from None


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


def write_env_file(path, values):
    """Write the env file whole or not at all (see :func:`envfile.write`); a failure is one line, exit 2."""
    try:
        envfile.write(path, values)
    except OSError as error:
        raise Failure(f"--env-file {path}: cannot write it ({error.strerror or error})") from None


def remove_env_file(path):
    """Remove the env file at shutdown; a failure is one line on stderr, never a traceback."""
    try:
        if os.path.lexists(path):
            os.remove(path)
    except OSError as error:
        sys.stderr.write(f"could not remove --env-file {path} ({error.strerror or error}): remove it by hand\n")


def eviction_line(evicted):
    """The ``EVENTS LOST`` line for ``{(topic, partition): low watermark}``."""
    where = ", ".join(f"{topic} [{partition}] (offsets 0-{low - 1})" for (topic, partition), low in
                      sorted(evicted.items()))
    return (f"EVENTS LOST: the embedded broker evicted the oldest events of {where}: librdkafka's mock cluster "
            f"keeps at most {PARTITION_LOG_MAX_BYTES // (1024 * 1024)} MiB or {PARTITION_LOG_MAX_BATCHES:,} "
            f"produce batches per partition and cannot be configured to keep more. The dev stack stops: start it "
            f"again and produce less per partition (or more partitions: --partitions), or use a real Kafka "
            f"(docker-compose.yml)")


def run(path, partition_count, topics):
    """Run the dev stack with ``topics`` (academy, dead letters) until a signal; its settings are in ``path``."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    topic, dlq = topics
    with DevStack([(topic, partition_count), (dlq, 1)]) as stack:
        values = {**stack.env(), KAFKA_CONFIG_ENV: json.dumps(MOCK_CONSUMER_CONFIG)}
        write_env_file(path, values)
        try:
            for line in envfile.format_lines(values):
                print(line)
            print(f"ready: Kafka {stack.bootstrap_servers} (topics {topic}, {partition_count} partition(s), and "
                  f"{dlq}), schema registry {stack.schema_registry_url}; settings in {path}; Ctrl-C or SIGTERM "
                  f"stops the dev stack", flush=True)
            while not stop.wait(WATCH_SECONDS):
                try:
                    evicted = stack.evicted(timeout=5)
                except KafkaException:
                    continue  # (its own broker; asked again in a moment)
                if evicted:
                    raise Failure(eviction_line(evicted), EXIT_FAILURE)
        finally:
            remove_env_file(path)


def wait(path, timeout):
    """Return once a dev stack whose settings are in ``path`` answers (``Failure``, exit 1, after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        values = read_env_file(path)
        if values and answers(values):
            print(f"ready: dev stack at {values[BOOTSTRAP_ENV]}, schema registry {values[SCHEMA_REGISTRY_ENV]} "
                  f"(settings in {path})", flush=True)
            return
        if time.monotonic() >= deadline:
            what = (f"the dev stack of {path} does not answer" if values else f"no dev stack wrote {path}")
            raise Failure(f"{what} after {timeout:g} s: start `academy-consumer devstack` in this directory",
                          EXIT_FAILURE)
        time.sleep(0.1)  # polling for another process's file and ports
