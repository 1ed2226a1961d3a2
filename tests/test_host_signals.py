"""
The host's own receivers of the academy signals under ``consume_academy_events`` (``academy_consumer.host_signals``).

The consumer (and the redrive) run in this process, against the dev stack (mock Kafka, schema registry) and the
test database, so that receivers connected here -- as a host connects its own -- are the ones it sends to.
Events are produced through the real producer path. What is asserted is what a host's receiver sees: which
events, how often, in which order, with which metadata and data, and the rows as another connection reads them
when it runs. The unit tests at the end send through ``host_signals.send_applied`` directly, with a small
stand-in for a Kafka message (confluent-kafka 2.6 cannot build one), on the test database.
"""

import collections
import datetime
import logging
import threading
import uuid

import pytest
from django.db import connection, connections
from openedx_events.apps import general_signal_handler
from openedx_events.data import EventsMetadata

from academy_consumer import host_signals, monitoring, receivers
from academy_consumer.consumer import AcademyEventConsumer
from academy_consumer.decode import AcademyEvent
from academy_consumer.models import EnterpriseAcademy
from academy_consumer.monitoring import Monitor
from academy_consumer.producer import encode, send_academy_events
from academy_consumer.redrive import Redrive
from academy_consumer_signals import ACADEMY_CREATED, ACADEMY_DELETED, ACADEMY_SIGNALS, ACADEMY_UPDATED, AcademyData
from tests.factories import academy, academy_uuid
from tests.helpers import IDLE, GroupOffsets, point_producer_at
from tests.kafka_messages import KafkaMessage

T0 = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)


def at(minutes):
    return T0 + datetime.timedelta(minutes=minutes)


def produce(*events):
    """Produce ``(action, item, time)`` events in order, through the real producer."""
    send_academy_events([(*encode(action, item), when) for action, item, when in events])


def read_committed_row(uuid_):
    """The row as ANOTHER database connection reads it (a thread has its own): committed data only."""
    found = []

    def read():
        try:
            found.append(EnterpriseAcademy.objects.filter(uuid=uuid_).values().first())
        finally:
            connections.close_all()

    thread = threading.Thread(target=read)
    thread.start()
    thread.join(30)
    return found[0]


class Recorder:
    """A host receiver of the three academy signals: what it got, and the row another connection saw then."""

    def __init__(self, read_rows=False):
        self.got = []
        self.read_rows = read_rows

    def __call__(self, sender, signal, academy, metadata, **kwargs):  # pylint: disable=redefined-outer-name
        row = read_committed_row(str(academy.uuid)) if self.read_rows else None
        self.got.append({"signal": signal, "academy": academy, "metadata": metadata, "row": row,
                         "in_transaction": connection.in_atomic_block, "kwargs": kwargs})

    def ids(self):
        return [str(entry["metadata"].id) for entry in self.got]


@pytest.fixture
def connect():
    """``connect(receiver)`` to the three academy signals, as a host connects its own; disconnected at teardown."""
    connected = []

    def connect_(receiver):
        for signal in ACADEMY_SIGNALS:
            signal.connect(receiver, weak=False)
        connected.append(receiver)
        return receiver

    yield connect_
    for receiver in connected:
        for signal in ACADEMY_SIGNALS:
            signal.disconnect(receiver)


@pytest.fixture
def stack(devstack, settings, transactional_db):
    """The settings of this process pointed at the dev stack (consumer and producer); small batches."""
    for name, value in devstack.env.items():
        setattr(settings, name, value)
    point_producer_at(settings, devstack)
    settings.ACADEMY_CONSUMER_BATCH_WAIT_SECONDS = "0.2"
    settings.ACADEMY_CONSUMER_BATCH_SIZE = "3"
    return devstack


@pytest.fixture
def app_applies(monkeypatch):
    """Calls of the app's own receivers into the apply layer (the real ``apply_change``, counted)."""
    calls = []
    real = receivers.apply_change

    def counted(change):
        calls.append(change)
        return real(change)

    monkeypatch.setattr(receivers, "apply_change", counted)
    return calls


