"""
The Kafka layer: consume academy events in batches, with the delivery guarantees of SPEC §5.

Built on edx-event-bus-kafka's ``KafkaEventConsumer`` (its configuration, ``ce_type`` -> signal lookup,
Avro deserialization through the schema registry and signal dispatch to the receivers in
``academy_consumer.receivers``), with a different loop:

* poll a batch; apply it in ONE database transaction, each event in its own savepoint, in offset order
  (so events with the same key -- the academy uuid, hence the same partition -- apply in order);
* an event that can never apply (undecodable value, missing/unknown/duplicated ``ce_type``, missing
  ``ce_time``, a payload the normalizer rejects, a key conflict) goes to the dead-letter topic with
  headers naming the original topic, partition, offset, error class and message;
* a transient failure (database unreachable, deadlock, lock timeout, dead-letter topic unreachable)
  rolls the batch back and retries it with capped exponential backoff -- never skipped;
* offsets are committed only after the batch's transaction committed and its dead letters were
  acknowledged (at-least-once; re-applying is harmless: upserts are idempotent and stale-guarded); a
  failed commit does not hold the loop up: its offsets are committed with the next batch or after the
  next poll, and on a clean stop;
* a group with no committed offset starts at the earliest retained event;
* replay: ``start`` can reset the assigned partitions to the beginning, to given offsets (an offset past the
  end of its partition, or an unknown partition, is a ``BadStart``), or to a time: the broker's timestamp
  lookup (approximate), else the beginning, and in every case events older than the time are skipped;
* configuration faults are not bad events: a schema id the registry does not know, when the registry knows
  none of the academy subjects or when the same id comes back on another event, is a ``FatalError`` (nothing
  dead-lettered, nothing committed); and a circuit breaker stops the consumer before it dead-letters more
  than ``conf.max_consecutive_dead_letters()`` events in a row of one error class;
* waiting for a partition assignment is never fatal (a rebalance can take a whole session timeout): it is
  logged every 30 s; ``--until-idle`` counts from the first assignment;
* librdkafka's own log lines and errors go through one Python logger, one line per distinct error per 30 s;
* ``stop()`` (SIGTERM/SIGINT) lets the batch in hand finish and commit; fatal errors raise.
"""

import datetime
import json
import logging
import math
import re
import struct
import time
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, DataError, IntegrityError, InterfaceError, close_old_connections, connections
from django.db import transaction
from edx_event_bus_kafka.internal.config import get_full_topic, load_common_settings
from edx_event_bus_kafka.internal.consumer import KafkaEventConsumer, ReceiverError
from edx_event_bus_kafka.internal.utils import HEADER_TIME, _get_metadata_from_headers, get_message_header_values

from academy_consumer import conf, preflight
from academy_consumer.apply import is_transient
from academy_consumer.redact import mask_url, mask_urls
from academy_consumer.receivers import AcademyEventRejected
from signals import ACADEMY_SIGNALS
from signals.avro import AcademyAvroSignalDeserializer

log = logging.getLogger(__name__)

COMMIT_RETRIES = 5
DLQ_MESSAGE_MAX_BYTES = 1_000_000_000  # librdkafka's maximum
WAITING_LOG_SECONDS = 30.0  # how often "waiting for a partition assignment" is logged
KAFKA_LOG_SECONDS = 30.0  # one librdkafka line per distinct error per this many seconds
PREFLIGHT_TIMEOUT_SECONDS = 10.0  # longest the start-up checks wait for Kafka and the registry


class _OncePer(logging.Filter):
    """
    Let a record through once per ``seconds`` per distinct message, digits ignored ("after 3ms",
    "5 identical error(s) suppressed" vary on every repetition): a broker that is down for an hour
    gives a few lines, not thousands.
    """

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds
        self._last = {}

    def filter(self, record):
        key = (record.levelno, re.sub(r"\d+", "#", record.getMessage()))
        now = time.monotonic()
        if now - self._last.get(key, -math.inf) < self.seconds:
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = now
        return True


