"""
The way back from the dead-letter topic: list its letters, and redrive them through the consumer's own apply path.

``list_letters`` reads the dead-letter topic from its beginning to its current end by assignment (no group is
joined, nothing is committed) and needs no database.

``Redrive`` is an ``AcademyEventConsumer`` (same decoding through the schema registry, receivers, apply layer,
transaction and error classification) that reads the dead-letter topic instead of the academy topic. Its rules:

* Position: the consumer group ``<ACADEMY_CONSUMER_GROUP_ID>-redrive`` on the dead-letter topic. A run reads from
  the committed position (the beginning when there is none) to the end the topic had when the run started, and
  commits after each batch, once its events are applied and its failures re-dead-lettered (like the consumer).
* Filters (``--since``, ``--error-class``) never skip a letter for good: in each partition the position stops at
  the first letter the filters leave out, so a later run (say without filters) still reaches it. A matching
  letter after that point is applied all the same (harmless: idempotent and stale-guarded) but, should it fail
  again, it is left where it is rather than copied (the next run reaching it tries it again): nothing is
  duplicated.
* What fails again goes back to the dead-letter topic: the event's key, value and own headers, its original
  ``dlq-original-topic/-partition/-offset``, fresh ``dlq-error-class`` / ``dlq-error-message`` and
  ``dlq-redrive-count`` incremented. When those copies directly follow the run's end, the position is
  committed past them too, so a rerun does nothing: a letter that failed again is retried only once the
  redrive position is moved back to it.
* A transient failure (database down, dead-letter topic unreachable) re-dead-letters nothing: the batch is
  retried a few times with backoff, then the run stops (exit 1) with that batch uncommitted.
* The letters a run applies are sent to the host's own receivers of their signal, as the consumer sends the
  events it applies (``host_signals``: after the batch's transaction and re-dead-lettering, before its
  commit), when they are applied: out of their original order.
* Dry run: every matching letter is applied inside one transaction that is rolled back; nothing is
  re-dead-lettered, nothing committed, nothing sent to the host's receivers.
"""

import dataclasses
import datetime
import logging
import re
import time

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition
from django.db import transaction
from edx_event_bus_kafka.internal.config import get_full_topic, load_common_settings

from academy_consumer import conf, errors, host_signals, preflight
from academy_consumer.consumer import (
    AcademyEventConsumer,
    TransientError,
    _bus_config,
    _close_connections,
    kafka_client,
)
from academy_consumer.redact import mask_urls

log = logging.getLogger(__name__)

