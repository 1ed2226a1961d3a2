"""
Produce academy events to the event bus (what the catalog side runs; also used by demos and tests).

    academy-consumer produce_academy_event --action created|updated|deleted --file PATH [--time ISO8601]

``PATH`` (``-`` for stdin) holds one catalog academy as a JSON object, a JSON list, or JSON lines for
many, of at most ``ACADEMY_MAX_INPUT_BYTES`` (read by ``academy_consumer.inputs``, as reconcile's input). Events go
through openedx-events' ``get_producer()`` (edx-event-bus-kafka), keyed by academy uuid, and are
flushed before exit. Exit status: 0 when every event was acknowledged by the broker; 1 when one was
not (or the broker did not answer within ``ACADEMY_PRODUCER_FLUSH_TIMEOUT_SECONDS``); 2 on bad
arguments or an item that cannot be encoded (then nothing was sent).
"""

import datetime

from academy_consumer import conf
from academy_consumer.inputs import InputError, read_items
from academy_consumer.management.base import EXIT_ROW_ERRORS, AcademyCommand, fail
from academy_consumer.producer import SIGNALS, DeliveryError, EncodingError, NotConfigured, encode, send_academy_events


def iso_time(value):
    """argparse type: an ISO 8601 time; a time without a zone is UTC."""
    parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)


iso_time.__name__ = "ISO 8601 time"


class Command(AcademyCommand):
    """``produce_academy_event``: send academy events to the event bus."""
    help = "Produce academy created/updated/deleted events to the event bus."
    needs_database = False

    def add_arguments(self, parser):
        parser.add_argument("--action", required=True, choices=sorted(SIGNALS))
        parser.add_argument("--file", required=True, metavar="PATH",
                            help="A JSON academy object, a JSON list, or JSON lines ('-' for stdin).")
        parser.add_argument("--time", type=iso_time, metavar="ISO8601",
                            help="Event time (ce_time); default now. Older than a row's newest event = stale.")
        parser.add_argument("--topic", help=f"Topic (default ACADEMY_EVENTS_TOPIC, '{conf.DEFAULT_TOPIC}').")

    def handle(self, *args, **options):
        try:
            items = read_items(options["file"], envelopes=False)
        except InputError as exc:
            raise fail(str(exc)) from exc
        event_time = options["time"] or datetime.datetime.now(datetime.timezone.utc)
        events = []
        for number, item in enumerate(items, 1):
            try:
                signal, data = encode(options["action"], item)
            except EncodingError as exc:
                raise fail(f"item {number} {exc} (nothing was sent)") from exc
            events.append((signal, data, event_time))
        try:
            send_academy_events(events, topic=options["topic"])
        except NotConfigured as exc:
            raise fail(str(exc)) from exc
        except DeliveryError as exc:
            raise fail(str(exc), EXIT_ROW_ERRORS) from exc
        self.stdout.write(f"produced {len(events)} {SIGNALS[options['action']].event_type} event(s)")