# librdkafka's log lines (its ``logger`` setting) and client errors (``error_cb``), rate-limited.
kafka_log = logging.getLogger("academy_consumer.kafka")
kafka_log.addFilter(_OncePer(KAFKA_LOG_SECONDS))


def _kafka_error(error):
    """librdkafka's ``error_cb``: a client-level error (broker down, ...); the client retries by itself."""
    kafka_log.warning("Kafka: %s", error.str())


def kafka_client(kind, config):
    """
    ``kind(config)`` (a ``Consumer`` or ``Producer``) with librdkafka's logs and errors sent to ``kafka_log``;
    an unknown or invalid librdkafka property is a ``BadKafkaConfig`` (one line).
    """
    try:
        return kind({"logger": kafka_log, "error_cb": _kafka_error, **config})
    except (KafkaException, ValueError, TypeError) as exc:
        error = exc.args[0] if exc.args else exc
        text = error.str() if hasattr(error, "str") else str(error)
        raise BadKafkaConfig(f"ACADEMY_CONSUMER_KAFKA_CONFIG (librdkafka): {mask_urls(text)}") from None


class TransientError(Exception):
    """The batch could not be applied now; retry it (never skip it)."""


class FatalError(Exception):
    """The consumer cannot go on (misconfiguration, missing tables, fatal Kafka error)."""


class PermanentError(Exception):
    """This one event can never be applied: dead-letter it."""


class BadStart(ValueError):
    """The replay start does not fit the topic (a partition it does not have, an offset past the end)."""


class BadKafkaConfig(ImproperlyConfigured):
    """
    An event bus setting the consumer cannot use: a property librdkafka refuses, an empty group id, a registry
    URL confluent-kafka refuses, a dead-letter topic that is the consumed topic.
    """


@dataclass
class Start:
    """Where to start reading the assigned partitions (replay); ``None`` fields mean "committed offset"."""

    beginning: bool = False
    offsets: dict = field(default_factory=dict)  # partition -> offset
    time: datetime.datetime | None = None


@dataclass
class Stats:
    """What a run did, by outcome (``created``, ``updated``, ... of the apply layer, plus ``dead_lettered``)."""

    counts: dict = field(default_factory=dict)
    batches: int = 0

    def add(self, outcome, n=1):
        self.counts[outcome] = self.counts.get(outcome, 0) + n

    @property
    def events(self):
        return sum(self.counts.values())

    def summary(self):
        return ", ".join(f"{key} {value}" for key, value in sorted(self.counts.items())) or "no events"


def _registry_unavailable(exc):
    """True when the schema registry could not answer (down, overloaded, network): not the event's fault."""
    while exc is not None:
        if isinstance(exc, SchemaRegistryError):
            status = exc.http_status_code
            return status is None or status < 0 or status >= 500 or status in (408, 429)
        names = {cls.__name__ for cls in type(exc).__mro__}
        if isinstance(exc, OSError) or names & {"TransportError", "TimeoutException", "NetworkError"}:
            return True
        if isinstance(exc, json.JSONDecodeError):  # the registry (or a proxy before it) answered no JSON
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _writer_schema_mismatch(exc):
    """True when decoding failed because the writer schema the registry gave is not an academy schema."""
    while exc is not None:
        if type(exc).__name__ == "SchemaResolutionError":  # fastavro: writer and reader schemas do not match
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _unknown_schema_id(exc, value):
    """The schema id of ``value`` when ``exc`` says the registry does not know it (HTTP 404), else None."""
    while exc is not None:
        if isinstance(exc, SchemaRegistryError):
            if exc.http_status_code == 404 and isinstance(value, bytes) and len(value) >= 5 and value[0] == 0:
                return struct.unpack(">I", value[1:5])[0]
            return None
        exc = exc.__cause__ or exc.__context__
    return None


def error_class(exc):
    """The ``dlq-error-class`` of an exception: ``module.QualifiedName``."""
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


