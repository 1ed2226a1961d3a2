"""
``tests.kafka_messages.KafkaMessage`` answers as a ``confluent_kafka.Message`` consumed from a real broker (the
dev stack's): built from what was produced, every accessor the product reads gives what the consumed message gives.
"""

import time

from confluent_kafka import Consumer, TopicPartition

from tests.kafka_messages import KafkaMessage

PRODUCED = [  # (value, headers, key) as produced
    (b"framed avro", [("ce_type", b"org.openedx.enterprise.academy.created.v1"), ("ce_id", None),
                      ("twice", b"1"), ("twice", b"2"), ("ce_time", "2026-03-01T12:00:00+00:00".encode())], b"key"),
    (b"", [], None),  # an empty value, no headers, no key
    (None, [("only", b"header")], b"tombstone"),  # no value at all
]


def consume(devstack, partition, count, timeout=15.0):
    """The first ``count`` messages of ``partition`` of the academy topic, read by assignment."""
    consumer = Consumer(devstack.stack.consumer_config("stand-in-check", {"enable.auto.commit": False}))
    try:
        consumer.assign([TopicPartition(devstack.topic, partition, 0)])
        found, deadline = [], time.monotonic() + timeout
        while len(found) < count and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                found.append(message)
        assert len(found) == count, found
        return found
    finally:
        consumer.close()


def test_the_stand_in_answers_as_a_consumed_message(devstack):
    for value, headers, key in PRODUCED:
        devstack.produce_raw(value, headers=headers, key=key, partition=1)
    for (value, headers, key), real in zip(PRODUCED, consume(devstack, 1, len(PRODUCED))):
        stand_in = KafkaMessage(topic=devstack.topic, partition=1, offset=real.offset(), key=key, value=value,
                                headers=headers, timestamp_ms=real.timestamp()[1])
        for accessor in ("topic", "partition", "offset", "key", "value", "headers", "timestamp", "error"):
            assert getattr(stand_in, accessor)() == getattr(real, accessor)(), accessor
        assert len(stand_in) == len(real)