REDRIVE_COUNT = "dlq-redrive-count"
REDRIVE_ATTEMPTS = 5  # tries of a batch that meets a transient failure before the run stops
READ_TIMEOUT_SECONDS = 30.0
# ASCII digits only (str.isdigit also takes "²", which int() refuses), and few enough for int() to take.
_INTEGER = re.compile(r"-?[0-9]{1,18}")
_COUNT = re.compile(r"[0-9]{1,18}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# What stops ``list_letters`` and the redrive besides the consumer's errors (defined once, in errors.py).
NoTopic = errors.NoTopic  # no dead-letter topic (exit 2)
KafkaUnavailable = errors.KafkaUnavailable  # exit 1


def redrive_group_id():
    """The consumer group that holds the redrive position on the dead-letter topic."""
    return f"{conf.group_id()}-redrive"


def _header(headers, name):
    values = [value for key, value in headers if key == name and value is not None]
    return values[-1].decode("utf-8", "replace") if values else None


def redrive_count_of(text):
    """``dlq-redrive-count`` as a non-negative integer; missing, negative or garbage counts as 0."""
    return int(text) if text and _COUNT.fullmatch(text) else 0


def academy_uuid_of(key):
    """The academy uuid a message key carries (Avro string, schema-registry framed, or plain text), else None."""
    if not key:
        return None
    found = _UUID.search(key.decode("latin-1"))
    return found.group(0).lower() if found else None


@dataclasses.dataclass
class Letter:
    """One dead letter: where it is in the dead-letter topic, where the event came from, and why it failed."""

    message: object = dataclasses.field(repr=False)
    partition: int
    offset: int
    dead_lettered_at: datetime.datetime | None
    original_topic: str | None
    original_partition: int | None
    original_offset: int | None
    error_class: str | None
    error_message: str | None
    event_type: str | None
    academy_uuid: str | None
    redrive_count: int
    redriven: bool = False  # before the redrive position: a redrive run has handled it

    @classmethod
    def of(cls, message):
        """A ``Letter`` from a message of the dead-letter topic (its headers, key and value)."""
        headers = list(message.headers() or [])
        millis = message.timestamp()[1]

        def number(name):
            text = _header(headers, name)
            return int(text) if text and _INTEGER.fullmatch(text) else None

        return cls(message, message.partition(), message.offset(),
                   datetime.datetime.fromtimestamp(millis / 1000, datetime.timezone.utc) if millis >= 0 else None,
                   _header(headers, "dlq-original-topic"), number("dlq-original-partition"),
                   number("dlq-original-offset"), _header(headers, "dlq-error-class"),
                   _header(headers, "dlq-error-message"), _header(headers, "ce_type"),
                   academy_uuid_of(message.key()), redrive_count_of(_header(headers, REDRIVE_COUNT)))

    def matches(self, since=None, error_class=None):
        """``since``: dead-lettered at or after it; ``error_class``: the full class name or its last part."""
        if since is not None and (self.dead_lettered_at is None or self.dead_lettered_at < since):
            return False
        if error_class and error_class not in (self.error_class, (self.error_class or "").rpartition(".")[2]):
            return False
        return True

    def as_dict(self, now=None):
        now = now or datetime.datetime.now(datetime.timezone.utc)
        age = (now - self.dead_lettered_at).total_seconds() if self.dead_lettered_at else None
        return {
            "partition": self.partition, "offset": self.offset,
            "dead_lettered_at": self.dead_lettered_at.isoformat() if self.dead_lettered_at else None,
            "age_seconds": round(age, 1) if age is not None else None,
            "original_topic": self.original_topic, "original_partition": self.original_partition,
            "original_offset": self.original_offset, "error_class": self.error_class,
            "error_message": self.error_message, "event_type": self.event_type,
            "academy_uuid": self.academy_uuid, "redrive_count": self.redrive_count, "redriven": self.redriven,
        }


class AsEvent:
    """
    A dead letter presented as the event it was, to the consumer's apply and dead-letter code: the original
    topic, partition and offset, the event's own headers (no ``dlq-*``) plus the incremented redrive count.
    """

    def __init__(self, letter):
        self.letter = letter
        own = [(k, v) for k, v in (letter.message.headers() or []) if not k.startswith("dlq-")]
        self._headers = own + [(REDRIVE_COUNT, str(letter.redrive_count + 1).encode())]

    def topic(self):
        return self.letter.original_topic or self.letter.message.topic()

    def partition(self):
        return self.letter.original_partition if self.letter.original_partition is not None else -1

    def offset(self):
        return self.letter.original_offset if self.letter.original_offset is not None else -1

    def headers(self):
        return list(self._headers)

    def key(self):
        return self.letter.message.key()

    def value(self):
        return self.letter.message.value()

    def timestamp(self):
        return self.letter.message.timestamp()

    def error(self):
        return None


def partitions_of(client, topic):
    """The partition ids of ``topic``; ``NoTopic`` when it does not exist, ``KafkaUnavailable`` on no answer."""
    try:
        return preflight.check_topic(client, topic, READ_TIMEOUT_SECONDS,
                                     what="dead-letter topic", setting="ACADEMY_EVENTS_DLQ_TOPIC")
    except preflight.NoSuchTopic as exc:
        raise NoTopic(str(exc)) from None
    except preflight.NotReady as exc:
        raise KafkaUnavailable(str(exc)) from None


def read_range(consumer, topic, starts, ends):
    """
    Yield the messages of ``topic`` from ``starts[p]`` up to (not including) ``ends[p]`` for each partition,
    by assignment, in offset order per partition.
    """
    wanted = {p: (starts[p], ends[p]) for p in ends if starts[p] < ends[p]}
    if not wanted:
        return
    consumer.assign([TopicPartition(topic, p, start) for p, (start, _) in wanted.items()])
    positions = {p: start for p, (start, _) in wanted.items()}
    deadline = time.monotonic() + READ_TIMEOUT_SECONDS
    while any(positions[p] < wanted[p][1] for p in wanted):
        if time.monotonic() > deadline:
            raise KafkaUnavailable(f"reading {topic} stalled at {positions} (end {ends})")
        message = consumer.poll(0.2)
        if message is None:
            continue
        if message.error():
            if message.error().code() != KafkaError._PARTITION_EOF:  # pylint: disable=protected-access
                if message.error().fatal():
                    raise KafkaUnavailable(f"reading {topic}: {message.error().str()}")
            continue
        p = message.partition()
        if p not in wanted or message.offset() >= wanted[p][1] or message.offset() < positions[p]:
            continue
        positions[p] = message.offset() + 1
        deadline = time.monotonic() + READ_TIMEOUT_SECONDS
        yield message


def _bounds(consumer, topic, partitions):
    """(low, high) watermark per partition."""
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=READ_TIMEOUT_SECONDS)
                for p in partitions}
    except KafkaException as exc:
        raise KafkaUnavailable(f"Kafka did not say where {topic} ends: {mask_urls(str(exc))}") from None


