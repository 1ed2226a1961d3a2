"""Waiting on conditions in tests: poll with a deadline, never sleep to synchronise."""

import time


def wait_for(condition, timeout=30.0, message="condition", interval=0.05, *, while_running=None, seed=None):
    """
    Poll ``condition`` until it returns something true (returned); fail after ``timeout`` seconds, or as soon
    as ``while_running`` (a ``RunningCommand`` of ``cli_popen``) has exited. ``message`` says what is waited for
    (a callable is called on failure); with ``seed``, the failure names the fault-suite seed that replays it.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if while_running is not None and not while_running.running():
            raise AssertionError(_seeded(f"the command exited ({while_running.process.returncode}) while waiting "
                                         f"for {_said(message)}\n{while_running.stderr[-3000:]}", seed))
        if time.monotonic() > deadline:
            raise AssertionError(_seeded(f"timed out after {timeout:.0f} s waiting for {_said(message)}", seed))
        time.sleep(interval)


def _said(message):
    return message() if callable(message) else message


def _seeded(text, seed):
    return text if seed is None else f"{text} (ACADEMY_FAULT_SEED={seed})"


def seeded_wait_for(condition, timeout, what, seed, interval=0.1):
    """``wait_for`` whose failure names the fault-suite seed that replays the run (ACADEMY_FAULT_SEED)."""
    return wait_for(condition, timeout, what, interval, seed=seed)
