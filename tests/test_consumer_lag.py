"""
``consumer_lag`` as users run it (a subprocess, the ``cli`` fixture) against the embedded dev stack (the
``devstack`` fixture: librdkafka's mock cluster), with events produced by ``produce_academy_event`` and consumed
by ``consume_academy_events``. What is asserted is what a user sees: the per-partition lines and the total, the
JSON object, exit codes and one-line errors. Nothing sleeps to synchronise: every command is waited for.
"""

import json
import re
import socket
import time

import pytest

from tests.factories import academy
from tests.helpers import CONSUMER_ENV, IDLE

GROUP = "lag-test"
LINE = re.compile(r"partition +(\d+)  committed +(none|\d+)  end +(\d+)  lag +(\d+)")
TOTAL = re.compile(r"total +lag +(\d+)  \(group (\S+), topic (\S+)\)")


def one_line(done, status, *words):
    """Exit ``status``, exactly one line on stderr holding ``words``, nothing on stdout, no traceback."""
    assert done.returncode == status, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def produce(cli, devstack, numbers):
    lines = "".join(json.dumps(academy(n)) + "\n" for n in numbers)
    done = cli("produce_academy_event", "--action", "created", "--file", "-", env=devstack.env, input=lines)
    assert done.returncode == 0, done.stderr
    assert f"produced {len(numbers)} " in done.stdout


def consume(cli, devstack, group=GROUP):
    done = cli("consume_academy_events", "--group-id", group, "--until-idle", IDLE,
               env={**devstack.env, **CONSUMER_ENV})
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def lag(cli, devstack, *args, env=None):
    """``consumer_lag ARGS`` on the dev stack (and no usable database: it needs none)."""
    return cli("consumer_lag", *args, env={**devstack.env, "DATABASE_URL": "sqlite:////nonexistent/dir/db.sqlite3",
                                           **(env or {})})


def human(done):
    """The human output -> ({partition: (committed or None, end, lag)}, total, group, topic); nothing else printed."""
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    rows = {}
    for line in lines[:-1]:
        match = LINE.fullmatch(line)
        assert match, line
        partition, committed, end, lag_ = match.groups()
        rows[int(partition)] = (None if committed == "none" else int(committed), int(end), int(lag_))
    total = TOTAL.fullmatch(lines[-1])
    assert total, lines[-1]
    assert len({len(line.partition("lag")[0]) for line in lines}) == 1, f"lag column not aligned:\n{done.stdout}"
    return rows, int(total.group(1)), total.group(2), total.group(3)


def as_json(done):
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return json.loads(done.stdout)


def same(rows, total, document):
    """The human output and the JSON object say the same."""
    assert document["total_lag"] == total
    assert {p["partition"]: (p["committed"], p["end"], p["lag"]) for p in document["partitions"]} == rows
    assert [p["partition"] for p in document["partitions"]] == sorted(rows)


def ends(devstack):
    """Per partition of the academy topic: the offsets of its records (read back from the broker)."""
    found = {p: [] for p in range(3)}
    for record in devstack.read_topic():
        found[record.partition].append(record.offset)
    return found


def test_a_group_that_never_committed_does_not_exist(devstack, cli):
    """On the mock (no ListGroups) a group without a committed offset on the topic is unknown: exit 2."""
    one_line(lag(cli, devstack, "--group-id", GROUP), 2, f"consumer group {GROUP} does not exist", devstack.topic)
    produce(cli, devstack, range(1, 5))
    one_line(lag(cli, devstack, "--group-id", GROUP, "--json"), 2, f"consumer group {GROUP} does not exist")
    # the default group is the consumer's: ACADEMY_CONSUMER_GROUP_ID, else "academy-consumer"
    one_line(lag(cli, devstack), 2, "consumer group academy-consumer does not exist")
    one_line(lag(cli, devstack, env={"ACADEMY_CONSUMER_GROUP_ID": "from-setting"}), 2,
             "consumer group from-setting does not exist")


class _Listing:
    """
    A broker's ListGroups answer, stood in: the mock cluster has no ListGroups (the test above is its answer), so
    what real Kafka answers is given to ``_group_listed`` as confluent-kafka hands it over (``valid``, ``errors``).
    """

    def __init__(self, groups, errors):
        from types import SimpleNamespace  # pylint: disable=import-outside-toplevel

        self.valid = [SimpleNamespace(group_id=group) for group in groups]
        self.errors = errors

    def admin(self):
        return self

    def list_consumer_groups(self, request_timeout):
        assert 0 < request_timeout <= 10
        return self

    def result(self):
        return self

    timeout, last_error = 10.0, None

    @staticmethod
    def remaining():
        return 10.0

    def unavailable(self, reason):
        from academy_consumer.lag import _Client  # pylint: disable=import-outside-toplevel

        return _Client.unavailable(self, reason)  # the real client's error, with this one's bound


def test_a_group_exists_when_a_broker_lists_it():
    # pylint: disable=import-outside-toplevel,protected-access
    from confluent_kafka import KafkaError

    from academy_consumer.errors import KafkaUnavailable
    from academy_consumer.lag import _group_listed

    refused = KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED)
    assert _group_listed(_Listing(["other", GROUP], []), GROUP) is True
    assert _group_listed(_Listing(["other", GROUP], [refused]), GROUP) is True  # one broker's answer is enough
    assert _group_listed(_Listing(["other"], []), GROUP) is False  # every broker answered: nobody knows it
    assert _group_listed(_Listing(["other"], [refused]), GROUP) is None  # a broker that did not say
    with pytest.raises(KafkaUnavailable, match="Kafka did not answer"):
        _group_listed(_Listing([], [KafkaError(KafkaError._TIMED_OUT)]), GROUP)


