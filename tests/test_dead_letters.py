"""
``dead_letters list`` and ``dead_letters redrive`` end to end on the dev stack: real producer, consumer and
dead-letter topic, the commands as subprocesses on the test database.

The misconfiguration: a consumer whose future bound (ACADEMY_CONSUMER_MAX_FUTURE_SECONDS=0) is tighter than the
producers' clock skew (events stamped 2 minutes ahead) dead-letters every event (circuit breaker off). With the
setting fixed, a redrive applies all of them; a true poison letter goes back with dlq-redrive-count=1.
"""

import datetime
import json

import pytest

from academy_consumer.models import EnterpriseAcademy
from tests.factories import academy
from tests.helpers import CONSUMER_ENV, IDLE, consumer_counts, refused_port

MISCONFIGURED = {**CONSUMER_ENV, "ACADEMY_CONSUMER_MAX_FUTURE_SECONDS": "0",
                 "ACADEMY_CONSUMER_MAX_CONSECUTIVE_DEAD_LETTERS": "0"}


def ahead(seconds=120):
    return (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)).isoformat()


@pytest.fixture
def run(devstack, cli):
    def command(*args, env=None, input=None):  # pylint: disable=redefined-builtin
        return cli(*args, env={**devstack.env, **CONSUMER_ENV, **(env or {})}, input=input)
    return command


def produce(run, action, items, event_time=None):
    args = ["produce_academy_event", "--action", action, "--file", "-"] + (["--time", event_time] if event_time else [])
    done = run(*args, input="\n".join(json.dumps(item) for item in items) + "\n")
    assert done.returncode == 0, done.stderr


def consume(run, env=None):
    done = run("consume_academy_events", "--group-id", "dl-test", "--until-idle", IDLE, env=env)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    return consumer_counts(done.stdout)


def as_json(done):
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


@pytest.fixture
def misconfigured_batch(run, devstack):
    """Five academies created and one renamed, all dead-lettered as future-dated; one true poison letter."""
    produce(run, "created", [academy(n) for n in range(1, 6)], ahead(120))
    produce(run, "updated", [academy(1, "Academy One Renamed")], ahead(180))
    produce(run, "created", [academy(9, display_order=-1)])  # the normalizer rejects it whatever the settings
    assert consume(run, env=MISCONFIGURED) == {"events": 7, "dead_lettered": 7}
    assert EnterpriseAcademy.objects.count() == 0
    assert len(devstack.read_dlq()) == 7


@pytest.mark.slow
def test_list_shows_every_dead_letter_with_its_reason_and_filters(run, devstack, misconfigured_batch):
    listed = as_json(run("dead_letters", "list", "--json", env={"DATABASE_URL": "sqlite:///no/such/db.sqlite3"}))
    assert listed["count"] == 7
    letters = listed["letters"]
    originals = {(r.partition, r.offset): r for r in devstack.read_topic()}
    for letter in letters:
        original = originals.pop((letter["original_partition"], letter["original_offset"]))
        assert letter["original_topic"] == devstack.topic
        assert letter["event_type"] == original.headers["ce_type"]
        assert letter["academy_uuid"] and letter["academy_uuid"].encode() in original.key
        assert letter["error_class"] == "academy_consumer.errors.AcademyEventRejected"
        assert letter["age_seconds"] >= 0 and letter["redrive_count"] == 0 and not letter["redriven"]
    assert not originals
    reasons = {letter["academy_uuid"]: letter["error_message"] for letter in letters}
    assert "display_order" in reasons[academy(9)["uuid"]]
    assert "ACADEMY_CONSUMER_MAX_FUTURE_SECONDS" in reasons[academy(2)["uuid"]]

    assert as_json(run("dead_letters", "list", "--json", "--error-class", "AcademyEventRejected"))["count"] == 7
    assert as_json(run("dead_letters", "list", "--json", "--error-class", "UnusableMessageError"))["count"] == 0
    assert as_json(run("dead_letters", "list", "--json", "--since", ahead(3600)))["count"] == 0
    assert as_json(run("dead_letters", "list", "--json", "--since", "2020-01-01T00:00:00Z"))["count"] == 7
    text = run("dead_letters", "list")
    assert text.returncode == 0 and "7 dead letter(s), 7 not redriven yet" in text.stdout
    assert "display_order" in text.stdout and devstack.topic in text.stdout


