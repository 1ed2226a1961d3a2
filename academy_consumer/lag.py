"""
How far a consumer group is behind on the academy topic: per partition, the group's committed offset, the end
offset (high watermark) and the lag, read from the broker and returned as values (``Lag``); the
``consumer_lag`` command prints them.

Which client, and why: one confluent-kafka ``Consumer`` configured with the group id that never subscribes,
assigns or polls, so it never joins the group (no JoinGroup, no rebalance of the group's live members, nothing
committed). ``Consumer.committed()`` is an OffsetFetch to the group coordinator and ``get_watermark_offsets()``
two ListOffsets per partition: both answer on librdkafka's mock cluster (the embedded dev broker) exactly as on
real Kafka, with one client. (The AdminClient's ``list_consumer_group_offsets`` gives the same OffsetFetch, but
needs a second client for the watermarks, and is no better on the mock.)

The lag of a partition is the number of events the group would still read there: ``end - committed``; with no
committed offset (or one below the low watermark: those events are gone, and the consumer resets to the
earliest retained one) ``end - low``; never below 0 (a committed offset past the end, after a topic was
re-created, means nothing to read).

"The group does not exist" (``NoGroup``, exit 2), precisely: the group has no committed offset on any partition
of the topic AND no broker lists it. The second half is asked with the AdminClient's ``list_consumer_groups``
(ListGroups) only when the first holds:

* real Kafka: ListGroups answers every group a coordinator knows, in any state but dead, so a group it does not
  list does not exist; a listed group that committed nothing here (members consuming right now, or offsets on
  other topics only: ``EMPTY``, ``STABLE``...) exists, and every partition says committed "none";
* the mock cluster answers neither ListGroups nor DescribeGroups (``_UNSUPPORTED_FEATURE``), and a broker may
  refuse the list (authorization, any error but a timeout): then nothing tells, and the group does not exist
  when it has no committed offset on the topic, whatever members it has.

Not ``describe_consumer_groups``: a coordinator-targeted admin request, whose error path aborts the whole process
in librdkafka (an assertion in ``rd_kafka_enq_once_del_source_return``, librdkafka issue 4605) -- on the mock
cluster at once with confluent-kafka 2.6.1, the version enterprise-access pins, and on real clusters after a
coordinator error. ListGroups goes to every broker without a coordinator lookup, and answers the same question.

Kafka that does not answer within ``timeout`` seconds (one deadline for the whole read) is ``KafkaUnavailable``
(exit 1); a missing topic ``NoTopic`` (exit 2). Nothing is logged above DEBUG (librdkafka's lines and client
errors go to the ``academy_consumer.lag`` logger at DEBUG; the last client error reported, if any, is quoted in
the ``KafkaUnavailable`` message), so a command's error stays one line.
"""

import dataclasses
import logging
import time

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from edx_event_bus_kafka.internal.config import get_full_topic

from academy_consumer import conf, kafka, preflight
from academy_consumer.errors import BadKafkaConfig, KafkaUnavailable, NoGroup, NoTopic
from academy_consumer.redact import mask_urls

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 10.0


@dataclasses.dataclass(frozen=True)
class PartitionLag:
    """One partition's committed offset, low and end offsets, and lag."""
    partition: int
    committed: int | None  # None: the group has no committed offset here
    low: int
    end: int

    @property
    def lag(self):
        start = self.low if self.committed is None else max(self.committed, self.low)
        return max(0, self.end - start)

    def as_dict(self):
        return {"partition": self.partition, "committed": self.committed, "end": self.end, "lag": self.lag}


@dataclasses.dataclass(frozen=True)
class Lag:
    """A group's lag on a topic: one ``PartitionLag`` per partition."""
    topic: str
    group_id: str
    partitions: tuple  # of PartitionLag, by partition id

    @property
    def total_lag(self):
        return sum(p.lag for p in self.partitions)

    def as_dict(self):
        return {"topic": self.topic, "group_id": self.group_id,
                "partitions": [p.as_dict() for p in self.partitions], "total_lag": self.total_lag}


class _DebugLogger:
    """librdkafka's ``logger``: its lines at DEBUG whatever their syslog level (the command's error says it)."""

    @staticmethod
    def log(level, msg, *args):  # pylint: disable=unused-argument
        log.debug(msg, *args)


