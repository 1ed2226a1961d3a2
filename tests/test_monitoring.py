"""
What an operator sees of a running consumer (``academy_consumer.monitoring``): ``/metrics``, ``/healthz`` and
``/readyz`` scraped over real HTTP from a real ``consume_academy_events`` on the dev stack; health flipping
while the database is away; the kill switch; ``--json``; and the Open edX monitoring calls of the real loop
(edx-django-utils' functions wrapped only to observe them: no monitoring backend runs here).
"""

import json
import re
import signal
import sqlite3
import time

import pytest
from django.db import connection

from tests.factories import academy
from tests.helpers import CONSUMER_ENV, IDLE, http_get
from tests.waiting import wait_for

METRICS_LINE = re.compile(r"metrics on http://([\d.]+):(\d+)/metrics")


def samples(text):
    """``{'name{labels}': value}`` of a Prometheus text exposition."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


class Running:
    """A ``consume_academy_events --metrics-port 0`` in the background, and the base URL it serves on."""

    def __init__(self, cli_popen, devstack, env=None, args=()):
        self.process = cli_popen("consume_academy_events", "--group-id", "monitoring", "--metrics-port", "0",
                                 *args, env={**devstack.env, **CONSUMER_ENV, **(env or {})})
        match = wait_for(lambda: METRICS_LINE.search(self.process.stderr) or self._exited(), 30,
                         "the consumer to log its metrics address")
        self.base = f"http://{match.group(1)}:{match.group(2)}"

    def _exited(self):
        assert self.process.running(), f"the consumer exited:\n{self.process.stderr}"

    def metrics(self):
        status, body = http_get(self.base + "/metrics")
        assert status == 200, body
        return samples(body)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=60) == 0, self.process.stderr


@pytest.mark.slow
def test_metrics_move_as_events_apply_and_health_answers(bus, devstack, cli_popen):
    bus.produce("created", [academy(n) for n in range(1, 4)])
    consumer = Running(cli_popen, devstack)
    wait_for(lambda: http_get(consumer.base + "/readyz")[0] == 200, 30, "/readyz to answer 200")
    wait_for(lambda: consumer.metrics().get('academy_consumer_events_total{outcome="created"}') == 3, 30,
             "3 created events counted")
    wait_for(lambda: consumer.metrics().get("academy_consumer_last_commit_timestamp_seconds", 0) > 0, 30,
             "a commit time")
    wait_for(lambda: sum(v for k, v in consumer.metrics().items() if k.startswith("academy_consumer_lag{")) == 0
             and any(k.startswith("academy_consumer_lag{") for k in consumer.metrics()), 30, "lag 0 per partition")
    first = consumer.metrics()
    assert first["academy_consumer_batches_total"] >= 1
    assert first["academy_consumer_assigned_partitions"] == 3
    assert 0 <= first["academy_consumer_freshness_seconds"] < 600  # the events were produced just now
    status, body = http_get(consumer.base + "/healthz")
    assert status == 200 and body.startswith("ok"), body
    status, body = http_get(consumer.base + "/readyz")
    assert status == 200 and "partitions [0, 1, 2]" in body, body
    assert http_get(consumer.base + "/nothing")[0] == 404

    # The counters move with the stream: two updates and one deletion.
    bus.produce("updated", [academy(1, "Academy One v2"), academy(2, "Academy Two v2")])
    bus.produce("deleted", [academy(3)])
    wait_for(lambda: consumer.metrics().get('academy_consumer_events_total{outcome="updated"}') == 2
             and consumer.metrics().get('academy_consumer_events_total{outcome="deactivated"}') == 1, 30,
             "2 updated and 1 deactivated counted")
    assert consumer.metrics()["academy_consumer_batches_total"] > first["academy_consumer_batches_total"]
    consumer.stop()


def _database_away(devstack):
    """
    A context manager that takes the database away from the consumer: on SQLite an exclusive lock held by
    this process (the consumer's writes meet "database is locked"); on PostgreSQL and MariaDB a TCP proxy
    between them that is cut (connections reset, new ones refused). Yields ``(env, restore)``.
    """
    # pylint: disable=import-outside-toplevel
    import contextlib

    from tests.helpers import subprocess_database_url

    @contextlib.contextmanager
    def away():
        if connection.vendor == "sqlite":
            path = connection.settings_dict["NAME"]
            locker = sqlite3.connect(path, timeout=1, isolation_level=None)
            state = {"locked": False}

            def take():
                locker.execute("BEGIN EXCLUSIVE")
                state["locked"] = True

            def give_back():
                if state["locked"]:
                    locker.execute("ROLLBACK")
                    state["locked"] = False
            try:
                yield {}, take, give_back
            finally:
                give_back()
                locker.close()
            return
        from tests.fault.tcp_proxy import TcpProxy
        settings = connection.settings_dict
        proxy = TcpProxy(settings["HOST"] or "127.0.0.1", int(settings["PORT"]))
        url = subprocess_database_url().replace(f"@{settings['HOST']}:{settings['PORT']}/",
                                                f"@127.0.0.1:{proxy.port}/")
        try:
            yield {"DATABASE_URL": url}, lambda: proxy.cut(3600), proxy.restore
        finally:
            proxy.close()

    return away()


@pytest.mark.slow
def test_healthz_turns_503_while_the_database_is_away_longer_than_the_bound_and_back(bus, devstack, cli_popen):
    with _database_away(devstack) as (env, take, give_back):
        consumer = Running(cli_popen, devstack, env={
            **env, "ACADEMY_CONSUMER_UNHEALTHY_AFTER_SECONDS": "2", "ACADEMY_CONSUMER_RETRY_MAX_SECONDS": "0.5"})
        bus.produce("created", [academy(1)])
        wait_for(lambda: consumer.metrics().get('academy_consumer_events_total{outcome="created"}') == 1, 30,
                 "the first event applied")
        assert http_get(consumer.base + "/healthz")[0] == 200

        take()
        bus.produce("created", [academy(2)])  # a batch that cannot be applied while the database is away
        wait_for(lambda: consumer.metrics().get("academy_consumer_transient_retries_total", 0) >= 1, 60,
                 "the batch to be retried")

        def unhealthy():
            answer = http_get(consumer.base + "/healthz")
            return answer if answer[0] == 503 else None

        _, body = wait_for(unhealthy, 30, "/healthz to answer 503")
        assert body.startswith("retrying one batch for") and "more than 2 s" in body and body.count("\n") == 1, body
        if connection.vendor != "sqlite":  # (SQLite's SELECT 1 needs no lock: the file is still there)
            wait_for(lambda: http_get(consumer.base + "/readyz")[0] == 503, 30, "/readyz to answer 503")
            assert "the database does not answer" in http_get(consumer.base + "/readyz")[1]

        give_back()
        wait_for(lambda: http_get(consumer.base + "/healthz")[0] == 200, 60, "/healthz to answer 200 again")
        wait_for(lambda: consumer.metrics().get('academy_consumer_events_total{outcome="created"}') == 2, 30,
                 "the retried event applied")
        wait_for(lambda: http_get(consumer.base + "/readyz")[0] == 200, 30, "/readyz to answer 200 again")
        consumer.stop()


# Polls at most 1 s apart count as alive (half of max.poll.interval.ms); librdkafka wants the session timeout
# no longer than that interval.
# Short, so that a loop stuck in one database call (SQLite's 5 s lock wait) misses the poll bound (half of it, 2 s);
# not shorter: librdkafka times a JoinGroup request out after about max.poll.interval.ms + 3 s, and 2.3's (tox
# `min`) did so on every join with 2000 against the mock cluster, so that the consumer never got its partitions.
SHORT_POLL_INTERVAL = {"session.timeout.ms": 4000, "heartbeat.interval.ms": 1000, "max.poll.interval.ms": 4000}


@pytest.mark.skipif("connection.vendor != 'sqlite'",
                    reason="SQLite's lock makes a write wait (5 s) before it fails: a loop stuck in one call")
def test_healthz_turns_503_when_the_loop_has_not_polled_in_time(bus, devstack, cli_popen):
    from academy_devstack.command import MOCK_CONSUMER_CONFIG  # pylint: disable=import-outside-toplevel

    consumer = Running(cli_popen, devstack, env={
        "ACADEMY_CONSUMER_KAFKA_CONFIG": json.dumps({**MOCK_CONSUMER_CONFIG, **SHORT_POLL_INTERVAL})})
    # Ready and holding its partitions (a member without one is ready too, and would never see the event).
    wait_for(lambda: http_get(consumer.base + "/readyz") == (200, http_get(consumer.base + "/readyz")[1])
             and " assigned;" in http_get(consumer.base + "/readyz")[1], 30, "/readyz 200 with partitions assigned")
    # Idle and polling: alive for three times the bound (the loop tells the monitor each time it polls).
    watched = time.monotonic() + 3
    while time.monotonic() < watched:  # the duration watched, not a synchronisation
        status, body = http_get(consumer.base + "/healthz")
        assert status == 200 and body.startswith("ok: polled"), body
        time.sleep(0.2)
    locker = sqlite3.connect(connection.settings_dict["NAME"], timeout=1, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")  # the consumer's next write waits for it, inside one call
        bus.produce("created", [academy(1)])

        def unhealthy():
            answer = http_get(consumer.base + "/healthz")
            return answer if answer[0] == 503 else None

        _, body = wait_for(unhealthy, 30, "/healthz to answer 503")
        assert body.startswith("no poll for") and "max.poll.interval.ms, 2 s" in body, body
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    wait_for(lambda: http_get(consumer.base + "/healthz")[0] == 200, 30, "/healthz to answer 200 again")
    consumer.stop()


def test_healthz_turns_503_once_the_loop_stopped_or_missed_its_poll_bound():
    """``serve`` over real HTTP on a ``Monitor`` with the test's own clock (the loop's reports called by hand)."""
    from academy_consumer.monitoring import Monitor, serve  # pylint: disable=import-outside-toplevel

    now = [100.0]
    monitor = Monitor("topic", max_poll_interval_ms=10_000, unhealthy_after=30, clock=lambda: now[0])
    server = serve(monitor, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        now[0] += 4.9
        assert http_get(base + "/healthz") == (200, "ok: polled 4.9 s ago\n")
        now[0] += 0.2  # 5.1 s since the last poll: more than half of max.poll.interval.ms
        assert http_get(base + "/healthz") == (503, "no poll for 5 s (more than half of max.poll.interval.ms, 5 s)\n")
        monitor.polled()
        assert http_get(base + "/healthz")[0] == 200
        monitor.stopped("KeyboardInterrupt: ")
        assert http_get(base + "/healthz") == (503, "the consumer loop has stopped: KeyboardInterrupt: \n")
    finally:
        server.shutdown()
        server.server_close()


def test_without_prometheus_client_health_and_readiness_are_served_and_metrics_names_the_extra(
        bus, devstack, cli_popen, tmp_path):
    """A host service without the `metrics` extra: the consumer consumes, probes answer, /metrics says why not."""
    from academy_consumer.models import EnterpriseAcademy  # pylint: disable=import-outside-toplevel
    from tests.helpers import without_packages  # pylint: disable=import-outside-toplevel

    bus.produce("created", [academy(1), academy(2)])
    consumer = Running(cli_popen, devstack, env=without_packages(tmp_path, "prometheus_client"))
    wait_for(lambda: EnterpriseAcademy.objects.count() == 2, 30, "the 2 events applied")
    wait_for(lambda: http_get(consumer.base + "/readyz")[0] == 200, 30, "/readyz to answer 200")
    status, body = http_get(consumer.base + "/healthz")
    assert status == 200 and body.startswith("ok"), body
    status, body = http_get(consumer.base + "/metrics")
    assert status == 501, body
    assert body == ("/metrics needs prometheus-client, which is not installed: "
                    "pip install 'academy-consumer[metrics]'\n")
    consumer.stop()
    said = [line for line in consumer.process.stderr.splitlines() if "prometheus-client" in line]
    assert len(said) == 1 and " WARNING " in said[0], consumer.process.stderr
    assert "pip install 'academy-consumer[metrics]'" in said[0]


def test_the_kill_switch_stops_the_consumer_before_it_consumes(bus, devstack, cli):
    bus.produce("created", [academy(1)])
    done = cli("consume_academy_events", "--until-idle", IDLE,
               env={**devstack.env, **CONSUMER_ENV, "EVENT_BUS_KAFKA_CONSUMERS_ENABLED": "false"})
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines() == [
        "EVENT_BUS_KAFKA_CONSUMERS_ENABLED is off: the consumer does not consume (exit 0)"]
    assert done.stdout == ""
    # Nothing was read: a consumer with the switch on still finds the event.
    on = bus.consume("--json", group="academy-consumer")
    assert json.loads(on.stdout) == {"events": 1, "batches": 1, "outcomes": {"created": 1}}  # (one event: one batch)


def test_json_prints_the_final_counts_as_one_object(bus):
    bus.produce("created", [academy(1), academy(2)])
    bus.produce("updated", [academy(1, "Renamed")])
    done = bus.consume("--json")
    assert done.stdout.count("\n") <= 1
    final = json.loads(done.stdout)
    assert 1 <= final.pop("batches") <= 3  # (how the poll splits the stream into batches varies)
    assert final == {"events": 3, "outcomes": {"created": 2, "updated": 1}}


def test_a_metrics_port_that_is_taken_is_one_line_and_exit_2(devstack, cli):
    import socket  # pylint: disable=import-outside-toplevel
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli("consume_academy_events", "--until-idle", IDLE, "--metrics-port", str(port),
                   env={**devstack.env, **CONSUMER_ENV})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"CommandError: cannot serve metrics on 127.0.0.1:{port}: ")
    assert "Traceback" not in done.stderr
    bad = cli("consume_academy_events", "--metrics-port", "70000", env={**devstack.env, **CONSUMER_ENV})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_open_edx_monitoring_attributes_and_exceptions_of_the_real_loop(devstack, bus, settings, monkeypatch,
                                                                        caplog):
    """The loop runs in this process; edx-django-utils' functions are wrapped to record their calls."""
    # pylint: disable=import-outside-toplevel
    from academy_consumer import monitoring
    from academy_consumer.consumer import AcademyEventConsumer

    for name, value in devstack.env.items():
        setattr(settings, name, value)
    settings.ACADEMY_CONSUMER_BATCH_WAIT_SECONDS = "0.2"
    attributes, exceptions, traces = [], [], []
    real_set, real_record, real_trace = (monitoring.set_custom_attribute, monitoring.record_exception,
                                         monitoring.function_trace)

    def set_custom_attribute(key, value):
        attributes.append((key, value))
        real_set(key, value)

    def record_exception():
        import sys
        exceptions.append(sys.exc_info()[1])
        real_record()

    def function_trace(name, *args):
        traces.append(name)
        return real_trace(name, *args)

    monkeypatch.setattr(monitoring, "set_custom_attribute", set_custom_attribute)
    monkeypatch.setattr(monitoring, "record_exception", record_exception)
    monkeypatch.setattr(monitoring, "function_trace", function_trace)

    bus.produce("created", [academy(1), academy(2)])
    bus.produce("updated", [academy(1, "Academy One v2", display_order=-5)])  # rejected: dead-lettered
    with caplog.at_level("INFO", logger="academy_consumer.consumer"):
        stats = AcademyEventConsumer(group_id="monitoring-attributes", until_idle=float(IDLE)).run()

    assert stats.counts == {"created": 2, "dead_lettered": 1}
    # the operator's log: one line per batch (positions, counts, duration); each dead letter with topic,
    # partition, offset, ce_id, academy uuid and reason
    batch_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("batch ")]
    batch_line = rf"batch {re.escape(devstack.topic)}\[\d\]@\d+(-\d+)?( \[\d\]@\d+(-\d+)?)*: .+ \(\d+\.\d\d s\)"
    assert batch_lines and all(re.fullmatch(batch_line, line) for line in batch_lines), batch_lines
    dead_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dead-lettered ")]
    assert len(dead_lines) == 1, dead_lines
    assert re.fullmatch(rf"dead-lettered {re.escape(devstack.topic)}\[\d\]@\d+ \(ce_id [0-9a-f-]{{36}}, academy "
                        rf"{academy(1)['uuid']}\): AcademyEventRejected: .*display_order.*", dead_lines[0]), dead_lines
    seen = dict(attributes)  # (the last batch's value of each; counts are summed over the batches)
    assert seen["kafka_topic"] == devstack.topic
    assert sum(value for key, value in attributes if key == "academy_outcome_created") == 2
    assert sum(value for key, value in attributes if key == "academy_dead_letters") == 1
    assert sum(value for key, value in attributes if key == "kafka_batch_events") == 3
    assert "org.openedx.enterprise.academy.updated.v1" in ",".join(
        value for key, value in attributes if key == "kafka_event_types")
    assert {"kafka_partitions", "kafka_first_offset", "kafka_last_offset", "kafka_batch_events"} <= set(seen)
    assert [type(e).__name__ for e in exceptions] == ["AcademyEventRejected"]
    assert "display_order" in str(exceptions[0])
    assert traces and set(traces) == {"academy_consumer.batch"}


