"""
The consumer under faults of configuration, not of events (issue 7): they must stop it with one line and
exit 1 -- nothing dead-lettered, nothing committed -- rather than send good events to the dead-letter topic.
Also the circuit breaker, the start-up checks, bad librdkafka settings, an unreachable Kafka (bounded time,
bounded log lines), future-dated events and the per-batch log line.

Real parts only: the commands as subprocesses, the dev stack's mock Kafka and schema registry, a second
(empty) schema registry server.
"""

import json
import re
import struct
import time

import pytest
from confluent_kafka import Consumer

from academy_consumer.models import EnterpriseAcademy
from academy_devstack.schema_registry import SchemaRegistryServer
from tests.factories import academy
from tests.helpers import CONSUMER_ENV, IDLE, GroupOffsets, academy_table, consumer_counts

DEAD_CLASS_REJECTED = "academy_consumer.errors.AcademyEventRejected"


def run_consumer(cli, devstack, *args, group="safety", **env):
    return cli("consume_academy_events", "--group-id", group, "--until-idle", IDLE, *args,
               env={**devstack.env, **CONSUMER_ENV, **env})


def last_line(text):
    lines = text.strip().splitlines()
    assert lines, "nothing on stderr"
    return lines[-1]


def committed(devstack, group):
    """The offsets ``group`` committed on the academy topic: {partition: offset} (none: {})."""
    with GroupOffsets(devstack, group) as read:
        return {partition: offset for partition, offset in read.committed().items() if offset >= 0}


SCRATCH = "breaker-test"  # a one-partition topic (and its -dlq): its events are read in exactly this order


@pytest.fixture
def scratch(devstack):
    devstack.stack.create_topic(SCRATCH, 1)
    devstack.stack.create_topic(f"{SCRATCH}-dlq", 1)
    return SCRATCH


def copies(devstack, template, times):
    """Produce ``times`` raw copies of ``template`` (a ``KafkaRecord``) to the scratch topic, in order."""
    for _ in range(times):
        devstack.produce_raw(template.value, headers=template.header_list, key=template.key, topic=SCRATCH)


def templates(bus, devstack):
    """A real rejected event (negative display order) and a real valid one, as produced by the producer."""
    bus.produce("created", [academy(1, display_order=-1), academy(2)])
    rejected, good = sorted(devstack.read_topic(), key=lambda r: b"000000000002" in r.key)
    return rejected, good


# --- 1a. the wrong schema registry --------------------------------------------------------------------------


def test_an_empty_schema_registry_stops_the_consumer_without_dead_lettering(bus, devstack, cli):
    items = [academy(n) for n in range(1, 6)]
    bus.produce("created", items)
    empty = SchemaRegistryServer().start()
    try:
        done = run_consumer(cli, devstack, EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL=empty.url)
    finally:
        empty.stop()
    assert done.returncode == 1, done.stderr
    line = last_line(done.stderr)
    assert "knows none of the academy schemas" in line and "EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL" in line, line
    assert devstack.read_dlq() == [] and academy_table() == {} and committed(devstack, "safety") == {}
    # Pointed at the right registry, the same group applies everything: nothing was skipped.
    again = run_consumer(cli, devstack)
    assert again.returncode == 0, again.stderr
    assert consumer_counts(again.stdout) == {"events": 5, "created": 5}


def test_one_unknown_schema_id_repeated_is_a_configuration_fault(bus, devstack, cli):
    """The registry knows the academy subjects, but two events use one id it does not know: wrong registry."""
    bus.produce("created", [academy(1)])
    template = devstack.read_topic()[0]
    unknown = b"\x00" + struct.pack(">I", 4242) + template.value[5:]
    for _ in range(2):
        devstack.produce_raw(unknown, headers=template.header_list, key=template.key, partition=0)
    first_unknown = 1 if template.partition == 0 else 0  # the offset of the first of them on partition 0
    done = run_consumer(cli, devstack)
    assert done.returncode == 1, done.stderr
    assert "schema id 4242 is unknown" in last_line(done.stderr), done.stderr
    assert devstack.read_dlq() == [] and committed(devstack, "safety").get(0, 0) <= first_unknown


