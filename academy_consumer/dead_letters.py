"""
Dead letters, written and read in one place: a copy of each event that can never be applied, on the dead-letter
topic, with headers saying where it was and why it failed; and the way to read them back.

A dead letter is the original message -- same key, value and headers -- plus the ``dlq-*`` headers named below:
``dlq-original-topic``, ``dlq-original-partition``, ``dlq-original-offset``, ``dlq-error-class``
(``module.QualifiedName`` of the ``PermanentError`` family member), ``dlq-error-message`` and, on a copy
a redrive sends back, ``dlq-redrive-count``.

``send`` waits until the broker has taken every letter: the consumer commits a batch's offsets only after
that, so an event is never both unapplied and committed. A letter the broker does not take within
``WAIT_SECONDS`` (the producer's ``message.timeout.ms``: librdkafka gives up on it then) is a
``TransientError``: the batch is retried, never skipped. A stop (SIGTERM) cuts the wait short the same way.

``list_letters`` reads the dead-letter topic from its beginning to its current end by assignment (no group is
joined, nothing is committed) and needs no database; ``Letter.of`` parses one letter's headers. The redrive
(``redrive.py``) reads them with the same functions.
"""

import dataclasses
import datetime
import re
import time

from confluent_kafka import KafkaException, Producer, TopicPartition
from edx_event_bus_kafka.internal.config import get_full_topic, load_common_settings

from academy_consumer import conf, errors, kafka, preflight
from academy_consumer.errors import TransientError
from academy_consumer.redact import mask_urls

MESSAGE_MAX_BYTES = 1_000_000_000  # librdkafka's maximum: the broker, which took the original, judges the size
ERROR_MESSAGE_MAX_CHARS = 4000
WAIT_SECONDS = 10.0  # longest wait for the broker to take a batch's dead letters (then the batch is retried)
FLUSH_SLICE_SECONDS = 0.2  # how often that wait looks whether it should stop
READ_TIMEOUT_SECONDS = 30.0

# The headers a dead letter carries besides the original's (all start with PREFIX).
PREFIX = "dlq-"
ORIGINAL_TOPIC = "dlq-original-topic"
ORIGINAL_PARTITION = "dlq-original-partition"
ORIGINAL_OFFSET = "dlq-original-offset"
ERROR_CLASS = "dlq-error-class"
ERROR_MESSAGE = "dlq-error-message"
REDRIVE_COUNT = "dlq-redrive-count"

