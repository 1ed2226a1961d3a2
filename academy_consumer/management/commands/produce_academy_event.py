"""
Produce academy events to the event bus (what the catalog side runs; also used by demos and tests).

    academy-consumer produce_academy_event --action created|updated|deleted --file PATH [--time ISO8601]

``PATH`` (``-`` for stdin) holds one catalog academy as a JSON object, or JSON lines for many. Events go
through openedx-events' ``get_producer()`` (edx-event-bus-kafka), keyed by academy uuid, and are
flushed before exit. Exit status: 0 when every event was acknowledged by the broker; 1 when one was
not (or the broker did not answer within ``ACADEMY_PRODUCER_FLUSH_TIMEOUT_SECONDS``); 2 on bad
arguments or an item that cannot be encoded (then nothing was sent).
"""

import datetime
import json
import logging
import sys

from openedx_events.data import EventsMetadata
from openedx_events.event_bus import get_producer
from openedx_events.event_bus.avro.serializer import serialize_event_data_to_bytes

from academy_consumer import conf
from academy_consumer.management.base import EXIT_ROW_ERRORS, AcademyCommand, fail
from signals import ACADEMY_CREATED, ACADEMY_DELETED, ACADEMY_UPDATED, academy_data_from_dict

SIGNALS = {"created": ACADEMY_CREATED, "updated": ACADEMY_UPDATED, "deleted": ACADEMY_DELETED}
PRODUCER_LOGGER = "edx_event_bus_kafka.internal.producer"


def iso_time(value):
    """argparse type: an ISO 8601 time; a time without a zone is UTC."""
    parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)


iso_time.__name__ = "ISO 8601 time"


def read_academies(path):
    """The academies in ``path``: one JSON object, a JSON list, or JSON lines."""
    name = "stdin" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read {name}: {exc}") from exc
    try:
        whole = json.loads(text)
        return whole if isinstance(whole, list) else [whole]
    except json.JSONDecodeError:
        pass
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise fail(f"{name} line {number} is not valid JSON: {exc.msg}") from exc
    return items


class _ErrorCounter(logging.Handler):
    """Counts the delivery errors edx-event-bus-kafka logs (its producer reports them only by logging)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage().splitlines()[0][:300])


class Command(AcademyCommand):
    help = "Produce academy created/updated/deleted events to the event bus."

    def add_arguments(self, parser):
        parser.add_argument("--action", required=True, choices=sorted(SIGNALS))
        parser.add_argument("--file", required=True, metavar="PATH",
                            help="A JSON academy object, a JSON list, or JSON lines ('-' for stdin).")
        parser.add_argument("--time", type=iso_time, metavar="ISO8601",
                            help="Event time (ce_time); default now. Older than a row's newest event = stale.")
        parser.add_argument("--topic", help=f"Topic (default ACADEMY_EVENTS_TOPIC, '{conf.DEFAULT_TOPIC}').")

    def handle(self, *args, **options):
        signal = SIGNALS[options["action"]]
        items = read_academies(options["file"])
        event_time = options["time"] or datetime.datetime.now(datetime.timezone.utc)
        events = []
        for number, item in enumerate(items, 1):
            try:
                data = {"academy": academy_data_from_dict(item)}
                serialize_event_data_to_bytes(data, signal)  # the Avro encoding must work before anything is sent
            except Exception as exc:  # pylint: disable=broad-except
                raise fail(f"item {number} cannot be encoded as {signal.event_type}: {exc} (nothing was sent)")
            events.append(data)

        producer = get_producer()
        if producer is None:
            raise fail("no event bus producer: set EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS and "
                       "EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL (or run `academy-consumer devstack`)")
        errors = _ErrorCounter()
        logging.getLogger(PRODUCER_LOGGER).addHandler(errors)
        try:
            for data in events:
                producer.send(signal=signal, topic=options["topic"] or conf.topic(), event_key_field="academy.uuid",
                              event_data=data, event_metadata=EventsMetadata(event_type=signal.event_type,
                                                                             time=event_time))
            undelivered = producer.producer.flush(conf.producer_flush_timeout())
        finally:
            logging.getLogger(PRODUCER_LOGGER).removeHandler(errors)
        if undelivered or errors.messages:
            reason = errors.messages[0] if errors.messages else f"{undelivered} not acknowledged in time"
            raise fail(f"{len(errors.messages) + undelivered} of {len(events)} event(s) not delivered: {reason}",
                       EXIT_ROW_ERRORS)
        self.stdout.write(f"produced {len(events)} {signal.event_type} event(s)")
