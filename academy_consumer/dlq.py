"""
Sending dead letters: a copy of each event that can never be applied, on the dead-letter topic.

A dead letter is the original message -- same key, value and headers -- plus headers saying where it was
and why it failed: ``dlq-original-topic``, ``dlq-original-partition``, ``dlq-original-offset``,
``dlq-error-class`` (``module.QualifiedName`` of the ``PermanentError`` family member) and
``dlq-error-message``. ``dead_letters list`` and ``dead_letters redrive`` read them back.

``send`` waits until the broker has taken every letter: the consumer commits a batch's offsets only after
that, so an event is never both unapplied and committed. A letter the broker does not take is a
``TransientError`` (the batch is retried).
"""

import dataclasses

from confluent_kafka import KafkaException

from academy_consumer.errors import TransientError, error_class

MESSAGE_MAX_BYTES = 1_000_000_000  # librdkafka's maximum: the broker, which took the original, judges the size
ERROR_MESSAGE_MAX_CHARS = 4000
FLUSH_SECONDS = 30


@dataclasses.dataclass(slots=True)
class DeadLetter:
    """One message to dead-letter and why: ``error`` is a ``PermanentError`` (its class and message are sent)."""

    message: object  # a confluent-kafka Message (or anything with its accessors)
    error: Exception
    academy: str | None = None  # the academy's uuid (else its title) when the event could be decoded

    @property
    def reason(self):
        return error_message(self.error)


def headers(letter: DeadLetter):
    """The dead letter's headers: the original's, then the ``dlq-*`` ones."""
    message = letter.message
    return list(message.headers() or []) + [
        ("dlq-original-topic", message.topic().encode()),
        ("dlq-original-partition", str(message.partition()).encode()),
        ("dlq-original-offset", str(message.offset()).encode()),
        ("dlq-error-class", error_class(letter.error).encode()),
        ("dlq-error-message", letter.reason[:ERROR_MESSAGE_MAX_CHARS].encode("utf-8", "replace")),
    ]


def send(producer, topic, letters):
    """Produce ``letters`` to ``topic`` and wait until the broker has them all; ``TransientError`` if not."""
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
    remaining = producer.flush(FLUSH_SECONDS)
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
