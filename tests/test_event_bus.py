"""
The real-time path end to end, as users run it: ``produce_academy_event`` -> the event bus (the embedded
dev stack: librdkafka's mock cluster and a schema registry) -> ``consume_academy_events`` (or
openedx-events' stock ``consume_events``) -> the ``EnterpriseAcademy`` table and the dead-letter topic.

Every command is a subprocess on the test database (the ``cli`` / ``cli_popen`` fixtures). What is
asserted is what a user notices: the rows, the dead-letter topic, exit codes and one-line errors.
Waits are polls of a condition with a deadline; nothing sleeps to synchronise.
"""

import datetime
import json
import signal

import pytest

from academy_consumer.models import EnterpriseAcademy
from academy_devstack import ApiKey
from tests.factories import academy, academy_uuid
from tests.helpers import CONSUMER_ENV, IDLE, GroupOffsets, academy_table, consumer_counts, refused_port
from tests.waiting import wait_for

TIMEOUT = 30.0  # upper bound of any single wait
QUERY_UUID = "6f1c2d4e-8a9b-4c3d-9e8f-0a1b2c3d4e5f"


def snapshot():
    """Every stored column of every row (``id`` and ``modified`` included), keyed by uuid."""
    return {str(row["uuid"]): row for row in EnterpriseAcademy.objects.values()}


def uuid_of_record(record, uuids):
    """Which of ``uuids`` a record of the academy topic is about (the Avro key carries the uuid string)."""
    found = [u for u in uuids if u.encode() in (record.key or b"")]
    assert len(found) == 1, (record, found)
    return found[0]


# --- 1. created / updated / deleted ---------------------------------------------------------------------


@pytest.mark.slow
def test_created_updated_deleted_reach_the_table(bus, cli):
    data = academy(1, "Data Academy", catalog_query_uuid=QUERY_UUID, display_order=3)
    ai = academy(2, "AI Academy")
    bus.produce("created", [data, ai])
    first = bus.consume()
    assert consumer_counts(first.stdout) == {"events": 2, "created": 2}
    assert academy_table() == {data["uuid"]: ("Data Academy", True), ai["uuid"]: ("AI Academy", True)}
    row = EnterpriseAcademy.objects.get(uuid=data["uuid"])
    assert (row.slug, row.stripe_price_lookup_key, row.display_order, str(row.catalog_query_uuid)) == (
        "data-academy", "essentials_data_academy_yearly", 3, QUERY_UUID)

    # A rename (without catalog_query_uuid: absent means keep) and a delete, read by the same group.
    bus.produce("updated", [academy(1, "Data Science Academy")])
    bus.produce("deleted", [ai])
    second = bus.consume()
    assert consumer_counts(second.stdout) == {"events": 2, "updated": 1, "deactivated": 1}

    assert EnterpriseAcademy.objects.count() == 2  # renamed in place, delete keeps the row
    renamed = EnterpriseAcademy.objects.get(uuid=data["uuid"])
    assert renamed.pk == row.pk
    assert (renamed.name, renamed.is_active, str(renamed.catalog_query_uuid), renamed.display_order) == (
        "Data Science Academy", True, QUERY_UUID, 3)
    assert academy_table()[ai["uuid"]] == ("AI Academy", False)

    listed = cli("list_academies", "--json", env=bus.devstack.env)
    assert listed.returncode == 0, listed.stderr
    shown = {item["uuid"]: (item["name"], item["is_active"]) for item in json.loads(listed.stdout)}
    assert shown == academy_table()


# --- 2. re-delivery is harmless ------------------------------------------------------------------------


@pytest.mark.slow
def test_redelivery_leaves_exactly_the_same_rows(bus):
    bus.produce("created", [academy(n) for n in range(1, 6)])
    bus.produce("updated", [academy(1, "Academy One Renamed", display_order=7)])
    bus.produce("deleted", [academy(2)])
    first = bus.consume(group="first")
    assert consumer_counts(first.stdout) == {"events": 7, "created": 5, "updated": 1, "deactivated": 1}
    before = snapshot()
    assert len(before) == 5
    assert (before[academy_uuid(1)]["name"], before[academy_uuid(2)]["is_active"]) == ("Academy One Renamed", False)

    # A brand-new group (no committed offsets: from the earliest event) re-reads all of it ...
    fresh = bus.consume(group="second")
    assert consumer_counts(fresh.stdout)["events"] == 7
    assert not set(consumer_counts(fresh.stdout)) & {"created", "updated", "deactivated"}, fresh.stdout
    assert snapshot() == before
    # ... and so does an explicit replay from the beginning.
    again = bus.consume("--from-beginning", group="third")
    assert consumer_counts(again.stdout)["events"] == 7
    assert not set(consumer_counts(again.stdout)) & {"created", "updated", "deactivated"}, again.stdout
    assert snapshot() == before


