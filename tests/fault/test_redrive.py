"""
The fault suite, dead-letter side (issue 7, item 7): what a misconfiguration dead-lettered comes back, whole.

A history of creates, updates, renames and deletes is produced by producers whose clock runs a minute ahead,
and consumed by a consumer whose future bound is too tight for that (``ACADEMY_CONSUMER_MAX_FUTURE_SECONDS=0``,
circuit breaker off): every event is dead-lettered. With the setting fixed, ``dead_letters redrive`` is
killed (SIGKILL) mid-run and run again: the table must end as the history says, every letter redriven, none
back in the dead-letter topic, and a further run must do nothing. On PostgreSQL and MariaDB the run after the
kill also reaches the database through a proxy that cuts it for 3 s mid-run: the redrive retries, or stops
with exit 1 and that batch uncommitted, and re-dead-letters nothing because of it.
"""

import dataclasses
import datetime
import json
import signal

import pytest
from django.db import connection

from academy_consumer.models import EnterpriseAcademy
from tests.factories import T0, generate
from tests.fault.history import check_table, expected_state, progress
from tests.fault.tcp_proxy import database_proxy, proxied_database_url
from tests.helpers import FAULT_CONSUMER_ENV, consumer_counts, produce_events
from tests.waiting import seeded_wait_for

MISCONFIGURED = {"ACADEMY_CONSUMER_MAX_FUTURE_SECONDS": "0", "ACADEMY_CONSUMER_MAX_CONSECUTIVE_DEAD_LETTERS": "0"}
FIXED = {"ACADEMY_CONSUMER_MAX_FUTURE_SECONDS": "3600", "ACADEMY_CONSUMER_BATCH_SIZE": "25"}


@pytest.mark.slow
def test_redrive_brings_back_what_a_misconfiguration_dead_lettered(producing, devstack, cli, cli_popen, seed,
                                                                   guarantee):
    ahead = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=60) - T0
    history = [dataclasses.replace(event, time=event.time + ahead)
               for event in generate(academies=60, events=600, seed=seed, namespace="redrive")]
    expected = expected_state(history)
    produce_events(history)
    env = {**devstack.env, **FAULT_CONSUMER_ENV}

    wrong = cli("consume_academy_events", "--group-id", "redrive-faults", "--until-idle", "3",
                env={**env, **MISCONFIGURED})
    assert wrong.returncode == 0, wrong.stderr
    assert consumer_counts(wrong.stdout) == {"events": len(history), "dead_lettered": len(history)}
    assert EnterpriseAcademy.objects.count() == 0

    killed = cli_popen("dead_letters", "redrive", env={**env, **FIXED})
    seeded_wait_for(lambda: EnterpriseAcademy.objects.count() >= 20 or not killed.running(), 60,
                    "the redrive to apply its first batches", seed)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL, f"the redrive finished before it could be killed: {killed.stdout[-500:]}"
    part = EnterpriseAcademy.objects.count()
    faults = 2 + (connection.vendor != "sqlite" and cut_mid_redrive(cli_popen, env, seed))

    done = cli("dead_letters", "redrive", "--json", env={**env, **FIXED})
    assert done.returncode == 0, done.stderr[-2000:]
    again = cli("dead_letters", "redrive", "--json", env={**env, **FIXED})
    listed = cli("dead_letters", "list", "--json", env=env)
    assert listed.returncode == again.returncode == 0, (listed.stderr, again.stderr)
    letters = json.loads(listed.stdout)["letters"]
    check = check_table(expected)
    counts = json.loads(done.stdout)["counts"]
    not_redriven = sum(1 for letter in letters if not letter["redriven"])
    back = len(letters) - len(history)  # letters that failed again (none should)
    guarantee("dead-letter redrive", events=len(history), faults=faults,
              fault_kinds="future bound tighter than producer clocks, redrive SIGKILLed, database cut", lost=check.lost
              + not_redriven + back + counts.get("failed", 0), duplicates=check.duplicates, stale=check.stale)
    assert (check.lost, check.duplicates, check.stale) == (0, 0, 0), (check.problems[:10], seed)
    assert not_redriven == back == 0 and "failed" not in counts, (counts, seed)
    assert json.loads(again.stdout)["counts"] == {}, again.stdout[:2000]
    print(f"killed with {part} of {len(expected)} academies applied")


def cut_mid_redrive(cli_popen, env, seed):
    """A redrive whose database connection is cut for 3 s mid-run (through a proxy); returns the faults (1)."""
    proxy = database_proxy()
    try:
        before = progress()
        run = cli_popen("dead_letters", "redrive", env={**env, **FIXED, "ACADEMY_CONSUMER_BATCH_SIZE": "5",
                                                        "ACADEMY_CONSUMER_RETRY_MAX_SECONDS": "1",
                                                        "DATABASE_URL": proxied_database_url(proxy)})
        seeded_wait_for(lambda: progress() > before or not run.running(), 60, "the redrive to apply a batch", seed)
        proxy.cut(3)
        code = run.wait(120)
        print(f"redrive with the database cut: exit {code}")
        assert code in (0, 1), (code, run.stderr[-2000:])
        if code == 1:
            assert "dead_letters redrive stopped" in run.stderr.strip().splitlines()[-1], run.stderr[-2000:]
    finally:
        proxy.close()
    return 1
