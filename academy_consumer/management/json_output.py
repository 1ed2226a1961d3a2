"""
``--json``: the command's stdout holds its one JSON document and nothing else, whatever the host's ``LOGGING``.

A host logs to stdout (edx's ``get_logger_config`` gives every logger a ``StreamHandler`` on ``sys.stdout``),
so the app's own log lines, Django's, edx-event-bus-kafka's and librdkafka's (through the app's logger) would
land before and around the JSON. Reconfiguring the host's logging is not the app's to do, and a handler holds
the stream object it was given at configuration time, so pointing ``sys.stdout`` elsewhere would not move it.

Decision: while a ``--json`` command runs, the process's file descriptor 1 points at stderr (``dup2``), so
everything written to "stdout" in the process, by any logging handler, ``print`` or C library, goes to stderr;
the command writes its JSON to a duplicate of the real stdout taken before, and fd 1 is restored afterwards
(also when the command fails). Nothing is dropped: a host that collects stdout and stderr keeps every log
line. A command whose stdout is not the process's (``call_command(..., stdout=StringIO())``, a test runner
that captured ``sys.stdout``) is left alone: its caller chose where the output goes.
"""

import contextlib
import os
import sys

from django.core.management.base import OutputWrapper

STDOUT_FD, STDERR_FD = 1, 2


def _is_process_stdout(stream):
    """Whether ``stream`` writes to the process's file descriptor 1."""
    try:
        return stream.fileno() == STDOUT_FD
    except (AttributeError, OSError, ValueError):  # StringIO, a closed or captured stream
        return False


@contextlib.contextmanager
def stdout_for_json_only(command, given_stdout=None):
    """
    Within the block, ``command.stdout`` writes to the real stdout and fd 1 (so everything else) to stderr.
    Does nothing when ``given_stdout`` (``call_command``'s ``stdout=``) is set or ``sys.stdout`` is not fd 1.
    """
    if given_stdout is not None or not _is_process_stdout(sys.stdout):
        yield
        return
    sys.stdout.flush()
    json_fd = os.dup(STDOUT_FD)
    json_stream = open(json_fd, "w", encoding=sys.stdout.encoding,
                       errors=sys.stdout.errors, closefd=True)
    original = command.stdout
    os.dup2(STDERR_FD, STDOUT_FD)
    command.stdout = OutputWrapper(json_stream)
    try:
        yield
    finally:
        command.stdout = original
        json_stream.flush()
        sys.stdout.flush()
        os.dup2(json_fd, STDOUT_FD)
        json_stream.close()
