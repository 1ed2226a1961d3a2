"""
Event-to-row latency of sparse events (line 7): the consumer with its default settings and the stock
``consume_events`` loop, side by side, one at a time on the same dev stack and database.

Each loop runs as a subprocess on a group whose offsets are committed at the topic's end first (it reads only
what is produced from then on). One warm-up event (not counted) shows that it has joined and applies; then
``count`` events, one every 0.5 to 2 s (seeded), each a new academy, are produced one at a time in this
process (a confluent-kafka ``Producer``, linger 0, the product's serializers and CloudEvents headers) and the
table is polled every 5 ms for the academy's row: the latency of an event is from just before ``produce`` to
the first poll that sees its row.
"""

import datetime
import random
import statistics
import subprocess
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.serialization import MessageField, SerializationContext
from edx_event_bus_kafka.internal.producer import extract_event_key, get_serializers
from edx_event_bus_kafka.internal.utils import _get_headers_from_metadata
from openedx_events.data import EventsMetadata

from academy_consumer.producer import SIGNALS
from academy_consumer_signals import academy_data_from_dict
from bench import commands, history
from bench.commands import WORK

KEY_FIELD = "academy.uuid"
POLL_SECONDS = 0.005
WAIT_SECONDS = 30.0  # longest wait for one row before the run is called failed
TARGET_MEDIAN_MS, TARGET_MAX_MS, TARGET_OVER_STOCK_MS = 150.0, 500.0, 50.0


class _Table:
    """``seen(uuid)``: whether the academy's row is in the table (one connection, autocommit reads)."""

    def __init__(self, url):
        self.connection = commands._connect(url)
        self.sqlite = url.startswith("sqlite")
        self.hex = not url.startswith("postgres")  # Django's UUIDField: char(32) hex but on PostgreSQL

    def seen(self, uuid_text):
        """Whether the row of academy ``uuid_text`` is there."""
        cursor = self.connection.cursor()
        cursor.execute(f"SELECT 1 FROM {commands.TABLE} WHERE uuid = {'?' if self.sqlite else '%s'}",
                       [uuid_text.replace("-", "") if self.hex else uuid_text])
        found = cursor.fetchone() is not None
        cursor.close()
        if self.sqlite:
            self.connection.commit()  # (ends the read transaction: the writer is never held up)
        return found

    def close(self):
        self.connection.close()


class _Sender:
    """Produce one academy created event at a time, as the product's producer encodes it, and wait for the broker."""

    def __init__(self, bootstrap, topic):
        self.topic = topic
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        self.key_serializer, self.value_serializer = get_serializers(SIGNALS["created"], KEY_FIELD)

    def send(self, item):
        """Produce academy ``item`` as created and wait for the broker; returns the monotonic time just before."""
        data = {"academy": academy_data_from_dict(item)}
        metadata = EventsMetadata(event_type=SIGNALS["created"].event_type,
                                  time=datetime.datetime.now(datetime.timezone.utc))
        headers = _get_headers_from_metadata(event_metadata=metadata)
        key = self.key_serializer(extract_event_key(data, KEY_FIELD),
                                  SerializationContext(self.topic, MessageField.KEY, headers))
        value = self.value_serializer(data, SerializationContext(self.topic, MessageField.VALUE, headers))
        started = time.monotonic()
        self.producer.produce(self.topic, key=key, value=value, headers=headers)
        if self.producer.flush(10):
            raise RuntimeError("an event was not acknowledged within 10 s")
        return started


