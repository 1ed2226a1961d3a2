"""
The fault suite, Kafka side: the broker failing under a running consumer, and a corpus of poison messages.

1. ``test_consumer_rides_out_broker_faults``: a few thousand events stream through one
   ``consume_academy_events`` process while the embedded broker (librdkafka's mock cluster) goes down and
   comes back several times, answers Fetch and OffsetCommit requests with errors, answers slowly, and
   takes events while it is down. The consumer must recover by itself (it never exits), commit every
   offset in the end, dead-letter nothing (broker faults are not the events' fault) and leave exactly
   the newest state of every academy.
2. ``test_poison_corpus_is_dead_lettered_and_the_rest_applied``: bad messages of many kinds interleaved
   with a valid history. Every valid event applies; every bad one is in the dead-letter topic with its
   reason and a pointer back at the original message; the consumer goes on and exits 0 at idle.

Both also check what the table cannot show (``history.check_all_read``): the broker still holds every
produced event (low watermarks 0) and the consumer read every offset.

Waits are polls of a condition with a deadline; the only sleeps are the durations of the faults.
"""

import dataclasses
import datetime
import io
import json
import os
import random
import signal
import struct
import threading
import time
import uuid

import fastavro
import pytest
from confluent_kafka import Producer

from academy_consumer.models import EnterpriseAcademy
from academy_devstack import ApiKey, Err
from tests import waiting
from tests.factories import T0, generate
from tests.fault.history import check_all_read, check_table, expected_state
from tests.helpers import FAULT_CONSUMER_ENV, GroupOffsets, consumer_counts, produce_events

SEED = int(os.environ.get("ACADEMY_FAULT_SEED") or random.SystemRandom().randrange(2 ** 32))
TIMEOUT = 60.0  # upper bound of a single wait for the consumer to catch up


def seeded(message):
    return f"{message} (ACADEMY_FAULT_SEED={SEED})"


def wait_for(condition, timeout=TIMEOUT, interval=0.1, message="condition", *, while_running=None):
    """``tests.waiting.wait_for`` with this suite's bound and seed."""
    return waiting.wait_for(condition, timeout, message, interval, while_running=while_running, seed=SEED)


def table_signature():
    """Something that changes whenever the consumer applies an event (versions only grow)."""
    return sorted(EnterpriseAcademy.objects.values_list("uuid", "display_order", "is_active"))


@pytest.fixture
def group_offsets(devstack):
    """``group_offsets(group)`` -> a ``GroupOffsets`` of that group (closed before the dev stack)."""
    made = []

    def make(group):
        made.append(GroupOffsets(devstack, group))
        return made[-1]

    yield make
    for offsets in made:
        offsets.close()


