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
* replay: ``start`` can reset the assigned partitions to the beginning, to given offsets, or to a time
  (the broker's timestamp lookup, else a scan that skips events older than the time);
* ``stop()`` (SIGTERM/SIGINT) lets the batch in hand finish and commit; fatal errors raise.
"""

import datetime
import logging
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

from academy_consumer import conf
from academy_consumer.apply import is_transient
from academy_consumer.receivers import AcademyEventRejected
from signals import ACADEMY_SIGNALS
from signals.avro import AcademyAvroSignalDeserializer

log = logging.getLogger(__name__)

COMMIT_RETRIES = 5
DLQ_MESSAGE_MAX_BYTES = 1_000_000_000  # librdkafka's maximum


class TransientError(Exception):
    """The batch could not be applied now; retry it (never skip it)."""


class FatalError(Exception):
    """The consumer cannot go on (misconfiguration, missing tables, fatal Kafka error)."""


class PermanentError(Exception):
    """This one event can never be applied: dead-letter it."""


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
        exc = exc.__cause__ or exc.__context__
    return False


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
                 max_events=None, until_idle=None, assignment_timeout=60.0):
        self.start = start or Start()
        self.batch_size = batch_size or conf.batch_size()
        self.batch_wait = conf.batch_wait_seconds() if batch_wait is None else batch_wait
        self.max_events = max_events
        self.until_idle = until_idle
        self.assignment_timeout = max(assignment_timeout, until_idle or 0)
        self.stats = Stats()
        self._stopping = False
        self._assigned = False
        self._scanning = set()  # partitions read from the beginning, skipping events older than start.time
        self._start_offsets = {}  # partition -> offset to seek on first assignment
        self._uncommitted = {}  # (topic, partition) -> offset after the newest applied event, until committed
        self._commit_failures = 0
        self._deserializers = {}
        _check_configured()
        super().__init__(topic or conf.topic(), group_id or conf.group_id())
        if self.schema_registry_client is None:
            raise ImproperlyConfigured("EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL is not set")
        self.full_topic = get_full_topic(self.topic)
        self.dlq_topic = get_full_topic(conf.dlq_topic(self.topic))
        # A dead letter is as large as the event it copies, which the broker took (librdkafka's default 1 MB
        # client-side limit would refuse it): let the broker judge the size.
        self.dlq_producer = Producer({**self._common_config(), "enable.idempotence": True, "acks": "all",
                                      "message.max.bytes": DLQ_MESSAGE_MAX_BYTES,
                                      **_producer_part(conf.kafka_config())})

    # --- configuration -------------------------------------------------------------------------------

    @staticmethod
    def _common_config():
        config = load_common_settings()
        if config is None:
            raise ImproperlyConfigured("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS is not set")
        return config

    def _create_consumer(self):
        """The stock consumer's configuration, plus: start at the earliest event; no auto-commit."""
        return Consumer({
            **self._common_config(),
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **conf.kafka_config(),
        })

    # --- replay: where each partition starts ---------------------------------------------------------

    def _plan_start(self):
        """Resolve ``self.start`` into an offset per partition (asked once, before subscribing)."""
        if not (self.start.beginning or self.start.offsets or self.start.time):
            return
        metadata = self.consumer.list_topics(self.full_topic, timeout=30)
        topic = metadata.topics.get(self.full_topic)
        if topic is None or topic.error is not None:
            raise FatalError(f"topic {self.full_topic} does not exist")
        partitions = sorted(topic.partitions)
        unknown = set(self.start.offsets) - set(partitions)
        if unknown:
            raise FatalError(f"topic {self.full_topic} has no partition {sorted(unknown)[0]}")
        if self.start.beginning:
            self._start_offsets = dict.fromkeys(partitions, OFFSET_BEGINNING)
        elif self.start.offsets:
            self._start_offsets = dict(self.start.offsets)
        else:
            millis = int(self.start.time.timestamp() * 1000)
            asked = [TopicPartition(self.full_topic, p, millis) for p in partitions]
            for found in self.consumer.offsets_for_times(asked, timeout=30):
                if found.offset >= 0:
                    self._start_offsets[found.partition] = found.offset
                else:  # the broker could not answer (or nothing is that new): scan by message timestamp
                    self._start_offsets[found.partition] = OFFSET_BEGINNING
                    self._scanning.add(found.partition)
            log.info("replay from %s: offsets %s, scanning partitions %s", self.start.time.isoformat(),
                     self._start_offsets, sorted(self._scanning))

    def _on_assign(self, consumer, partitions):
        for partition in partitions:
            if partition.partition in self._start_offsets:
                partition.offset = self._start_offsets.pop(partition.partition)
        consumer.assign(partitions)
        self._assigned = True
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
        log.info("revoked %s", [p.partition for p in partitions])

    # --- the loop ------------------------------------------------------------------------------------

    def stop(self):
        """Finish the batch in hand, commit it and return from ``run`` (safe from a signal handler)."""
        self._stopping = True

    def run(self):
        """Consume until stopped, idle for ``until_idle`` seconds, or ``max_events`` handled. Returns stats."""
        try:
            self._plan_start()
            self.consumer.subscribe([self.full_topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
            started = self._last_activity = time.monotonic()
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
                if not self._assigned and now - started > self.assignment_timeout:
                    raise FatalError(f"no partition of {self.full_topic} was assigned within "
                                     f"{self.assignment_timeout:.0f} s")
                elif self.until_idle is not None and self._assigned and now - self._last_activity >= self.until_idle:
                    log.info("idle for %.1f s: stopping", self.until_idle)
                    break
            self._commit_before_exit()
        finally:
            self.consumer.close()
            self.dlq_producer.flush(10)
        return self.stats

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
                log.warning("Kafka reports: %s (the client retries by itself)", error.str())
        return messages

    def _process_batch(self, messages):
        """Apply, dead-letter and commit one batch; retry it whole on transient failures."""
        to_apply = [m for m in messages if not self._skipped_by_replay(m)]
        skipped = len(messages) - len(to_apply)
        attempt = 0
        while True:
            try:
                outcomes, dead = self._apply_batch(to_apply)
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
        for outcome in outcomes:
            self.stats.add(outcome)
        if dead:
            self.stats.add("dead_lettered", len(dead))
        if skipped:
            self.stats.add("before_replay_time", skipped)
        self.stats.batches += 1
        self._commit(messages)

    def _skipped_by_replay(self, message):
        """During a scan-based ``--from-time`` replay, skip a partition's events older than the time."""
        if message.partition() not in self._scanning:
            return False
        _, millis = message.timestamp()
        if millis >= 0 and millis < self.start.time.timestamp() * 1000:
            return True
        self._scanning.discard(message.partition())
        return False

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
                        cause = exc.__cause__ or exc
                        dead.append((message, cause))
                        log.warning("dead-lettering %s[%d]@%d: %s: %s", message.topic(), message.partition(),
                                    message.offset(), type(cause).__name__, cause)
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
                raise PermanentError(str(exc)) from _root_cause(exc)
            raise kind(f"{type(exc).__name__}: {exc}") from exc
        outcome = next((r.outcome for _, r in results if hasattr(r, "outcome")), "applied")
        return outcome

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
                ("dlq-error-class", f"{type(exc).__module__}.{type(exc).__qualname__}".encode()),
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
