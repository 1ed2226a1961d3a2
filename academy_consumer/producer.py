"""
Producing academy events: catalog academy dicts -> openedx-events ``get_producer()`` -> Kafka.

Used by ``produce_academy_event`` (and by tests that need many events with their own times). Every event
is encoded before anything is sent, keyed by academy uuid, and acknowledged by the broker before
``send_academy_events`` returns.
"""

import logging

from openedx_events.data import EventsMetadata
from openedx_events.event_bus import get_producer
from openedx_events.event_bus.avro.serializer import serialize_event_data_to_bytes

from academy_consumer import conf
from academy_consumer_signals import ACADEMY_CREATED, ACADEMY_DELETED, ACADEMY_UPDATED, academy_data_from_dict

SIGNALS = {"created": ACADEMY_CREATED, "updated": ACADEMY_UPDATED, "deleted": ACADEMY_DELETED}
PRODUCER_LOGGER = "edx_event_bus_kafka.internal.producer"


class EncodingError(ValueError):
    """An academy that cannot be encoded as an event of the contract in ``signals/``."""


class DeliveryError(RuntimeError):
    """Some events were not acknowledged by the broker."""


class NotConfigured(RuntimeError):
    """No event bus to produce to."""


def encode(action, item):
    """The signal and event data for one academy; raises ``EncodingError`` when it does not fit the contract."""
    signal = SIGNALS[action]
    try:
        data = {"academy": academy_data_from_dict(item)}
        serialize_event_data_to_bytes(data, signal)  # the Avro encoding must work before anything is sent
    except Exception as exc:
        raise EncodingError(f"cannot be encoded as {signal.event_type}: {exc}") from exc
    return signal, data


class _ErrorCounter(logging.Handler):
    """Collects the delivery errors edx-event-bus-kafka logs (its producer reports them only by logging)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage().splitlines()[0][:300])


def send_academy_events(events, topic=None):
    """
    Send ``events`` -- ``(signal, data, time)`` triples from ``encode`` -- and wait for the broker.

    Raises ``NotConfigured`` without an event bus and ``DeliveryError`` when an event was not
    acknowledged within ``ACADEMY_PRODUCER_FLUSH_TIMEOUT_SECONDS``.
    """
    configured = conf.bootstrap_servers() and conf.schema_registry_url()
    # Not configured, get_producer() warns and returns a do-nothing NoEventBusProducer (no .producer).
    producer = get_producer() if configured else None
    if getattr(producer, "producer", None) is None:
        raise NotConfigured("no event bus producer: set EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS and "
                            "EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL (or run `academy-consumer devstack`)")
    errors = _ErrorCounter()
    logger = logging.getLogger(PRODUCER_LOGGER)
    logger.addHandler(errors)
    try:
        for signal, data, time in events:
            producer.send(signal=signal, topic=topic or conf.topic(), event_key_field="academy.uuid",
                          event_data=data, event_metadata=EventsMetadata(event_type=signal.event_type, time=time))
        undelivered = producer.producer.flush(conf.producer_flush_timeout())
    finally:
        logger.removeHandler(errors)
    if undelivered or errors.messages:
        reason = errors.messages[0] if errors.messages else f"{undelivered} not acknowledged in time"
        raise DeliveryError(f"{len(errors.messages) + undelivered} of {len(events)} event(s) not delivered: {reason}")