# --- 3. replay ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_replay_from_offset_rereads_one_partition_from_that_offset(bus):
    items = [academy(n) for n in range(1, 10)]
    uuids = [item["uuid"] for item in items]
    bus.produce("created", items)
    bus.consume(group="replayer")
    assert set(academy_table()) == set(uuids)

    # Find where the events landed: 9 keys on 3 partitions, so some partition holds at least 3.
    records = bus.devstack.read_topic()
    assert len(records) == 9
    by_partition = {}
    for record in records:
        by_partition.setdefault(record.partition, []).append(record)
    partition, on_it = max(by_partition.items(), key=lambda entry: len(entry[1]))
    assert len(on_it) >= 3
    start = on_it[1].offset  # skip the partition's first event
    expected = {uuid_of_record(record, uuids) for record in on_it if record.offset >= start}

    EnterpriseAcademy.objects.all().delete()  # a fresh table, to see exactly what the replay applies
    replay = bus.consume("--from-offset", f"{partition}:{start}", group="replayer")
    assert consumer_counts(replay.stdout) == {"events": len(expected), "created": len(expected)}
    assert set(academy_table()) == expected


@pytest.mark.slow
def test_replay_from_time_applies_only_later_events(bus):
    first_batch = [academy(n) for n in range(1, 4)]
    second_batch = [academy(n) for n in range(11, 14)]
    bus.produce("created", first_batch)
    since = datetime.datetime.now(datetime.timezone.utc)
    bus.produce("created", second_batch)
    stamps = {uuid_of_record(r, [i["uuid"] for i in first_batch + second_batch]): r.timestamp_ms
              for r in bus.devstack.read_topic()}
    since_ms = since.timestamp() * 1000
    assert all(stamps[item["uuid"]] < since_ms for item in first_batch)  # the test's own premise
    assert all(stamps[item["uuid"]] >= since_ms for item in second_batch)

    bus.consume(group="live")
    assert len(academy_table()) == 6
    EnterpriseAcademy.objects.all().delete()

    # The mock broker cannot look offsets up by time: the consumer scans and skips older events.
    replay = bus.consume("--from-time", since.isoformat(), group="replay-from-time")
    assert consumer_counts(replay.stdout) == {"events": 6, "created": 3, "before_replay_time": 3}
    assert set(academy_table()) == {item["uuid"] for item in second_batch}


# --- 4. stale events ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_newer_state_wins_over_an_older_event(bus):
    bus.produce("created", [academy(1, "Data Academy")], event_time="2024-01-01T00:00:00Z")
    bus.produce("updated", [academy(1, "Data Academy (March)", display_order=5)], event_time="2024-03-01T00:00:00Z")
    bus.produce("updated", [academy(1, "Data Academy (February)", display_order=2)], event_time="2024-02-01T00:00:00Z")
    bus.produce("deleted", [academy(1, "Data Academy (March)")], event_time="2024-02-15T00:00:00Z")
    done = bus.consume()
    assert consumer_counts(done.stdout) == {"events": 4, "created": 1, "updated": 1, "stale": 2}
    row = EnterpriseAcademy.objects.get(uuid=academy_uuid(1))
    assert (row.name, row.display_order, row.is_active) == ("Data Academy (March)", 5, True)
    assert row.source_timestamp == datetime.datetime(2024, 3, 1, tzinfo=datetime.timezone.utc)


# --- 5. poison messages go to the dead-letter topic -------------------------------------------------------


