"""
Reconcile in chunks (``sync_academies(..., chunk_size=k)``): any chunk size gives the very same result and
table as one item per transaction; statements are bounded per chunk, not per item; ``--chunk-size``
through the real command; a real lock (SQLite's) retries the whole chunk; a lost connection names the chunk.
"""

import datetime
import itertools
import json
import logging
import sqlite3
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from academy_consumer.models import EnterpriseAcademy, name_key
from academy_consumer.sync import DatabaseUnavailable, SyncResult, _deactivate_missing, sync_academies
from tests.factories import academy, at
from tests.helpers import kill_default_connection

UUIDS = [str(uuid.UUID(int=0xB00 + n)) for n in range(4)]
# Names that clash: the same name in two casings, and names whose slugs and default lookup keys collide.
NAMES = ["Data Academy", "data ACADEMY", "Data: Academy!", "AI Academy", "Cloud Academy"]
LOOKUP_KEYS = ["key_a", "key_b", "essentials_data_academy_yearly", "essentials_ai_academy_yearly"]
SLUGS = ["data-academy", "ai-academy", "legacy"]
OLD = datetime.datetime(2025, 6, 1, tzinfo=datetime.timezone.utc)  # `modified` of every starting row
COLUMNS = [field.attname for field in EnterpriseAcademy._meta.concrete_fields
           if field.attname not in ("id", "created", "modified")]


# --- the differential property: chunk_size=k == chunk_size=1 ---------------------------------------

starting_rows = st.lists(st.fixed_dictionaries({
    "uuid": st.sampled_from([None, *UUIDS]),
    "name": st.sampled_from(NAMES),
    "slug": st.sampled_from(SLUGS),
    "stripe_price_lookup_key": st.sampled_from(LOOKUP_KEYS),
    "is_active": st.booleans(),
    "display_order": st.integers(0, 2),
    "source_timestamp": st.sampled_from([None, at(0), at(2), at(4)]),
}), max_size=5)

good_item = st.fixed_dictionaries(
    {"title": st.sampled_from(NAMES)},
    optional={
        "uuid": st.sampled_from(UUIDS),  # absent: matched by name only
        "stripe_price_lookup_key": st.sampled_from(LOOKUP_KEYS),
        "slug": st.sampled_from(SLUGS),
        "display_order": st.integers(0, 2),
        "is_active": st.booleans(),
        "short_description": st.sampled_from(["", "text"]),
    })
bad_item = st.sampled_from([
    {"title": ""}, {"uuid": UUIDS[0]}, {"uuid": "not-a-uuid", "title": "Data Academy"},
    {"uuid": UUIDS[1], "title": 17}, {"title": "AI Academy", "display_order": "many"},
    17, None, "Data Academy", [UUIDS[2]],
])
catalog_lists = st.lists(st.one_of(good_item, good_item, bad_item), max_size=10)


def load_table(rows):
    """Empty the table and load ``rows``, skipping any that would break a unique column; return their pks."""
    EnterpriseAcademy.objects.all().delete()
    taken, kept = set(), []
    for spec in rows:
        keys = {("uuid", spec["uuid"]), ("name", name_key(spec["name"])), ("slug", spec["slug"]),
                ("key", spec["stripe_price_lookup_key"])} - {("uuid", None)}
        if keys & taken:
            continue
        taken |= keys
        kept.append(EnterpriseAcademy(**spec, name_key=name_key(spec["name"])))
    created = EnterpriseAcademy.objects.bulk_create(kept)
    EnterpriseAcademy.objects.update(modified=OLD)
    pks = [row.pk for row in created] if all(row.pk for row in created) else \
        list(EnterpriseAcademy.objects.order_by("pk").values_list("pk", flat=True))
    return {pk: number for number, pk in enumerate(pks)}


def table(origins):
    """Every row, all columns but the pk, ``created`` and ``modified``; for starting rows whether ``modified`` moved."""
    state = []
    for values in EnterpriseAcademy.objects.order_by().values("id", "modified", *COLUMNS):
        origin = origins.get(values["id"])
        state.append({**{column: values[column] for column in COLUMNS}, "origin": origin,
                      "modified_changed": None if origin is None else values["modified"] != OLD})
    return sorted(state, key=lambda row: row["name_key"])


def run(rows, items, chunk_size, **kwargs):
    origins = load_table(rows)
    result = sync_academies(items, source_time=kwargs.pop("source_time"), chunk_size=chunk_size, **kwargs)
    return result.as_dict(), table(origins)