def test_a_single_corrupt_schema_id_is_still_dead_lettered(bus, devstack, cli):
    bus.produce("created", [academy(1)])
    template = devstack.read_topic()[0]
    devstack.produce_raw(b"\x00" + struct.pack(">I", 4242) + template.value[5:], headers=template.header_list,
                         key=template.key, partition=0)
    bus.produce("created", [academy(2)])
    done = run_consumer(cli, devstack)
    assert done.returncode == 0, done.stderr
    assert consumer_counts(done.stdout) == {"events": 3, "created": 2, "dead_lettered": 1}
    assert "Schema 4242 not found" in devstack.read_dlq()[0].headers["dlq-error-message"]


# --- 1b. the circuit breaker ---------------------------------------------------------------------------------


def test_circuit_breaker_stops_before_dead_lettering_a_long_run_of_one_class(bus, devstack, cli, scratch):
    rejected, _ = templates(bus, devstack)
    copies(devstack, rejected, 5)
    done = run_consumer(cli, devstack, "--topic", scratch, ACADEMY_CONSUMER_MAX_CONSECUTIVE_DEAD_LETTERS="3")
    assert done.returncode == 1, done.stderr
    line = last_line(done.stderr)
    assert "circuit breaker" in line and DEAD_CLASS_REJECTED in line, line
    # Never more than 3 in a row went out: the batches before the one that would pass the limit (how many, depends
    # on where the poll cut them: it takes what is already fetched), none of that one.
    went_out = len(devstack.read_topic(f"{scratch}-dlq"))
    assert went_out <= 3, went_out
    # And nothing of the batch that tripped it was committed: 0 turns the breaker off, and the same group
    # dead-letters exactly the rest, once.
    off = run_consumer(cli, devstack, "--topic", scratch, ACADEMY_CONSUMER_MAX_CONSECUTIVE_DEAD_LETTERS="0")
    assert off.returncode == 0, off.stderr
    assert consumer_counts(off.stdout) == {"events": 5 - went_out, "dead_lettered": 5 - went_out}
    assert len(devstack.read_topic(f"{scratch}-dlq")) == 5


def test_circuit_breaker_counts_across_batches_and_an_applied_event_resets_it(bus, devstack, cli, scratch):
    rejected, good = templates(bus, devstack)
    limit = {"ACADEMY_CONSUMER_MAX_CONSECUTIVE_DEAD_LETTERS": "2", "ACADEMY_CONSUMER_BATCH_SIZE": "2"}
    # In order: bad bad | good bad | bad -- runs of 2 at most, across batches: never over a limit of 2.
    copies(devstack, rejected, 2)
    copies(devstack, good, 1)
    copies(devstack, rejected, 2)
    first = run_consumer(cli, devstack, "--topic", scratch, **limit)
    assert first.returncode == 0, first.stderr
    assert consumer_counts(first.stdout) == {"events": 5, "created": 1, "dead_lettered": 4}
    # Then bad bad bad: a run of 3 over batches of at most 2. Where the poll cuts them (it takes what is already
    # fetched) decides how many went out before the breaker tripped -- 1 or 2, within the limit --, never the third;
    # and nothing of the batch that tripped it was committed: with the breaker off, the same group dead-letters
    # exactly the rest, once.
    copies(devstack, rejected, 3)
    second = run_consumer(cli, devstack, "--topic", scratch, **limit)
    assert second.returncode == 1, second.stderr
    assert "circuit breaker" in last_line(second.stderr)
    went_out = len(devstack.read_topic(f"{scratch}-dlq")) - 4
    assert went_out in (1, 2), went_out
    off = {**limit, "ACADEMY_CONSUMER_MAX_CONSECUTIVE_DEAD_LETTERS": "0"}
    rest = run_consumer(cli, devstack, "--topic", scratch, **off)
    assert rest.returncode == 0, rest.stderr
    assert consumer_counts(rest.stdout) == {"events": 3 - went_out, "dead_lettered": 3 - went_out}
    assert len(devstack.read_topic(f"{scratch}-dlq")) == 4 + 3


# --- 1c. start-up checks; 8. bad settings, Kafka unreachable -------------------------------------------------


def test_start_up_says_ready_in_one_line(bus, devstack, cli):
    done = run_consumer(cli, devstack)
    assert done.returncode == 0, done.stderr
    ready = [line for line in done.stderr.splitlines() if " ready: " in line]
    assert len(ready) == 1, done.stderr
    assert "database" in ready[0] and devstack.topic in ready[0] and "schema registry" in ready[0]


