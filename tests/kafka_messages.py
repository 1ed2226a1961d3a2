"""
A stand-in for ``confluent_kafka.Message``, for tests that hand the product one message without a broker.

confluent-kafka lets a ``Message`` be built directly only from 2.13 (``Message(topic=..., value=...)``); the
product supports older releases (setup.cfg's floor, and 2.6.1 in enterprise-access), so the tests build their
messages here instead: the accessors the product reads, answering as a consumed ``Message`` does (``headers()``
is None when there are none, ``error()`` None for a message that is one). ``tests/test_kafka_messages.py``
checks it against a real message produced to and consumed from the dev broker.
"""

from confluent_kafka import TIMESTAMP_CREATE_TIME


class KafkaMessage:
    """One consumed message: where it was read, its key, value, headers and timestamp."""

    def __init__(self, *, topic, partition, offset, key=None, value=None, headers=None, timestamp_ms=0):
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value, self._timestamp_ms = key, value, timestamp_ms
        self._headers = list(headers) if headers else None

    def topic(self):
        return self._topic

    def partition(self):
        return self._partition

    def offset(self):
        return self._offset

    def key(self):
        return self._key

    def value(self):
        return self._value

    def headers(self):
        """``[(name, bytes or None), ...]`` in the order sent; None when the message has no headers."""
        return None if self._headers is None else list(self._headers)

    def timestamp(self):
        return TIMESTAMP_CREATE_TIME, self._timestamp_ms  # (the producer's time, as the academy topic holds)

    def error(self):
        return None

    def __len__(self):
        return len(self._value or b"")

    def __repr__(self):
        return f"<KafkaMessage {self._topic}[{self._partition}]@{self._offset}>"