@pytest.mark.django_db
@pytest.mark.parametrize("deactivate_missing", [False, True], ids=["keep-missing", "deactivate-missing"])
@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=starting_rows, items=catalog_lists, source_minute=st.integers(0, 5), data=st.data())
def test_any_chunk_size_gives_the_same_result_and_table(deactivate_missing, rows, items, source_minute, data):
    chunk_size = data.draw(st.integers(1, len(items) + 1), label="chunk_size")
    options = {"source_time": at(source_minute), "deactivate_missing": deactivate_missing}
    reference = run(rows, items, 1, **options)
    for entry in reference[0]["items"]:  # (--hypothesis-show-statistics: what the examples covered)
        event(entry["outcome"] + (": conflict" if "already used" in entry.get("reason", "") else ""))
    assert run(rows, items, chunk_size, **options) == reference

    origins = load_table(rows)
    before = table(origins)
    dry = sync_academies(items, chunk_size=chunk_size, dry_run=True, **options).as_dict()
    assert table(origins) == before  # nothing written (and no `modified` moved)
    assert {**dry, "dry_run": False} == reference[0]  # same counts, outcomes and notes


# --- statements per chunk, not per item ----------------------------------------------------------

PER_CHUNK, FIXED = 30, 10  # statements a chunk may take whatever its size; and the sync around the chunks


@pytest.mark.django_db
def test_statements_are_bounded_per_chunk_not_per_item():
    EnterpriseAcademy.objects.bulk_create([
        EnterpriseAcademy(name=f"Gone {n}", name_key=f"gone {n}", slug=f"gone-{n}", stripe_price_lookup_key=f"gone_{n}")
        for n in range(20)])
    items = [academy(str(uuid.UUID(int=0xF0000 + n)), f"Academy {n}") for n in range(1000)]
    chunks = 2
    with CaptureQueriesContext(connection) as created:
        result = sync_academies(items, source_time=at(0), deactivate_missing=True, chunk_size=500)
    assert (result.counts["created"], result.counts["deactivated"]) == (1000, 20)
    with CaptureQueriesContext(connection) as unchanged:
        result = sync_academies(items, source_time=at(1), deactivate_missing=True, chunk_size=500)
    assert result.counts["unchanged"] == 1000
    for captured in (created, unchanged):
        assert len(captured) <= PER_CHUNK * chunks + FIXED, f"{len(captured)} statements for {chunks} chunks"


@pytest.mark.django_db
def test_deactivate_missing_is_one_read_and_one_update():
    EnterpriseAcademy.objects.bulk_create([
        EnterpriseAcademy(name=f"Gone {n}", name_key=f"gone {n}", slug=f"gone-{n}", stripe_price_lookup_key=f"gone_{n}",
                          source_timestamp=at(9) if n == 3 else None)
        for n in range(30)])
    EnterpriseAcademy.objects.update(modified=OLD)
    kept = EnterpriseAcademy.objects.get(name="Gone 0")
    with CaptureQueriesContext(connection) as captured:
        result = SyncResult()
        count = _deactivate_missing({"x"}, {kept.name_key}, at(5), result)
    statements = [q["sql"] for q in captured if not q["sql"].upper().startswith(("SAVEPOINT", "RELEASE", "BEGIN"))]
    assert len(statements) == 2, statements  # the locking read and the bulk UPDATE
    assert count == 28  # not the listed row, not the row a newer event touched
    assert [entry["name"] for entry in result.items] == [f"Gone {n}" for n in range(30) if n not in (0, 3)]
    assert all(entry == {"outcome": "deactivated", "uuid": None, "name": entry["name"],
                         "reason": "not in the catalog list"} for entry in result.items)
    gone = EnterpriseAcademy.objects.filter(is_active=False)
    assert gone.count() == 28 and not gone.filter(modified=OLD).exists()
    assert set(gone.values_list("source_timestamp", flat=True)) == {at(5)}
    assert EnterpriseAcademy.objects.filter(is_active=True, modified=OLD).count() == 2


# --- a real lock retries the whole chunk ----------------------------------------------------------

class _OnWarning(logging.Handler):
    """Calls ``action`` once, at the ``count``-th WARNING of ``academy_consumer.sync`` that holds ``text``."""

    def __init__(self, text, count, action):
        super().__init__(logging.WARNING)
        self.text, self.count, self.action, self.messages = text, count, action, []

    def emit(self, record):
        self.messages.append(record.getMessage())
        if sum(self.text in message for message in self.messages) == self.count and self.action:
            self.action()
            self.action = None


@pytest.fixture
def locked_sqlite(transactional_db):
    """
    The test database's write lock held by a second SQLite connection (``BEGIN IMMEDIATE``, as any other writer
    would), and ``release()`` to give it up; the test's own connection waits for no lock (busy timeout 0), so a
    write fails at once with SQLite's own "database is locked".
    """
    if connection.vendor != "sqlite":
        pytest.skip("a SQLite write lock (the servers' row locks are waited on, see the fault suite)")
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout = 0")
    holder = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield lambda: holder.execute("ROLLBACK")
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA busy_timeout = 5000")


def _watch(handler):
    logger = logging.getLogger("academy_consumer.sync")
    logger.addHandler(handler)
    return handler


