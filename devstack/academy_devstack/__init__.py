"""
An embedded development stack: a Kafka cluster (librdkafka's mock cluster) and a Confluent
Schema Registry (a small in-memory HTTP server), both in this process, both on 127.0.0.1.

No Docker, no JVM, nothing to install beyond ``confluent-kafka`` (whose wheel ships the
librdkafka the mock comes from) and ``fastavro``. Usable from tests::

    with DevStack(topics=[("events", 3)]) as stack:
        producer = Producer({"bootstrap.servers": stack.bootstrap_servers})
        registry = SchemaRegistryClient({"url": stack.schema_registry_url})

and from a shell through ``academy-consumer devstack`` (:mod:`.command`), which creates the academy topics and
writes ``.devstack.env`` (:mod:`.envfile`) for the other commands.

A development-only distribution (``academy-consumer-devstack``, the repository's ``devstack/`` folder): the app
never imports it and ``pip install academy-consumer`` does not install it. This module, :mod:`.mock_kafka`,
:mod:`.schema_registry` and :mod:`.envfile` import neither Django nor the app; only :mod:`.command` reads the
app's settings, for the topic names.

See :mod:`.mock_kafka` for what the mock cluster does not do; above all, it keeps at most
``PARTITION_LOG_MAX_BYTES`` (5 MiB) per partition and evicts the oldest events past that, which
cannot be configured: :meth:`DevStack.evicted` tells when it happened.
"""
from __future__ import annotations

import os
import threading
from typing import Iterable, Sequence, Union

from . import envfile
from .mock_kafka import (
    PARTITION_LOG_MAX_BATCHES,
    PARTITION_LOG_MAX_BYTES,
    ApiKey,
    Err,
    MockKafkaCluster,
    MockKafkaUnavailable,
    MockRequest,
)
from .schema_registry import SchemaRegistryServer

__all__ = [
    "ApiKey",
    "DevStack",
    "Err",
    "MockKafkaCluster",
    "MockKafkaUnavailable",
    "MockRequest",
    "PARTITION_LOG_MAX_BATCHES",
    "PARTITION_LOG_MAX_BYTES",
    "SchemaRegistryServer",
]

TopicSpec = Union[str, Sequence]

BOOTSTRAP_ENV = "EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS"
SCHEMA_REGISTRY_ENV = "EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL"

# Low, so that a consumer group emptied by a close is joinable again after ~2 s (see
# DevStack.consumer_config); heartbeats every 500 ms keep live members well within it.
CONSUMER_SESSION_TIMEOUT_MS = 3000