# --- 1. broker faults ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_consumer_rides_out_broker_faults(producing, devstack, cli_popen, group_offsets, guarantee):
    # pylint: disable=too-many-statements  # one scenario, its faults in the order they are injected
    print(f"ACADEMY_FAULT_SEED={SEED}")
    kafka = devstack.stack.kafka
    rng = random.Random(SEED)
    history = generate(academies=250, events=3000, seed=SEED, namespace="broker-faults")
    cuts = [0, 500, 1000, 1500, 2000, 2250, 2500, 2950, 3000]
    chunks = [history[a:b] for a, b in zip(cuts, cuts[1:])]
    started = time.monotonic()
    group = "broker-faults"
    env = {**devstack.env, **FAULT_CONSUMER_ENV, "ACADEMY_CONSUMER_BATCH_SIZE": "50"}
    consumer = cli_popen("consume_academy_events", "--group-id", group, env=env)
    offsets = group_offsets(group)
    faults = 0

    def mark(what):  # a timeline, shown with a failure
        print(f"{time.monotonic() - started:6.1f}s {what}")

    def progressed(before):
        return lambda: table_signature() != before

    def outage(seconds):
        nonlocal faults
        mark(f"broker down for {seconds:.1f}s with {offsets.lag()} events uncommitted")
        kafka.broker_down(-1)
        time.sleep(seconds)  # the fault's duration, not a synchronisation
        kafka.broker_up(-1)
        faults += 1
        mark("broker up")

    def commit_errors(errors):
        """Inject OffsetCommit errors; returns a condition: "commit requests have consumed them all"."""
        seen = devstack.requests_seen(ApiKey.OFFSET_COMMIT)
        kafka.push_request_errors(ApiKey.OFFSET_COMMIT, errors)
        return lambda: devstack.requests_seen(ApiKey.OFFSET_COMMIT) >= seen + len(errors)

    devstack.track_requests()

    # 1-3: the broker goes away mid-stream (every broker: this cluster has one) and comes back; the last
    # outage outlasts the consumer's session (6 s), so the group also evicts it and it has to rejoin.
    for chunk, seconds in zip(chunks[:3], [rng.uniform(3.0, 5.0), rng.uniform(3.0, 5.0), 8.0]):
        before = table_signature()
        produce_events(chunk)
        mark(f"produced {len(chunk)}")
        wait_for(progressed(before), message="the consumer to apply events", while_running=consumer)
        outage(seconds)

    # 4: Fetch requests fail: errors the client surfaces, retries silently, or a dropped connection.
    dropped_connection = Err._TRANSPORT  # pylint: disable=protected-access
    fetch_errors = [Err.REQUEST_TIMED_OUT, Err.NOT_LEADER_FOR_PARTITION, dropped_connection,
                    Err.UNKNOWN_LEADER_EPOCH, Err.KAFKA_STORAGE_ERROR, Err.NETWORK_EXCEPTION] * 2
    seen = devstack.requests_seen(ApiKey.FETCH)
    kafka.push_request_errors(ApiKey.FETCH, fetch_errors)
    before = table_signature()
    produce_events(chunks[3])
    mark(f"pushed {len(fetch_errors)} Fetch errors, produced {len(chunks[3])}")
    wait_for(lambda: devstack.requests_seen(ApiKey.FETCH) >= seen + len(fetch_errors),
             message="the injected Fetch errors to be served", while_running=consumer)
    faults += len(fetch_errors)
    wait_for(progressed(before), message="the consumer to apply events after Fetch errors", while_running=consumer)

    # 5: OffsetCommit requests fail mid-stream, a dozen in a row (the client retries some kinds by itself).
    mid_stream_commit_errors = [Err.COORDINATOR_NOT_AVAILABLE, Err.NOT_COORDINATOR, Err.REQUEST_TIMED_OUT,
                                Err.COORDINATOR_LOAD_IN_PROGRESS, Err.REBALANCE_IN_PROGRESS, Err.UNKNOWN] * 2
    served = commit_errors(mid_stream_commit_errors)
    produce_events(chunks[4])
    mark(f"pushed {len(mid_stream_commit_errors)} OffsetCommit errors, produced {len(chunks[4])}")
    wait_for(served, message="the injected OffsetCommit errors to be served", while_running=consumer)
    faults += len(mid_stream_commit_errors)

    # 6: a slow broker.
    kafka.set_rtt(-1, 250)
    mark("rtt 250 ms")
    before = table_signature()
    produce_events(chunks[5])
    wait_for(progressed(before), message="the consumer to apply events through a slow broker", while_running=consumer)
    time.sleep(2)  # the fault's duration
    kafka.set_rtt(-1, 0)
    faults += 1
    mark("rtt 0")

    # 7: events produced while the broker is down (the producer buffers them and delivers on reconnect).
    mark(f"broker down with {offsets.lag()} events uncommitted; producing {len(chunks[6])}")
    kafka.broker_down(-1)
    producer_error = []

    def produce_while_down():
        try:
            produce_events(chunks[6])
        except Exception as exc:  # pylint: disable=broad-except
            producer_error.append(exc)

    producer = threading.Thread(target=produce_while_down, name="produce-while-down")
    producer.start()
    time.sleep(rng.uniform(3.0, 5.0))  # the fault's duration
    kafka.broker_up(-1)
    faults += 1
    mark("broker up")
    producer.join(timeout=60)
    assert not producer.is_alive() and not producer_error, seeded(f"producing while down: {producer_error}")
    mark(f"produced {len(chunks[6])}")

    # 8: once the consumer has caught up, the commits of a last burst of events fail, more times in a row than
    # the consumer's retries of one commit, and then nothing else arrives to be committed after it.
    wait_for(lambda: offsets.lag() == 0, timeout=90, message="the consumer to catch up", while_running=consumer)
    mark("caught up")
    # (The client retries NOT_COORDINATOR by itself; the others fail the commit.)
    end_commit_errors = [Err.REQUEST_TIMED_OUT, Err.REBALANCE_IN_PROGRESS, Err.UNKNOWN, Err.NOT_COORDINATOR] * 3
    served = commit_errors(end_commit_errors)
    produce_events(chunks[7])
    mark(f"pushed {len(end_commit_errors)} OffsetCommit errors, produced the last {len(chunks[7])}")

    # Everything applied and committed, by the same process.
    wait_for(lambda: offsets.lag() == 0, timeout=90, while_running=consumer,
             message=lambda: f"every offset to be committed (ends {offsets.ends()}, committed {offsets.committed()})")
    mark("all committed")
    assert served(), "the last OffsetCommit errors were not all served, yet the offsets are committed"
    faults += len(end_commit_errors)
    ends = offsets.ends()
    assert sum(ends.values()) >= len(history)
    consumer.send_signal(signal.SIGTERM)
    assert consumer.wait(timeout=30) == 0, seeded(consumer.stderr[-3000:])
    counts = consumer_counts(consumer.stdout)
    mark(f"consumer: {counts}")
    assert counts["events"] >= len(history), seeded(counts)  # re-reads after a lost commit count again

    check = check_table(expected_state(history))
    dead = devstack.read_dlq()  # every event here is valid: a dead letter is an event not applied
    read = check_all_read(devstack, [consumer], len(history))
    mark(f"{read.read} of {read.on_topic} offsets read, low watermarks {read.low_watermarks}")
    guarantee("broker faults", events=len(history), faults=faults,
              fault_kinds="broker down/up, Fetch/OffsetCommit errors, latency",
              lost=check.lost + len(dead) + read.unread, duplicates=check.duplicates, stale=check.stale)
    assert not dead, seeded(f"dead-lettered: {[(d.headers.get('dlq-error-message')) for d in dead[:5]]}")
    assert not read.problems, seeded(read.problems)
    assert (check.lost, check.duplicates, check.stale) == (0, 0, 0), seeded(check.problems[:10])


