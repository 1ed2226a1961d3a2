"""
Event histories for the fault suite, and the table they must leave.

``generate(academies, events, seed)`` makes a random history of created / updated (with renames) /
deleted events over ``academies`` academies. Every upsert carries the academy's full state and a
version (``v<n>`` in ``short_description`` and in ``display_order``), and event times grow per academy,
so the newest state of each academy is known without a database: ``expected_state(history)``.
``check_table(expected)`` compares the EnterpriseAcademy table with it and counts what a user would
call lost updates, duplicate rows and stale overwrites.
"""

import dataclasses
import datetime
import random
import uuid

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


@dataclasses.dataclass(frozen=True)
class Event:
    action: str  # created | updated | deleted
    academy: dict  # the catalog academy (AcademyData fields)
    time: datetime.datetime

    @property
    def uuid(self):
        return self.academy["uuid"]

    @property
    def version(self):
        return self.academy.get("display_order")


def academy_uuid(index, namespace="fault"):
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{index}"))


def generate(academies, events, seed, namespace="fault"):
    """A history of ``events`` events (first one per academy is ``created``), in production order."""
    rng = random.Random(seed)
    version = {}
    clock = {}
    history = []
    for n in range(events):
        index = n if n < academies else rng.randrange(academies)
        ident = academy_uuid(index, namespace)
        version[ident] = version.get(ident, -1) + 1
        clock[ident] = clock.get(ident, T0) + datetime.timedelta(seconds=rng.randint(1, 60))
        v = version[ident]
        if v == 0:
            action = "created"
        else:
            action = rng.choices(["updated", "deleted"], weights=[85, 15])[0]
        rename = rng.random() < 0.3
        academy = {
            "uuid": ident,
            "title": f"Academy {index} {'renamed ' if rename else ''}v{v}",
            "short_description": f"v{v}",
            "display_order": v,
            "tags": [f"tag{v % 5}"],
            "stripe_product_id": f"prod_{index}",
        }
        history.append(Event(action, academy, clock[ident]))
    return history


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
    lost: int = 0
    duplicates: int = 0
    stale: int = 0
    problems: list = dataclasses.field(default_factory=list)


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