def consume(group="host-signals", **options):
    consumer = AcademyEventConsumer(group_id=group, until_idle=float(IDLE), **options)
    stats = consumer.run()
    return consumer, stats


def sample(consumer, name, **labels):
    return consumer.monitor.metrics.registry.get_sample_value(name, labels)


def history():
    """Two academies: created, renamed, a rejected update (dead-lettered), falsy values, a stale and a duplicate
    update, a delete. Returns the academy items by number."""
    one, two = academy(1, "Data Academy"), academy(2, "AI Academy")
    produce(("created", one, at(0)), ("created", two, at(0)),
            ("updated", academy(1, "Data Science Academy"), at(1)),
            ("updated", academy(2, "AI Academy", display_order=-1), at(2)),  # rejected: dead-lettered
            ("updated", academy(1, "Data Science Academy", is_active=False, display_order=0, short_description=""),
             at(3)),
            ("updated", academy(2, "AI Academy v0"), at(-5)),  # older than the row: stale
            ("updated", academy(2, "AI Academy"), at(0)),  # the same as the row: unchanged
            ("deleted", two, at(4)))


def topic_events(devstack):
    """The produced events in offset order per partition: ce_id -> record; and the dead-lettered ce_ids."""
    records = {record.headers["ce_id"]: record for record in devstack.read_topic()}
    dead = {letter.headers["ce_id"] for letter in devstack.read_dlq()}
    return records, dead


# --- what a host receiver gets --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_host_receiver_gets_each_applied_event_once_in_order_after_commit(stack, connect, app_applies):
    recorder = connect(Recorder(read_rows=True))
    history()
    consumer, stats = consume()
    records, dead = topic_events(stack)
    assert len(records) == 8 and len(dead) == 1 and stats.counts["dead_lettered"] == 1
    assert stats.batches >= 3  # (batches of 3 events: the sends span batches)

    # Each applied event exactly once (stale and unchanged ones too); the dead-lettered one never.
    got = recorder.ids()
    assert collections.Counter(got).most_common(1)[0][1] == 1
    assert set(got) == set(records) - dead
    # In offset order per academy (one academy, one key, one partition).
    for number in (1, 2):
        key = academy_uuid(number)
        in_topic = [ce_id for ce_id, record in sorted(records.items(), key=lambda item: item[1].offset)
                    if key.encode() in record.key and ce_id not in dead]
        assert [ce_id for ce_id in got if ce_id in in_topic] == in_topic
    for entry in recorder.got:
        metadata, headers = entry["metadata"], records[str(entry["metadata"].id)].headers
        # The event's own metadata, from its headers, as the stock consumer builds it.
        assert entry["signal"].event_type == metadata.event_type == headers["ce_type"]
        assert metadata.time == datetime.datetime.fromisoformat(headers["ce_time"])
        assert (metadata.source, metadata.sourcehost, metadata.minorversion) == (
            headers["ce_source"], headers["sourcehost"], int(headers["ce_minorversion"]))
        assert entry["kwargs"]["from_event_bus"] is True
        # After the commit: another connection sees the row with this event (or a newer one) applied.
        assert not entry["in_transaction"]
        assert entry["row"] is not None and entry["row"]["source_timestamp"] >= metadata.time
    # The data as produced, False / 0 / "" kept.
    falsy = next(entry["academy"] for entry in recorder.got if entry["metadata"].time == at(3))
    assert (falsy.is_active, falsy.display_order, falsy.short_description) == (False, 0, "")
    assert isinstance(falsy, AcademyData) and str(falsy.uuid) == academy_uuid(1)
    deleted = next(entry for entry in recorder.got if entry["metadata"].time == at(4))
    assert deleted["signal"] is ACADEMY_DELETED and deleted["row"]["is_active"] is False

    # The app's own receivers did not apply anything again: no call into the apply layer, no row written since
    # the receiver read it.
    assert app_applies == []
    final = {str(row["uuid"]): row for row in EnterpriseAcademy.objects.values()}
    for number in (1, 2):
        last_seen = [entry["row"] for entry in recorder.got if str(entry["academy"].uuid) == academy_uuid(number)][-1]
        assert final[academy_uuid(number)] == last_seen
    assert sample(consumer, "academy_consumer_host_signals_total") == len(got)

    # The same signal sent by anyone else (the stock consume_events, a host's own code) still reaches them.
    ACADEMY_UPDATED.send_event_with_custom_metadata(
        EventsMetadata(event_type=ACADEMY_UPDATED.event_type, time=at(10)),
        academy=AcademyData(uuid=uuid.UUID(academy_uuid(1)), title="Renamed Elsewhere"))
    assert len(app_applies) == 1 and EnterpriseAcademy.objects.get(uuid=academy_uuid(1)).name == "Renamed Elsewhere"