def test_unmigrated_database_stops_the_consumer_with_one_line(devstack, cli, tmp_path):
    import sqlite3  # pylint: disable=import-outside-toplevel

    empty = tmp_path / "empty.sqlite3"
    sqlite3.connect(empty).close()
    done = cli("consume_academy_events", "--until-idle", IDLE,
               env={**devstack.env, "DATABASE_URL": f"sqlite:///{empty}"})
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "academy-consumer migrate" in lines[0], done.stderr


def test_unknown_librdkafka_property_exits_2_with_one_line(devstack, cli):
    done = cli("consume_academy_events", "--until-idle", IDLE,
               env={**devstack.env, "ACADEMY_CONSUMER_KAFKA_CONFIG": '{"no.such.property": 1}'})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no.such.property" in lines[0], done.stderr


@pytest.mark.parametrize("args", [[], ["--from-beginning"]], ids=["committed", "from-beginning"])
def test_kafka_unreachable_exits_1_in_bounded_time_and_few_lines(devstack, cli, args):
    import socket  # pylint: disable=import-outside-toplevel

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    done = cli("consume_academy_events", "--until-idle", IDLE, *args, timeout=60,
               env={**devstack.env, "EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"})
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - started < 40
    assert "Kafka did not answer" in last_line(done.stderr)
    assert len(done.stderr.splitlines()) <= 5, done.stderr


def test_broker_down_logs_each_distinct_kafka_error_once_per_30_s(bus, devstack, cli_popen):
    from tests.waiting import wait_for  # pylint: disable=import-outside-toplevel

    consumer = cli_popen("consume_academy_events", "--group-id", "down",
                         env={**devstack.env, **CONSUMER_ENV})
    wait_for(lambda: "assigned" in consumer.stderr or not consumer.running(), message="the assignment")
    devstack.stack.kafka.broker_down(1)
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline and consumer.running():  # the fault's duration, not a synchronisation
        time.sleep(0.5)
    devstack.stack.kafka.broker_up(1)
    assert consumer.running(), consumer.stderr
    consumer.send_signal(15)
    assert consumer.wait(timeout=30) == 0, consumer.stderr
    kafka_lines = [re.sub(r"^\S+ \S+ ", "", line) for line in consumer.stderr.splitlines()
                   if "academy_consumer.kafka" in line or "rdkafka" in line]
    assert kafka_lines, consumer.stderr  # the outage was reported ...
    normalized = [re.sub(r"\d+", "#", line) for line in kafka_lines]
    assert len(normalized) == len(set(normalized)), "\n".join(kafka_lines)  # ... each error once


# --- 2. future-dated events (the bound is the apply layer's; the consumer dead-letters them) ------------------


def test_a_future_dated_event_is_dead_lettered_and_a_later_update_applies(bus, devstack, cli):
    bus.produce("created", [academy(1, "Frozen Academy")], event_time="9999-12-31T00:00:00Z")
    bus.produce("updated", [academy(1, "Live Academy")])
    done = run_consumer(cli, devstack)
    assert done.returncode == 0, done.stderr
    assert consumer_counts(done.stdout) == {"events": 2, "created": 1, "dead_lettered": 1}
    assert academy_table() == {academy(1)["uuid"]: ("Live Academy", True)}
    (letter,) = devstack.read_dlq()
    assert letter.headers["dlq-error-class"] == DEAD_CLASS_REJECTED
    assert "ahead" in letter.headers["dlq-error-message"], letter.headers
    assert "ACADEMY_CONSUMER_MAX_FUTURE_SECONDS" in letter.headers["dlq-error-message"]
    assert EnterpriseAcademy.objects.get().source_timestamp.year < 9999


# --- 10. one INFO line per batch, none per event --------------------------------------------------------------


def test_info_log_has_one_line_per_batch_not_per_event(bus, devstack, cli):
    bus.produce("created", [academy(n) for n in range(1, 41)])
    done = run_consumer(cli, devstack, ACADEMY_CONSUMER_BATCH_SIZE="100")
    assert done.returncode == 0, done.stderr
    assert consumer_counts(done.stdout) == {"events": 40, "created": 40}
    batch_lines = [line for line in done.stderr.splitlines() if " batch " in line and "created" in line]
    assert batch_lines and sum(int(n) for line in batch_lines for n in re.findall(r"created (\d+)", line)) == 40
    assert len(done.stderr.splitlines()) < 15, done.stderr  # not 40 per-event lines