def _committed(consumer, topic, partitions):
    """The redrive group's committed offset per partition (None: none committed)."""
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=READ_TIMEOUT_SECONDS)
    except KafkaException as exc:
        raise KafkaUnavailable(f"Kafka did not give the redrive position: {mask_urls(str(exc))}") from None
    return {tp.partition: (tp.offset if tp.offset >= 0 and tp.offset != OFFSET_INVALID else None) for tp in found}


def list_letters(since=None, error_class=None):
    """
    Every dead letter matching the filters, oldest first per partition, read from the beginning to the current
    end of the dead-letter topic; ``redriven`` tells whether the redrive position has passed it.
    """
    common = load_common_settings()
    if common is None:
        raise KafkaUnavailable("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS is not set")
    topic = get_full_topic(conf.dlq_topic())
    # The redrive group id only to ask for its position (OffsetFetch): assign() joins no group, nothing is committed.
    config = {**conf.reader_kafka_config(), **common, "group.id": redrive_group_id(), "enable.auto.commit": False,
              "enable.partition.eof": False}
    consumer = kafka_client(Consumer, config)
    try:
        partitions = partitions_of(consumer, topic)
        bounds = _bounds(consumer, topic, partitions)
        position = _committed(consumer, topic, partitions)
        letters = []
        for message in read_range(consumer, topic, {p: low for p, (low, _) in bounds.items()},
                                  {p: high for p, (_, high) in bounds.items()}):
            letter = Letter.of(message)
            letter.redriven = position.get(letter.partition) is not None and letter.offset < position[letter.partition]
            if letter.matches(since, error_class):
                letters.append(letter)
        return letters
    finally:
        consumer.close()


@dataclasses.dataclass
class Result:
    """One redriven letter: the apply outcome (``created``, ``updated``, ... or ``failed``) and why."""

    letter: Letter
    outcome: str
    reason: str = ""
    back_in_dlq: bool = False

    def as_dict(self):
        return {**self.letter.as_dict(), "outcome": self.outcome, "reason": self.reason,
                "back_in_dead_letter_topic": self.back_in_dlq}


class _RecordingProducer:
    """The dead-letter producer, noting where each copy landed (to commit past the run's own copies)."""

    def __init__(self, producer):
        self.producer = producer
        self.landed = {}  # partition -> {offsets}

    def produce(self, topic, on_delivery, **kwargs):
        """``Producer.produce``, noting the partition and offset each copy lands at."""
        def delivered(err, msg):
            if err is None:
                self.landed.setdefault(msg.partition(), set()).add(msg.offset())
            on_delivery(err, msg)
        self.producer.produce(topic, on_delivery=delivered, **kwargs)

    def flush(self, *args):
        return self.producer.flush(*args)