class _Client:
    """The Kafka side of one read: a non-member Consumer, the AdminClient on demand, one deadline for both."""

    def __init__(self, group_id, timeout):
        common = kafka.bus_config()  # Kafka (with SASL when a key is set), as the consumer connects
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.last_error = None
        # ACADEMY_CONSUMER_KAFKA_CONFIG, so that this client connects as the consumer does; without
        # group.instance.id (no member), and without the consumer's own properties for the AdminClient.
        self._own_logs = {"logger": _DebugLogger(), "error_cb": self._error}
        self.consumer = kafka.kafka_client(Consumer, {**kafka.reader_config(group_id, common), **self._own_logs})
        self._admin_config = {**conf.producer_kafka_config(), **common, **self._own_logs}
        self._admin = None

    def _error(self, error):
        self.last_error = error.str()
        log.debug("Kafka: %s", self.last_error)

    def admin(self):
        if self._admin is None:
            self._admin = kafka.kafka_client(AdminClient, self._admin_config)
        return self._admin

    def remaining(self):
        """Seconds left of the bound; ``KafkaUnavailable`` once it is spent."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.unavailable("")
        return left

    def unavailable(self, reason):
        why = reason or self.last_error or "no answer"
        return KafkaUnavailable(f"Kafka did not answer within {self.timeout:g} s ({mask_urls(why)}): is "
                                f"EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS right and the broker up?")

    def close(self):
        self.consumer.close()  # never joined: no LeaveGroup, nothing committed


def _timed_out(exc):
    return _is_timeout(exc.args[0] if exc.args else None)


def _is_timeout(error):
    return isinstance(error, KafkaError) and error.code() in (
        KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,  # pylint: disable=protected-access
        KafkaError.REQUEST_TIMED_OUT, KafkaError.COORDINATOR_NOT_AVAILABLE)


def _partitions(client, topic):
    """The partition ids of ``topic`` (``NoTopic`` or ``KafkaUnavailable`` otherwise)."""
    try:
        return preflight.check_topic(client.consumer, topic, client.remaining())
    except preflight.NoSuchTopic as exc:
        raise NoTopic(str(exc)) from None
    except preflight.NotReady as exc:  # no answer within the bound, or the topic not available now
        raise KafkaUnavailable(str(exc)) from None


def _committed(client, topic, partitions):
    """The group's committed offset of each partition (None where it committed nothing)."""
    try:
        return kafka.committed(client.consumer, topic, partitions, client.remaining(), strict=True)
    except KafkaException as exc:
        if _timed_out(exc):
            raise client.unavailable(client.last_error) from None
        raise KafkaUnavailable(f"Kafka did not give the group's committed offsets: "
                               f"{mask_urls(kafka.error_text(exc))}") from None


def _watermarks(client, topic, partitions):
    """The low and high watermark of each partition."""
    marks = {}
    for partition in partitions:
        try:
            marks[partition] = kafka.watermark(client.consumer, topic, partition, client.remaining())
        except KafkaException as exc:
            if _timed_out(exc):
                raise client.unavailable(client.last_error) from None
            raise KafkaUnavailable(f"Kafka did not say where {topic}[{partition}] ends: "
                                   f"{mask_urls(kafka.error_text(exc))}") from None
    return marks


def _group_listed(client, group_id):
    """
    True/False: whether the brokers list ``group_id`` (ListGroups); None when a broker cannot say (the mock: no
    ListGroups; a broker refusing the list) and no other lists the group.
    """
    try:
        listing = client.admin().list_consumer_groups(request_timeout=client.remaining()).result()
    except KafkaException as exc:
        if _timed_out(exc):
            raise client.unavailable(client.last_error) from None
        log.debug("the brokers cannot list groups: %s", kafka.error_text(exc))
        return None
    if any(group.group_id == group_id for group in listing.valid):
        return True
    for error in listing.errors:
        if _is_timeout(error):
            raise client.unavailable(client.last_error or error.str())
        log.debug("a broker cannot list groups: %s", error.str())
    return None if listing.errors else False


def read_lag(topic=None, group_id=None, timeout=DEFAULT_TIMEOUT_SECONDS):
    """
    The ``Lag`` of ``group_id`` (default ``ACADEMY_CONSUMER_GROUP_ID``) on ``topic`` (without prefix; default
    ``ACADEMY_EVENTS_TOPIC``; ``EVENT_BUS_TOPIC_PREFIX`` prepended, as the consumer does), read within
    ``timeout`` seconds. Raises ``NoTopic``, ``NoGroup``, ``KafkaUnavailable``, ``BadKafkaConfig`` (an
    empty group id or topic, an unknown librdkafka property) or ``ImproperlyConfigured`` (no event bus).
    """
    group_id = conf.group_id() if group_id is None else group_id  # the group consume_academy_events uses
    if not str(group_id).strip():
        raise BadKafkaConfig("the consumer group id (--group-id / ACADEMY_CONSUMER_GROUP_ID) is empty")
    if topic is not None and not str(topic).strip():
        raise BadKafkaConfig("--topic is empty")
    full_topic = get_full_topic(topic or conf.topic())  # prefixed with EVENT_BUS_TOPIC_PREFIX, as the consumer does
    client = _Client(group_id, timeout)
    try:
        partitions = _partitions(client, full_topic)
        committed = _committed(client, full_topic, partitions)
        marks = _watermarks(client, full_topic, partitions)
        if all(committed.get(p) is None for p in partitions):
            known = _group_listed(client, group_id)
            if not known:
                why = ("no broker lists it" if known is False
                       else "the broker cannot list groups, so nothing else tells that it exists")
                raise NoGroup(f"consumer group {group_id} does not exist: it has committed no offset on "
                              f"{full_topic}, and {why} (check --group-id / ACADEMY_CONSUMER_GROUP_ID)")
    finally:
        client.close()
    return Lag(full_topic, str(group_id),
               tuple(PartitionLag(p, committed.get(p), marks[p][0], marks[p][1]) for p in partitions))