# --- 5. a restart waits for its partitions ------------------------------------------------------------------


def _killed_member(bus, devstack, cli_popen, group, env):
    """A consumer of ``group`` that got its partitions and was then SIGKILLed: the group keeps it for a session."""
    from tests.waiting import wait_for  # pylint: disable=import-outside-toplevel

    bus.produce("created", [academy(1)])
    first = cli_popen("consume_academy_events", "--group-id", group, env=env)
    wait_for(lambda: EnterpriseAcademy.objects.exists() or not first.running(), message="the first consumer")
    assert first.running(), first.stderr
    first.kill()
    bus.produce("created", [academy(2)])


LONG_SESSION = '{"session.timeout.ms": 40000, "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 100}'


@pytest.mark.slow
def test_a_restart_waits_for_its_partitions_and_says_so(bus, devstack, cli_popen):
    """The dead member holds the partitions until its 40 s session times out: waiting is logged, never fatal."""
    env = {**devstack.env, **CONSUMER_ENV, "ACADEMY_CONSUMER_KAFKA_CONFIG": LONG_SESSION}
    _killed_member(bus, devstack, cli_popen, "restarting", env)
    second = cli_popen("consume_academy_events", "--group-id", "restarting", "--until-idle", IDLE, env=env)
    assert second.wait(timeout=120) == 0, second.stderr
    waiting = [line for line in second.stderr.splitlines() if "waiting for a partition assignment" in line]
    assert len(waiting) == 1 and "since" in waiting[0], second.stderr  # after 30 s; assigned before 60 s
    assert consumer_counts(second.stdout)["events"] >= 1 and len(academy_table()) == 2


def test_group_instance_id_sets_static_membership(devstack, settings, monkeypatch):
    """``ACADEMY_CONSUMER_GROUP_INSTANCE_ID`` reaches librdkafka as ``group.instance.id`` (the mock broker
    does not implement static membership's fast rejoin, so this checks the real client's configuration)."""
    # pylint: disable=import-outside-toplevel
    from academy_consumer import kafka
    from academy_consumer.consumer import AcademyEventConsumer

    made = []

    def recording(config):
        made.append(config)
        return Consumer(config)  # the real client: it accepts the property

    monkeypatch.setattr(kafka, "Consumer", recording)
    settings.EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS = devstack.bootstrap_servers
    settings.EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL = devstack.stack.schema_registry_url
    settings.ACADEMY_CONSUMER_GROUP_INSTANCE_ID = "consumer-0"
    built = AcademyEventConsumer(group_id="static")
    try:
        assert made[-1]["group.instance.id"] == "consumer-0"
    finally:
        built.consumer.close()


# --- 6. --from-time applies exactly the events at or after the time ------------------------------------------


def test_from_time_skips_every_older_event_even_after_a_newer_one(bus, devstack, cli, scratch):
    """Timestamps need not grow with offsets (producers set them): an older event after a newer one is skipped."""
    import datetime  # pylint: disable=import-outside-toplevel

    from confluent_kafka import Producer  # pylint: disable=import-outside-toplevel

    bus.produce("created", [academy(n) for n in (1, 2, 3)])
    records = devstack.read_topic()
    since = datetime.datetime.now(datetime.timezone.utc)
    millis = int(since.timestamp() * 1000)
    producer = Producer(devstack.stack.producer_config())
    for number, stamp in [(1, millis + 1000), (2, millis - 3_600_000), (3, millis)]:  # newer, older, exactly then
        record = next(r for r in records if academy(number)["uuid"].encode() in r.key)
        producer.produce(scratch, value=record.value, key=record.key, headers=record.header_list, timestamp=stamp)
    assert producer.flush(15) == 0
    done = run_consumer(cli, devstack, "--topic", scratch, "--from-time", since.isoformat())
    assert done.returncode == 0, done.stderr
    assert consumer_counts(done.stdout) == {"events": 3, "created": 2, "before_replay_time": 1}
    assert set(academy_table()) == {academy(1)["uuid"], academy(3)["uuid"]}


