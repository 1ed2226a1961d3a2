"""
The settings academy-consumer reads, with their defaults.

A host service that adds ``academy_consumer`` to ``INSTALLED_APPS`` sets these in its own Django
settings; the standalone ``academy_consumer.settings`` sets each from the environment variable of the
same name. Event bus connection settings keep edx-event-bus-kafka's names
(``EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS``, ``EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL``, ``EVENT_BUS_TOPIC_PREFIX``...)
and are read by that library.
"""

from django.conf import settings

# .. setting_name: ACADEMY_EVENTS_TOPIC
# .. setting_default: "enterprise-academy-lifecycle"
# .. setting_description: Base name (without ``EVENT_BUS_TOPIC_PREFIX``) of the topic the academy events are
#   produced to and consumed from. Producer and consumer share this one default.
DEFAULT_TOPIC = "enterprise-academy-lifecycle"

# .. setting_name: ACADEMY_EVENTS_DLQ_TOPIC
# .. setting_default: None (meaning ``<ACADEMY_EVENTS_TOPIC>-dlq``)
# .. setting_description: Base name of the dead-letter topic that receives events which can never be applied
#   (undecodable, unknown or missing ``ce_type``, rejected payload), with error headers.

# .. setting_name: ACADEMY_CONSUMER_GROUP_ID
# .. setting_default: "academy-consumer"
# .. setting_description: Kafka consumer group of ``consume_academy_events`` when ``--group-id`` is not given.
DEFAULT_GROUP_ID = "academy-consumer"

# .. setting_name: ACADEMY_CONSUMER_BATCH_SIZE
# .. setting_default: 100
# .. setting_description: Most events the consumer polls and applies in one database transaction.

# .. setting_name: ACADEMY_CONSUMER_BATCH_WAIT_SECONDS
# .. setting_default: 1.0
# .. setting_description: Longest the consumer waits to fill a batch before applying what it has.

# .. setting_name: ACADEMY_CONSUMER_RETRY_MAX_SECONDS
# .. setting_default: 30
# .. setting_description: Cap of the exponential backoff between retries of a batch that met a transient
#   failure (database unreachable, deadlock, lock timeout, dead-letter topic unreachable). Such a batch
#   is retried until it succeeds; it is never skipped.

# .. setting_name: ACADEMY_CONSUMER_KAFKA_CONFIG
# .. setting_default: {}
# .. setting_description: Extra librdkafka settings for the consumer and its dead-letter producer (a dict; a
#   JSON object in the environment), e.g. ``{"session.timeout.ms": 10000}``.

# .. setting_name: ACADEMY_PRODUCER_FLUSH_TIMEOUT_SECONDS
# .. setting_default: 30
# .. setting_description: How long ``produce_academy_event`` waits for the broker to acknowledge every event
#   before it exits non-zero.


def topic():
    """The academy events topic (without the environment prefix)."""
    return getattr(settings, "ACADEMY_EVENTS_TOPIC", None) or DEFAULT_TOPIC


def dlq_topic(base_topic=None):
    """The dead-letter topic for ``base_topic`` (without the environment prefix)."""
    configured = getattr(settings, "ACADEMY_EVENTS_DLQ_TOPIC", None)
    return configured or f"{base_topic or topic()}-dlq"


def group_id():
    return getattr(settings, "ACADEMY_CONSUMER_GROUP_ID", None) or DEFAULT_GROUP_ID


def batch_size():
    return int(getattr(settings, "ACADEMY_CONSUMER_BATCH_SIZE", 100))


def batch_wait_seconds():
    return float(getattr(settings, "ACADEMY_CONSUMER_BATCH_WAIT_SECONDS", 1.0))


def retry_max_seconds():
    return float(getattr(settings, "ACADEMY_CONSUMER_RETRY_MAX_SECONDS", 30))


def kafka_config():
    return dict(getattr(settings, "ACADEMY_CONSUMER_KAFKA_CONFIG", None) or {})


def producer_flush_timeout():
    return float(getattr(settings, "ACADEMY_PRODUCER_FLUSH_TIMEOUT_SECONDS", 30))