@pytest.mark.slow
def test_a_failing_receiver_is_logged_and_counted_and_the_loop_goes_on(stack, connect, app_applies, monkeypatch,
                                                                       caplog):
    recorded = []
    real_record = monitoring.record_exception

    def record_exception():
        import sys  # pylint: disable=import-outside-toplevel
        recorded.append(sys.exc_info()[1])
        real_record()

    monkeypatch.setattr(monitoring, "record_exception", record_exception)

    def broken(sender, academy, metadata, **kwargs):  # pylint: disable=redefined-outer-name
        if str(academy.uuid) == academy_uuid(2):
            raise RuntimeError(f"billing is down for {academy.title}")

    connect(broken)
    after = connect(Recorder())  # connected after the broken one: it still gets every event
    history()
    with caplog.at_level(logging.ERROR, logger="academy_consumer.host_signals"):
        consumer, _ = consume()
    records, dead = topic_events(stack)
    assert set(after.ids()) == set(records) - dead and len(after.ids()) == len(set(after.ids()))
    failing = [ce_id for ce_id in after.ids() if academy_uuid(2).encode() in records[ce_id].key]
    assert len(failing) == 4  # created, stale, unchanged, deleted

    name = f"{broken.__module__}.{broken.__qualname__}"
    lines = [r.getMessage() for r in caplog.records if r.name == "academy_consumer.host_signals"]
    assert len(lines) == len(failing)
    for ce_id, line in zip(failing, lines):
        assert line.startswith(f"host receiver {name} of {records[ce_id].headers['ce_type']} failed on ce_id {ce_id} "
                               f"(academy {academy_uuid(2)}, ")
        assert "RuntimeError: billing is down" in line and "not sent again" in line
    assert all(r.levelno == logging.ERROR for r in caplog.records if r.name == "academy_consumer.host_signals")
    assert sample(consumer, "academy_consumer_host_receiver_errors_total", receiver=name) == len(failing)
    titles = [records[ce_id].value for ce_id in failing]  # (each event's own data, the stale one's included)
    assert [str(e) for e in recorded if isinstance(e, RuntimeError)] == [
        f"billing is down for {'AI Academy v0' if b'AI Academy v0' in value else 'AI Academy'}" for value in titles]

    # Nothing undone, nothing applied again, everything committed: a second run has nothing to send.
    assert app_applies == []
    assert {str(r.uuid): (r.name, r.is_active) for r in EnterpriseAcademy.objects.all()} == {
        academy_uuid(1): ("Data Science Academy", False), academy_uuid(2): ("AI Academy", False)}
    with GroupOffsets(stack, "host-signals") as offsets:
        assert offsets.lag() == 0
    _, again = consume()
    assert again.events == 0 and len(after.got) == len(records) - len(dead)


@pytest.mark.slow
def test_no_host_receiver_nothing_is_sent(stack, caplog):
    history()
    with caplog.at_level(logging.INFO, logger="openedx_events"):
        consumer, stats = consume()
    assert stats.counts["created"] == 2
    assert sample(consumer, "academy_consumer_host_signals_total") == 0
    # openedx-events logs the responses of every send it makes: it made none.
    assert not [r for r in caplog.records if r.name.startswith("openedx_events")]


class Crash(BaseException):
    """The process dying in the middle of a batch (after its sends, before its offset commit)."""