@pytest.mark.slow
def test_lag_is_zero_after_consuming_and_counts_what_was_produced_since(devstack, cli):
    produce(cli, devstack, range(1, 10))
    consume(cli, devstack)
    offsets = ends(devstack)
    assert sum(len(o) for o in offsets.values()) == 9

    rows, total, group, topic = human(lag(cli, devstack, "--group-id", GROUP))
    assert (group, topic) == (GROUP, devstack.topic)
    assert total == 0
    for partition, found in offsets.items():
        end = len(found)
        # the consumer commits where it applied events; an empty partition has nothing to commit
        assert rows[partition] == ((end if end else None), end, 0), (partition, rows)
    same(rows, total, as_json(lag(cli, devstack, "--group-id", GROUP, "--json")))
    committed = {p: c for p, (c, _, _) in rows.items()}

    produce(cli, devstack, range(10, 16))  # M = 6 more
    offsets = ends(devstack)
    rows, total, _, _ = human(lag(cli, devstack, "--group-id", GROUP))
    assert total == 6
    for partition, found in offsets.items():
        behind = sum(1 for offset in found if offset >= (committed[partition] or 0))
        assert rows[partition] == (committed[partition], len(found), behind), (partition, rows)
    assert sum(lag_ for _, _, lag_ in rows.values()) == total
    document = as_json(lag(cli, devstack, "--group-id", GROUP, "--json"))
    assert (document["topic"], document["group_id"]) == (devstack.topic, GROUP)
    same(rows, total, document)

    consume(cli, devstack)  # caught up again
    rows, total, _, _ = human(lag(cli, devstack, "--group-id", GROUP))
    assert total == 0 and all(c == end for c, end, _ in rows.values() if end)


def test_a_partition_without_a_committed_offset_lags_by_its_whole_retained_log(devstack, cli):
    """committed "none" (null in JSON): lag = end - low watermark (here 0)."""
    from confluent_kafka import Consumer, TopicPartition  # pylint: disable=import-outside-toplevel

    produce(cli, devstack, range(1, 10))
    offsets = ends(devstack)
    full = max(offsets, key=lambda p: len(offsets[p]))
    # A group that committed on one partition only (a consumer that was assigned just that one).
    committer = Consumer(devstack.stack.consumer_config("partial", {"enable.auto.commit": False}))
    try:
        committer.commit(offsets=[TopicPartition(devstack.topic, full, 1)], asynchronous=False)
    finally:
        committer.close()
    rows, total, _, _ = human(lag(cli, devstack, "--group-id", "partial"))
    for partition, found in offsets.items():
        if partition == full:
            assert rows[partition] == (1, len(found), len(found) - 1)
        else:
            assert rows[partition] == (None, len(found), len(found))
    assert total == 9 - 1
    document = as_json(lag(cli, devstack, "--group-id", "partial", "--json"))
    same(rows, total, document)
    assert [p["committed"] for p in document["partitions"] if p["partition"] != full] == [None, None]


@pytest.mark.parametrize("args, env, topic", [
    (["--topic", "no-such-topic"], {}, "no-such-topic"),
    ([], {"ACADEMY_EVENTS_TOPIC": "no-such-topic"}, "no-such-topic"),
    ([], {"EVENT_BUS_TOPIC_PREFIX": "staging"}, "staging-enterprise-academy-lifecycle"),  # the consumer's prefixing
], ids=["option", "setting", "prefix"])
def test_a_missing_topic_exits_2_with_one_line(devstack, cli, args, env, topic):
    one_line(lag(cli, devstack, "--group-id", GROUP, *args, env=env), 2, f"topic {topic} does not exist")


@pytest.mark.parametrize("args", [["--timeout", "0"], ["--timeout", "nan"], ["--timeout", "x"], ["--bogus"]])
def test_bad_arguments_exit_2_with_one_line(devstack, cli, args):
    one_line(lag(cli, devstack, *args), 2, "consumer_lag: error:")


def test_a_blank_group_id_exits_2_with_one_line(devstack, cli):
    one_line(lag(cli, devstack, "--group-id", " "), 2, "group id")


@pytest.mark.parametrize("env", [{}, {"EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS": ""}], ids=["unset", "empty"])
def test_no_event_bus_configured_exits_2_with_one_line(cli, monkeypatch, env):
    monkeypatch.delenv("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    one_line(cli("consumer_lag", env=env), 2, "event bus not configured", "EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS")


def test_an_unreachable_broker_exits_1_within_the_bound(cli):
    with socket.socket() as probe:  # a loopback port nothing listens on (bound, never listening)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        started = time.monotonic()
        done = cli("consumer_lag", "--timeout", "2", env={"EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"})
        elapsed = time.monotonic() - started
    one_line(done, 1, "Kafka did not answer within 2 s", "EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS")
    assert elapsed < 2 + 15, f"took {elapsed:.1f} s"  # the bound, plus the interpreter's and Django's start
