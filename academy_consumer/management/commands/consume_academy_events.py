"""
Consume academy events from the event bus and apply them, at least once and in offset order per academy.

    academy-consumer consume_academy_events [--topic T] [--group-id G]
        [--from-beginning | --from-offset PARTITION:OFFSET ... | --from-time ISO8601]
        [--until-idle SECONDS] [--max-events N] [--metrics-port PORT] [--json]

Runs until SIGTERM/SIGINT (the batch in hand is finished and committed; exit 0), until idle for
``--until-idle`` seconds (counted from the first partition assignment), or until ``--max-events`` events
were handled. ``--metrics-port`` (or ``ACADEMY_CONSUMER_METRICS_PORT``) serves ``/metrics``, ``/healthz``
and ``/readyz`` (``academy_consumer.monitoring``); ``--json`` prints the final counts as one JSON object.
With edx-event-bus-kafka's kill switch ``EVENT_BUS_KAFKA_CONSUMERS_ENABLED`` off, it says so in one line
and exits 0 without consuming, as the stock ``consume_events`` does (``--json``: zero counts and
``"consumers_enabled": false``). Exit status: 0 on a clean stop; 1 on
a fatal error or when not ready (database not migrated or unreachable, Kafka unreachable, no such topic, a
schema registry that is not one or does not know the academy schemas, the circuit breaker, a fatal Kafka
error); 2 on bad arguments or bad settings (an unknown librdkafka property, ``--from-offset`` past the end
of a partition or on a partition the topic lacks).
"""

import json
import logging
import math
import signal

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError
from django.utils import timezone
# The stock consumer's kill switch (the toggle EVENT_BUS_KAFKA_CONSUMERS_ENABLED, default True),
# honoured under its own name: edx-event-bus-kafka exports it only from this internal module (bounded to
# the tested >=5.1.0,<7 in setup.cfg).
from edx_event_bus_kafka.internal.consumer import KAFKA_CONSUMERS_ENABLED

from academy_consumer import conf
from academy_consumer.consumer import AcademyEventConsumer
from academy_consumer.errors import BadKafkaConfig, FatalError
from academy_consumer.management.base import EXIT_NOT_READY, EXIT_ROW_ERRORS, AcademyCommand, fail
from academy_consumer.management.commands.produce_academy_event import iso_time
from academy_consumer.monitoring import CannotServe
from academy_consumer.preflight import NotReady
from academy_consumer.replay import BadStart, Start

log = logging.getLogger(__name__)


def partition_offset(value):
    """argparse type: ``PARTITION:OFFSET`` with both non-negative integers."""
    partition, sep, offset = value.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise ValueError(value)
    return int(partition), int(offset)


partition_offset.__name__ = "PARTITION:OFFSET"


def port_number(value):
    """argparse type: a TCP port, 0 to 65535."""
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError(value)
    return number


port_number.__name__ = "port"


def positive(kind):
    """argparse type: a finite ``kind`` > 0 (``nan`` and ``inf`` are refused)."""
    def parse(value):
        number = kind(value)
        if not math.isfinite(number) or number <= 0:
            raise ValueError(value)
        return number
    parse.__name__ = f"positive {kind.__name__}"
    return parse


class Command(AcademyCommand):
    """``consume_academy_events``: the real-time consumer (see the module docstring)."""
    help = "Consume academy events from the event bus and apply them to the EnterpriseAcademy table."

    def add_arguments(self, parser):
        parser.add_argument("--topic", help="Topic without prefix (default ACADEMY_EVENTS_TOPIC).")
        parser.add_argument("--group-id", help="Consumer group (default ACADEMY_CONSUMER_GROUP_ID).")
        replay = parser.add_mutually_exclusive_group()
        replay.add_argument("--from-beginning", action="store_true",
                            help="Re-read and apply every retained event.")
        replay.add_argument("--from-offset", type=partition_offset, action="append", metavar="PARTITION:OFFSET",
                            help="Re-read PARTITION from OFFSET (repeatable).")
        replay.add_argument("--from-time", type=iso_time, metavar="ISO8601",
                            help="Re-read events the broker timestamped at or after this time.")
        parser.add_argument("--until-idle", type=positive(float), metavar="SECONDS",
                            help="Stop after this long without events (backfills, demos, tests).")
        parser.add_argument("--max-events", type=positive(int), metavar="N", help="Stop after N events.")
        parser.add_argument("--metrics-port", type=port_number, metavar="PORT",
                            help="Serve /metrics, /healthz and /readyz on this port (default "
                                 "ACADEMY_CONSUMER_METRICS_PORT; off when neither is set; 0: a free port).")
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="Print the final counts as one JSON object.")

    def handle(self, *args, **options):
        if not KAFKA_CONSUMERS_ENABLED.is_enabled():
            self.stderr.write("EVENT_BUS_KAFKA_CONSUMERS_ENABLED is off: the consumer does not consume (exit 0)")
            if options["as_json"]:  # a --json reader still gets its document
                self.stdout.write(json.dumps({"events": 0, "batches": 0, "outcomes": {}, "consumers_enabled": False}))
            return
        given = options["from_offset"] or []
        offsets = dict(given)
        if len(offsets) < len(given):
            raise fail("--from-offset names a partition twice")
        if options["from_time"] is not None and options["from_time"] > timezone.now():
            # Every event read before that time would be skipped AND committed: lost for the group.
            raise fail(f"--from-time {options['from_time'].isoformat()} is in the future: the group would skip "
                       f"(and commit past) every event until then")
        start = Start(beginning=options["from_beginning"], offsets=offsets, time=options["from_time"])
        port = options["metrics_port"] if options["metrics_port"] is not None else conf.metrics_port()
        address = None if port is None else (conf.metrics_host(), port)
        try:
            consumer = AcademyEventConsumer(options["topic"], options["group_id"], start=start,
                                            max_events=options["max_events"], until_idle=options["until_idle"],
                                            metrics_address=address)
        except BadKafkaConfig as exc:
            raise fail(f"bad setting: {exc}") from None
        except ImproperlyConfigured as exc:
            raise fail(f"event bus not configured: {exc} (run `academy-consumer devstack` for a local one)") from None
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: consumer.stop())
        try:
            stats = consumer.run()
        except CannotServe as exc:  # the metrics port is taken, not allowed, or not this host's address
            raise fail(str(exc)) from None
        except BadStart as exc:
            raise fail(str(exc)) from None
        except NotReady as exc:
            raise fail(f"not ready: {exc}", EXIT_NOT_READY) from None
        except (FatalError, DatabaseError) as exc:
            raise fail(f"consumer stopped: {exc}", EXIT_ROW_ERRORS) from exc
        if options["as_json"]:
            self.stdout.write(json.dumps({"events": stats.events, "batches": stats.batches,
                                          "outcomes": dict(sorted(stats.counts.items()))}))
            return
        self.stdout.write(f"consumed {stats.events} event(s) in {stats.batches} batch(es): {stats.summary()}")