# --- 2. poison corpus ------------------------------------------------------------------------------------

CREATED_SCHEMA = os.path.join(os.path.dirname(__file__), "..", "..", "signals", "schemas",
                              "org+openedx+enterprise+academy+created+v1_schema.avsc")
TEMPLATE_TOPIC = "poison-templates"


@dataclasses.dataclass
class Bad:
    """One bad message of the corpus: its kind, what its dead letter's error message must mention, its key."""

    kind: str
    mentions: str
    uuid: str


def bad_uuid(kind):
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"poison-bad/{kind}"))


@pytest.fixture
def raw_producer(devstack):
    """``raw_producer(value, headers, key)``: one raw message to the academy topic, acknowledged (up to 16 MB)."""
    producer = Producer(devstack.stack.producer_config({"message.max.bytes": 16 * 1024 * 1024,
                                                        "message.timeout.ms": 15000}))

    def produce(value, headers, key):
        failures = []
        producer.produce(devstack.topic, value=value, key=key, headers=headers,
                         on_delivery=lambda err, msg: failures.append(err) if err else None)
        remaining = producer.flush(15)
        assert not failures and not remaining, f"raw message not delivered: {failures or 'timed out'}"

    yield produce
    del producer  # destroyed with its last reference (Producer.close() is newer than confluent-kafka's floor)


