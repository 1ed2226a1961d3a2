"""
The one reader of JSON / JSON-lines input (academy_consumer.inputs), as ``reconcile_academies --from-file``
and ``produce_academy_event --file`` use it: bounded input, JSON lines streamed line by line, one-line errors.
Also: reconcile with the database down, or lost mid-run, stops at once with one line and exit 1.
"""

import json
import subprocess
import sys
import time
import uuid

import pytest
from django.db import connection  # (also read by the skipif conditions)

from academy_consumer.inputs import InputError, read_items
from academy_consumer.models import EnterpriseAcademy
from tests.helpers import CLI, cli_env, kill_default_connection, refused_port

U1, U2, U3 = (str(uuid.UUID(int=n)) for n in (0xE1, 0xE2, 0xE3))
MIB = 1024 * 1024


def write(tmp_path, text, name="input.json"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


class TestReader:
    """``read_items``: the encodings, envelopes and limits it accepts or refuses."""

    def test_a_utf8_byte_order_mark_is_accepted(self, tmp_path):
        assert read_items(write(tmp_path, b"\xef\xbb\xbf" + json.dumps([{"title": "A"}]).encode())) == [{"title": "A"}]
        lines = write(tmp_path, b"\xef\xbb\xbf" + b'{"title": "A"}\n{"title": "B"}\n', "lines.jsonl")
        assert read_items(lines) == [{"title": "A"}, {"title": "B"}]

    @pytest.mark.parametrize("text", [json.dumps([0] * 100_001), "{}\n" * 100_001], ids=["document", "lines"])
    def test_more_items_than_the_limit_are_refused(self, tmp_path, text):
        """Each item costs the commands far more memory than its bytes: the item count is bounded too."""
        with pytest.raises(InputError, match="more than 100,000 items"):
            read_items(write(tmp_path, text))

    def test_document_in_an_envelope_or_not(self, tmp_path):
        items = [{"title": "A"}, {"title": "B"}]
        pretty = write(tmp_path, json.dumps({"results": items}, indent=2))
        assert read_items(pretty) == items
        assert read_items(pretty, envelopes=False) == [{"results": items}]
        assert read_items(write(tmp_path, json.dumps(items))) == items
        assert read_items(write(tmp_path, json.dumps(items)), envelopes=False) == items
        assert read_items(write(tmp_path, json.dumps(items[0]) + "\n\n")) == [items[0]]

    def test_json_lines_one_item_per_line(self, tmp_path):
        path = write(tmp_path, '{"title": "A"}\n\n{"title": "B"}\r\n[1]\n{"results": []}')
        expected = [{"title": "A"}, {"title": "B"}, [1], {"results": []}]
        assert read_items(path) == expected and read_items(path, envelopes=False) == expected

    @pytest.mark.parametrize("text, words", [
        ('{"title": "A"}\n{"title": \n', "line 2 is not valid JSON"),
        ('{"title": "A"}\n' + "[" * 100_000 + "]" * 100_000 + "\n", "line 2 is nested too deeply"),
        ("", "not valid JSON"),
        ('{"title": "A"}}', "not valid JSON"),
        (b'{"title": "A"}\n{"title": "\xff"}\n', "line 2 is not valid UTF-8"),
        (json.dumps({"a": 1}).encode("utf-16"), "not valid UTF-8"),
    ])
    def test_unreadable_input_is_one_line(self, tmp_path, text, words):
        with pytest.raises(InputError, match=words) as excinfo:
            read_items(write(tmp_path, text))
        assert "\n" not in str(excinfo.value)

    def test_input_over_the_limit_is_refused(self, tmp_path, settings):
        settings.ACADEMY_MAX_INPUT_BYTES = 1000
        small = write(tmp_path, json.dumps([{"title": "x" * 900}]))
        assert len(read_items(small)) == 1
        big = write(tmp_path, json.dumps([{"title": "x" * 1000}]))
        with pytest.raises(InputError, match=r"larger than 1,000 bytes \(ACADEMY_MAX_INPUT_BYTES\)"):
            read_items(big)

    def test_a_2_gb_file_is_refused_before_reading(self, tmp_path):
        path = tmp_path / "huge.json"
        with open(path, "wb") as handle:
            handle.truncate(2 * 1024 * MIB)  # sparse: no disk used
        started = time.monotonic()
        with pytest.raises(InputError, match=r"larger than 268,435,456 bytes"):
            read_items(str(path))
        assert time.monotonic() - started < 5


def run_measured(args, env):
    """Run ``academy-consumer ARGS`` and return (CompletedProcess, peak RSS of the command in MiB)."""
    wrapper = ("import resource, subprocess, sys;"
               "done = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
               "sys.stdout.write(done.stdout); sys.stderr.write(done.stderr);"
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr);"
               "sys.exit(done.returncode)")
    done = subprocess.run([sys.executable, "-c", wrapper, *CLI, *args],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    *lines, rss = done.stderr.strip().splitlines()
    completed = subprocess.CompletedProcess(done.args, done.returncode, done.stdout, "\n".join(lines) + "\n")
    return completed, int(rss) / 1024


@pytest.mark.parametrize("command", [("reconcile_academies", "--from-file"), ("produce_academy_event",
                                                                              "--action", "created", "--file")])
@pytest.mark.stack  # a subprocess, measured
def test_dev_zero_stops_at_the_limit(transactional_db, command):
    done, rss = run_measured([*command, "/dev/zero"], cli_env({"ACADEMY_MAX_INPUT_BYTES": str(64 * MIB)}))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        "/dev/zero is larger than 67,108,864 bytes (ACADEMY_MAX_INPUT_BYTES); not read"), done.stderr
    assert rss < 400, f"peak RSS {rss:.0f} MiB"
    assert EnterpriseAcademy.objects.count() == 0


