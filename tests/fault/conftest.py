"""
The fault suite: the delivery guarantees (docs/reference/guarantees.md) under the faults a production consumer meets.

Run it with ``make fault`` (``ACADEMY_FAULT_SUITE=1 pytest tests/fault``); ``make test`` leaves it out.
Every scenario records its figures with the ``guarantee`` fixture, and the session ends by printing the
table docs/reference/guarantees.md shows.
"""

import dataclasses
import json
import os
import random

import pytest

from tests.helpers import point_producer_at

RESULTS = []


@dataclasses.dataclass
class Figures:
    """What one scenario held and what it lost. ``lost``, ``duplicates`` and ``stale`` must be 0."""

    scenario: str
    database: str
    events: int = 0
    faults: int = 0
    fault_kinds: str = ""
    bad_inputs: int = 0
    lost: int = 0
    duplicates: int = 0
    stale: int = 0

    @property
    def ok(self):
        return self.lost == 0 and self.duplicates == 0 and self.stale == 0


@pytest.fixture
def guarantee(request):
    """
    Record a scenario's figures for the table: ``guarantee(scenario, events=..., faults=..., ...)``.

    The row travels with the test's report (``user_properties``), so that under pytest-xdist the controller,
    which prints the table and appends the rows to ``ACADEMY_FAULT_RESULTS``, sees the rows of every worker
    (see ``pytest_runtest_logreport``).
    """
    from django.db import connection  # pylint: disable=import-outside-toplevel

    def record(scenario, **figures):
        row = Figures(scenario=scenario, database=connection.vendor, **figures)
        request.node.user_properties.append((GUARANTEE, dataclasses.asdict(row)))
        return row

    return record


GUARANTEE = "academy_fault_guarantee"


def pytest_runtest_logreport(report):
    """
    In the controller (the only process under ``-p no:xdist``), collect the rows the test recorded: for the
    table at the end of the session and, when ``ACADEMY_FAULT_RESULTS`` names a file, appended to it (``make
    fault`` adds up the runs on each database into one table). Workers leave it to the controller.
    """
    if report.when != "call" or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    rows = [Figures(**value) for name, value in report.user_properties if name == GUARANTEE]
    RESULTS.extend(rows)
    path = os.environ.get("ACADEMY_FAULT_RESULTS")
    if rows and path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(dataclasses.asdict(row)) + "\n" for row in rows)


@pytest.fixture
def producing(settings, devstack):
    """Point ``academy_consumer.producer`` (openedx-events' cached producer) at the dev stack."""
    point_producer_at(settings, devstack)
    return devstack


@pytest.fixture
def seed():
    """The run's random seed, printed; ``ACADEMY_FAULT_SEED`` replays a run."""
    value = int(os.environ.get("ACADEMY_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"ACADEMY_FAULT_SEED={value}")
    return value


def guarantees_table(rows):
    """The table of docs/reference/guarantees.md, in Markdown."""
    lines = [
        "| scenario | databases | events | faults injected | bad inputs | events lost | duplicate rows "
        "| stale overwrites |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        faults = f"{row.faults} ({row.fault_kinds})" if row.fault_kinds else str(row.faults)
        lines.append(f"| {row.scenario} | {row.database} | {row.events:,} | {faults} | {row.bad_inputs:,} | "
                     f"{row.lost} | {row.duplicates} | {row.stale} |")
    total = Figures("total", "all", sum(r.events for r in rows), sum(r.faults for r in rows), "",
                    sum(r.bad_inputs for r in rows), sum(r.lost for r in rows), sum(r.duplicates for r in rows),
                    sum(r.stale for r in rows))
    lines.append(f"| **total** | | **{total.events:,}** | **{total.faults}** | **{total.bad_inputs:,}** | "
                 f"**{total.lost}** | **{total.duplicates}** | **{total.stale}** |")
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter):
    if RESULTS:
        terminalreporter.section("Guarantees")
        terminalreporter.write_line(guarantees_table(RESULTS))