@pytest.mark.slow
def test_poison_messages_are_dead_lettered_and_the_rest_applied(bus):
    good_a, good_b, negative = academy(1, "Alpha Academy"), academy(2, "Beta Academy"), academy(3, "Minus Academy")
    bus.produce("created", [good_a])
    template = bus.devstack.read_topic()[0]  # a real event: its key, value (schema-registry framed) and ce_* headers

    def headers(kind, drop=(), **replace):
        """The real event's headers, less ``drop``, with ``replace``d values, tagged with the poison kind."""
        kept = [(k, v) for k, v in template.header_list if k not in drop and k not in replace]
        return kept + [(k, v.encode()) for k, v in replace.items()] + [("test-poison", kind.encode())]

    # kind -> (value, headers, what the dead letter's error message mentions)
    unknown_type = "org.openedx.enterprise.academy.archived.v1"
    poison = {
        "not avro": (b"this is not Avro at all", headers("not avro"), ""),
        "garbled avro": (template.value[:5] + b"\xff\xff\xff", headers("garbled avro"), ""),
        "no ce_type": (template.value, headers("no ce_type", drop=("ce_type",)), "ce_type"),
        "unknown ce_type": (template.value, headers("unknown ce_type", ce_type=unknown_type), unknown_type),
        "not an academy event": (template.value, headers(
            "not an academy event", ce_type="org.openedx.learning.auth.session.login.completed.v1"),
            "not an academy event"),
    }
    for number, (value, message_headers, _) in enumerate(poison.values()):
        bus.devstack.produce_raw(value, headers=message_headers, key=template.key, partition=number % 3)
    bus.produce("created", [dict(negative, display_order=-1)])  # the producer accepts any int; the normalizer does not
    bus.produce("created", [good_b])

    records = bus.devstack.read_topic()
    assert len(records) == 8
    bad = {(r.partition, r.offset): r for r in records
           if "test-poison" in r.headers or negative["uuid"].encode() in r.key}
    assert len(bad) == 6

    done = bus.consume(group="with-poison")
    assert consumer_counts(done.stdout) == {"events": 8, "created": 2, "dead_lettered": 6}
    assert academy_table() == {good_a["uuid"]: ("Alpha Academy", True), good_b["uuid"]: ("Beta Academy", True)}

    dead = bus.devstack.read_dlq()
    assert len(dead) == 6
    by_kind = {}
    for letter in dead:
        position = (int(letter.headers["dlq-original-partition"]), int(letter.headers["dlq-original-offset"]))
        assert position in bad, letter.headers
        original = bad.pop(position)
        assert letter.headers["dlq-original-topic"] == bus.devstack.topic
        assert letter.headers["dlq-error-class"] and letter.headers["dlq-error-message"], letter.headers
        assert (letter.key, letter.value) == (original.key, original.value)
        assert [h for h in letter.header_list if not h[0].startswith("dlq-")] == original.header_list
        by_kind[letter.headers.get("test-poison", "negative display_order")] = letter.headers
    assert not bad, f"not dead-lettered: {bad}"
    for kind, (_, _, mentioned) in poison.items():
        assert mentioned in by_kind[kind]["dlq-error-message"], (kind, by_kind[kind])
    assert by_kind["no ce_type"]["dlq-error-class"].endswith("UnusableMessageError")
    assert by_kind["unknown ce_type"]["dlq-error-class"].endswith("UnusableMessageError")
    rejected = by_kind["negative display_order"]
    assert rejected["dlq-error-class"] == "academy_consumer.errors.AcademyEventRejected"
    assert "display_order" in rejected["dlq-error-message"] and negative["uuid"] in rejected["dlq-error-message"]

    # The offsets were committed past the dead letters: the same group reads nothing again.
    again = bus.consume(group="with-poison")
    assert consumer_counts(again.stdout) == {"events": 0}
    assert len(bus.devstack.read_dlq()) == 6


# --- 6. SIGTERM mid-stream ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_finishes_the_batch_in_hand_commits_it_and_a_restart_finishes_the_rest(
        bus, devstack, cli_popen, stop):
    """
    SIGTERM (Kubernetes) and SIGINT (Ctrl-C in a terminal) stop the same clean way: the batch in hand applied and
    committed, exit 0 with no KeyboardInterrupt traceback, what was applied is what was committed, and a restart
    applies exactly the rest.
    """
    total = 300
    items = [academy(n) for n in range(1, total + 1)]
    bus.produce("created", items)
    group = f"stopped-by-{stop.name.lower()}"
    # Small batches, so that the stop lands mid-stream (each batch is one transaction and one commit).
    env = {**devstack.env, **CONSUMER_ENV, "ACADEMY_CONSUMER_BATCH_SIZE": "5"}
    consumer = cli_popen("consume_academy_events", "--group-id", group, env=env)
    wait_for(lambda: EnterpriseAcademy.objects.exists() or not consumer.running(), message="the first rows")
    assert consumer.running(), consumer.stderr
    consumer.send_signal(stop)
    assert consumer.wait(timeout=TIMEOUT) == 0, consumer.stderr
    assert "Traceback" not in consumer.stderr and "KeyboardInterrupt" not in consumer.stderr, consumer.stderr
    stopped = consumer_counts(consumer.stdout)
    assert EnterpriseAcademy.objects.count() == stopped["events"] == stopped["created"]
    assert 0 < stopped["events"] < total, "the consumer was not stopped mid-stream; produce more events"
    # What it applied is what it committed: no batch left half-done, no applied event left uncommitted.
    with GroupOffsets(devstack, group) as offsets:
        assert offsets.total_committed() == stopped["events"]

    rest = bus.consume(group=group, extra_env={"ACADEMY_CONSUMER_BATCH_SIZE": "50"})
    assert consumer_counts(rest.stdout) == {"events": total - stopped["events"], "created": total - stopped["events"]}
    assert academy_table() == {item["uuid"]: (item["title"], True) for item in items}