def commit_end(bootstrap, topic, group):
    """Commit the end offset of every partition of ``topic`` for ``group``: it reads only newer events."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = [TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
                for p in partitions]
        consumer.commit(offsets=ends, asynchronous=False)
    finally:
        consumer.close()


def _wait_row(table, uuid_text, process, started):
    """The monotonic time the row of ``uuid_text`` was first seen (``RuntimeError`` if the loop died or 30 s)."""
    while not table.seen(uuid_text):
        if process.poll() is not None:
            raise RuntimeError(f"the loop exited {process.returncode}")
        if time.monotonic() - started > WAIT_SECONDS:
            raise RuntimeError(f"no row {WAIT_SECONDS:.0f} s after its event")
        time.sleep(POLL_SECONDS)
    return time.monotonic()


def measure(args, env, *, url, bootstrap, topic, label, count, seed):
    """Run the loop ``args`` and time ``count`` sparse events to their rows: a dict (median, max ms, ...)."""
    commands.empty_table(url)
    rng = random.Random(seed)
    table, sender = _Table(url), _Sender(bootstrap, topic)
    out, err = WORK / f"latency-{label}.out", WORK / f"latency-{label}.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen(args, env=env, cwd=WORK,  # pylint: disable=consider-using-with
                                   stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
    try:
        warm = history.academy(rng, 90000)
        started = sender.send(warm)
        deadline = started + 60  # the group join (not counted)
        while not table.seen(warm["uuid"]):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the warm-up event was not applied (see {err})")
            time.sleep(0.05)
        latencies = []
        for number in range(count):
            time.sleep(rng.uniform(0.5, 2.0))
            item = history.academy(rng, 90001 + number)
            started = sender.send(item)
            latencies.append((_wait_row(table, item["uuid"], process, started) - started) * 1000)
    except RuntimeError as exc:
        return {"error": f"{exc} (see {err})"}
    finally:
        commands.stop(process, grace=30)
        table.close()
    return {"events": count, "median_ms": round(statistics.median(latencies), 1),
            "max_ms": round(max(latencies), 1), "min_ms": round(min(latencies), 1)}


def run(env, *, url, bootstrap, topic, base_topic, count, stamp):
    """Line 7: ``{"consumer": ..., "stock": ...}`` (the consumer with its defaults, then the stock loop)."""
    env = {k: v for k, v in env.items() if not k.startswith("ACADEMY_CONSUMER_BATCH_")}  # the defaults
    results = {}
    for name, group, args in (
            ("consumer", f"bench-latency-consumer-{stamp}",
             commands.command("consume_academy_events", "--group-id", f"bench-latency-consumer-{stamp}")),
            ("stock", f"bench-latency-stock-{stamp}",
             commands.command("consume_events", "-t", base_topic, "-g", f"bench-latency-stock-{stamp}"))):
        commit_end(bootstrap, topic, group)
        results[name] = measure(args, env, url=url, bootstrap=bootstrap, topic=topic, label=name, count=count,
                                seed=17)
        print(f"   latency, {name}: {results[name]}", flush=True)
    commands.empty_table(url)
    return results


def report(database, results):
    """The latency table's lines and the targets' verdict."""
    rows = [("latency (7): sparse events, event -> row", "database", "events", "median ms", "max ms", "min ms")]
    for name, what in (("consumer", "consume_academy_events (default settings)"),
                       ("stock", "stock consume_events")):
        entry = results.get(name) or {}
        if "error" in entry:
            rows.append((what, database, "", "failed", "", entry["error"][:200]))
        else:
            rows.append((what, database, str(entry.get("events", "")), f"{entry.get('median_ms', 0):.0f}",
                         f"{entry.get('max_ms', 0):.0f}", f"{entry.get('min_ms', 0):.0f}"))
    consumer, stock = results.get("consumer") or {}, results.get("stock") or {}
    lines = [rows]
    if "median_ms" in consumer and "median_ms" in stock:
        met = (consumer["median_ms"] <= TARGET_MEDIAN_MS and consumer["max_ms"] <= TARGET_MAX_MS
               and consumer["median_ms"] <= stock["median_ms"] + TARGET_OVER_STOCK_MS)
        lines.append(f"  targets: consumer median <= {TARGET_MEDIAN_MS:.0f} ms, max <= {TARGET_MAX_MS:.0f} ms, median "
                     f"<= stock median + {TARGET_OVER_STOCK_MS:.0f} ms ({stock['median_ms'] + TARGET_OVER_STOCK_MS:.0f}"
                     f" ms): {'met' if met else 'NOT met'}")
    return lines