@pytest.mark.slow
def test_a_crash_before_the_offset_commit_sends_the_batch_again(stack, connect, settings):
    """At least once across a crash: the re-read batch is re-applied (harmlessly) and sent again."""
    settings.ACADEMY_CONSUMER_BATCH_SIZE = "100"
    recorder = connect(Recorder())
    # One academy: one partition, one batch.
    produce(("created", academy(1), at(1)), ("updated", academy(1, "Two"), at(2)),
            ("updated", academy(1, "Three"), at(3)))

    def crash(sender, metadata, **kwargs):
        if metadata.time == at(3):
            raise Crash("killed")

    connect(crash)
    with pytest.raises(Crash):
        consume()
    assert len(recorder.got) == 3 and EnterpriseAcademy.objects.get().name == "Three"
    for signal in ACADEMY_SIGNALS:
        signal.disconnect(crash)
    _, stats = consume()
    assert stats.counts == {"stale": 2, "unchanged": 1}
    assert recorder.ids()[3:] == recorder.ids()[:3]


# --- the redrive --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_dead_letters_are_not_sent_and_a_redrive_sends_those_it_applies(stack, connect, settings, app_applies):
    recorder = connect(Recorder())
    ahead = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=2)
    produce(("created", academy(1), ahead), ("created", academy(2), ahead),
            ("created", academy(9, display_order=-1), ahead))
    settings.ACADEMY_CONSUMER_MAX_FUTURE_SECONDS = "0"
    settings.ACADEMY_CONSUMER_MAX_CONSECUTIVE_DEAD_LETTERS = "0"
    _, stats = consume()
    assert stats.counts == {"dead_lettered": 3} and recorder.got == []

    settings.ACADEMY_CONSUMER_MAX_FUTURE_SECONDS = "600"
    results = Redrive().redrive()
    assert sorted(r.outcome for r in results) == ["created", "created", "failed"]
    assert sorted(str(entry["academy"].uuid) for entry in recorder.got) == [academy_uuid(1), academy_uuid(2)]
    assert all(entry["metadata"].time == ahead for entry in recorder.got) and app_applies == []


# --- unit tests: send_applied itself --------------------------------------------------------------------------


def applied(number=1, *, when=T0, action="updated", headers=None, **fields):
    """One applied ``(message, AcademyEvent)`` pair as the consumer hands it to ``send_applied``."""
    event_id = str(uuid.uuid4())
    event_type = f"org.openedx.enterprise.academy.{action}.v1"
    message = KafkaMessage(topic="academies", partition=0, offset=number, headers=headers if headers is not None else [
        ("ce_type", event_type.encode()), ("ce_id", event_id.encode()), ("ce_time", when.isoformat().encode()),
        ("ce_source", b"openedx/catalog/web"), ("sourcehost", b"catalog-1"), ("ce_minorversion", b"0")])
    event = AcademyEvent(event_type, action, academy(number, **fields), when, "academies", 0, number, event_id)
    return message, event


def monitor():
    return Monitor("academies", max_poll_interval_ms=300_000, unhealthy_after=300)


def errors(watched, receiver):
    return watched.metrics.registry.get_sample_value("academy_consumer_host_receiver_errors_total",
                                                     {"receiver": receiver})


@pytest.mark.django_db
def test_send_applied_skips_the_apps_own_receivers_only_for_the_event_it_sends(connect, app_applies):
    inner = []

    def host(sender, academy, metadata, **kwargs):  # pylint: disable=redefined-outer-name
        if str(academy.uuid) == academy_uuid(1):  # a host receiver that sends another academy event itself
            ACADEMY_CREATED.send_event(time=T0, academy=AcademyData(uuid=uuid.UUID(academy_uuid(2)), title="Two"))
            inner.append(host_signals.applied_here(metadata))

    connect(host)
    watched = monitor()
    assert host_signals.send_applied([applied(1)], watched) == 1
    # The app's receivers skipped the event being sent, and applied the host's own one (another id).
    assert [change.item["uuid"] for change in app_applies] == [academy_uuid(2)] and inner == [True]
    assert list(EnterpriseAcademy.objects.values_list("name", flat=True)) == ["Two"]
    assert not host_signals.applied_here(EventsMetadata(event_type=ACADEMY_UPDATED.event_type))


