"""
Kafka plumbing, written once for every command that talks to Kafka: the clients, their configuration, the
readers of offsets, what a polled error means, and how long to wait before trying again.

* ``kafka_client``: a ``Consumer``, ``Producer`` or ``AdminClient`` with librdkafka's own log lines and errors
  through one Python logger (``academy_consumer.kafka``), one line per distinct error per 30 s, without
  librdkafka's misleading "probably due to broker version < 0.10" (``_NoVersionHint``); a property librdkafka
  refuses is a one-line ``BadKafkaConfig``;
* the configurations: the event bus's connection settings (``bus_config``), the consumer's
  (``consumer_config``) and that of the clients that read without being a group member (``reader_config``:
  ``consumer_lag``, ``dead_letters list`` and the redrive);
* the settings a consumer of the academy topic needs, checked in one place (``endpoints``);
* readers: ``watermark`` (low and high offset of a partition) and ``committed`` (a group's committed offsets);
* ``polled_error``: what an error a poll returns means (fatal, missing topic, end of partition, or a line);
* ``backoff``: the one retry policy (capped exponential), wherever something is tried again after a pause, and
  ``pause``: that pause, cut short by a stop (SIGTERM).

The consumer uses confluent-kafka directly and edx-event-bus-kafka for its settings (``bus_config``, the topic
prefix, the schema registry client).
"""

import dataclasses
import logging
import math
import re
import time

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition
from django.core.exceptions import ImproperlyConfigured
# The event bus's settings contract (EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS, _API_KEY/_SECRET, EVENT_BUS_TOPIC_PREFIX,
# EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL/_API_KEY/_SECRET) is read by these functions of an internal module:
# edx-event-bus-kafka exports no public equivalent. So setup.cfg bounds it to the tested majors (>=5.1.0,<7; tox's
# min env runs 5.1.0): a new major version may move or rename them.
from edx_event_bus_kafka.internal.config import get_full_topic, get_schema_registry_client, load_common_settings

from academy_consumer import conf
from academy_consumer.errors import BadKafkaConfig, KafkaUnavailable
from academy_consumer.redact import mask_urls

KAFKA_LOG_SECONDS = 30.0  # one librdkafka line per distinct error per this many seconds
STATISTICS_INTERVAL_MS = 1000  # statistics.interval.ms of the consumer's clients (monitoring.BrokerWatch reads them)
PAUSE_SLICE_SECONDS = 0.1  # how often ``pause`` looks whether it should stop
BACKOFF_BASE_SECONDS = 0.2  # the first pause of ``backoff``

_SUPPRESSED = re.compile(r", \d+ identical error\(s\) suppressed")

# What ``polled_error`` says of an error a poll returned.
FATAL = "fatal"  # the client cannot go on
MISSING_TOPIC = "missing topic"  # the topic does not exist
PARTITION_EOF = "partition EOF"  # the end of a partition was reached: nothing wrong
LOG = "log"  # anything else: the client retries by itself; worth a (rate-limited) line


class _OncePer(logging.Filter):
    """
    Let a record through once per ``seconds`` per distinct message, digits ignored ("after 3ms" varies on every
    repetition) and librdkafka's ", N identical error(s) suppressed" too (the same error again: older librdkafka,
    2.6 for one, reconnects within the first second and repeats it at once): a broker that is down for an hour
    gives a few lines, not thousands.
    """

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds
        self._last = {}

    def filter(self, record):
        key = (record.levelno, re.sub(r"\d+", "#", _SUPPRESSED.sub("", record.getMessage())))
        now = time.monotonic()
        if now - self._last.get(key, -math.inf) < self.seconds:
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = now
        return True


_VERSION_HINT = re.compile(r":? *probably due to broker version < 0\.10 \(see api\.version\.request configuration\)")


