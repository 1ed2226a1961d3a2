"""
A realistic academy event history, and a reconcile catalog, for the bench (pure data, no Kafka, no Django).

``history(n, m, seed)``: ``m`` academies created, then ``n - m`` updates with increasing event times
(ce_time, one to five seconds apart, ending an hour ago): field changes, renames, no-op duplicates (the
current state sent again), a few deletes and reactivations (an update of a deleted academy). Values are
never falsy (``0``, ``""``, ``[]``): openedx-events' stock deserializer would turn them into "absent", and
the stock loop and the consumer must end on the same table. ``expected`` is that table, per uuid.
"""

import datetime
import random
import uuid

TAGS = ["Data", "AI", "Cloud", "Security", "Leadership", "Design", "Finance", "Marketing", "DevOps", "Python"]
WORDS = ["Data", "AI", "Cloud", "Security", "Leadership", "Product", "Design", "Finance", "Analytics", "Ops"]
# What an update does (after the creates), with its weight.
KINDS = [("change", 70), ("rename", 8), ("duplicate", 15), ("delete", 4), ("reactivate", 3)]


def _uuid(rng):
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def academy(rng, number, title=None):
    """One catalog-shaped academy (every optional field carried, none falsy)."""
    word = WORDS[number % len(WORDS)]
    return {
        "uuid": _uuid(rng),
        "title": title or f"{word} Academy {number:05d}",
        "short_description": f"{word} skills for every team ({number}).",
        "long_description": f"A curated path through {word.lower()} courses, from first steps to mastery. " * 3,
        "image": f"https://catalog.example.com/media/academies/{number}.png",
        "tags": rng.sample(TAGS, 2),
        "display_order": number + 1,
        "stripe_product_id": f"prod_academy_{number:05d}",
        "catalog_query_uuid": _uuid(rng),
    }


def history(n, m, seed=1):
    """``(events, expected)``: events are ``{"action", "time", "academy"}`` dicts in production order."""
    if n < m:
        raise ValueError(f"--events ({n}) must be at least --academies ({m}): every academy is created first")
    rng = random.Random(seed)
    time = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1, seconds=5 * n)
    state, active, renames, events = [], [], [], []

    def emit(action, item):
        nonlocal time
        time += datetime.timedelta(seconds=rng.randint(1, 5))
        events.append({"action": action, "time": time.isoformat(), "academy": dict(item)})

    for number in range(m):
        state.append(academy(rng, number))
        active.append(True)
        renames.append(0)
        emit("created", state[-1])
    kinds, weights = zip(*KINDS)
    while len(events) < n:
        kind = rng.choices(kinds, weights)[0]
        i = rng.randrange(m)
        if kind == "reactivate":
            inactive = [j for j in range(m) if not active[j]]
            if not inactive:
                continue
            i = rng.choice(inactive)
        elif not active[i]:
            continue  # changes, renames, duplicates and deletes are of live academies
        item = state[i]
        if kind == "change":
            field = rng.choice(["display_order", "short_description", "tags"])
            item[field] = {"display_order": rng.randint(1, 10 * m),
                           "short_description": f"{item['title']}: revised {rng.getrandbits(32):08x}.",
                           "tags": rng.sample(TAGS, rng.randint(1, 3))}[field]
        elif kind == "rename":
            renames[i] += 1
            item["title"] = f"{item['title'].split(' (')[0]} (edition {renames[i] + 1})"
        if kind == "delete":
            active[i] = False
            emit("deleted", {"uuid": item["uuid"], "title": item["title"]})
        else:
            active[i] = True
            emit("updated", item)
    expected = {item["uuid"]: (item["title"], active[i], item["display_order"]) for i, item in enumerate(state)}
    return events, expected


def catalog(count, seed=2):
    """A catalog document of ``count`` academies (the ``results`` envelope), for ``reconcile_academies``."""
    rng = random.Random(seed)
    return {"results": [academy(rng, number) for number in range(count)]}