def test_a_lock_retries_the_whole_chunk(locked_sqlite):
    handler = _watch(_OnWarning("retrying chunk", 2, locked_sqlite))  # the lock goes after two failed attempts
    try:
        items = [academy(UUIDS[n], f"Academy {n}") for n in range(4)]
        result = sync_academies(items, source_time=at(0), chunk_size=3)
    finally:
        logging.getLogger("academy_consumer.sync").removeHandler(handler)
    assert handler.messages == [
        "transient database error (database is locked); retrying chunk of 3 item(s) (attempt 1)",
        "transient database error (database is locked); retrying chunk of 3 item(s) (attempt 2)"]
    assert result.counts["created"] == 4 and result.counts["errors"] == 0
    assert sorted(EnterpriseAcademy.objects.values_list("name", flat=True)) == [f"Academy {n}" for n in range(4)]


def test_a_chunk_that_stays_locked_is_applied_one_item_per_transaction(locked_sqlite):
    handler = _watch(_OnWarning("one per transaction", 1, locked_sqlite))  # the lock outlasts the chunk's attempts
    try:
        items = [academy(UUIDS[n], f"Academy {n}") for n in range(3)]
        result = sync_academies(items, source_time=at(0), chunk_size=3)
    finally:
        logging.getLogger("academy_consumer.sync").removeHandler(handler)
    assert handler.messages == [
        f"transient database error (database is locked); retrying chunk of 3 item(s) (attempt {n})"
        for n in range(1, 5)] + ["chunk of items 1-3 failed (database is locked); applying them one per transaction"]
    assert result.counts["created"] == 3 and [entry["name"] for entry in result.items] == [
        "Academy 0", "Academy 1", "Academy 2"]
    assert EnterpriseAcademy.objects.count() == 3


@pytest.mark.django_db
@pytest.mark.parametrize("chunk_size", [0, -1, 2.5, True, "3"])
def test_a_bad_chunk_size_is_refused(chunk_size):
    with pytest.raises(ValueError, match="chunk_size"):
        sync_academies([academy(UUIDS[0])], chunk_size=chunk_size)
    assert EnterpriseAcademy.objects.count() == 0


# --- a lost connection names the chunk -----------------------------------------------------------

@pytest.mark.skipif("connection.vendor == 'sqlite'", reason="a SQLite connection cannot be lost")
@pytest.mark.parametrize("dry_run", [False, True], ids=["commit", "dry-run"])
def test_connection_lost_names_the_first_item_of_the_chunk(transactional_db, caplog, dry_run):
    pulled = []

    def items():
        for n in range(20):
            pulled.append(n)
            if n == 2:
                kill_default_connection()
            yield {"uuid": str(uuid.UUID(int=0xE00 + n)), "title": f"Academy {n}"}

    tail = r"dry run, nothing was written" if dry_run else r"2 item\(s\) before it were applied"
    try:
        pattern = r"^database connection lost at item 3 \(.*\); sync stopped.* " + tail + "$"
        with pytest.raises(DatabaseUnavailable, match=pattern):
            sync_academies(items(), deactivate_missing=True, chunk_size=2, dry_run=dry_run)
        assert pulled == [0, 1, 2, 3]  # the failing chunk was read, no further one
        assert not [r for r in caplog.records if "retrying" in r.getMessage()]
    finally:
        connection.close()
    expected = [] if dry_run else ["Academy 0", "Academy 1"]
    assert sorted(EnterpriseAcademy.objects.values_list("name", flat=True)) == expected


# --- --chunk-size through the real command -------------------------------------------------------

@pytest.mark.parametrize("value, message", [
    ("0", "must be 1 to 100,000, not 0"),
    ("-5", "must be 1 to 100,000, not -5"),
    ("100001", "must be 1 to 100,000, not 100001"),
    ("many", "must be a whole number, not 'many'"),
    ("2.5", "must be a whole number, not '2.5'"),
])
def test_bad_chunk_size_exits_2_with_one_line(cli, tmp_path, value, message):
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps([academy(UUIDS[0])]))
    done = cli("reconcile_academies", "--from-file", str(path), "--chunk-size", value)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [f"reconcile_academies: error: argument --chunk-size: {message}"], done.stderr
    assert EnterpriseAcademy.objects.count() == 0


def test_chunk_size_is_documented_and_applied(cli, tmp_path):
    helped = cli("reconcile_academies", "--help")
    text = " ".join(helped.stdout.split())
    assert helped.returncode == 0 and "--chunk-size N" in text and "default 500" in text, helped.stdout
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps([academy(str(uuid.UUID(int=0xD00 + n)), f"Academy {n}") for n in range(5)]
                               + [{"title": ""}]))
    done = cli("reconcile_academies", "--from-file", str(path), "--chunk-size", "2", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["created"], report["skipped"]) == (5, 1)
    assert [entry["outcome"] for entry in report["items"]] == ["created"] * 5 + ["skipped"]
    # The rows a chunk creates are one INSERT in one transaction, with one `created` time: three chunks of 2.
    rows = EnterpriseAcademy.objects.order_by("pk").values_list("name", "created")
    chunks = [[name for name, _ in rows] for _, rows in itertools.groupby(rows, key=lambda row: row[1])]
    assert chunks == [["Academy 0", "Academy 1"], ["Academy 2", "Academy 3"], ["Academy 4"]]
