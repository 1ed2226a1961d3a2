"""
Test data, made in one place: academies in the catalog API's item shape (what ``reconcile_academies`` reads and
``produce_academy_event`` sends), their uuids, event times, and random histories of events.

::

    academy(1)                         {"uuid": "a0a0a0a0-0000-4000-8000-000000000001", "title": "Academy 1"}
    academy(1, "Data Academy", display_order=3)
    academy(U1)                        that uuid, titled "Data Academy" (its slug: data-academy)
    academy(None, "Data Academy")      no uuid (catalog items may lack one)
    academy(7, namespace="redrive")    uuid5 of "redrive/7": each scenario its own academies
    at(90)                             T0 + 90 minutes
    generate(academies=200, events=5000, seed=seed, namespace="db-outage")    a history of Events

Tests build what they need from these and keep only what is theirs (a corpus, a constant of their scenario).
The oracles that judge a history's outcome are in ``tests/fault/history.py``.
"""

import dataclasses
import datetime
import random
import uuid

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def at(minutes):
    """``T0`` plus ``minutes``: event and reconcile times that order as the test says."""
    return T0 + datetime.timedelta(minutes=minutes)


def academy_uuid(key, namespace=None):
    """
    A deterministic academy uuid (a string): ``key`` itself when it is a string (a bad one too, for the tests of
    bad input); for a number ``n``,
    ``a0a0a0a0-0000-4000-8000-<n on 12 digits>`` (readable in a failure message); with ``namespace``, the uuid5 of
    ``"<namespace>/<key>"`` (a scenario's own academies, which no other scenario's can collide with).
    """
    if namespace is not None:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{key}"))
    if isinstance(key, int):
        return f"a0a0a0a0-0000-4000-8000-{key:012d}"
    return str(key)


def academy(key=1, title=None, *, namespace=None, **fields):
    """
    A catalog academy item: ``uuid`` from ``academy_uuid(key, namespace)`` (none when ``key`` is None), ``title``
    (by default ``Academy <key>`` for a number, ``Data Academy`` otherwise), and ``fields`` as given.
    """
    if title is None:
        title = f"Academy {key}" if isinstance(key, int) else "Data Academy"
    item = {"title": title, **fields}
    if key is not None:
        item = {"uuid": academy_uuid(key, namespace), **item}
    return item


@dataclasses.dataclass(frozen=True)
class Event:
    """One event of a generated history: what it does, the catalog academy it carries, its event time."""

    action: str  # created | updated | deleted
    academy: dict  # the catalog academy (AcademyData fields)
    time: datetime.datetime

    @property
    def uuid(self):
        return self.academy["uuid"]

    @property
    def version(self):
        return self.academy.get("display_order")


def versioned_academy(ident, index, version, rename=False, *, name="Academy", product="prod"):
    """
    Version ``version`` of academy ``index`` (uuid ``ident``): its ``display_order`` is the version (what
    ``history.check_table`` and ``history.progress`` read), its title names it (and says ``renamed`` when
    ``rename``).
    """
    return {
        "uuid": ident,
        "title": f"{name} {index} {'renamed ' if rename else ''}v{version}",
        "short_description": f"v{version}",
        "display_order": version,
        "tags": [f"tag{version % 5}"],
        "stripe_product_id": f"{product}_{index}",
    }


def generate(academies, events, seed, namespace="fault"):
    """
    A random history of ``events`` events over ``academies`` academies, in production order: the first event of
    each academy is ``created``, then ``updated`` (a rename now and then) or ``deleted``; every upsert carries the
    academy's full state and its version (``v<n>`` in ``short_description`` and in ``display_order``), and event
    times grow per academy, so the newest state of each academy is known without a database
    (``history.expected_state``).
    """
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
        history.append(Event(action, versioned_academy(ident, index, v, rng.random() < 0.3), clock[ident]))
    return history