def test_a_long_run_logs_one_progress_line_every_interval(caplog):
    """The progress line of ``Monitor`` (a clock of the test's own: no waiting 10 s)."""
    from academy_consumer.monitoring import PROGRESS_SECONDS, Monitor  # pylint: disable=import-outside-toplevel

    now = [0.0]
    monitor = Monitor("topic", max_poll_interval_ms=300_000, unhealthy_after=300, clock=lambda: now[0])
    with caplog.at_level("INFO", logger="academy_consumer.monitoring"):
        for second in range(1, 26):  # 25 s of batches of 400 events, lag shrinking
            now[0] = float(second)
            monitor.batch_done({"created": 300, "unchanged": 100}, [], 0.1, None)
            monitor.progress(lag_left=10_000 - 400 * second)
        now[0] = 40.0
        monitor.progress(lag_left=0)  # the last 2,000 events, over the 20 s since the last line
        now[0] = 60.0
        monitor.progress(lag_left=0)  # idle and caught up: nothing to say
    lines = [r.getMessage() for r in caplog.records]
    assert PROGRESS_SECONDS == 10.0
    assert lines == [
        "progress: 4000 events applied in this run, 400 events/s over the last 10 s, lag 6000 event(s)",
        "progress: 8000 events applied in this run, 400 events/s over the last 10 s, lag 2000 event(s)",
        "progress: 10000 events applied in this run, 100 events/s over the last 20 s, lag 0 event(s)",
    ]