@pytest.mark.django_db
def test_send_applied_with_only_the_apps_receivers_sends_nothing(connect, app_applies, caplog):
    # openedx-events' producer handler (EVENT_BUS_PRODUCER_CONFIG connects it) declines events from the bus.
    connect(general_signal_handler)
    with caplog.at_level(logging.INFO, logger="openedx_events"):
        assert host_signals.send_applied([applied(1), applied(2, action="deleted")], monitor()) == 0
    assert not caplog.records and app_applies == []


@pytest.mark.django_db
def test_under_debug_the_raising_receiver_is_named_and_the_next_events_are_sent(connect, settings, caplog):
    """settings.DEBUG: openedx-events sends without send_robust, the exception comes out of the send."""
    settings.DEBUG = True
    got = []

    def broken(sender, academy, **kwargs):  # pylint: disable=redefined-outer-name
        if academy.title == "Academy 1":
            raise ValueError("no such price")

    connect(broken)
    connect(lambda sender, academy, **kwargs: got.append(academy.title))
    watched = monitor()
    with caplog.at_level(logging.ERROR, logger="academy_consumer.host_signals"):
        assert host_signals.send_applied([applied(1), applied(2)], watched) == 2
    name = f"{broken.__module__}.{broken.__qualname__}"
    assert got == ["Academy 2"] and errors(watched, name) == 1
    assert caplog.records[0].getMessage().startswith(f"host receiver {name} of ")
    assert "without send_robust" in caplog.records[0].getMessage() and caplog.records[0].exc_info


@pytest.mark.django_db
def test_an_event_whose_metadata_cannot_be_built_is_counted_as_not_sent(connect, caplog):
    recorder = connect(Recorder())
    message, event = applied(1)  # ce_minorversion twice: the stock consumer refuses it too
    bad_version = (KafkaMessage(topic="academies", partition=0, offset=1,
                                headers=message.headers() + [("ce_minorversion", b"1")]), event)
    other_zone = applied(2, when=T0.astimezone(datetime.timezone(datetime.timedelta(hours=2))))
    watched = monitor()
    with caplog.at_level(logging.ERROR, logger="academy_consumer.host_signals"):
        assert host_signals.send_applied([bad_version, other_zone], watched) == 1
    assert errors(watched, host_signals.NOT_SENT) == 1 and "ce_minorversion" in caplog.records[0].getMessage()
    # A time with another UTC offset is the same instant: sent, in UTC (EventsMetadata takes UTC only).
    assert [entry["metadata"].time for entry in recorder.got] == [T0]
    assert recorder.got[0]["metadata"].time.tzinfo == datetime.timezone.utc


@pytest.mark.django_db
def test_a_disabled_signal_sends_nothing(connect):
    recorder = connect(Recorder())
    ACADEMY_UPDATED.disable()
    try:
        assert host_signals.send_applied([applied(1)], monitor()) == 0
    finally:
        ACADEMY_UPDATED.enable()
    assert recorder.got == []


@pytest.mark.django_db
def test_an_event_openedx_events_refuses_is_counted_as_not_sent(connect, monkeypatch, caplog):
    """openedx-events' own guard (SenderValidationError): here a data object of the wrong class is handed to it."""
    recorder = connect(Recorder())
    monkeypatch.setattr(host_signals, "academy_data_from_dict", dict)
    watched = monitor()
    with caplog.at_level(logging.ERROR, logger="academy_consumer.host_signals"):
        assert host_signals.send_applied([applied(1)], watched) == 0
    assert recorder.got == [] and errors(watched, host_signals.NOT_SENT) == 1
    line = caplog.records[0].getMessage()
    assert line.startswith(f"host receiver {host_signals.NOT_SENT} of ") and "SenderValidationError" in line
    assert "openedx-events refused to send it" in line
