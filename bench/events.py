"""
The bench's Kafka side, in process (Django set up, no database touched): produce the history, check the
watermarks, and measure raw consume and the two decoders.

Reads are by assignment (``assign`` at offset 0, no group), so no group join or rebalance is timed.
"""

import datetime
import json
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from edx_event_bus_kafka.internal.producer import extract_event_key, get_serializers
from edx_event_bus_kafka.internal.utils import _get_headers_from_metadata
from openedx_events.data import EventsMetadata

from academy_consumer.producer import SIGNALS
from academy_consumer_signals import academy_data_from_dict

SCHEMA = Path(__file__).resolve().parent.parent / "signals" / "schemas" / \
    "org+openedx+enterprise+academy+created+v1_schema.avsc"
KEY_FIELD = "academy.uuid"


def produce(bootstrap, topic, events):
    """Send the history as the product's producer does (its serializers and CloudEvents headers), batched."""
    failures = []
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 10000,
                         "queue.buffering.max.messages": max(100000, 2 * len(events))})
    for event in events:
        signal = SIGNALS[event["action"]]
        data = {"academy": academy_data_from_dict(event["academy"])}
        metadata = EventsMetadata(event_type=signal.event_type, time=datetime.datetime.fromisoformat(event["time"]))
        headers = _get_headers_from_metadata(event_metadata=metadata)
        key_serializer, value_serializer = get_serializers(signal, KEY_FIELD)
        key = key_serializer(extract_event_key(data, KEY_FIELD), SerializationContext(topic, MessageField.KEY, headers))
        value = value_serializer(data, SerializationContext(topic, MessageField.VALUE, headers))
        producer.produce(topic, key=key, value=value, headers=headers,
                         on_delivery=lambda err, msg: err and failures.append(err))
        producer.poll(0)
    remaining = producer.flush(120)
    if failures or remaining:
        raise RuntimeError(f"{len(failures) + remaining} event(s) not delivered: {failures[:1] or 'flush timed out'}")


def _consumer(bootstrap, name):
    return Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{name}", "enable.auto.commit": False,
                     "enable.partition.eof": False, "fetch.wait.max.ms": 100})


def watermarks(bootstrap, topic):
    """``{partition: (low, high)}`` of ``topic``."""
    consumer = _consumer(bootstrap, "watermarks")
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in sorted(partitions)}
    finally:
        consumer.close()


def commit_start(bootstrap, topic, group, partitions):
    """Commit offset 0 of every partition for ``group``: a new group then starts at the beginning."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, p, 0) for p in partitions], asynchronous=False)
    finally:
        consumer.close()


def consume(bootstrap, topic, ends, handle=None, name="raw"):
    """
    Read every partition from 0 to ``ends[p]``, calling ``handle(message)`` on each: ``(messages, seconds)``,
    timed from the assignment to the last message.
    """
    consumer = _consumer(bootstrap, name)
    expected = sum(ends.values())
    messages = []
    try:
        consumer.list_topics(topic, timeout=10)  # connected before the clock starts
        started = time.perf_counter()
        consumer.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end])
        while len(messages) < expected:
            if time.perf_counter() - started > 300:
                raise RuntimeError(f"{name}: read {len(messages)} of {expected} messages in 300 s")
            for message in consumer.consume(1000, timeout=1.0):
                if message.error():
                    if message.error().code() == KafkaError._PARTITION_EOF:  # pylint: disable=protected-access
                        continue
                    raise RuntimeError(f"{name}: {message.error()}")
                if handle is not None:
                    handle(message)
                messages.append(message)
        return messages, time.perf_counter() - started
    finally:
        consumer.close()


def confluent_decoder(registry_url):
    """confluent-kafka's AvroDeserializer with the academy schema as reader schema: ``decode(message) -> dict``."""
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry_url}), schema_str=SCHEMA.read_text())

    def decode(message):
        return deserializer(message.value(), SerializationContext(message.topic(), MessageField.VALUE))
    return decode


def our_decoder(registry_url):
    """``academy_consumer.decode.Decoder(...).decode``, or a string saying why it is not available."""
    try:
        from academy_consumer.decode import AcademyEvent, Decoder  # pylint: disable=import-outside-toplevel
    except Exception as exc:  # pylint: disable=broad-except  # not written yet, or half-written
        return f"n/a (academy_consumer.decode not importable: {type(exc).__name__})"
    decoder = Decoder(SchemaRegistryClient({"url": registry_url}))

    def decode(message):
        event = decoder.decode(message)
        if not isinstance(event, AcademyEvent):
            raise RuntimeError(f"our decoder rejected {message.partition()}@{message.offset()}: {event}")
        return event
    return decode


def time_decode(decode, messages):
    """Seconds to decode ``messages`` (already in memory) with ``decode``."""
    started = time.perf_counter()
    for message in messages:
        decode(message)
    return time.perf_counter() - started


def sizes(messages):
    """Mean value size in bytes."""
    return sum(len(m.value()) for m in messages) / max(1, len(messages))


def dump(path, data):
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