class Redrive(AcademyEventConsumer):
    """Re-apply dead letters through the consumer's apply path; see the module docstring for the rules."""

    def __init__(self, *, since=None, error_class=None, dry_run=False):
        super().__init__(conf.topic(), redrive_group_id())
        self.since, self.error_class, self.dry_run = since, error_class, dry_run
        self.dlq_producer = _RecordingProducer(self.dlq_producer)
        self.max_dead_run = 0  # no circuit breaker: letters failing again is what a redrive may well find
        self.results = []
        self._left_out = {}  # partition -> offset of the first letter the filters left out

    def _create_consumer(self):
        """Reads the dead-letter topic by assignment and commits for its group: no static membership."""
        return kafka_client(Consumer, {
            **conf.reader_kafka_config(), **_bus_config(), "group.id": self.group_id, "enable.auto.commit": False,
            "enable.partition.eof": False})

    def redrive(self):
        """Redrive the matching letters from the position to the current end; returns the ``Result`` s."""
        try:
            partitions = partitions_of(self.consumer, self.dlq_topic)
            bounds = _bounds(self.consumer, self.dlq_topic, partitions)
            committed = _committed(self.consumer, self.dlq_topic, partitions)
            starts = {p: max(low, committed.get(p) or 0) for p, (low, _) in bounds.items()}
            ends = {p: high for p, (_, high) in bounds.items()}
            self._left_out = {}  # partition -> offset of the first letter the filters left out
            if self.dry_run:
                with transaction.atomic():
                    self._run(starts, ends)
                    transaction.set_rollback(True)
            else:
                self._run(starts, ends)
                self._commit_past_own_copies(ends)
                self._commit_before_exit()
        finally:
            self.consumer.close()
            self.dlq_producer.flush(10)
        return self.results

    def _run(self, starts, ends):
        """Read the dead-letter topic from ``starts`` to ``ends`` and handle the letters batch by batch."""
        batch = []
        for message in read_range(self.consumer, self.dlq_topic, starts, ends):
            batch.append(Letter.of(message))
            if len(batch) >= self.batch_size:
                self._handle(batch)
                batch = []
        if batch:
            self._handle(batch)

    def _handle(self, letters):
        """One batch: apply the matching letters, re-dead-letter what fails again, then commit."""
        chosen = []
        for letter in letters:
            if letter.matches(self.since, self.error_class):
                chosen.append(letter)
            else:
                self._left_out.setdefault(letter.partition, letter.offset)
        if self.dry_run:
            self._dry(chosen)
            return
        for attempt in range(1, REDRIVE_ATTEMPTS + 1):
            try:
                events = [AsEvent(letter) for letter in chosen]
                applied = self._apply_batch(events)
                outcomes, dead = applied.outcomes, applied.dead
                failed = {id(dead_letter.message): dead_letter.error for dead_letter in dead}
                self._send_dead_letters([d for d in dead if self._passed(d.message.letter)])
                break
            except TransientError as exc:
                if attempt == REDRIVE_ATTEMPTS:
                    raise TransientError(f"{exc} ({attempt} attempts; this batch was not committed)") from exc
                delay = min(conf.retry_max_seconds(), 0.2 * 2 ** attempt)
                log.warning("batch of %d dead letters not redriven (%s); retry %d in %.1f s", len(chosen), exc,
                            attempt, delay)
                _close_connections()
                time.sleep(delay)
        self._record(events, outcomes, failed)
        for letter in letters:
            if self._passed(letter):
                key = (self.dlq_topic, letter.partition)
                self._uncommitted[key] = max(self._uncommitted.get(key, 0), letter.offset + 1)
        host_signals.send_applied(applied.events, self.monitor)  # as the consumer: applied, not yet committed
        self._commit_uncommitted()

    def _passed(self, letter):
        """Whether the position will move past ``letter``: no letter before it in its partition was left out."""
        first = self._left_out.get(letter.partition)
        return first is None or letter.offset < first

    def _record(self, events, outcomes, failed, dry_run=False):
        """One ``Result`` per redriven letter: its outcome, or ``failed`` with the reason it failed again."""
        outcomes = iter(outcomes)
        for event in events:
            cause = failed.get(id(event))
            if cause is None:
                self.results.append(Result(event.letter, next(outcomes)))
            else:
                self.results.append(Result(event.letter, "failed", f"{type(cause).__name__}: {cause}",
                                           back_in_dlq=not dry_run and self._passed(event.letter)))

    def _dry(self, letters):
        """The same apply, inside the dry run's rolled-back transaction; nothing is sent or committed."""
        events = [AsEvent(letter) for letter in letters]
        applied = self._apply_batch(events)
        self._record(events, applied.outcomes, {id(d.message): d.error for d in applied.dead}, dry_run=True)

    def _commit_past_own_copies(self, ends):
        """Move the position over this run's own copies when they directly follow the run's end."""
        for partition, end in ends.items():
            if partition in self._left_out:
                continue
            landed, position = self.dlq_producer.landed.get(partition, set()), end
            while position in landed:
                position += 1
            if position > end:
                self._uncommitted[(self.dlq_topic, partition)] = position
