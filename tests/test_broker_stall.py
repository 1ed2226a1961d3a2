"""
A broker that stops answering, seen from outside: the dev stack's process frozen with SIGSTOP (its mock
Kafka cluster and schema registry stop answering while their sockets stay open, as a hung broker's do),
right after the consumer applied its first batch with more events on their way, and while it is idle. Read
from the consumer's log and its ``/healthz`` and ``/readyz``: a WARNING naming the broker and how long it has
been silent, within the bound and not repeated more than once per bound; ``/readyz`` 503 past the bound while
``/healthz`` stays 200; after SIGCONT, the table exactly as produced, nothing dead-lettered, every event
committed, ``/readyz`` 200 again, no misleading line; SIGTERM then exits 0 promptly.

Also readiness without a partition (two members of one group on a one-partition topic: the one left without
a partition is ready) and a SIGTERM while a batch is retried (the dead-letter topic refuses every produce
request: the mock cluster's injected errors) exits 0 within seconds.

The bound is ``ACADEMY_CONSUMER_BROKER_SILENCE_SECONDS=3`` here (30 s by default), so that the file runs in
well under a minute and a half. Nothing is mocked: a real dev stack process, the real command, real HTTP.
"""

import os
import re
import signal
import subprocess
import threading
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.factories import Event, academy, at
from tests.helpers import CLI, CONSUMER_ENV, academy_table, http_get, produce_events
from tests.waiting import wait_for

SILENCE = 3.0  # ACADEMY_CONSUMER_BROKER_SILENCE_SECONDS of these tests
FROZEN = 7.5  # how long the broker is frozen: past the bound, past the session timeout (6 s) of the dev stack
METRICS_LINE = re.compile(r"metrics on http://([\d.]+):(\d+)/metrics")
TOPIC, DLQ_TOPIC = "enterprise-academy-lifecycle", "enterprise-academy-lifecycle-dlq"
SILENT_LINE = r"WARNING .*Kafka broker\(s\) not answering: (?P<who>\S+) silent for (?P<seconds>\d+) s"
MISLEADING = "broker version < 0.10"


class StackProcess:
    """
    ``academy-consumer devstack`` as a process of its own (the ``devstack`` fixture runs the stack in the test's
    process, which SIGSTOP would freeze too), its settings read from the env file it writes.
    """

    def __init__(self, directory):
        directory.mkdir()
        self.env_file = directory / ".devstack.env"
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE" and not k.startswith("EVENT_BUS_")}
        with open(directory / "devstack.out", "wb") as out:
            self.process = subprocess.Popen(  # pylint: disable=consider-using-with
                [*CLI, "devstack", "--env-file", str(self.env_file)], cwd=directory, env=env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        waited = subprocess.run([*CLI, "devstack", "--wait", "--timeout", "30", "--env-file", str(self.env_file)],
                                cwd=directory, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert waited.returncode == 0, waited.stderr
        from academy_devstack import envfile  # pylint: disable=import-outside-toplevel
        self.env = envfile.read(self.env_file)
        self.bootstrap_servers = self.env["EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS"]

    def freeze(self):
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self):
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self):
        """SIGTERM (thawed first), then kill if it does not end."""
        if self.process.poll() is None:
            self.thaw()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)

    def reader(self, group="test-stall-reader"):
        """A consumer that never joins ``group`` (only to read its committed offsets, or watermarks)."""
        return Consumer({"bootstrap.servers": self.bootstrap_servers, "group.id": group, "enable.auto.commit": False})

    def end_offset(self, topic, partition=0):
        """The high watermark of ``topic[partition]``."""
        reader = self.reader()
        try:
            return reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
        finally:
            reader.close()

    def committed(self, group, partitions=3):
        """Events the group committed, over the academy topic's partitions."""
        reader = self.reader(group)
        try:
            found = reader.committed([TopicPartition(TOPIC, p) for p in range(partitions)], timeout=10)
            return sum(max(tp.offset, 0) for tp in found)
        finally:
            reader.close()


@pytest.fixture
def stack_process(tmp_path, settings):
    """A dev stack process (stopped, thawed first, at teardown); the in-process producer points at it."""
    stack = StackProcess(tmp_path / "stack")
    settings.EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS = stack.bootstrap_servers
    settings.EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL = stack.env["EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL"]
    try:
        yield stack
    finally:
        stack.stop()