def test_reconcile_reads_json_lines_from_stdin(cli):
    lines = "\n".join(json.dumps({"uuid": u, "title": f"Academy {n}"}) for n, u in enumerate((U1, U2, U3)))
    done = cli("reconcile_academies", "--from-file", "-", "--json", input=lines + "\n")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["created"] == 3


def test_reconcile_bad_json_line_writes_nothing(cli):
    lines = json.dumps({"uuid": U1, "title": "Good"}) + "\n" + '{"uuid": "x", \n'
    done = cli("reconcile_academies", "--from-file", "-", "--deactivate-missing", input=lines)
    assert done.returncode == 2 and done.stderr.strip().endswith(
        "stdin line 2 is not valid JSON: Expecting property name enclosed in double quotes at column 15"), done.stderr
    assert EnterpriseAcademy.objects.count() == 0


def test_produce_reads_with_the_same_reader(cli, tmp_path):
    path = write(tmp_path, json.dumps({"uuid": U1, "title": "A"}) + "\nnot json\n", "events.jsonl")
    done = cli("produce_academy_event", "--action", "created", "--file", path)
    assert done.returncode == 2 and done.stderr.strip().endswith(
        f"{path} line 2 is not valid JSON: Expecting value at column 1"), done.stderr


@pytest.mark.parametrize("url", ["postgres://root@127.0.0.1:{port}/test", "mysql://root@127.0.0.1:{port}/test"])
def test_reconcile_with_the_database_down_fails_at_once(cli, tmp_path, url):
    path = write(tmp_path, json.dumps([{"title": f"Academy {n}"} for n in range(50)]))
    started = time.monotonic()
    with refused_port() as port:
        done = cli("reconcile_academies", "--from-file", path, env={"DATABASE_URL": url.format(port=port)})
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "unreachable" in lines[0], done.stderr
    assert elapsed < 20, f"{elapsed:.1f} s"


@pytest.mark.skipif("connection.vendor == 'sqlite'", reason="a SQLite connection cannot be lost")
def test_connection_lost_mid_sync_stops_at_the_first_error(transactional_db, caplog):
    from academy_consumer.sync import DatabaseUnavailable, sync_academies  # pylint: disable=import-outside-toplevel

    pulled = []

    def items():
        for n in range(50):
            pulled.append(n)
            if n == 1:
                kill_default_connection()
            yield {"uuid": str(uuid.UUID(int=0xD00 + n)), "title": f"Academy {n}"}

    try:
        with pytest.raises(DatabaseUnavailable, match=r"connection lost at item 2 .*1 item\(s\) before it"):
            sync_academies(items(), deactivate_missing=True, chunk_size=1)  # per-item: item 0 commits alone
        assert pulled == [0, 1]  # no further item was tried
        assert not [r for r in caplog.records if "retrying" in r.getMessage()]  # no retries spent on it
    finally:
        connection.close()
    assert list(EnterpriseAcademy.objects.values_list("name", flat=True)) == ["Academy 0"]


SELF_KILL = {  # a trigger that kills its own session when it meets one row: a connection lost mid-run
    "postgresql": [
        """CREATE OR REPLACE FUNCTION self_kill() RETURNS trigger AS $$ BEGIN
             IF NEW.name = 'Academy 3' THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF; RETURN NEW;
           END $$ LANGUAGE plpgsql""",
        """CREATE TRIGGER self_kill BEFORE INSERT ON academy_consumer_enterpriseacademy
           FOR EACH ROW EXECUTE FUNCTION self_kill()"""],
}


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="only PostgreSQL lets a trigger end its session")
def test_reconcile_command_stops_at_a_lost_connection(cli, tmp_path):
    with connection.cursor() as cursor:
        for sql in SELF_KILL["postgresql"]:
            cursor.execute(sql)
    try:
        path = write(tmp_path, json.dumps([{"uuid": str(uuid.UUID(int=0xC00 + n)), "title": f"Academy {n}"}
                                           for n in range(40)]))
        started = time.monotonic()
        done = cli("reconcile_academies", "--from-file", path, "--deactivate-missing", "--chunk-size", "3")
        elapsed = time.monotonic() - started
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER self_kill ON academy_consumer_enterpriseacademy")
            cursor.execute("DROP FUNCTION self_kill()")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "connection lost at item 4" in lines[0], done.stderr
    assert elapsed < 30, f"{elapsed:.1f} s"
    assert sorted(EnterpriseAcademy.objects.values_list("name", flat=True)) == ["Academy 0", "Academy 1", "Academy 2"]