# --- 6b. --max-events ------------------------------------------------------------------------------------


def test_max_events_stops_after_n_and_commits_exactly_those(bus, devstack, cli):
    items = [academy(n) for n in range(1, 8)]
    bus.produce("created", items)
    env = {**devstack.env, **CONSUMER_ENV}
    done = cli("consume_academy_events", "--group-id", "bounded", "--max-events", "3", timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert consumer_counts(done.stdout) == {"events": 3, "created": 3}
    records = devstack.read_topic()
    with GroupOffsets(devstack, "bounded") as offsets:
        committed = offsets.committed()
    covered = {uuid_of_record(r, [item["uuid"] for item in items]) for r in records
               if r.offset < committed[r.partition]}
    # The committed offsets cover exactly the three events in the table (the rest is left for the next run).
    assert len(covered) == 3 and covered == set(academy_table()), (committed, academy_table())


# --- 7. a new group starts from the earliest event ---------------------------------------------------------


@pytest.mark.slow
def test_new_group_without_offsets_starts_from_the_earliest_event(bus, devstack, cli):
    items = [academy(n) for n in range(1, 4)]
    bus.produce("created", items)  # before any consumer ever ran
    # No --group-id: the default group, which has never committed anything.
    done = cli("consume_academy_events", "--until-idle", IDLE, env={**devstack.env, **CONSUMER_ENV})
    assert done.returncode == 0, done.stderr
    assert consumer_counts(done.stdout) == {"events": 3, "created": 3}
    assert academy_table() == {item["uuid"]: (item["title"], True) for item in items}


def test_schema_registry_outage_is_retried_not_dead_lettered(bus, devstack, cli_popen):
    """The registry down when the consumer first needs a schema: a transient failure, never a dead letter."""
    from urllib.parse import urlsplit  # pylint: disable=import-outside-toplevel

    from tests.fault.tcp_proxy import TcpProxy  # pylint: disable=import-outside-toplevel

    items = [academy(n) for n in range(1, 4)]
    bus.produce("created", items)
    registry = urlsplit(devstack.stack.schema_registry_url)
    proxy = TcpProxy(registry.hostname, registry.port)
    try:
        proxy.cut(120)  # the consumer starts with the registry unreachable...
        consumer = cli_popen("consume_academy_events", "--until-idle", IDLE, env={
            **devstack.env, **CONSUMER_ENV, "ACADEMY_CONSUMER_RETRY_MAX_SECONDS": "1",
            "EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{proxy.port}"})
        wait_for(lambda: consumer.stderr.count("not applied") >= 2, timeout=60, message="retries of the batch")
        assert academy_table() == {} and consumer.running()
        proxy.restore()  # ... and comes back
        assert consumer.wait(timeout=60) == 0, consumer.stderr
    finally:
        proxy.close()
    assert consumer_counts(consumer.stdout) == {"events": 3, "created": 3}
    assert academy_table() == {item["uuid"]: (item["title"], True) for item in items}
    assert devstack.read_dlq() == []


# --- 8. the stock openedx-events consumer applies academy events through the same receivers ----------------


@pytest.mark.slow
def test_stock_consume_events_command_applies_academy_events(bus, devstack, cli_popen):
    from academy_consumer import conf  # pylint: disable=import-outside-toplevel

    devstack.track_requests()
    stock = cli_popen("consume_events", "-t", conf.topic(), "-g", "stock-consumer", env=devstack.env)
    # The stock consumer starts a new group at the LATEST offset: produce only once it fetches, i.e.
    # once its partitions are assigned and their start offsets resolved.
    wait_for(lambda: devstack.requests_seen(ApiKey.FETCH) or not stock.running(), message="the stock consumer to fetch")
    assert stock.running(), stock.stderr

    bus.produce("created", [academy(1, "Data Academy"), academy(2, "AI Academy")])
    bus.produce("updated", [academy(1, "Data Science Academy")])
    bus.produce("deleted", [academy(2, "AI Academy")])
    expected = {academy_uuid(1): ("Data Science Academy", True), academy_uuid(2): ("AI Academy", False)}
    wait_for(lambda: academy_table() == expected or not stock.running(),
             message="the stock consumer to apply the events")
    assert stock.running(), stock.stderr
    assert academy_table() == expected
    stock.send_signal(signal.SIGTERM)
    stock.wait(timeout=TIMEOUT)


# --- 9. exit codes -----------------------------------------------------------------------------------


def one_line(text):
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize("env", [{}, {"EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS": ""}], ids=["unset", "empty"])
def test_consumer_without_bootstrap_servers_exits_2_with_one_line(cli, monkeypatch, env):
    for name in ("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS", "EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL"):
        monkeypatch.delenv(name, raising=False)
    done = cli("consume_academy_events", "--until-idle", "1", env=env)
    assert done.returncode == 2
    assert "EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS" in one_line(done.stderr)


def test_consumer_without_schema_registry_exits_2_with_one_line(cli, devstack, monkeypatch):
    monkeypatch.delenv("EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL", raising=False)
    env = {k: v for k, v in devstack.env.items() if k != "EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL"}
    done = cli("consume_academy_events", "--until-idle", "1", env=env)
    assert done.returncode == 2
    assert "EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL" in one_line(done.stderr)


def test_producer_without_bootstrap_servers_exits_2_with_one_line(cli, monkeypatch):
    for name in ("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS", "EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL"):
        monkeypatch.delenv(name, raising=False)
    done = cli("produce_academy_event", "--action", "created", "--file", "-", input=json.dumps(academy(1)))
    assert done.returncode == 2, done.stderr
    assert "EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS" in one_line(done.stderr)


def test_producer_exits_1_with_one_line_when_the_broker_does_not_take_the_events(cli, devstack):
    with refused_port() as port:
        done = cli("produce_academy_event", "--action", "created", "--file", "-", input=json.dumps(academy(1)),
                   env={**devstack.env, "EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
                        "ACADEMY_PRODUCER_FLUSH_TIMEOUT_SECONDS": "1"})
    assert done.returncode == 1, (done.stdout, done.stderr)
    # Its own line says so (librdkafka's connection lines before it: docs/reference/guarantees.md, the known limits).
    errors = [line for line in done.stderr.splitlines() if not line.startswith("%")]
    assert len(errors) == 1 and "1 of 1 event(s) not delivered" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert "produced" not in done.stdout, done.stdout


@pytest.mark.parametrize("args", [
    ["--from-offset", "bad"],
    ["--from-offset", "0"],
    ["--from-offset", "0:-1"],
    ["--from-beginning", "--from-time", "2024-01-01T00:00:00Z"],
    ["--from-time", "yesterday"],
    ["--until-idle", "0"],
    ["--until-idle", "nan"],
    ["--until-idle", "inf"],
    ["--until-idle", "-inf"],
])
def test_consumer_bad_arguments_exit_2_with_one_line(cli, devstack, args):
    done = cli("consume_academy_events", *args, env=devstack.env)
    assert done.returncode == 2
    assert one_line(done.stderr).startswith("consume_academy_events: error:")


def test_producer_item_missing_title_exits_2_and_sends_nothing(cli, devstack):
    lines = json.dumps(academy(1)) + "\n" + json.dumps({"uuid": academy_uuid(2)}) + "\n"
    done = cli("produce_academy_event", "--action", "created", "--file", "-", env=devstack.env, input=lines)
    assert done.returncode == 2
    assert "item 2" in one_line(done.stderr) and "title" in done.stderr
    assert devstack.read_topic() == []


@pytest.mark.parametrize("args, says", [
    (["--topic", "no-such-topic"], "no-such-topic"),
    (["--topic", "no-such-topic", "--from-beginning"], "no-such-topic"),
])
def test_consumer_fatal_errors_exit_non_zero_with_one_line(cli, devstack, args, says):
    done = cli("consume_academy_events", "--until-idle", IDLE, *args, env=devstack.env)
    assert done.returncode == 1, done.stderr
    assert says in one_line(done.stderr)
    assert EnterpriseAcademy.objects.count() == 0


@pytest.mark.parametrize("args, says", [
    (["--from-offset", "7:0"], "no partition 7"),
    (["--from-offset", "1:5"], "past the end of partition 1"),  # the topic is empty: every partition ends at 0
])
def test_consumer_replay_start_outside_the_topic_exits_2_with_one_line(cli, devstack, args, says):
    """Kafka would reset an out-of-range offset to the earliest event: a silent replay of everything."""
    done = cli("consume_academy_events", "--until-idle", IDLE, *args, env=devstack.env)
    assert done.returncode == 2, done.stderr
    assert says in one_line(done.stderr)
    assert EnterpriseAcademy.objects.count() == 0
