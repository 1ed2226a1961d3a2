"""
The table an event history must leave, for the fault suite: its oracles.

``tests.factories.generate(academies, events, seed)`` makes a random history of created / updated (with
renames) / deleted events; every upsert carries the academy's full state and a version (``v<n>`` in
``short_description`` and in ``display_order``), and event times grow per academy, so the newest state of
each academy is known without a database: ``expected_state(history)``. ``check_table(expected)`` compares
the EnterpriseAcademy table with it and counts what a user would call lost updates, duplicate rows and stale
overwrites. ``check_all_read(devstack, runs, produced)`` checks what the table cannot show: that every
produced event is still on the topic and was read.
"""

import dataclasses
import re


def expected_state(history):
    """uuid -> the state the table must show: the newest upsert's data, inactive if deleted after it."""
    newest = {}
    for event in sorted(history, key=lambda e: e.time):
        state = newest.setdefault(event.uuid, {"data": None, "active": True, "time": None})
        state["time"] = event.time
        if event.action == "deleted":
            state["active"] = False
        else:
            state["data"] = event.academy
            state["active"] = True
    return newest


@dataclasses.dataclass
class TableCheck:
    """What ``check_table`` found: rows lost, duplicated or stale, and the first problems."""

    lost: int = 0
    duplicates: int = 0
    stale: int = 0
    problems: list = dataclasses.field(default_factory=list)

    def describe(self, seed):
        """The failure message of a check that found problems: the figures and the first problems."""
        return (f"ACADEMY_FAULT_SEED={seed}: lost {self.lost}, duplicates {self.duplicates}, stale {self.stale}; "
                f"first problems: {self.problems[:10]}")


def check_table(expected):
    """Compare the EnterpriseAcademy table with ``expected`` (from ``expected_state``)."""
    from academy_consumer.models import EnterpriseAcademy  # pylint: disable=import-outside-toplevel

    check = TableCheck()
    rows = {str(row.uuid): row for row in EnterpriseAcademy.objects.exclude(uuid=None)}
    total = EnterpriseAcademy.objects.count()
    check.duplicates = total - len(expected) if total > len(expected) else 0
    for ident, state in expected.items():
        row = rows.get(ident)
        want = state["data"]
        if row is None:
            check.lost += 1
            check.problems.append(f"{ident}: missing")
            continue
        if row.display_order < want["display_order"]:
            check.stale += 1
            check.problems.append(f"{ident}: version {row.display_order}, expected {want['display_order']}")
        elif (row.name, row.display_order, row.is_active) != (want["title"], want["display_order"], state["active"]):
            check.lost += 1
            check.problems.append(f"{ident}: {(row.name, row.display_order, row.is_active)} != "
                                  f"{(want['title'], want['display_order'], state['active'])}")
    return check


def progress():
    """How far the table is: rows plus the sum of their versions (``display_order`` only grows)."""
    from django.db.models import Count, Sum  # pylint: disable=import-outside-toplevel

    from academy_consumer.models import EnterpriseAcademy  # pylint: disable=import-outside-toplevel

    found = EnterpriseAcademy.objects.aggregate(rows=Count("id"), versions=Sum("display_order"))
    return found["rows"] + (found["versions"] or 0)


def final_progress(expected):
    """``progress()`` of the table once every upsert of ``expected`` (from ``expected_state``) is applied."""
    return len(expected) + sum(state["data"]["display_order"] for state in expected.values())


# The consumer's INFO line per applied batch: ``batch <topic>[0]@10-19 [2]@5: created 3, ... (0.12 s)``.
BATCH_LINE = re.compile(r"academy_consumer\.consumer: batch \S*?((?:\[\d+\]@\d+(?:-\d+)? ?)+):")
BATCH_RANGE = re.compile(r"\[(\d+)\]@(\d+)(?:-(\d+))?")


@dataclasses.dataclass
class ReadCheck:
    """
    Did every produced event stay on the topic and reach the consumer? ``unread`` (produced events that no
    run read) must be 0; it counts as lost, since an event evicted before it was read leaves no trace in the
    table when a newer event of its academy follows it.
    """

    produced: int
    on_topic: int = 0  # offsets the topic assigned (more than produced where a producer retry wrote twice)
    read: int = 0  # of those, how many some run read
    low_watermarks: dict = dataclasses.field(default_factory=dict)
    problems: list = dataclasses.field(default_factory=list)

    @property
    def unread(self):
        return (self.on_topic - self.read) + max(self.produced - self.on_topic, 0)


def check_all_read(devstack, runs, produced):
    """
    Check, after the consumer runs ``runs`` (``RunningCommand`` s of ``consume_academy_events``, restarts
    included) went through the academy topic, that none of the ``produced`` events went missing:

    * every partition's low watermark is 0: the broker still holds every event (the embedded one evicts
      the oldest past 5 MiB per partition), and the high watermarks add up to at least ``produced`` (more
      when a producer retried a send the broker had taken);
    * the consumer read each of them: the union over the runs of the offsets in their ``batch`` log lines
      (a batch is logged once applied) is every offset from 0 to the high watermark, in every partition.

    Distinct offsets, not a sum of per-run counts: a run killed in a batch re-reads it in the next run, and
    a SIGKILLed run prints no count. ``read`` is how many of the produced offsets were read.
    """
    marks = {partition: ends for (topic, partition), ends in devstack.stack.watermarks().items()
             if topic == devstack.topic}
    check = ReadCheck(produced, on_topic=sum(high for _, high in marks.values()),
                      low_watermarks={p: low for p, (low, _) in marks.items()})
    seen = {partition: set() for partition in marks}
    batches = 0
    for run in runs:
        for line in BATCH_LINE.finditer(run.stderr):
            batches += 1
            for partition, first, last in BATCH_RANGE.findall(line.group(1)):
                seen.setdefault(int(partition), set()).update(range(int(first), int(last or first) + 1))
    if not batches:
        check.problems.append("no `batch` line in the consumer's log: cannot tell what it read")
    for partition, (low, high) in sorted(marks.items()):
        if low:
            check.problems.append(f"partition {partition}: low watermark {low}: the broker evicted offsets 0-{low - 1}")
        missing = set(range(high)) - seen[partition]
        if missing:
            check.problems.append(f"partition {partition}: {len(missing)} of {high} offsets never read, "
                                  f"from {min(missing)}")
        check.read += high - len(missing)
    if check.on_topic < produced:
        check.problems.append(f"{check.on_topic} events on the topic, {produced} produced")
    return check