class _NoVersionHint(logging.Filter):
    """
    librdkafka ends every failed ApiVersionRequest (the first request of a connection) with "probably due to
    broker version < 0.10 (see api.version.request configuration)", a timeout included: a broker that accepted
    the connection and did not answer (hung, stopped, overloaded) would read as an ancient one, and its lines
    can come out after it answers again. The hint goes; what the failure means is said instead.
    """

    def filter(self, record):
        text = record.getMessage()
        if "broker version < 0.10" in text:
            record.msg, record.args = _VERSION_HINT.sub(
                ": the broker did not answer the first request of the connection", text), ()
        return True


# librdkafka's log lines (its ``logger`` setting) and client errors (``error_cb``), rate-limited.
kafka_log = logging.getLogger("academy_consumer.kafka")
kafka_log.addFilter(_NoVersionHint())
kafka_log.addFilter(_OncePer(KAFKA_LOG_SECONDS))


def _kafka_error(error):
    """librdkafka's ``error_cb``: a client-level error (broker down, ...); the client retries by itself."""
    kafka_log.warning("Kafka: %s", error.str())


def error_text(exc):
    """The text of a confluent-kafka exception: its ``KafkaError``'s when it carries one."""
    error = exc.args[0] if exc.args else exc
    return error.str() if hasattr(error, "str") else str(error)


def kafka_client(kind, config):
    """
    ``kind(config)`` (a ``Consumer``, ``Producer`` or ``AdminClient``) with librdkafka's logs and errors sent to
    ``kafka_log`` (unless ``config`` names its own ``logger`` and ``error_cb``); an unknown or invalid librdkafka
    property is a ``BadKafkaConfig`` (one line).
    """
    try:
        return kind({"logger": kafka_log, "error_cb": _kafka_error, **config})
    except (KafkaException, ValueError, TypeError) as exc:
        raise BadKafkaConfig(f"ACADEMY_CONSUMER_KAFKA_CONFIG (librdkafka): {mask_urls(error_text(exc))}") from None


# --- configurations ------------------------------------------------------------------------------------------

def bus_config():
    """The event bus's connection settings for librdkafka (bootstrap servers, SASL when a key is set)."""
    conf.require_event_bus(registry=False)
    return load_common_settings()


def consumer_config(group_id):
    """
    The stock consumer's configuration, plus: start at the earliest event; no auto-commit; static
    membership (``group.instance.id``) when ``ACADEMY_CONSUMER_GROUP_INSTANCE_ID`` is set; statistics every
    second (what tells a silent broker, ``monitoring.BrokerWatch``).
    """
    instance = conf.group_instance_id()
    return {
        **bus_config(),
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "statistics.interval.ms": STATISTICS_INTERVAL_MS,
        **({"group.instance.id": instance} if instance else {}),
        **conf.kafka_config(),
    }


def reader_config(group_id, common=None):
    """
    A consumer that reads by assignment and is no group member (no static membership): ``group.id`` only to ask
    for, or commit, the group's offsets; ``common`` is ``bus_config()`` unless given.
    """
    return {**conf.reader_kafka_config(), **(bus_config() if common is None else common), "group.id": group_id,
            "enable.auto.commit": False, "enable.partition.eof": False}


@dataclasses.dataclass(frozen=True)
class Endpoints:
    """What a consumer of the academy topic reads and where it writes, its settings checked."""

    group_id: str
    topic: str  # without EVENT_BUS_TOPIC_PREFIX
    full_topic: str
    dlq_topic: str  # the dead-letter topic, prefixed
    registry: object  # the schema registry client


