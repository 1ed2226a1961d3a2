"""
Run the embedded dev stack: ``academy-consumer devstack [--partitions N] [--env-file PATH]``.

Starts, on loopback and in this process, librdkafka's mock Kafka cluster (with the academy topic and
its dead-letter topic created) and a Confluent-Schema-Registry-compatible server. Prints the settings
that point the other commands at it and writes them to ``.devstack.env`` in the working directory,
which every ``academy-consumer`` command run from there reads for settings its environment does not
set. Runs until SIGTERM/SIGINT, then shuts down and removes the file. Everything is in memory.
"""

import json
import os
import signal
import threading

from edx_event_bus_kafka.internal.config import get_full_topic

from academy_consumer import conf
from academy_consumer.devstack import DevStack
from academy_consumer.management.base import AcademyCommand

# Consumer settings suited to the mock broker (see DevStack.consumer_config): its group members linger
# for a whole session after a crash, so keep sessions short; it holds idle fetches for fetch.wait.max.ms.
MOCK_CONSUMER_CONFIG = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 100,
                        "reconnect.backoff.max.ms": 1000}


class Command(AcademyCommand):
    help = "Run an embedded Kafka (librdkafka mock cluster) and schema registry for development and tests."
    needs_database = False

    def add_arguments(self, parser):
        parser.add_argument("--partitions", type=int, default=3, help="Partitions of the academy topic (default 3).")
        parser.add_argument("--env-file", default=".devstack.env", help="Where to write the settings.")

    def handle(self, *args, **options):
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        topic = get_full_topic(conf.topic())
        dlq = get_full_topic(conf.dlq_topic())
        with DevStack([(topic, options["partitions"]), (dlq, 1)]) as stack:
            lines = stack.env_lines() + [f"ACADEMY_CONSUMER_KAFKA_CONFIG={json.dumps(MOCK_CONSUMER_CONFIG)}"]
            path = options["env_file"]
            with open(path, "w", encoding="utf-8") as handle:
                handle.write("\n".join(lines) + "\n")
            for line in lines:
                self.stdout.write(line)
            self.stdout.write(f"# topics {topic} ({options['partitions']} partitions) and {dlq}; settings written "
                              f"to {path}; Ctrl-C or SIGTERM stops the dev stack", ending="\n")
            self.stdout.flush()
            try:
                while not stop.wait(0.5):
                    pass
            finally:
                if os.path.exists(path):
                    os.remove(path)
