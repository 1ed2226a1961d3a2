"""Waiting on conditions in tests: poll with a deadline, never sleep to synchronise."""

import time


def wait_for(condition, timeout=30.0, message="condition", interval=0.05):
    """Poll ``condition`` until it returns something true (returned); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message}")
        time.sleep(interval)


def seeded_wait_for(condition, timeout, what, seed, interval=0.1):
    """``wait_for`` whose failure names the fault-suite seed that replays the run (ACADEMY_FAULT_SEED)."""
    return wait_for(condition, timeout, f"{what} (ACADEMY_FAULT_SEED={seed})", interval)
