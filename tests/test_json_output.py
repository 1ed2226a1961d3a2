"""
``academy_consumer.management.json_output``: while a ``--json`` command runs, what is written to the process's
stdout (file descriptor 1) goes to stderr, and the command's own output to the real stdout; fd 1 comes back
afterwards, also after a failure. (``tests/test_host.py`` runs every ``--json`` command under a host's stdout
logging; these are the rules in one process, with pytest's fd capture standing for the terminal.)
"""

import io
import json
import logging
import os
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import OutputWrapper

from academy_consumer.management.json_output import stdout_for_json_only


class Command:
    """What the context manager uses of a management command: its ``stdout``."""

    def __init__(self):
        self.stdout = OutputWrapper(sys.stdout)


@pytest.fixture
def host_logger(capfd, monkeypatch):
    """
    A function that makes ``sys.stdout`` what a process has (a text stream on fd 1, here pytest's capture file)
    and returns a logger writing to it as a host's does. Called in the test itself: pytest sets its own
    ``sys.stdout`` again when the test starts.
    """
    logger = logging.getLogger("tests.json_output")
    logger.setLevel(logging.INFO)
    logger.propagate = False

    def install():
        stream = open(1, "w", encoding="utf-8", closefd=False)  # pylint: disable=consider-using-with
        monkeypatch.setattr(sys, "stdout", stream)
        # the handler holds the stream object, as dictConfig's ext://sys.stdout does
        monkeypatch.setattr(logger, "handlers", [logging.StreamHandler(stream)])
        return logger

    return install


def test_logging_goes_to_stderr_and_the_json_to_stdout(host_logger, capfd):
    logger = host_logger()
    command = Command()
    with stdout_for_json_only(command):
        logger.info("a host's log line")
        print("a library's print")
        os.write(1, b"a C library's write\n")
        command.stdout.write(json.dumps({"ok": True}))
    logger.info("after the command")
    sys.stdout.flush()

    out, err = capfd.readouterr()
    assert out == '{"ok": true}\nafter the command\n'
    # (in any order: print's line waits in sys.stdout's buffer until the flush on the way out)
    assert sorted(err.splitlines()) == ["a C library's write", "a host's log line", "a library's print"]


def test_stdout_is_restored_after_a_failure(host_logger, capfd):
    host_logger()
    command = Command()
    original = command.stdout
    with pytest.raises(RuntimeError), stdout_for_json_only(command):
        command.stdout.write("{}")
        raise RuntimeError("the command failed")
    assert command.stdout is original
    os.write(1, b"fd 1 again\n")
    assert capfd.readouterr().out == "{}\nfd 1 again\n"


def test_a_given_stdout_is_left_alone(host_logger, capfd):
    logger = host_logger()
    command = Command()
    with stdout_for_json_only(command, given_stdout=io.StringIO()):
        logger.info("logged")
    assert capfd.readouterr().out == "logged\n"


@pytest.mark.django_db
def test_call_command_with_stdout_gets_the_json():
    buffer = io.StringIO()
    call_command("list_academies", "--json", stdout=buffer)
    assert json.loads(buffer.getvalue()) == []


@pytest.mark.django_db
def test_the_kill_switch_still_gives_a_json_reader_its_document(settings):
    settings.EVENT_BUS_KAFKA_CONSUMERS_ENABLED = False
    out, err = io.StringIO(), io.StringIO()
    call_command("consume_academy_events", "--json", stdout=out, stderr=err)
    assert json.loads(out.getvalue()) == {"events": 0, "batches": 0, "outcomes": {}, "consumers_enabled": False}
    assert "EVENT_BUS_KAFKA_CONSUMERS_ENABLED is off" in err.getvalue()