@pytest.mark.slow
def test_redrive_applies_what_a_misconfiguration_dead_lettered_once(run, devstack, misconfigured_batch):
    dry = as_json(run("dead_letters", "redrive", "--dry-run", "--json"))
    assert dry["dry_run"] and dry["counts"] == {"created": 5, "updated": 1, "failed": 1}
    assert EnterpriseAcademy.objects.count() == 0 and len(devstack.read_dlq()) == 7
    assert not any(letter["redriven"] for letter in as_json(run("dead_letters", "list", "--json"))["letters"])

    done = as_json(run("dead_letters", "redrive", "--json"))
    assert done["counts"] == {"created": 5, "updated": 1, "failed": 1} and done["back_in_dead_letter_topic"] == 1
    assert {str(r.uuid): r.name for r in EnterpriseAcademy.objects.all()} == {
        academy(1)["uuid"]: "Academy One Renamed", **{academy(n)["uuid"]: f"Academy {n}" for n in range(2, 6)}}
    failed = [letter for letter in done["letters"] if letter["outcome"] == "failed"]
    assert "display_order" in failed[0]["reason"]

    dead = devstack.read_dlq()
    assert len(dead) == 8
    copy, first = dead[-1], next(r for r in dead if academy(9)["uuid"].encode() in r.key)
    assert copy.headers["dlq-redrive-count"] == "1"
    for name in ("dlq-original-topic", "dlq-original-partition", "dlq-original-offset", "ce_type", "ce_time", "ce_id"):
        assert copy.headers[name] == first.headers[name], name
    assert [name for name, _ in copy.header_list].count("dlq-original-offset") == 1
    assert "display_order" in copy.headers["dlq-error-message"] and (copy.key, copy.value) == (first.key, first.value)

    again = as_json(run("dead_letters", "redrive", "--json"))
    assert again["counts"] == {} and len(devstack.read_dlq()) == 8
    assert all(letter["redriven"] for letter in as_json(run("dead_letters", "list", "--json"))["letters"])


@pytest.mark.slow
def test_a_filter_leaves_the_other_letters_for_a_later_run(run, devstack):
    produce(run, "created", [academy(1)], ahead(120))
    devstack.produce_raw(b"not avro", key=b"k")  # no ce_type: an UnusableMessageError
    produce(run, "created", [academy(2)], ahead(120))
    assert consume(run, env=MISCONFIGURED) == {"events": 3, "dead_lettered": 3}

    only = as_json(run("dead_letters", "redrive", "--json", "--error-class", "AcademyEventRejected"))
    assert only["counts"] == {"created": 2}
    assert EnterpriseAcademy.objects.count() == 2
    rest = as_json(run("dead_letters", "redrive", "--json"))  # the letter left out is still ahead of the position
    assert [letter["outcome"] for letter in rest["letters"]].count("failed") == 1
    assert rest["back_in_dead_letter_topic"] == 1
    assert as_json(run("dead_letters", "redrive", "--json"))["counts"] == {}


@pytest.mark.slow
def test_redrive_with_the_database_locked_stops_without_committing_or_dead_lettering(run, devstack,
                                                                                     misconfigured_batch):
    import sqlite3  # pylint: disable=import-outside-toplevel

    from django.db import connection  # pylint: disable=import-outside-toplevel

    if connection.vendor != "sqlite":
        pytest.skip("the lock is SQLite's; the fault suite covers outages of the database servers")
    lock = sqlite3.connect(connection.settings_dict["NAME"])
    try:
        lock.execute("BEGIN IMMEDIATE")  # readers go on, writers wait and fail: "database is locked"
        stopped = run("dead_letters", "redrive", env={"ACADEMY_CONSUMER_RETRY_MAX_SECONDS": "0.1"})
    finally:
        lock.rollback()
        lock.close()
    assert stopped.returncode == 1, stopped.stderr
    assert "dead_letters redrive stopped" in stopped.stderr.strip().splitlines()[-1], stopped.stderr[-2000:]
    assert len(devstack.read_dlq()) == 7
    assert as_json(run("dead_letters", "redrive", "--json"))["counts"] == {"created": 5, "updated": 1, "failed": 1}


@pytest.mark.parametrize("args", [["list", "--since", "yesterday"], ["redrive", "--error-class"], ["purge"], []])
def test_bad_arguments_exit_2_with_one_line(run, args):
    done = run("dead_letters", *args)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("action", ["list", "redrive"])
def test_missing_dead_letter_topic_exits_2_with_one_line(run, action):
    done = run("dead_letters", action, env={"ACADEMY_EVENTS_DLQ_TOPIC": "no-such-topic"})
    assert done.returncode == 2 and "no-such-topic does not exist" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("action, unset", [("list", "EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS"),
                                           ("redrive", "EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS"),
                                           ("redrive", "EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL")])
