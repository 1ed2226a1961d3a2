"""
Replay planning: where each assigned partition starts, and which events a ``--from-time`` replay skips.

* ``--from-beginning``: every partition from its earliest retained event.
* ``--from-offset P:O``: the partition must be one of the topic's and the offset at most its end (else
  ``BadStart``): Kafka would otherwise reset it to the earliest event, a silent replay of everything. An
  offset before the partition's start (older events deleted) starts at its start, with a warning.
* ``--from-time T``: the broker's timestamp lookup (approximate; the beginning where it cannot answer),
  and in every case events the broker timestamped before ``T`` are skipped on every partition, for the
  whole run: timestamps need not grow with offsets, so exactly the events at or after ``T`` are applied.
"""

import dataclasses
import datetime
import logging
import math

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from academy_consumer import kafka
from academy_consumer.errors import FatalError

log = logging.getLogger(__name__)

LOOKUP_TIMEOUT_SECONDS = 10.0


class BadStart(ValueError):
    """The replay start does not fit the topic (a partition it does not have, an offset past the end)."""


@dataclasses.dataclass
class Start:
    """Where to start reading the assigned partitions (replay); nothing set means "the committed offset"."""

    beginning: bool = False
    offsets: dict = dataclasses.field(default_factory=dict)  # partition -> offset
    time: datetime.datetime | None = None

    @property
    def from_millis(self):
        """The replay time in Kafka's milliseconds (an event in the same millisecond is at the time), or None."""
        return None if self.time is None else math.floor(self.time.timestamp() * 1000)

    def skips(self, message):
        """Whether a ``--from-time`` replay skips ``message``: the broker timestamped it before the time."""
        millis = self.from_millis
        if millis is None:
            return False
        _, stamp = message.timestamp()
        return 0 <= stamp < millis


def plan(consumer, topic, start: Start, partitions):
    """
    ``start`` resolved into ``{partition: offset}`` for the partitions of ``topic`` (once, before
    subscribing); empty when the group's committed offsets apply. ``consumer`` is a confluent-kafka client.
    """
    if start.beginning:
        return dict.fromkeys(partitions, OFFSET_BEGINNING)
    if start.offsets:
        for partition, offset in sorted(start.offsets.items()):
            if partition not in partitions:
                raise BadStart(f"topic {topic} has no partition {partition} "
                               f"(it has {len(partitions)}: 0-{len(partitions) - 1})")
            low, high = watermarks(consumer, topic, partition)
            if offset > high:
                raise BadStart(f"--from-offset {partition}:{offset} is past the end of partition {partition} "
                               f"of {topic} (its next offset is {high})")
            if offset < low:
                log.warning("partition %d starts at offset %d now (older events were deleted): reading from %d",
                            partition, low, low)
        return dict(start.offsets)
    if start.time is None:
        return {}
    asked = [TopicPartition(topic, p, int(start.from_millis)) for p in partitions]
    try:
        answers = consumer.offsets_for_times(asked, timeout=LOOKUP_TIMEOUT_SECONDS)
    except KafkaException as exc:
        raise FatalError(f"Kafka did not answer the timestamp lookup: {exc}") from exc
    # -1: the broker could not answer, or nothing is that new
    offsets = {found.partition: found.offset if found.offset >= 0 else OFFSET_BEGINNING for found in answers}
    log.info("replay from %s: start offsets %s (-2: the beginning); older events are skipped",
             start.time.isoformat(), offsets)
    return offsets


def watermarks(consumer, topic, partition):
    """``(low, high)`` offsets of a partition; ``FatalError`` when Kafka does not say."""
    try:
        return kafka.watermark(consumer, topic, partition, LOOKUP_TIMEOUT_SECONDS)
    except KafkaException as exc:
        raise FatalError(f"Kafka did not say where partition {partition} ends: {exc}") from exc