class DevStack:
    """
    Start a mock Kafka cluster of ``num_brokers`` brokers with ``topics`` created (each a
    name, or a ``(name, partitions)`` / ``(name, partitions, replication_factor)`` tuple)
    and a schema registry on ``schema_registry_port`` (0: any free port).

    Everything is started by the constructor and stopped by :meth:`close` (idempotent;
    also on leaving a ``with`` block). Close Kafka clients before the stack.
    """

    def __init__(
        self,
        topics: Iterable[TopicSpec] = (),
        *,
        num_brokers: int = 1,
        schema_registry_host: str = "127.0.0.1",
        schema_registry_port: int = 0,
        compatibility: str = "BACKWARD",
    ):
        self.kafka: MockKafkaCluster | None = None
        self.schema_registry: SchemaRegistryServer | None = None
        self._reader = None  # the Kafka client of watermarks(), made on first use
        self._reader_lock = threading.Lock()
        try:
            self.kafka = MockKafkaCluster(num_brokers)
            for topic in topics:
                self.create_topic(topic)
            self.schema_registry = SchemaRegistryServer(
                schema_registry_host, schema_registry_port, compatibility=compatibility
            ).start()
        except BaseException:
            self.close()
            raise

    def create_topic(self, topic: TopicSpec, partitions: int | None = None, replication_factor: int = 1) -> None:
        """Create a topic: ``create_topic("t", 3)`` or ``create_topic(("t", 3))``."""
        if isinstance(topic, str):
            name, spec = topic, ()
        else:
            name, *spec = topic
        if partitions is None:
            partitions = spec[0] if len(spec) > 0 else 1
        if len(spec) > 1:
            replication_factor = spec[1]
        self.kafka.create_topic(name, partitions, replication_factor)

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka.bootstrap_servers

    @property
    def schema_registry_url(self) -> str:
        return self.schema_registry.url

    def producer_config(self, overrides: dict | None = None) -> dict:
        """
        ``confluent_kafka.Producer`` settings for this stack: short reconnect back-off, so a
        broker that comes back up (:meth:`MockKafkaCluster.broker_up`) is reached quickly.
        ``overrides`` (librdkafka property names) win.
        """
        config = {
            "bootstrap.servers": self.bootstrap_servers,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
        }
        config.update(overrides or {})
        return config

    def consumer_config(self, group_id: str, overrides: dict | None = None) -> dict:
        """
        ``confluent_kafka.Consumer`` settings for this stack. ``session.timeout.ms`` is kept
        low on purpose: the mock keeps a vanished member for a whole session, and after the
        last member of a group leaves it holds the group in rebalance for
        ``session.timeout.ms - 1000`` ms, which the next consumer of that group waits out.
        ``overrides`` (librdkafka property names) win.
        """
        config = {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": group_id,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": CONSUMER_SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": 500,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
            "fetch.error.backoff.ms": 50,
            # One Fetch is in flight per broker connection and the mock holds it for
            # fetch.wait.max.ms when a partition has no new data, which delays everything
            # queued behind it (retries after errors included).
            "fetch.wait.max.ms": 100,
        }
        config.update(overrides or {})
        return config

    def watermarks(self, timeout: float = 10.0) -> dict:
        """
        ``{(topic, partition): (low, high)}`` of every topic on the broker: the first offset it still holds
        and the next offset it will assign. Raises ``confluent_kafka.KafkaException`` if it does not answer.
        """
        from confluent_kafka import Consumer, TopicPartition  # pylint: disable=import-outside-toplevel

        with self._reader_lock:
            if self._reader is None:
                # Never subscribes, so it never joins its group: it only asks for metadata and offsets.
                self._reader = Consumer({"bootstrap.servers": self.bootstrap_servers, "group.id": "devstack-watermarks",
                                         "enable.auto.commit": False, "log_level": 3})
            topics = self._reader.list_topics(timeout=timeout).topics
            return {
                (name, partition): self._reader.get_watermark_offsets(TopicPartition(name, partition), timeout=timeout)
                for name in sorted(topics) for partition in sorted(topics[name].partitions)
            }

    def evicted(self, timeout: float = 10.0) -> dict:
        """
        ``{(topic, partition): low watermark}`` of the partitions whose oldest events are gone (empty: none).

        Nothing here deletes records, so a low watermark above 0 means the mock evicted events past its
        per-partition limit (``PARTITION_LOG_MAX_BYTES`` / ``PARTITION_LOG_MAX_BATCHES``, see ``mock_kafka``).
        """
        return {where: low for where, (low, _) in self.watermarks(timeout).items() if low > 0}

    def env(self) -> dict:
        return {BOOTSTRAP_ENV: self.bootstrap_servers, SCHEMA_REGISTRY_ENV: self.schema_registry_url}

    def env_lines(self) -> list[str]:
        """``NAME=value`` lines (values quoted for a POSIX shell) for the settings that point the consumer here."""
        return envfile.format_lines(self.env())

    def write_env_file(self, path: Union[str, os.PathLike]) -> str:
        """Write :meth:`env_lines` to ``path`` (a file a POSIX shell can ``source``, see :mod:`.envfile`)."""
        return envfile.write(path, self.env())

    def close(self) -> None:
        """Stop the schema registry and the mock cluster."""
        registry, self.schema_registry = self.schema_registry, None
        with self._reader_lock:
            reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()  # before the cluster it talks to
        kafka, self.kafka = self.kafka, None
        try:
            if registry is not None:
                registry.stop()
        finally:
            if kafka is not None:
                kafka.close()

    def __enter__(self) -> "DevStack":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.kafka is None:
            return "<DevStack closed>"
        return f"<DevStack kafka={self.bootstrap_servers} schema_registry={self.schema_registry_url}>"