# --- found by trying the consumer from outside: more configuration faults that are not bad events ------------


def test_a_registry_url_of_some_other_http_server_stops_the_consumer_at_start(bus, devstack, cli):
    import http.server  # pylint: disable=import-outside-toplevel
    import threading  # pylint: disable=import-outside-toplevel

    class Html(http.server.BaseHTTPRequestHandler):
        """An HTTP server that is no schema registry: an HTML page at every path."""

        def do_GET(self):  # pylint: disable=invalid-name
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>hello</html>")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    bus.produce("created", [academy(1), academy(2)])
    try:
        done = run_consumer(cli, devstack, EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL=f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 1, done.stderr
    assert "not as a schema registry does" in last_line(done.stderr), done.stderr
    assert devstack.read_dlq() == [] and academy_table() == {} and committed(devstack, "safety") == {}


def test_a_registry_that_resolves_ids_to_other_schemas_is_a_configuration_fault(bus, devstack, cli):
    """Another environment's registry: it knows no academy subject, and its ids name unrelated schemas."""
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient  # pylint: disable=import-outside-toplevel

    bus.produce("created", [academy(n) for n in range(1, 4)])
    other = SchemaRegistryServer().start()
    try:
        client = SchemaRegistryClient({"url": other.url})
        for n in range(1, 11):  # ids 1..10: whatever ids the academy events carry name one of these
            record = {"type": "record", "name": f"Other{n}", "fields": [{"name": "x", "type": "long"}]}
            client.register_schema(f"other-{n}-value", Schema(json.dumps(record), "AVRO"))
        done = run_consumer(cli, devstack, EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL=other.url)
    finally:
        other.stop()
    assert done.returncode == 1, done.stderr
    assert "knows none of the academy schemas" in last_line(done.stderr), done.stderr
    assert devstack.read_dlq() == [] and academy_table() == {} and committed(devstack, "safety") == {}


@pytest.mark.parametrize("env, says", [
    ({"ACADEMY_CONSUMER_MAX_FUTURE_SECONDS": "1e12"}, "ACADEMY_CONSUMER_MAX_FUTURE_SECONDS"),
    ({"ACADEMY_CONSUMER_BATCH_SIZE": "1000001"}, "ACADEMY_CONSUMER_BATCH_SIZE"),
    ({"ACADEMY_CONSUMER_GROUP_ID": " "}, "group id"),
    ({"ACADEMY_EVENTS_DLQ_TOPIC": "enterprise-academy-lifecycle"}, "dead-letter topic is the consumed topic"),
    ({"EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL": "http://user:REGSECRET@127.0.0.1:1"}, "SCHEMA_REGISTRY_URL"),
    ({"EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL": "notaurl"}, "SCHEMA_REGISTRY_URL"),
], ids=["future-bound-too-large", "batch-too-large", "blank-group", "dlq-is-topic", "registry-userinfo",
        "registry-not-a-url"])
def test_settings_the_consumer_cannot_use_are_one_line_and_exit_2(devstack, cli, env, says):
    done = cli("consume_academy_events", "--until-idle", IDLE, env={**devstack.env, **env})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
    assert "REGSECRET" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("args, says", [
    (["--from-time", "2099-01-01T00:00:00Z"], "in the future"),
    (["--from-offset", "0:1", "--from-offset", "0:2"], "names a partition twice"),
], ids=["future-from-time", "partition-twice"])
def test_replay_starts_that_would_lose_or_hide_events_are_refused(bus, devstack, cli, args, says):
    bus.produce("created", [academy(1)])
    done = run_consumer(cli, devstack, *args)
    assert done.returncode == 2 and says in last_line(done.stderr), done.stderr
    assert committed(devstack, "safety") == {}  # the group's events are still ahead of it


def test_a_dead_letter_is_logged_in_one_line_without_a_traceback(bus, devstack, cli):
    bus.produce("created", [academy(1, display_order=-1), academy(2)])
    done = run_consumer(cli, devstack)
    assert done.returncode == 0, done.stderr
    assert consumer_counts(done.stdout) == {"events": 2, "created": 1, "dead_lettered": 1}
    assert "Traceback" not in done.stderr, done.stderr