class Consumer_:  # pylint: disable=invalid-name
    """``consume_academy_events --metrics-port 0`` in the background (``cli_popen``) and its base URL."""

    def __init__(self, cli_popen, env, group):
        self.process = cli_popen("consume_academy_events", "--group-id", group, "--metrics-port", "0", env=env)
        match = wait_for(lambda: METRICS_LINE.search(self.process.stderr), 30, "the metrics address",
                         while_running=self.process)
        self.base = f"http://{match.group(1)}:{match.group(2)}"

    def ready(self):
        return http_get(self.base + "/readyz")

    def health(self):
        return http_get(self.base + "/healthz")

    def stop_within(self, seconds):
        """SIGTERM; the exit status is 0 within ``seconds``."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=seconds + 30) == 0, self.process.stderr[-3000:]
        took = time.monotonic() - started
        assert took <= seconds, f"exit took {took:.1f} s\n{self.process.stderr[-3000:]}"


def events(namespace, numbers):
    return [Event("created", academy(n, namespace=namespace), at(n)) for n in numbers]


def table_of(history):
    return {e.uuid: (e.academy["title"], True) for e in history}


@pytest.mark.slow
@pytest.mark.parametrize("when", ["mid-batch", "idle"])
def test_a_frozen_broker_is_warned_of_unready_and_ridden_out(when, stack_process, cli_popen):
    before, during = events(when, range(1, 41)), events(when, range(41, 51))
    produce_events(before)
    group = f"stall-{when}"
    env = {**stack_process.env, **CONSUMER_ENV, "ACADEMY_CONSUMER_BROKER_SILENCE_SECONDS": str(SILENCE),
           "ACADEMY_CONSUMER_BATCH_SIZE": "2"}
    consumer = Consumer_(cli_popen, env, group)
    log = consumer.process
    if when == "mid-batch":
        wait_for(lambda: " batch " in log.stderr, 30, "the first batch", interval=0.01, while_running=log)
    else:
        wait_for(lambda: len(academy_table()) == len(before), 30, "every event applied", while_running=log)
        wait_for(lambda: consumer.ready()[0] == 200, 30, "/readyz 200")
    applied_then = len(academy_table())
    lines_before = len(log.stderr.splitlines())

    stack_process.freeze()
    frozen_at = time.monotonic()
    producer = threading.Thread(target=produce_events, args=(during,))  # delivered once the broker answers
    producer.start()
    warned = wait_for(lambda: re.search(SILENT_LINE, "\n".join(log.stderr.splitlines()[lines_before:])),
                      SILENCE + 10, "a WARNING naming the silent broker", while_running=log)
    assert time.monotonic() - frozen_at <= SILENCE + 1.5, f"warned after {time.monotonic() - frozen_at:.1f} s"
    assert warned["who"] == stack_process.bootstrap_servers and int(warned["seconds"]) >= 1, warned.group(0)

    def unready():
        status, body = consumer.ready()
        return status == 503 and body

    body = wait_for(unready, SILENCE + 10, "/readyz 503 past the bound", while_running=log)
    assert "not answering" in body and stack_process.bootstrap_servers in body, body
    assert consumer.health()[0] == 200, consumer.health()
    wait_for(lambda: time.monotonic() - frozen_at >= FROZEN, FROZEN + 1, "the end of the outage")
    assert consumer.health()[0] == 200, consumer.health()
    outage_lines = log.stderr.splitlines()[lines_before:]
    warnings = [line for line in outage_lines if re.search(SILENT_LINE, line)]
    assert 1 <= len(warnings) <= FROZEN // SILENCE + 1, warnings

    stack_process.thaw()
    producer.join(timeout=60)
    expected = table_of(before + during)
    wait_for(lambda: academy_table() == expected, 60, lambda: f"the table caught up ({len(academy_table())} rows, "
             f"{applied_then} when frozen)", while_running=log)
    wait_for(lambda: stack_process.committed(group) == len(expected), 30, lambda: f"every event committed "
             f"({stack_process.committed(group)} of {len(expected)})\n{log.stderr[-4000:]}", while_running=log)
    wait_for(lambda: consumer.ready()[0] == 200, 30, lambda: f"/readyz 200 again: {consumer.ready()}",
             while_running=log)
    assert stack_process.end_offset(DLQ_TOPIC) == 0, "something was dead-lettered"
    assert MISLEADING not in log.stderr, [line for line in log.stderr.splitlines() if MISLEADING in line]
    consumer.stop_within(13)
    assert academy_table() == expected


@pytest.mark.slow
def test_a_member_without_a_partition_is_ready(devstack, cli_popen):
    devstack.stack.create_topic("academy-single", 1)
    devstack.stack.create_topic("academy-single-dlq", 1)
    env = {**devstack.env, **CONSUMER_ENV, "ACADEMY_EVENTS_TOPIC": "academy-single"}
    members = [Consumer_(cli_popen, env, "readiness") for _ in range(2)]

    def settled():  # (mid-rebalance, both may hold none for a moment: ready too, but not what is looked at here)
        answers = [member.ready() for member in members]
        holding = [body for _, body in answers if "partitions [0] of academy-single assigned" in body]
        return len(holding) == 1 and all(status == 200 for status, _ in answers) and answers

    answers = wait_for(settled, 60, lambda: f"both ready, one holding the partition: {[m.ready() for m in members]}")
    assert any("no partition of academy-single assigned to this member" in body for _, body in answers), answers
    assert all(member.health()[0] == 200 for member in members)
    for member in members:
        member.stop_within(13)


@pytest.mark.slow
def test_sigterm_while_a_batch_is_retried_exits_0_promptly(devstack, cli_popen):
    from academy_devstack import ApiKey, Err  # pylint: disable=import-outside-toplevel

    devstack.produce_raw(b"not an academy event", headers=[("ce_type", b"org.openedx.enterprise.academy.created.v1")],
                         partition=0)
    devstack.stack.kafka.push_request_errors(ApiKey.PRODUCE, [Err.NOT_ENOUGH_REPLICAS] * 100_000)
    process = cli_popen("consume_academy_events", "--group-id", "retrying",
                        env={**devstack.env, **CONSUMER_ENV})
    wait_for(lambda: "not applied" in process.stderr, 60, "a failed attempt (the dead-letter topic refuses)",
             while_running=process)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, process.stderr[-3000:]
    took = time.monotonic() - started
    assert took <= 15, f"exit took {took:.1f} s\n{process.stderr[-3000:]}"
    assert "stopping with the batch unapplied and uncommitted" in process.stderr
    reader = Consumer(devstack.stack.consumer_config("retrying", {"enable.auto.commit": False}))  # never joins
    try:
        committed = reader.committed([TopicPartition(devstack.topic, 0)], timeout=10)[0].offset
    finally:
        reader.close()
    assert committed < 1, f"the retried event was committed ({committed})"


# --- what the statistics say, and the log line, in process ----------------------------------------------------

def statistics(ts_seconds, *, rxidle_seconds, requests=1, state="UP", coordinator=None, join_state="steady"):
    """librdkafka's statistics JSON of one consumer with one broker (and its group coordinator, when given as
    ``(rxidle_seconds, requests, state)``): only the fields ``BrokerWatch`` reads, as librdkafka names them."""
    import json  # pylint: disable=import-outside-toplevel

    def broker(name, source, rxidle, waiting, broker_state):
        return {"name": name, "nodename": "kafka-1:9092", "nodeid": 1 if source == "learned" else -1,
                "source": source, "state": broker_state, "rxidle": -1 if rxidle is None else int(rxidle * 1e6),
                "waitresp_cnt": waiting, "outbuf_cnt": 0}

    brokers = {"kafka-1:9092/1": broker("kafka-1:9092/1", "learned", rxidle_seconds, requests, state),
               ":0/internal": broker(":0/internal", "internal", 100.0, 1, "UP")}
    if coordinator is not None:
        brokers["GroupCoordinator"] = broker("GroupCoordinator", "logical", *coordinator)
    return json.dumps({"name": "rdkafka#consumer-1", "ts": int(ts_seconds * 1e6), "brokers": brokers,
                       "cgrp": {"join_state": join_state}})


def test_readiness_and_warnings_follow_the_brokers_statistics(transactional_db, caplog):
    from academy_consumer.monitoring import Monitor  # pylint: disable=import-outside-toplevel

    clock = [100.0]
    monitor = Monitor("academies", max_poll_interval_ms=300_000, unhealthy_after=300, broker_silence=SILENCE,
                      clock=lambda: clock[0])
    assert monitor.readiness() == (False, "no Kafka broker has answered yet")

    def at(seconds, **stats):
        clock[0] = 100.0 + seconds
        monitor.kafka_statistics(statistics(seconds, **stats))
        return monitor.readiness()

    ready, line = at(1, rxidle_seconds=0.05)
    assert ready and "no partition of academies assigned to this member" in line, line
    assert at(2, rxidle_seconds=1.2)[0]  # (a long-poll fetch answered a second ago)
    with caplog.at_level("INFO", logger="academy_consumer.monitoring"):
        assert at(3, rxidle_seconds=2.0)[0]  # half the bound: warned, still ready
        ready, line = at(4, rxidle_seconds=-1, requests=0, state="APIVERSION_QUERY")  # reconnected, no answer
        assert not ready and line == "Kafka broker(s) not answering for 3 s or more: kafka-1:9092 silent for 3 s"
        assert not at(5, rxidle_seconds=None, requests=0, state="CONNECT")[0]
        assert at(6, rxidle_seconds=0.01)[0]
    said = [record.getMessage() for record in caplog.records]
    assert said == ["Kafka broker(s) not answering: kafka-1:9092 silent for 2 s, with requests waiting; /readyz "
                    "answers 503 past 3 s (the consumer goes on once they answer)",
                    "Kafka broker(s) answer again"], said
    # A broker nobody waits on is never silent; nor the coordinator that holds a JoinGroup through a rebalance.
    assert at(20, rxidle_seconds=14.0, requests=0)[0]
    assert at(21, rxidle_seconds=0.01, coordinator=(15.0, 1, "UP"), join_state="wait-join")[0]
    assert not at(22, rxidle_seconds=0.01, coordinator=(16.0, 1, "UP"))[0]


def test_librdkafka_broker_version_hint_is_not_logged(caplog):
    from academy_consumer import kafka  # pylint: disable=import-outside-toplevel

    with caplog.at_level("INFO", logger="academy_consumer.kafka"):
        kafka.kafka_log.warning("%s [%s] %s", "FAIL", "rdkafka#consumer-1", "GroupCoordinator: 127.0.0.1:9092: "
                                "ApiVersionRequest failed: Local: Timed out: probably due to broker version < 0.10 "
                                "(see api.version.request configuration) (after 10010ms in state APIVERSION_QUERY)")
    assert [record.getMessage() for record in caplog.records] == [
        "FAIL [rdkafka#consumer-1] GroupCoordinator: 127.0.0.1:9092: ApiVersionRequest failed: Local: Timed out: "
        "the broker did not answer the first request of the connection (after 10010ms in state APIVERSION_QUERY)"]


def test_asynchronous_commits_only_move_forward_and_a_refused_one_is_sent_again(devstack):
    """``offsets.Offsets`` as the consumer uses it, on a real client and the mock cluster refusing commits."""
    # pylint: disable=import-outside-toplevel
    from academy_consumer import monitoring
    from academy_consumer.offsets import Offsets
    from academy_devstack import ApiKey, Err

    monitor = monitoring.Monitor(devstack.topic, max_poll_interval_ms=300_000, unhealthy_after=300)
    found = {}

    def on_commit(error, partitions):  # (the Offsets is made after its client, as the consumer's is)
        found["it"].on_commit(error, partitions)

    client = Consumer(devstack.stack.consumer_config("offsets", {"enable.auto.commit": False, "on_commit": on_commit}))
    offsets = found["it"] = Offsets(client, devstack.topic, monitor, asynchronous=True)
    key = (devstack.topic, 0)
    try:
        client.assign([TopicPartition(devstack.topic, 0, 0)])
        devstack.track_requests()

        def answered():
            client.consume(1, timeout=0.05)  # (serves on_commit; nothing was produced, nothing is read)
            return not offsets.in_flight

        def group_committed():
            return client.committed([TopicPartition(devstack.topic, 0)], timeout=10)[0].offset

        # A refused commit is kept and sent again with the next one (after the next poll, in the loop).
        devstack.stack.kafka.push_request_errors(ApiKey.OFFSET_COMMIT, [Err.GROUP_AUTHORIZATION_FAILED])
        offsets.advance(devstack.topic, 0, 3)
        assert offsets.commit_uncommitted()
        wait_for(answered, 15, "the refused commit's answer")
        assert offsets.uncommitted == {key: 3} and group_committed() < 3
        offsets.commit_uncommitted()
        wait_for(answered, 15, "the second commit's answer")
        assert offsets.uncommitted == {} and offsets.committed == {0: 3} and group_committed() == 3

        # Refused while a newer offset is on its way: not sent again (it would go back), and the newer one stands.
        sent = devstack.requests_seen(ApiKey.OFFSET_COMMIT)
        devstack.stack.kafka.push_request_errors(ApiKey.OFFSET_COMMIT, [Err.GROUP_AUTHORIZATION_FAILED])
        offsets.advance(devstack.topic, 0, 5)
        offsets.commit_uncommitted()
        offsets.advance(devstack.topic, 0, 8)
        offsets.commit_uncommitted()
        wait_for(answered, 15, "both answers")
        offsets.commit_uncommitted()  # (nothing to send)
        assert offsets.uncommitted == {} and offsets.committed == {0: 8} and group_committed() == 8
        assert devstack.requests_seen(ApiKey.OFFSET_COMMIT) == sent + 2
    finally:
        client.close()