def endpoints(topic=None, group_id=None):
    """
    The ``Endpoints`` of ``topic`` (default ``ACADEMY_EVENTS_TOPIC``) and ``group_id`` (default
    ``ACADEMY_CONSUMER_GROUP_ID``): ``ImproperlyConfigured`` (``BadKafkaConfig``) naming the first setting
    that is missing or wrong, before a client is built that can never connect.
    """
    conf.require_event_bus()
    group_id = conf.group_id() if group_id is None else group_id
    if not str(group_id).strip():
        raise BadKafkaConfig("the consumer group id (--group-id / ACADEMY_CONSUMER_GROUP_ID) is empty")
    if topic is not None and not str(topic).strip():
        raise BadKafkaConfig("--topic is empty")
    topic = topic or conf.topic()
    try:
        registry = get_schema_registry_client()
    except ValueError as exc:  # confluent-kafka refuses the registry URL (malformed, credentials in it, ...)
        raise BadKafkaConfig(f"EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL: {mask_urls(exc)}") from None
    if registry is None:
        raise ImproperlyConfigured("EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL is not set")
    full_topic = get_full_topic(topic)
    dlq_topic = get_full_topic(conf.dlq_topic(topic))
    if dlq_topic == full_topic:
        raise BadKafkaConfig(f"the dead-letter topic is the consumed topic {full_topic}: every dead "
                             f"letter would be read again (check ACADEMY_EVENTS_DLQ_TOPIC)")
    return Endpoints(group_id, topic, full_topic, dlq_topic, registry)


def new_consumer(group_id, **callbacks):
    """The consumer of the academy topic (``consumer_config``); ``callbacks``: ``stats_cb``, ``on_commit``."""
    return kafka_client(Consumer, {**consumer_config(group_id), **callbacks})


def new_reader(group_id, common=None):
    """A consumer that is no group member (``reader_config``)."""
    return kafka_client(Consumer, reader_config(group_id, common))


# --- readers -------------------------------------------------------------------------------------------------

def watermark(consumer, topic, partition, timeout=None):
    """
    ``(low, high)`` offsets of ``topic[partition]``, asked of the broker within ``timeout`` seconds; with no
    ``timeout``, the client's cached ones (updated by every fetch: no request; high is -1 before the first).
    ``KafkaException`` when Kafka does not say.
    """
    where = TopicPartition(topic, partition)
    if timeout is None:
        return consumer.get_watermark_offsets(where, cached=True)
    return consumer.get_watermark_offsets(where, timeout=timeout)


def committed(consumer, topic, partitions, timeout, strict=False):
    """
    The group's committed offset of each of ``partitions`` (None where it committed nothing).
    ``KafkaException`` when Kafka does not answer; with ``strict``, ``KafkaUnavailable`` when it answers with
    an error for a partition.
    """
    found = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout)
    offsets = {}
    for tp in found:
        if strict and tp.error is not None:
            raise KafkaUnavailable(f"Kafka did not give the committed offset of {topic}[{tp.partition}]: "
                                   f"{mask_urls(tp.error.str())}")
        offsets[tp.partition] = tp.offset if tp.offset >= 0 and tp.offset != OFFSET_INVALID else None
    return offsets


def polled_error(error):
    """What an error returned by a poll means: ``FATAL``, ``MISSING_TOPIC``, ``PARTITION_EOF`` or ``LOG``."""
    if error.fatal():
        return FATAL
    # librdkafka's client-side error codes are spelled with a leading underscore (RD_KAFKA_RESP_ERR__*):
    # public constants of confluent-kafka, not private members.
    if error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART,
                        KafkaError._UNKNOWN_TOPIC):  # pylint: disable=protected-access
        return MISSING_TOPIC
    if error.code() == KafkaError._PARTITION_EOF:  # pylint: disable=protected-access
        return PARTITION_EOF
    return LOG


# --- retries -------------------------------------------------------------------------------------------------

def backoff(attempt, cap, base=BACKOFF_BASE_SECONDS):
    """The pause before retry ``attempt`` (1, 2, ...): ``base`` doubled each attempt, at most ``cap`` seconds."""
    return min(cap, base * 2 ** min(attempt, 10))


def pause(seconds, stopping=None):
    """Wait ``seconds``, or less as soon as ``stopping()`` is true (a SIGTERM): True when it stopped the wait."""
    deadline = time.monotonic() + seconds
    while True:
        if stopping is not None and stopping():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(left, PAUSE_SLICE_SECONDS))