def test_no_event_bus_configured_exits_2_with_one_line(run, action, unset):
    """A setting fault (exit 2, naming the setting), not Kafka being unavailable (exit 1)."""
    done = run("dead_letters", action, env={unset: ""})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"CommandError: event bus not configured: {unset} is not set (run "
                                                f"`academy-consumer devstack` for a local one)"], done.stderr


@pytest.mark.slow
def test_list_and_redrive_exit_1_with_one_line_when_kafka_is_down(devstack, cli_popen):
    """
    Kafka unavailable is a runtime failure (exit 1), not a setting fault (2): the command's own line says so
    after READ_TIMEOUT_SECONDS (30 s: the two commands run side by side), behind at most a few of librdkafka's
    rate-limited lines, no traceback, nothing on stdout.
    """
    with refused_port() as port:
        env = {**devstack.env, "EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}
        commands = {action: cli_popen("dead_letters", action, env=env) for action in ("list", "redrive")}
        statuses = {action: command.wait(timeout=90) for action, command in commands.items()}
    for action, command in commands.items():
        assert statuses[action] == 1, command.stderr
        lines = command.stderr.strip().splitlines()
        assert lines[-1].startswith(f"CommandError: dead_letters {action} stopped: Kafka did not answer"), lines
        assert "EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS" in lines[-1] and len(lines) <= 5, command.stderr
        assert "Traceback" not in command.stderr and command.stdout == "", command.stdout
    assert EnterpriseAcademy.objects.count() == 0


FORGED = "topic\n\x1b[31mFAKE LINE"


def forged_letter(devstack, redrive_count, offset=b"7"):
    """A letter whose headers and key carry control characters and an ANSI escape, as a hostile producer sends."""
    devstack.produce_raw(b"not avro", topic=devstack.dlq_topic, key=b"key\n\x1b[2Jk", headers=[
        ("dlq-original-topic", FORGED.encode()), ("dlq-original-partition", b"0"), ("dlq-original-offset", offset),
        ("dlq-error-class", b"Err\x07\x1b]0;title\x07"), ("dlq-error-message", b"bad\r\nFORGED: \x1b[0m\xed\xa0\x80"),
        ("ce_type", b"type\x1b[1m"), ("dlq-redrive-count", redrive_count)])


def assert_printable(text):
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text, repr(text)
    assert not any(line.startswith(("FAKE LINE", "FORGED")) for line in text.splitlines()), text


@pytest.mark.parametrize("redrive_count", [b"-5", b"5x", b"", b"\xff"])
def test_list_prints_no_control_characters_and_counts_a_bad_redrive_count_as_0(run, devstack, redrive_count):
    forged_letter(devstack, redrive_count)
    text = run("dead_letters", "list", env={"DATABASE_URL": "sqlite:///no/such/db.sqlite3"})
    assert text.returncode == 0, text.stderr
    assert_printable(text.stdout)
    assert text.stdout.splitlines()[-1] == "1 dead letter(s), 1 not redriven yet", text.stdout
    line = text.stdout.splitlines()[0]
    assert "from topic\ufffd\ufffd[31mFAKE LINE[0]@7 type\ufffd[1m None: Err\ufffd\ufffd]0;title\ufffd: " in line
    assert "redriven" not in line, line  # not "redriven -5x"

    raw = run("dead_letters", "list", "--json").stdout
    assert all(ord(char) < 128 and char.isprintable() or char == "\n" for char in raw), repr(raw)  # JSON escaped
    letter = json.loads(raw)["letters"][0]
    assert letter["original_topic"] == FORGED and letter["redrive_count"] == 0
    assert letter["error_message"].startswith("bad\r\nFORGED: \x1b[0m")


def test_redrive_prints_no_control_characters_and_never_writes_a_negative_count(run, devstack):
    forged_letter(devstack, b"-5")
    text = run("dead_letters", "redrive")
    assert text.returncode == 0, text.stderr
    copy = devstack.read_dlq()[-1]
    assert copy.headers["dlq-redrive-count"] == "1"  # not -4
    assert_printable(text.stdout)
    assert "failed" in text.stdout and "redriven" not in text.stdout
    assert "1 back in the dead-letter topic" in text.stdout


def test_a_number_header_of_non_ascii_digits_is_no_number(run, devstack):
    forged_letter(devstack, "\u00b3".encode(), offset="\u00b2".encode())  # digits to str.isdigit, not to int()
    letter = as_json(run("dead_letters", "list", "--json"))["letters"][0]
    assert (letter["original_offset"], letter["redrive_count"]) == (None, 0)