# ASCII digits only (str.isdigit also takes "²", which int() refuses), and few enough for int() to take.
_INTEGER = re.compile(r"-?[0-9]{1,18}")
_COUNT = re.compile(r"[0-9]{1,18}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# What stops ``list_letters`` and the redrive besides the consumer's errors (defined once, in errors.py).
NoTopic = errors.NoTopic  # no dead-letter topic (exit 2)
KafkaUnavailable = errors.KafkaUnavailable  # exit 1


# --- writing -------------------------------------------------------------------------------------------------

@dataclasses.dataclass(slots=True)
class DeadLetter:
    """One message to dead-letter and why: ``error`` is a ``PermanentError`` (its class and message are sent)."""

    message: object  # a confluent-kafka Message (or anything with its accessors)
    error: Exception
    academy: str | None = None  # the academy's uuid (else its title) when the event could be decoded

    @property
    def reason(self):
        return error_message(self.error)


def new_producer(stats_cb=None):
    """
    The dead-letter producer. A dead letter is as large as the event it copies, which the broker took
    (librdkafka's default 1 MB client-side limit would refuse it): let the broker judge the size. librdkafka
    gives up on a letter after ``WAIT_SECONDS`` (``send`` then raises, and the batch is retried). With
    ``stats_cb``, its statistics every second (``monitoring.BrokerWatch``).
    """
    watched = {"statistics.interval.ms": kafka.STATISTICS_INTERVAL_MS, "stats_cb": stats_cb} if stats_cb else {}
    return kafka.kafka_client(Producer, {
        **kafka.bus_config(), "enable.idempotence": True, "acks": "all", "message.max.bytes": MESSAGE_MAX_BYTES,
        "message.timeout.ms": int(WAIT_SECONDS * 1000), **watched, **conf.producer_kafka_config()})


def headers(letter: DeadLetter):
    """The dead letter's headers: the original's, then the ``dlq-*`` ones."""
    message = letter.message
    return list(message.headers() or []) + [
        (ORIGINAL_TOPIC, message.topic().encode()),
        (ORIGINAL_PARTITION, str(message.partition()).encode()),
        (ORIGINAL_OFFSET, str(message.offset()).encode()),
        (ERROR_CLASS, errors.error_class(letter.error).encode()),
        (ERROR_MESSAGE, letter.reason[:ERROR_MESSAGE_MAX_CHARS].encode("utf-8", "replace")),
    ]


def send(producer, topic, letters, stopping=None):
    """
    Produce ``letters`` to ``topic`` and wait until the broker has them all; ``TransientError`` if not, within
    ``WAIT_SECONDS`` (and a second more for librdkafka's own verdict), or as soon as ``stopping()`` is true.
    """
    if not letters:
        return
    failures = []

    def delivered(err, _msg):
        if err is not None:
            failures.append(err)

    for letter in letters:
        message = letter.message
        try:
            producer.produce(topic, key=message.key(), value=message.value(), headers=headers(letter),
                             on_delivery=delivered)
        except (KafkaException, BufferError) as refused:  # before sending (size, full queue)
            failures.append(refused)
    deadline = time.monotonic() + WAIT_SECONDS + 1.0
    remaining = producer.flush(0)
    while remaining and not failures and time.monotonic() < deadline:
        if stopping is not None and stopping():
            raise TransientError(f"stopping with {remaining} dead letter(s) for {topic} not acknowledged")
        remaining = producer.flush(min(FLUSH_SLICE_SECONDS, max(0.0, deadline - time.monotonic())))
    if failures or remaining:
        raise TransientError(f"dead-letter topic {topic} did not take {len(failures) + remaining} "
                             f"event(s): {failures[:1] or 'timed out'}")


def error_message(exc):
    """The ``dlq-error-message``: the exception's message, or what it means when it has none."""
    text = str(exc)
    if text:
        return text
    return f"{type(exc).__name__} (no message)"


def header_text(message, name, limit=100):
    """The first ``name`` header of ``message`` as one short line of text, or ``-`` (for log lines)."""
    for key, value in message.headers() or []:
        if key == name:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")
            return " ".join(text.split())[:limit] or "-"
    return "-"


# --- reading -------------------------------------------------------------------------------------------------

def redrive_group_id():
    """The consumer group that holds the redrive position on the dead-letter topic."""
    return f"{conf.group_id()}-redrive"


def _header(pairs, name):
    values = [value for key, value in pairs if key == name and value is not None]
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
        found = list(message.headers() or [])
        millis = message.timestamp()[1]

        def number(name):
            text = _header(found, name)
            return int(text) if text and _INTEGER.fullmatch(text) else None

        return cls(message, message.partition(), message.offset(),
                   datetime.datetime.fromtimestamp(millis / 1000, datetime.timezone.utc) if millis >= 0 else None,
                   _header(found, ORIGINAL_TOPIC), number(ORIGINAL_PARTITION),
                   number(ORIGINAL_OFFSET), _header(found, ERROR_CLASS),
                   _header(found, ERROR_MESSAGE), _header(found, "ce_type"),
                   academy_uuid_of(message.key()), redrive_count_of(_header(found, REDRIVE_COUNT)))

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
            if kafka.polled_error(message.error()) == kafka.FATAL:
                raise KafkaUnavailable(f"reading {topic}: {message.error().str()}")
            continue
        p = message.partition()
        if p not in wanted or message.offset() >= wanted[p][1] or message.offset() < positions[p]:
            continue
        positions[p] = message.offset() + 1
        deadline = time.monotonic() + READ_TIMEOUT_SECONDS
        yield message


def bounds(consumer, topic, partitions):
    """(low, high) watermark per partition."""
    try:
        return {p: kafka.watermark(consumer, topic, p, READ_TIMEOUT_SECONDS) for p in partitions}
    except KafkaException as exc:
        raise KafkaUnavailable(f"Kafka did not say where {topic} ends: {mask_urls(str(exc))}") from None


def redrive_position(consumer, topic, partitions):
    """The redrive group's committed offset per partition (None: none committed)."""
    try:
        return kafka.committed(consumer, topic, partitions, READ_TIMEOUT_SECONDS)
    except KafkaException as exc:
        raise KafkaUnavailable(f"Kafka did not give the redrive position: {mask_urls(str(exc))}") from None


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
    consumer = kafka.new_reader(redrive_group_id(), common)
    try:
        partitions = partitions_of(consumer, topic)
        marks = bounds(consumer, topic, partitions)
        position = redrive_position(consumer, topic, partitions)
        letters = []
        for message in read_range(consumer, topic, {p: low for p, (low, _) in marks.items()},
                                  {p: high for p, (_, high) in marks.items()}):
            letter = Letter.of(message)
            letter.redriven = position.get(letter.partition) is not None and letter.offset < position[letter.partition]
            if letter.matches(since, error_class):
                letters.append(letter)
        return letters
    finally:
        consumer.close()