def avro_parts(value, schema):
    """A schema-registry framed Avro value -> (framing: magic byte + schema id, decoded record)."""
    return value[:5], fastavro.schemaless_reader(io.BytesIO(value[5:]), schema)


def avro_bytes(framing, record, schema):
    out = io.BytesIO()
    out.write(framing)
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


@pytest.mark.slow
def test_poison_corpus_is_dead_lettered_and_the_rest_applied(producing, devstack, cli_popen, raw_producer,
                                                             guarantee):
    # pylint: disable=too-many-locals,too-many-statements
    print(f"ACADEMY_FAULT_SEED={SEED}")
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient  # pylint: disable=import-outside-toplevel

    from academy_consumer.producer import encode, send_academy_events  # pylint: disable=import-outside-toplevel

    rng = random.Random(SEED)
    history = generate(academies=40, events=240, seed=SEED, namespace="poison-valid")
    expected = expected_state(history)
    bad = []  # every bad message, in the order its maker was built

    def academy(kind, **fields):
        return {"uuid": bad_uuid(kind), "title": f"Poison {kind}", **fields}

    # Valid-looking-but-wrong events, through the real producer path.
    holder = {"uuid": bad_uuid("lookup key holder"), "title": "Key Holder Academy",
              "stripe_price_lookup_key": "essentials_shared_key_yearly", "display_order": 1}
    by_producer = [
        ("no name (empty title)", academy("empty title", title=""), "missing name"),
        ("no name (whitespace title)", academy("blank title", title=" \t\n  "), "missing name"),
        ("negative display order", academy("negative order", display_order=-3), "display_order must not be negative"),
        ("oversized title", academy("long title", title="T" * 300), "name is too long"),
        ("control character in title", academy("control title", title="Bell\x07Academy"), "control character"),
        ("control character in description", academy("control description", short_description="a\x00b"),
         "control character"),
        ("lookup key collision", academy("lookup key taker", stripe_price_lookup_key="essentials_shared_key_yearly"),
         "stripe_price_lookup_key 'essentials_shared_key_yearly' is already used"),
        ("name collision", academy("name taker", title="key holder academy"),
         "name 'key holder academy' is already used"),
    ]

    def via_producer(kind, item, mentions):
        bad.append(Bad(kind, mentions, item["uuid"]))
        signal_, data = encode("created", item)
        return kind, lambda: send_academy_events([(signal_, data, T0 + datetime.timedelta(days=1))])

    # Raw kinds start from a real event of their own academy (real producer, on a scratch topic).
    raw_kinds = ["undecodable bytes", "empty value", "tombstone (no value)", "truncated avro", "wrong schema id",
                 "missing ce_type", "unknown ce_type", "duplicated ce_type", "not an academy event", "missing ce_time",
                 "unparseable ce_time", "invalid uuid", "textual display order", "oversized description"]
    devstack.stack.create_topic(TEMPLATE_TOPIC, 1)
    send_academy_events([(*encode("created", academy(kind, display_order=2)), T0 + datetime.timedelta(days=1))
                         for kind in raw_kinds], topic=TEMPLATE_TOPIC)
    templates = {}
    for record in devstack.read_topic(TEMPLATE_TOPIC):
        kind = next(k for k in raw_kinds if bad_uuid(k).encode() in record.key)
        templates[kind] = record
    assert set(templates) == set(raw_kinds)
    with open(CREATED_SCHEMA, encoding="utf-8") as handle:
        schema_json = json.load(handle)
    schema = fastavro.parse_schema(schema_json)
    subject = f"{devstack.topic}-org.openedx.enterprise.academy.created.v1.CloudEvent"
    registry = SchemaRegistryClient({"url": devstack.stack.schema_registry_url})

    def headers_of(template, drop=(), add=(), **replace):
        kept = [(k, v) for k, v in template.header_list if k not in drop and k not in replace]
        return kept + [(k, v.encode()) for k, v in replace.items()] + [(k, v.encode()) for k, v in add]

    def via_raw(kind, mentions, value=None, tombstone=False, **header_changes):
        template = templates[kind]
        bad.append(Bad(kind, mentions, bad_uuid(kind)))
        headers = headers_of(template, **header_changes)
        payload = None if tombstone else template.value if value is None else value
        return kind, lambda: raw_producer(payload, headers, template.key)

    def altered(kind, **changes):
        framing, record = avro_parts(templates[kind].value, schema)
        record["academy"].update(changes)
        return avro_bytes(framing, record, schema)

    # A writer schema where display_order is a string, registered under the subject of the created events
    # (after relaxing that subject's compatibility, as an operator forcing a broken producer through would).
    textual = json.loads(json.dumps(schema_json))
    for field in textual["fields"][0]["type"]["fields"]:
        if field["name"] == "display_order":
            field["type"] = ["null", "string"]
    registry.set_compatibility(subject_name=subject, level="NONE")
    textual_id = registry.register_schema(subject, Schema(json.dumps(textual), "AVRO"))
    _, textual_record = avro_parts(templates["textual display order"].value, schema)
    textual_record["academy"]["display_order"] = "five"
    unknown_id = textual_id + 1000

    type_of = dict(templates["missing ce_type"].header_list)["ce_type"].decode()
    rng_bytes = bytes(rng.randrange(256) for _ in range(64))
    makers = [
        via_raw("undecodable bytes", "magic byte", value=b"\x07" + rng_bytes),
        via_raw("empty value", "0 bytes", value=b""),
        via_raw("tombstone (no value)", "no value", value=None, tombstone=True),
        via_raw("truncated avro", "truncated", value=templates["truncated avro"].value[:-7]),
        via_raw("wrong schema id", f"Schema {unknown_id} not found",
                value=b"\x00" + struct.pack(">I", unknown_id) + templates["wrong schema id"].value[5:]),
        via_raw("missing ce_type", "Missing ce_type", drop=("ce_type",)),
        via_raw("unknown ce_type", "org.openedx.enterprise.academy.archived.v1",
                ce_type="org.openedx.enterprise.academy.archived.v1"),
        via_raw("duplicated ce_type", "Multiple ce_type", add=[("ce_type", type_of)]),
        via_raw("not an academy event", "not an academy event",
                ce_type="org.openedx.learning.auth.session.login.completed.v1"),
        via_raw("missing ce_time", "missing ce_time", drop=("ce_time",)),
        via_raw("unparseable ce_time", "yesterday", ce_time="yesterday"),
        via_raw("invalid uuid", "not a valid UUID: 'not-a-uuid'", value=altered("invalid uuid", uuid="not-a-uuid")),
        via_raw("textual display order", "schema mismatch",
                value=avro_bytes(b"\x00" + struct.pack(">I", textual_id), textual_record, textual)),
        via_raw("oversized description", "description is too long",
                value=altered("oversized description", short_description="D" * (3 * 1024 * 1024))),
    ] + [via_producer(*entry) for entry in by_producer]
    assert len({b.uuid for b in bad}) == len(bad) >= 12
    rng.shuffle(makers)

    # Phase 1: the lookup-key/name holder, the first half of the valid history and of the bad messages.
    # Phase 2, once the holder is applied (so that the collisions are the later events): the rest.
    collisions = {"lookup key collision", "name collision"}
    phase1 = [m for m in makers if m[0] not in collisions][:len(makers) // 2]
    phase2 = [m for m in makers if m not in phase1]
    rng.shuffle(phase2)
    half = len(history) // 2
    send_academy_events([(*encode("created", holder), T0)])
    expected[holder["uuid"]] = {"data": holder, "active": True, "time": T0}

    def interleave(valid, poison):
        """Produce ``valid`` in slices with the ``poison`` makers in between."""
        slices = max(len(poison), 1)
        size = -(-len(valid) // slices)
        for n in range(slices):
            produce_events(valid[n * size:(n + 1) * size])
            if n < len(poison):
                poison[n][1]()

    started = time.monotonic()
    interleave(history[:half], phase1)
    consumer = cli_popen("consume_academy_events", "--group-id", "poison", "--until-idle", "8",
                         env={**devstack.env, **FAULT_CONSUMER_ENV, "ACADEMY_CONSUMER_BATCH_SIZE": "25"})
    wait_for(lambda: EnterpriseAcademy.objects.filter(uuid=holder["uuid"]).exists(),
             message="the lookup key holder to be applied", while_running=consumer)
    interleave(history[half:], phase2)
    produced = time.monotonic() - started
    assert consumer.wait(timeout=120) == 0, seeded(f"exit status {consumer.process.returncode}\n"
                                                   f"{consumer.stderr[-3000:]}")

    # Which message is which: every bad one has its own academy uuid in its key.
    records = devstack.read_topic(timeout=30)
    assert len(records) == len(history) + 1 + len(bad), seeded(f"{len(records)} records on the topic")
    by_uuid = {b.uuid: b for b in bad}
    bad_at = {}
    for record in records:
        found = [u for u in by_uuid if u.encode() in (record.key or b"")]
        if found:
            bad_at[(record.partition, record.offset)] = (by_uuid[found[0]], record)
    assert len(bad_at) == len(bad)

    dead = devstack.read_dlq(timeout=30)
    letters = {}
    problems = []
    for letter in dead:
        position = (int(letter.headers["dlq-original-partition"]), int(letter.headers["dlq-original-offset"]))
        if position not in bad_at:
            problems.append(f"dead-lettered a valid event: {position} {letter.headers}")
            continue
        item, original = bad_at[position]
        message = letter.headers.get("dlq-error-message", "")
        print(f"{item.kind:34} {letter.headers.get('dlq-error-class')}: {message[:160]}")
        if item.kind in letters:
            problems.append(f"{item.kind}: dead-lettered twice")
        letters[item.kind] = letter
        if letter.headers.get("dlq-original-topic") != devstack.topic:
            problems.append(f"{item.kind}: dlq-original-topic {letter.headers.get('dlq-original-topic')}")
        if item.mentions.lower() not in message.lower():
            problems.append(f"{item.kind}: dlq-error-message {message[:300]!r} does not mention {item.mentions!r}")
        if not letter.headers.get("dlq-error-class"):
            problems.append(f"{item.kind}: no dlq-error-class")
        if (letter.key, letter.value) != (original.key, original.value):
            problems.append(f"{item.kind}: the dead letter's key/value differ from the original's")
        if [h for h in letter.header_list if not h[0].startswith("dlq-")] != original.header_list:
            problems.append(f"{item.kind}: the dead letter's headers differ from the original's")
    missing = [b.kind for b in bad if b.kind not in letters]
    wrongly_dead = len(dead) - len(letters) - sum("dead-lettered twice" in p for p in problems)
    counts = consumer_counts(consumer.stdout)
    check = check_table(expected)
    read = check_all_read(devstack, [consumer], len(history) + 1 + len(bad))
    print(f"produced in {produced:.1f}s, total {time.monotonic() - started:.1f}s; consumer: {counts}; "
          f"{read.read} of {read.on_topic} offsets read, low watermarks {read.low_watermarks}")
    valid = len(records) - len(bad)
    # lost: valid events not applied (dead-lettered or never consumed) or not showing in the table, and bad
    # events missing from the dead-letter topic; each problem counted.
    unconsumed = max(len(records) - counts["events"], read.unread, 0)
    guarantee("poison corpus", events=len(records), bad_inputs=len(bad),
              lost=wrongly_dead + unconsumed + check.lost + len(missing),
              duplicates=check.duplicates + (len(dead) - len(letters) - wrongly_dead), stale=check.stale)
    assert not missing, seeded(f"not dead-lettered: {missing}")
    assert not problems, seeded("\n".join(problems))
    assert not read.problems, seeded(read.problems)
    assert (check.lost, check.duplicates, check.stale) == (0, 0, 0), seeded(check.problems[:10])
    assert counts["events"] == len(records) and counts.get("dead_lettered") == len(bad), seeded(counts)
    assert counts["events"] - counts["dead_lettered"] == valid