def classify(exc):
    """``TransientError``, ``PermanentError`` or ``FatalError`` for an exception raised applying an event."""
    if _registry_unavailable(exc):
        return TransientError
    if isinstance(exc, ReceiverError):
        kinds = [classify(cause) for cause in exc.causes] or [PermanentError]
        for kind in (FatalError, TransientError):
            if kind in kinds:
                return kind
        return PermanentError
    if isinstance(exc, DatabaseError):
        if isinstance(exc, InterfaceError) or is_transient(exc):
            return TransientError
        if isinstance(exc, (DataError, IntegrityError)):
            return PermanentError
        return FatalError  # e.g. a missing table: no event can apply, so stop rather than dead-letter them all
    return PermanentError


class AcademyEventConsumer(KafkaEventConsumer):
    """Consume the academy topic in batches; see the module docstring for the guarantees."""

    def __init__(self, topic=None, group_id=None, *, start=None, batch_size=None, batch_wait=None,
                 max_events=None, until_idle=None):
        self.start = start or Start()
        self.batch_size = batch_size or conf.batch_size()
        self.batch_wait = conf.batch_wait_seconds() if batch_wait is None else batch_wait
        self.max_events = max_events
        self.until_idle = until_idle
        self.max_dead_run = conf.max_consecutive_dead_letters()
        self.stats = Stats()
        self._stopping = False
        self._assigned = False  # an assignment arrived (--until-idle counts from the first one)
        self._waiting_since = None  # (monotonic, wall clock) while no partitions are assigned
        self._waiting_logged = 0.0
        # Kafka timestamps are milliseconds: an event in the same millisecond as the time is at the time.
        self._from_millis = None if self.start.time is None else math.floor(self.start.time.timestamp() * 1000)
        self._start_offsets = {}  # partition -> offset to seek on first assignment
        self._dead_run = (None, 0)  # (error class, how many events in a row were dead-lettered with it)
        self._unknown_schemas = {}  # schema id the registry does not know -> {(partition, offset)} using it
        self._registry_has_academy_subjects = False
        self._uncommitted = {}  # (topic, partition) -> offset after the newest applied event, until committed
        self._commit_failures = 0
        self._deserializers = {}
        _check_configured()
        group_id = conf.group_id() if group_id is None else group_id
        if not str(group_id).strip():
            raise BadKafkaConfig("the consumer group id (--group-id / ACADEMY_CONSUMER_GROUP_ID) is empty")
        if topic is not None and not str(topic).strip():
            raise BadKafkaConfig("--topic is empty")
        try:
            super().__init__(topic or conf.topic(), group_id)
        except ValueError as exc:  # confluent-kafka refuses the registry URL (malformed, credentials in it, ...)
            raise BadKafkaConfig(f"EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL: {mask_urls(exc)}") from None
        if self.schema_registry_client is None:
            raise ImproperlyConfigured("EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL is not set")
        self.full_topic = get_full_topic(self.topic)
        self.dlq_topic = get_full_topic(conf.dlq_topic(self.topic))
        if self.dlq_topic == self.full_topic:
            raise BadKafkaConfig(f"the dead-letter topic is the consumed topic {self.full_topic}: every dead "
                                       f"letter would be read again (check ACADEMY_EVENTS_DLQ_TOPIC)")
        # A dead letter is as large as the event it copies, which the broker took (librdkafka's default 1 MB
        # client-side limit would refuse it): let the broker judge the size.
        self.dlq_producer = kafka_client(Producer, {
            **self._common_config(), "enable.idempotence": True, "acks": "all",
            "message.max.bytes": DLQ_MESSAGE_MAX_BYTES, **_producer_part(conf.kafka_config())})

    # --- configuration -------------------------------------------------------------------------------

    @staticmethod
    def _common_config():
        config = load_common_settings()
        if config is None:
            raise ImproperlyConfigured("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS is not set")
        return config

    def _create_consumer(self):
        """
        The stock consumer's configuration, plus: start at the earliest event; no auto-commit; static
        membership (``group.instance.id``) when ``ACADEMY_CONSUMER_GROUP_INSTANCE_ID`` is set.
        """
        instance = conf.group_instance_id()
        return kafka_client(Consumer, {
            **self._common_config(),
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **({"group.instance.id": instance} if instance else {}),
            **conf.kafka_config(),
        })

    # --- start-up checks -----------------------------------------------------------------------------

    def check_ready(self):
        """
        Before the first poll: the topic exists (``NotReady`` also when Kafka does not answer in time), the
        replay start fits it (``BadStart``), the schema registry answers as one (``NotReady``; a registry
        that does not answer now is only logged: that is transient and batches are retried). One line says it.
        """
        partitions = preflight.check_topic(self.consumer, self.full_topic, PREFLIGHT_TIMEOUT_SECONDS)
        self._plan_start(partitions)
        url = settings.EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL
        level = logging.INFO
        try:
            subjects = preflight.check_schema_registry(self.schema_registry_client, url)
            registry = f"schema registry {mask_url(url)} ({len(subjects)} subject(s))"
        except preflight.RegistryUnreachable as exc:
            level, registry = logging.WARNING, f"{exc} (batches are retried until it answers)"
        log.log(level, "ready: database %s; topic %s (%d partition(s)) of %s, group %s; %s",
                preflight.describe_database(), self.full_topic, len(partitions),
                mask_urls(str(settings.EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS)), self.group_id, registry)

    # --- replay: where each partition starts ---------------------------------------------------------

    def _plan_start(self, partitions):
        """
        Resolve ``self.start`` into an offset per partition of ``partitions`` (once, before subscribing).

        ``--from-offset`` must name a partition of the topic and an offset at most its end (``BadStart``):
        Kafka would otherwise reset it to the earliest event, a silent replay of everything. ``--from-time``
        starts where the broker's timestamp lookup says (the beginning where it cannot answer); the lookup is
        approximate, so ``_skipped_by_replay`` skips older events on every partition whatever it answered.
        """
        if self.start.beginning:
            self._start_offsets = dict.fromkeys(partitions, OFFSET_BEGINNING)
        elif self.start.offsets:
            for partition, offset in sorted(self.start.offsets.items()):
                if partition not in partitions:
                    raise BadStart(f"topic {self.full_topic} has no partition {partition} "
                                   f"(it has {len(partitions)}: 0-{len(partitions) - 1})")
                low, high = self._watermarks(partition)
                if offset > high:
                    raise BadStart(f"--from-offset {partition}:{offset} is past the end of partition {partition} "
                                   f"of {self.full_topic} (its next offset is {high})")
                if offset < low:
                    log.warning("partition %d starts at offset %d now (older events were deleted): reading from %d",
                                partition, low, low)
            self._start_offsets = dict(self.start.offsets)
        elif self.start.time is not None:
            asked = [TopicPartition(self.full_topic, p, int(self._from_millis)) for p in partitions]
            try:
                answers = self.consumer.offsets_for_times(asked, timeout=PREFLIGHT_TIMEOUT_SECONDS)
            except KafkaException as exc:
                raise FatalError(f"Kafka did not answer the timestamp lookup: {exc}") from exc
            for found in answers:  # -1: the broker could not answer, or nothing is that new
                self._start_offsets[found.partition] = found.offset if found.offset >= 0 else OFFSET_BEGINNING
            log.info("replay from %s: start offsets %s (-2: the beginning); older events are skipped",
                     self.start.time.isoformat(), self._start_offsets)

    def _watermarks(self, partition):
        try:
            return self.consumer.get_watermark_offsets(TopicPartition(self.full_topic, partition),
                                                       timeout=PREFLIGHT_TIMEOUT_SECONDS)
        except KafkaException as exc:
            raise FatalError(f"Kafka did not say where partition {partition} ends: {exc}") from exc

    def _on_assign(self, consumer, partitions):
        for partition in partitions:
            if partition.partition in self._start_offsets:
                partition.offset = self._start_offsets.pop(partition.partition)
        consumer.assign(partitions)
        self._assigned = True
        self._waiting_since = None
        self._last_activity = time.monotonic()
        log.info("assigned %s", [(p.partition, p.offset) for p in partitions])

    def _on_revoke(self, consumer, partitions):
        """Commit what was applied on the partitions being taken away (once), then forget it: not ours now."""
        revoked = {(p.topic, p.partition) for p in partitions}
        pending = [TopicPartition(t, p, o) for (t, p), o in self._uncommitted.items() if (t, p) in revoked]
        if pending:
            try:
                consumer.commit(offsets=pending, asynchronous=False)
            except KafkaException as exc:
                log.warning("offsets %s not committed before the rebalance (%s); those events will be read and "
                            "applied again (harmless)", [(o.partition, o.offset) for o in pending], exc)
            for key in revoked:
                self._uncommitted.pop(key, None)
        self._waiting_since = (time.monotonic(), datetime.datetime.now(datetime.timezone.utc))
        log.info("revoked %s", [p.partition for p in partitions])

    # --- the loop ------------------------------------------------------------------------------------

    def stop(self):
        """Finish the batch in hand, commit it and return from ``run`` (safe from a signal handler)."""
        self._stopping = True

    def run(self):
        """Consume until stopped, idle for ``until_idle`` seconds, or ``max_events`` handled. Returns stats."""
        try:
            self.check_ready()
            self.consumer.subscribe([self.full_topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
            self._last_activity = time.monotonic()
            self._waiting_since = (self._last_activity, datetime.datetime.now(datetime.timezone.utc))
            while not self._stopping:
                if self.max_events is not None and self.stats.events >= self.max_events:
                    break
                want = self.batch_size if self.max_events is None else min(
                    self.batch_size, self.max_events - self.stats.events)
                messages = self._poll(want)
                now = time.monotonic()
                if messages:
                    self._last_activity = now
                    self._process_batch(messages)
                    continue
                self._commit_uncommitted()  # commits that failed earlier (no-op when there are none)
                if self._waiting_since is not None:
                    self._log_waiting(now)
                elif self.until_idle is not None and now - self._last_activity >= self.until_idle:
                    log.info("idle for %.1f s: stopping", self.until_idle)
                    break
            self._commit_before_exit()
        finally:
            self.consumer.close()
            self.dlq_producer.flush(10)
        return self.stats

    def _log_waiting(self, now):
        """Waiting for an assignment is never fatal (a rebalance can last a session timeout): say so every 30 s."""
        since, wall = self._waiting_since
        if now - since >= WAITING_LOG_SECONDS and now - self._waiting_logged >= WAITING_LOG_SECONDS:
            self._waiting_logged = now
            log.warning("waiting for a partition assignment of %s in group %s since %s (%.0f s): the group "
                        "coordinator rebalances when the previous member leaves or its session times out",
                        self.full_topic, self.group_id, wall.isoformat(timespec="seconds"), now - since)

    def _poll(self, want):
        messages = []
        for message in self.consumer.consume(num_messages=want, timeout=self.batch_wait):
            error = message.error()
            if error is None:
                messages.append(message)
            elif error.fatal():
                raise FatalError(f"fatal Kafka error: {error.str()}")
            elif error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                raise FatalError(f"topic {self.full_topic} does not exist")
            elif error.code() != KafkaError._PARTITION_EOF:
                kafka_log.warning("Kafka reports: %s (the client retries by itself)", error.str())
        return messages

    def _process_batch(self, messages):
        """
        Apply, dead-letter and commit one batch; retry it whole on transient failures. The circuit breaker
        is checked after the apply and before anything is dead-lettered or committed.
        """
        started = time.monotonic()
        to_apply = [m for m in messages if not self._skipped_by_replay(m)]
        skipped = len(messages) - len(to_apply)
        attempt = 0
        while True:
            try:
                outcomes, dead = self._apply_batch(to_apply)
                dead_run = self._breaker(to_apply, dead)
                self._dead_letter(dead)
                break
            except TransientError as exc:
                attempt += 1
                delay = min(conf.retry_max_seconds(), 0.2 * 2 ** min(attempt, 10))
                log.warning("batch of %d events not applied (%s); retry %d in %.1f s",
                            len(messages), exc, attempt, delay)
                _close_connections()
                if self._stopping:
                    log.warning("stopping with the batch unapplied and uncommitted; it will be read again")
                    return
                time.sleep(delay)
        self._dead_run = dead_run
        for message, cause in dead:
            log.warning("dead-lettered %s[%d]@%d: %s: %s", message.topic(), message.partition(), message.offset(),
                        type(cause).__name__, cause)
        batch = Stats()
        for outcome in outcomes:
            batch.add(outcome)
        if dead:
            batch.add("dead_lettered", len(dead))
        if skipped:
            batch.add("before_replay_time", skipped)
        for outcome, n in batch.counts.items():
            self.stats.add(outcome, n)
        self.stats.batches += 1
        self._commit(messages)
        log.info("batch %s: %s (%.2f s)", _positions(messages), batch.summary(), time.monotonic() - started)

    def _breaker(self, messages, dead):
        """
        The circuit breaker: the run of consecutive dead letters of one error class once this batch is
        through (an applied event ends a run). More than ``max_dead_run`` in a row is a ``FatalError``,
        raised before this batch is dead-lettered or committed: so many of one kind is the set-up's fault
        (a wrong registry, a producer bug), not the events'. Returns the new run; 0 turns the breaker off.
        """
        classes = {id(message): error_class(cause) for message, cause in dead}
        kind, count = self._dead_run
        for message in messages:
            this = classes.get(id(message))
            kind, count = (this, count + 1 if this == kind else 1) if this else (None, 0)
            if self.max_dead_run and count > self.max_dead_run:
                raise FatalError(
                    f"circuit breaker: more than {self.max_dead_run} events in a row would be dead-lettered as "
                    f"{kind} (the last at {message.topic()}[{message.partition()}]@{message.offset()}); stopped "
                    f"with none of this batch dead-lettered or committed. Fix the cause, or raise "
                    f"ACADEMY_CONSUMER_MAX_CONSECUTIVE_DEAD_LETTERS (0 turns the breaker off)")
        return kind, count

    def _skipped_by_replay(self, message):
        """
        During a ``--from-time`` replay, skip every event the broker timestamped before the time, on every
        partition and for the whole run: the broker's lookup is approximate and timestamps need not grow
        with offsets, so exactly the events at or after the time are applied.
        """
        if self._from_millis is None:
            return False
        _, millis = message.timestamp()
        return 0 <= millis < self._from_millis

    def _apply_batch(self, messages):
        """Apply the events in one transaction, a savepoint each. Returns (outcomes, dead letters)."""
        close_old_connections()
        outcomes, dead = [], []
        try:
            with transaction.atomic():
                for message in messages:
                    try:
                        outcomes.append(self._apply_message(message))
                    except PermanentError as exc:
                        dead.append((message, exc.__cause__ or exc))
        except DatabaseError as exc:  # the transaction's commit, or the connection, failed
            kind = TransientError if classify(exc) is TransientError else FatalError
            raise kind(f"{type(exc).__name__}: {exc}") from exc
        return outcomes, dead

    def _apply_message(self, message):
        """Decode one message and dispatch it to the receivers; returns the apply outcome name."""
        try:
            signal = self.determine_signal(message)  # missing, unknown or duplicated ce_type: UnusableMessageError
            if signal not in ACADEMY_SIGNALS:
                raise AcademyEventRejected(f"{signal.event_type} is not an academy event")
            if not get_message_header_values(message.headers() or [], HEADER_TIME):
                raise AcademyEventRejected("missing ce_time header: the event time is needed for the stale guard")
            metadata = _get_metadata_from_headers(message.headers())
            data = self._deserializer(signal)(
                message.value(), SerializationContext(message.topic(), MessageField.VALUE, message.headers()))
            if not isinstance(data, dict):
                raise AcademyEventRejected("message has no value")
            results = signal.send_event_with_custom_metadata(metadata, **data)
            self._check_receiver_results(results, signal)
        except Exception as exc:  # pylint: disable=broad-except
            kind = classify(exc)
            if kind is PermanentError:
                schema_id = _unknown_schema_id(exc, message.value())
                if schema_id is not None:
                    self._check_unknown_schema(schema_id, message)
                elif _writer_schema_mismatch(exc):
                    self._check_registry_knows_academy(
                        f"the writer schema of {message.topic()}[{message.partition()}]@{message.offset()} is "
                        f"no academy schema")
                raise PermanentError(str(exc)) from _root_cause(exc)
            raise kind(f"{type(exc).__name__}: {exc}") from exc
        outcome = next((r.outcome for _, r in results if hasattr(r, "outcome")), "applied")
        return outcome

    def _check_unknown_schema(self, schema_id, message):
        """
        A schema id the registry does not know is a corrupt message only if the registry is the right one:
        a ``FatalError`` (a configuration fault: nothing dead-lettered or committed) when the registry knows
        none of the academy subjects of the topic, or when a second event uses the same unknown id.
        """
        url = mask_url(settings.EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL)
        seen = self._unknown_schemas.setdefault(schema_id, set())
        seen.add((message.partition(), message.offset()))
        if len(seen) > 1:
            raise FatalError(f"schema id {schema_id} is unknown to the schema registry {url} yet used by {len(seen)} "
                             f"events of {self.full_topic}: is EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL the registry "
                             f"the producers use? (nothing dead-lettered or committed)")
        self._check_registry_knows_academy(f"schema id {schema_id} not found")

    def _check_registry_knows_academy(self, detail):
        """
        A ``FatalError`` (a configuration fault) when the schema registry knows none of the academy subjects
        of the topic: academy events were then produced through another registry, and no event of them can
        be decoded here. Asked once per run, when an event first fails on its schema.
        """
        url = mask_url(settings.EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL)
        if self._registry_has_academy_subjects:
            return
        try:
            subjects = self.schema_registry_client.get_subjects()
        except Exception as exc:  # pylint: disable=broad-except
            raise (TransientError if _registry_unavailable(exc) else FatalError)(
                f"schema registry {url}: {type(exc).__name__}: {exc}") from exc
        prefixes = tuple(f"{self.full_topic}-{signal.event_type}" for signal in ACADEMY_SIGNALS)
        if not any(str(subject).startswith(prefixes) for subject in subjects):
            raise FatalError(f"the schema registry {url} knows none of the academy schemas of {self.full_topic} "
                             f"({detail}; no subject {self.full_topic}-<academy event type>): "
                             f"is EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL right? (nothing dead-lettered or committed)")
        self._registry_has_academy_subjects = True

    def _deserializer(self, signal):
        """Avro through the registry, keeping ``False``/``0``/``""`` (see ``signals.avro``)."""
        if signal not in self._deserializers:
            academy = AcademyAvroSignalDeserializer(signal)
            self._deserializers[signal] = AvroDeserializer(
                schema_str=academy.schema_string(), schema_registry_client=self.schema_registry_client,
                from_dict=lambda record, ctx: academy.from_dict(record))
        return self._deserializers[signal]

    def _dead_letter(self, dead):
        """Send each unusable event to the dead-letter topic with error headers; wait for the broker."""
        if not dead:
            return
        failures = []

        def delivered(err, _msg):
            if err is not None:
                failures.append(err)

        for message, exc in dead:
            headers = list(message.headers() or []) + [
                ("dlq-original-topic", message.topic().encode()),
                ("dlq-original-partition", str(message.partition()).encode()),
                ("dlq-original-offset", str(message.offset()).encode()),
                ("dlq-error-class", error_class(exc).encode()),
                ("dlq-error-message", _error_message(exc)[:4000].encode("utf-8", "replace")),
            ]
            try:
                self.dlq_producer.produce(self.dlq_topic, key=message.key(), value=message.value(), headers=headers,
                                          on_delivery=delivered)
            except (KafkaException, BufferError) as refused:  # before sending (size, full queue)
                failures.append(refused)
        remaining = self.dlq_producer.flush(30)
        if failures or remaining:
            raise TransientError(f"dead-letter topic {self.dlq_topic} did not take {len(failures) + remaining} "
                                 f"event(s): {failures[:1] or 'timed out'}")

    def _commit(self, messages):
        """Commit the offset after the last event of each partition in the batch (and any earlier, uncommitted)."""
        for message in messages:
            key = (message.topic(), message.partition())
            self._uncommitted[key] = max(self._uncommitted.get(key, 0), message.offset() + 1)
        self._commit_uncommitted()

    def _commit_uncommitted(self):
        """
        Commit the offsets of the applied batches not committed yet; True when none is left.

        A failed commit (broker or coordinator unavailable, group rebalancing, ...) is not retried here: its
        offsets are kept and committed with the next batch or after the next poll -- polling is also what lets
        the client reconnect and rejoin its group -- so the loop never stalls on it and nothing applied is
        left uncommitted once the broker answers again. A revoke drops the offsets of its partitions.
        """
        if not self._uncommitted:
            return True
        offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in self._uncommitted.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if error is not None and getattr(error, "fatal", lambda: False)():
                raise FatalError(f"fatal Kafka error on commit: {error}") from exc
            self._commit_failures += 1
            if self._commit_failures & (self._commit_failures - 1) == 0:  # 1st, 2nd, 4th, 8th... failure in a row
                log.warning("offset commit failed (%s), %d time(s) in a row; retried after the next poll",
                            exc, self._commit_failures)
            return False
        if self._commit_failures:
            log.info("offsets committed after %d failed attempt(s)", self._commit_failures)
        self._commit_failures = 0
        self._uncommitted.clear()
        return True

    def _commit_before_exit(self):
        """A clean stop: commit what is still uncommitted, retrying for a few seconds."""
        for attempt in range(1, COMMIT_RETRIES + 1):
            if self._commit_uncommitted():
                return
            if attempt < COMMIT_RETRIES:
                time.sleep(min(1.0, 0.2 * 2 ** attempt))
        log.warning("offsets %s not committed; those events will be read and applied again (harmless)",
                    sorted((partition, offset) for (_, partition), offset in self._uncommitted.items()))


def _check_configured():
    """
    Raise ``ImproperlyConfigured`` when a connection setting is missing or empty -- before edx-event-bus-kafka
    would warn about it (extra stderr lines) and build a consumer that can never connect.
    """
    for name in ("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS", "EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL"):
        if not getattr(settings, name, None):
            raise ImproperlyConfigured(f"{name} is not set")


def _producer_part(config):
    """The settings of ``config`` that also make sense for the dead-letter producer."""
    consumer_only = {"session.timeout.ms", "heartbeat.interval.ms", "max.poll.interval.ms", "group.id",
                     "auto.offset.reset", "enable.auto.commit", "fetch.wait.max.ms", "fetch.min.bytes",
                     "group.instance.id", "partition.assignment.strategy", "enable.partition.eof"}
    return {key: value for key, value in config.items() if key not in consumer_only}


def _positions(messages):
    """``topic[0]@10-19 [2]@5``: where a batch's messages are, per partition."""
    ranges = {}
    for message in messages:
        low, high = ranges.get(message.partition(), (message.offset(), message.offset()))
        ranges[message.partition()] = (min(low, message.offset()), max(high, message.offset()))
    parts = [f"[{p}]@{low}" + (f"-{high}" if high != low else "") for p, (low, high) in sorted(ranges.items())]
    return (messages[0].topic() if messages else "") + " ".join(parts)


def _error_message(exc):
    """The dead letter's ``dlq-error-message``: the exception's message, or what it means when it has none."""
    text = str(exc)
    if text:
        return text
    if isinstance(exc, EOFError):  # fastavro reading past the end of the value
        return "the value ends before the Avro record does: truncated or not written with this schema"
    return f"{type(exc).__name__} (no message)"


def _root_cause(exc):
    """The receiver's own exception rather than edx-event-bus-kafka's ReceiverError wrapper."""
    if isinstance(exc, ReceiverError) and exc.causes:
        return exc.causes[0]
    return exc


def _close_connections():
    for conn in connections.all():
        try:
            conn.close()
        except DatabaseError:
            pass
