"""
The fault suite, configuration side (issue 7, item 1 and 2): faults of set-up are never taken for bad events.

1. ``test_configuration_faults_commit_and_dead_letter_nothing``: a history of events, then the consumer
   started against an empty schema registry (the wrong ``EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL``) and
   against a database without the tables. Each must exit 1 with one line saying what is wrong, commit no
   offset and dead-letter nothing; the consumer then run rightly applies the whole history.
2. ``test_future_dated_events_are_dead_lettered_and_never_freeze_a_row``: a history with events dated far
   in the future mixed in (9999-12-31, next year, an hour ahead); each is dead-lettered with its reason and
   every later event of those academies still applies.
"""

import datetime
import random

import pytest

from academy_devstack.schema_registry import SchemaRegistryServer
from tests.fault.history import check_table, expected_state, generate
from tests.fault.test_broker_and_poison import CONSUMER_ENV, producing  # pylint: disable=unused-import
from tests.helpers import GroupOffsets, consumer_counts, produce_events

GROUP = "configuration-faults"


def last_line(text):
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def unmigrated_database_url(tmp_path):
    """A DATABASE_URL of a database without academy_consumer's tables, on the server the suite runs on."""
    # pylint: disable=import-outside-toplevel
    from django.db import connection

    from tests.helpers import subprocess_database_url

    if connection.vendor == "sqlite":
        import sqlite3

        path = tmp_path / "unmigrated.sqlite3"
        sqlite3.connect(path).close()
        return f"sqlite:///{path}", lambda: None
    name = f"{connection.settings_dict['NAME']}_unmigrated"
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name}")
        cursor.execute(f"CREATE DATABASE {name}")

    def drop():
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name}")

    return subprocess_database_url().rsplit("/", 1)[0] + f"/{name}", drop


@pytest.mark.slow
def test_configuration_faults_commit_and_dead_letter_nothing(producing, devstack, cli, seed, guarantee, tmp_path):
    history = generate(academies=60, events=600, seed=seed, namespace="configuration-faults")
    expected = expected_state(history)
    produce_events(history)
    offsets = GroupOffsets(devstack, GROUP)
    problems = []
    env = {**devstack.env, **CONSUMER_ENV}
    try:
        empty = SchemaRegistryServer().start()
        try:
            wrong_registry = cli("consume_academy_events", "--group-id", GROUP, "--until-idle", "3",
                                 env={**env, "EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL": empty.url})
        finally:
            empty.stop()
        url, drop = unmigrated_database_url(tmp_path)
        try:
            unmigrated = cli("consume_academy_events", "--group-id", GROUP, "--until-idle", "3",
                             env={**env, "DATABASE_URL": url})
        finally:
            drop()
        for name, done, says in [("wrong registry", wrong_registry, "knows none of the academy schemas"),
                                 ("unmigrated database", unmigrated, "academy-consumer migrate")]:
            if done.returncode != 1 or says not in last_line(done.stderr):
                problems.append(f"{name}: exit {done.returncode}, stderr {done.stderr[-1500:]!r} "
                                f"(ACADEMY_FAULT_SEED={seed})")
        committed_after_faults = {p: o for p, o in offsets.committed().items() if o >= 0}
        dead_after_faults = devstack.read_dlq()

        right = cli("consume_academy_events", "--group-id", GROUP, "--until-idle", "3", env=env)
        assert right.returncode == 0, right.stderr
        counts = consumer_counts(right.stdout)
        lag = offsets.lag()
    finally:
        offsets.close()
    check = check_table(expected)
    dead = devstack.read_dlq()
    # lost: events dead-lettered or committed past by a faulty run (each such event lost to the main path),
    # events the right run did not read, rows not as the history says.
    lost = len(dead) + sum(committed_after_faults.values()) + max(len(history) - counts["events"], 0) + check.lost
    guarantee("configuration faults (wrong registry, unmigrated database)", events=len(history), faults=2,
              fault_kinds="empty schema registry, database without tables", lost=lost + lag,
              duplicates=check.duplicates, stale=check.stale)
    assert not problems, "\n".join(problems)
    assert not dead_after_faults and not committed_after_faults, (dead_after_faults[:3], committed_after_faults)
    assert counts["events"] == len(history) and "dead_lettered" not in counts, counts
    assert (check.lost, check.duplicates, check.stale, lag) == (0, 0, 0, 0), check.problems[:10]


@pytest.mark.slow
def test_future_dated_events_are_dead_lettered_and_never_freeze_a_row(producing, devstack, cli, seed, guarantee):
    # pylint: disable=import-outside-toplevel
    from academy_consumer.producer import encode, send_academy_events

    rng = random.Random(seed)
    history = generate(academies=50, events=500, seed=seed, namespace="future-dated")
    expected = expected_state(history)
    now = datetime.datetime.now(datetime.timezone.utc)
    futures = [datetime.datetime(9999, 12, 31, tzinfo=datetime.timezone.utc), now + datetime.timedelta(days=365),
               now + datetime.timedelta(hours=1)]
    # Each future event copies a real event of the history, dated ahead, and is sent in the first half,
    # so that the later events of its academy meet a row it would have frozen.
    half = len(history) // 2
    chosen = rng.sample(history[:half], 30)
    produce_events(history[:half])
    send_academy_events([(*encode(event.action if event.action != "deleted" else "updated", event.academy),
                          rng.choice(futures)) for event in chosen])
    produce_events(history[half:])

    done = cli("consume_academy_events", "--group-id", "future-dated", "--until-idle", "3",
               env={**devstack.env, **CONSUMER_ENV})
    assert done.returncode == 0, done.stderr
    counts = consumer_counts(done.stdout)
    dead = devstack.read_dlq()
    future_letters = [d for d in dead
                      if "ACADEMY_CONSUMER_MAX_FUTURE_SECONDS" in d.headers.get("dlq-error-message", "")]
    check = check_table(expected)
    guarantee("future-dated events", events=len(history) + len(chosen), bad_inputs=len(chosen),
              lost=check.lost + (len(chosen) - len(future_letters)) + (len(dead) - len(future_letters)),
              duplicates=check.duplicates, stale=check.stale)
    assert len(future_letters) == len(dead) == len(chosen), (len(future_letters), len(dead), seed)
    assert counts["events"] == len(history) + len(chosen), counts
    assert (check.lost, check.duplicates, check.stale) == (0, 0, 0), (check.problems[:10], seed)
