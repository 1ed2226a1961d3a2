"""
Apply a batch of changes set-wise: ``apply_changes``, the consumer's and reconcile's entry point.

The rules are those of ``apply.py`` (the per-event path, ``apply_change``), and the outcomes are exactly
the ones it gives, change by change; only the number of statements differs. For a batch:

1. Normalize every change (pure: ``normalize.py``); rejected items and times beyond the future bound are
   ``skipped`` here, as ``apply_item`` / ``upsert_academy`` / ``deactivate_academy`` say.
2. A locking read (``SELECT ... FOR UPDATE``) of the rows the batch can touch: by uuid, by name key, by
   lookup key and by slug (one query per column, each on its unique index, split to stay under SQLite's
   parameter limit; see ``_read_rows``).
3. Fold the changes in order, in memory, over those rows, with the per-event rules: identity by uuid then
   by name, the stale guard by event time, absent means keep, unchanged means no write, delete,
   reactivation, rename, the conflict checks in the per-event order and with its reasons.
4. Write: one ``INSERT`` of the new rows, and one ``UPDATE`` of the changed rows per set of changed columns
   (at most ``SHAPES`` such sets, rarer ones together in one more statement of every column; see
   ``_Writer``; split only to stay under a database's parameter limit), in one savepoint. A row whose
   only change is a newer ``source_timestamp`` gets only that: unchanged means no new ``modified``.

What the fold cannot decide alone falls back to the per-event path for the whole batch, so the answer is
never different, only slower:

* a slug that another row holds (the per-event path probes ``-2``, ``-3``... against the table);
* a unique value (uuid, name key, lookup key, slug) that ends the batch on another row than the one
  that held it before (rename chains and swaps, a lookup key moving between academies): one statement
  cannot move it without colliding with itself;
* any ``IntegrityError`` or other refusal of the writes (a concurrent writer won a race, a trigger): the
  savepoint is rolled back and every change is applied again, one by one.

Transient errors (deadlocks, lock timeouts) and lost connections propagate: the caller retries or stops
the whole batch. Memory grows with the batch (its rows and changes), never with the table.
"""

import datetime
import logging

from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from academy_consumer import apply as per_event
from academy_consumer.apply import (
    CREATED,
    DEACTIVATED,
    DELETE,
    SKIPPED,
    STALE,
    UNCHANGED,
    UPDATED,
    Change,
    Outcome,
    _believed,
    _desired_values,
    _raw_identity,
    _too_far_ahead,
    apply_change,
    delete_title,
    error_outcome,
    is_connection_lost,
    is_transient,
)
from academy_consumer.models import EnterpriseAcademy, name_key
from academy_consumer.normalize import Rejected, normalize_academy, parse_uuid

log = logging.getLogger(__name__)

__all__ = ["Change", "apply_changes"]

# The unique columns the fold keeps an index of, and the rows are read by.
UNIQUE = ("uuid", "name_key", "stripe_price_lookup_key", "slug")
# Every column an upsert of a changed row writes (all but the primary key and ``created``).
WRITTEN = [field.name for field in EnterpriseAcademy._meta.concrete_fields if field.name not in ("id", "created")]
# Parameters per read query: SQLite before 3.32 allows 999 in one statement.
READ_CHUNK = 900
# UPDATE statements of a batch, one per set of changed columns; rows of rarer sets go in one more, of
# every column. A typical batch changes a handful of sets (a field or two, a rename, a delete, a time).
SHAPES = 6


class Undecidable(Exception):
    """The fold cannot give the per-event answer set-wise; the batch is applied change by change."""


def apply_changes(changes, *, errors_as_outcomes=False):
    """
    Apply ``changes`` in order inside the caller's transaction; yield one ``Outcome`` per change, once the
    batch's writes are done (so still inside the caller's transaction).

    ``errors_as_outcomes``: on the per-event fallback, a database error of one change that is neither
    transient nor a lost connection (a trigger or constraint refusing the row) becomes that change's
    ``errors`` outcome and the others still apply (reconcile); without it, it propagates (the consumer
    stops on it).
    """
    changes = list(changes)
    outcomes = _apply_set_wise(changes) if changes else []
    if outcomes is None:
        for change in changes:
            yield _apply_one(change, errors_as_outcomes)
        return
    yield from outcomes


def _apply_one(change, errors_as_outcomes):
    """One change by the per-event path."""
    if not errors_as_outcomes:
        return apply_change(change)
    try:
        with transaction.atomic():
            return apply_change(change)
    except DatabaseError as exc:
        if is_connection_lost(exc) or is_transient(exc):
            raise
        return error_outcome(exc, change.item)


def _apply_set_wise(changes):
    """The outcomes of ``changes``, applied with a constant number of statements; ``None``: fall back."""
    db = transaction.get_connection()  # (not the ``connection`` proxy: it costs a context lookup per use)
    bound, key = per_event.future_bound(), _keyer(db)  # one clock reading for the batch
    prepared = [_prepare(change, bound) for change in changes]
    fold = Fold(_read_rows(prepared, key), bound, key)
    try:
        outcomes = [item if isinstance(item, Outcome) else fold.apply(*item) for item in prepared]
        fold.check_no_value_moves()
    except Undecidable as exc:
        log.debug("batch of %d changes applied one by one: %s", len(changes), exc)
        return None
    try:
        with transaction.atomic():
            fold.write(db)
    except DatabaseError as exc:
        if is_connection_lost(exc) or is_transient(exc):
            raise
        log.info("the database refused a batch of %d changes (%s: %s); applying them one by one",
                 len(changes), type(exc).__name__, " ".join(str(exc).split()))
        return None
    return outcomes


def _prepare(change, bound):
    """
    What the fold needs of one change, or its final ``Outcome`` when no row can matter (a rejected item,
    a time beyond the bound): ``(DELETE, uuid, title, time, ident)`` or ``(UPSERT, academy, time, ident)``.
    """
    if change.action == DELETE:
        item = change.item if isinstance(change.item, dict) else {}
        title = delete_title(item)
        academy_uuid = parse_uuid(item.get("uuid"))
        ident = {"uuid": str(academy_uuid) if academy_uuid else None, "name": title}
        ahead = _too_far_ahead(change.time, bound)
        if ahead:
            return Outcome(SKIPPED, None, f"delete {ahead}", **ident)
        return DELETE, academy_uuid, title, change.time, ident
    try:
        academy = normalize_academy(change.item)
    except Rejected as exc:
        return Outcome(SKIPPED, None, exc.reason, **_raw_identity(change.item))
    ident = {"uuid": str(academy.uuid) if academy.uuid else None, "name": academy.name}
    ahead = _too_far_ahead(change.time, bound)
    if ahead:
        return Outcome(SKIPPED, None, f"event {ahead}", **ident)
    return per_event.UPSERT, academy, change.time, ident


def _read_rows(prepared, key):
    """
    The rows the batch can touch, locked: by uuid and name key; then by the lookup keys and slugs the
    batch carries, and the default ones of the academies that have no row yet (only a create uses them).

    What the fold must know is read. A row it would still miss (a name freed and taken again within the
    batch, and a create's default then held by an unread row) cannot make a different answer: the fold's
    write then breaks a unique index, and the batch is applied change by change.
    """
    upserts = [item[1] for item in prepared if not isinstance(item, Outcome) and item[0] != DELETE]
    first = {"uuid": set(), "name_key": set()}
    for item in prepared:
        if isinstance(item, Outcome):
            continue
        if item[0] == DELETE:
            _, academy_uuid, title, _, _ = item
            if academy_uuid:
                first["uuid"].add(academy_uuid)
            if title:
                first["name_key"].add(name_key(title))
    for academy in upserts:
        if academy.uuid is not None:
            first["uuid"].add(academy.uuid)
        first["name_key"].add(name_key(academy.name))
    rows = {}
    _lock_rows(rows, first, key)
    found_uuids = {row.uuid for row in rows.values() if row.uuid is not None}  # (a legacy row has none)
    found_names = {key(row.name_key) for row in rows.values()}
    then = {"stripe_price_lookup_key": set(), "slug": set()}
    for academy in upserts:
        new = academy.uuid not in found_uuids and key(name_key(academy.name)) not in found_names
        for field, values in then.items():
            value = academy.fields.get(field, academy.defaults.get(field) if new else None)
            if value is not None:
                values.add(value)
    _lock_rows(rows, then, key)
    return list(rows.values())


def _lock_rows(rows, wanted, key):
    """Add to ``rows`` (by pk) the rows holding ``wanted`` values, column by column, skipping values held."""
    locking = EnterpriseAcademy.objects.select_for_update().order_by()
    for field, wanted_values in wanted.items():  # a later column asks only for values no row read holds
        known = {key(getattr(row, field)) for row in rows.values()}
        values = sorted((value for value in wanted_values if key(value) not in known), key=str)
        for start in range(0, len(values), READ_CHUNK):
            for row in locking.filter(**{f"{field}__in": values[start:start + READ_CHUNK]}):
                rows.setdefault(row.pk, row)


def _keyer(db):
    """
    How a unique column's value compares in ``db``: MariaDB/MySQL's ``utf8mb4_bin`` is a PAD SPACE collation
    (``"a"`` and ``"a "`` are one key); PostgreSQL and SQLite compare exactly.
    """
    if db.vendor == "mysql":
        return lambda value: value.rstrip(" ") if isinstance(value, str) else value
    return lambda value: value


def _utc(moment):
    """An aware time as the database gives it back (UTC), so reasons quote stored times alike."""
    return moment.astimezone(datetime.timezone.utc) if moment is not None else None


class Fold:
    """The batch's rows in memory, with an index per unique column, changed change by change."""

    def __init__(self, rows, bound, key):
        self.bound = bound
        self.key = key
        self.index = {field: {} for field in UNIQUE}
        for row in rows:
            self._add(row)
        self.before = {field: dict(index) for field, index in self.index.items()}
        self.new, self.changed, self.timed = [], {}, {}
        self.dirty = {}  # id(row) -> the columns its write must set (of a row read, not of a new one)

    def _dirty(self, row, *fields):
        self.dirty.setdefault(id(row), set()).update(fields)

    def _add(self, row):
        for field in UNIQUE:
            value = getattr(row, field)
            if value is not None:
                self.index[field][self.key(value)] = row

    def _move(self, row, field, value):
        """Set a unique column of ``row``, keeping its index true."""
        old = getattr(row, field)
        if old is not None and self.index[field].get(self.key(old)) is row:
            del self.index[field][self.key(old)]
        setattr(row, field, value)
        if value is not None:
            self.index[field][self.key(value)] = row

    def _holder(self, field, value):
        return self.index[field].get(self.key(value))

    def apply(self, action, *args):
        return self._delete(*args) if action == DELETE else self._upsert(*args)

    # --- the per-event rules, in their order (apply._upsert_once, apply.deactivate_academy) ----------

    def _upsert(self, academy, source_time, ident):
        """Apply one normalized academy to the rows in hand, by the per-event rules of ``apply``."""
        row, matched_by = None, None
        if academy.uuid is not None:
            row = self._holder("uuid", academy.uuid)
            matched_by = "uuid" if row is not None else None
        if row is None:
            row = self._holder("name_key", name_key(academy.name))
            if row is not None:
                if academy.uuid is not None and row.uuid is not None and row.uuid != academy.uuid:
                    return Outcome(SKIPPED, None, f"name {academy.name!r} is already used by academy {row.uuid}",
                                   **ident)
                matched_by = "name"
        stored = _believed(row.source_timestamp, self.bound) if row is not None else None
        if stored is not None and source_time is not None and source_time < stored:
            return Outcome(STALE, row, f"event time {source_time.isoformat()} is older than the row's "
                                       f"{stored.isoformat()}", ident["uuid"], row.name)
        values = _desired_values(academy, row, matched_by)
        taken = self._taken(academy, row, values, ident)
        if taken is not None:
            return taken

        if row is None:
            row = EnterpriseAcademy(**values, source_timestamp=_utc(source_time))
            row.name_key = name_key(row.name)
            self._add(row)
            self.new.append(row)
            return Outcome(CREATED, row, "", ident["uuid"], row.name)

        changed = [field for field, value in values.items() if getattr(row, field) != value]
        newer = source_time is not None and (stored is None or source_time > stored)
        if newer:
            row.source_timestamp = _utc(source_time)
            self._dirty(row, "source_timestamp")
        if not changed:
            if newer:
                self.timed[id(row)] = row
            return Outcome(UNCHANGED, row, "", ident["uuid"], row.name)
        self._dirty(row, *changed)
        for field in changed:
            if field in UNIQUE:
                self._move(row, field, values[field])
            else:
                setattr(row, field, values[field])
        if "name" in changed:
            self._move(row, "name_key", name_key(row.name))
            self._dirty(row, "name_key")
        self.changed[id(row)] = row
        return Outcome(UPDATED, row, "changed: " + ", ".join(sorted(changed)), ident["uuid"], row.name)

    def _taken(self, academy, row, values, ident):
        """
        The ``SKIPPED`` outcome when another row holds a unique value that ``values`` give ``row`` (None when
        none does); ``Undecidable`` where only the per-event path can decide.
        """
        renamed = "name" in values and (row is None or name_key(values["name"]) != row.name_key)
        # The per-event path checks a new row's name before its lookup key; a rename's name is left to the
        # unique index on the first attempt, so a taken lookup key is what a rename reports first.
        checks = []
        if renamed and row is None:
            checks.append(("name_key", name_key(values["name"]), "name"))
        if "stripe_price_lookup_key" in values:
            checks.append(("stripe_price_lookup_key", values["stripe_price_lookup_key"], "stripe_price_lookup_key"))
        if renamed and row is not None:
            checks.append(("name_key", name_key(values["name"]), "name"))
        for field, value, what in checks:
            holder = self._holder(field, value)
            if holder is None or holder is row:
                continue
            if academy.uuid is not None and holder.uuid == academy.uuid:
                raise Undecidable(f"academy {academy.uuid} holds {field} {value!r} in another row")
            holder_name = str(holder.uuid) if holder.uuid else repr(holder.name)
            return Outcome(SKIPPED, None, f"{what} {value!r} is already used by academy {holder_name}", **ident)
        if "slug" in values:
            holder = self._holder("slug", values["slug"])
            if holder is not None and holder is not row:
                raise Undecidable(f"slug {values['slug']!r} is taken: the per-event path picks a free suffix")
        return None

    def _delete(self, academy_uuid, title, source_time, ident):
        """Deactivate the row of a ``deleted`` event (by uuid, else by name), by the rules of ``apply``."""
        row = self._holder("uuid", academy_uuid) if academy_uuid else None
        if row is None and title:
            row = self._holder("name_key", name_key(title))
            if row is not None and academy_uuid and row.uuid and row.uuid != academy_uuid:
                row = None
        if row is None:
            return Outcome(UNCHANGED, None, "no such academy in the table; nothing to deactivate", **ident)
        ident = {**ident, "name": row.name}
        stored = _believed(row.source_timestamp, self.bound)
        if source_time is not None and stored is not None and source_time < stored:
            return Outcome(STALE, row, "delete is older than the row's newest update", **ident)
        newer = source_time is not None and (stored is None or source_time > stored)
        if newer:
            row.source_timestamp = _utc(source_time)
            self._dirty(row, "source_timestamp")
        if not row.is_active:
            if newer:
                self.timed[id(row)] = row
            return Outcome(UNCHANGED, row, "already inactive", **ident)
        row.is_active = False
        self._dirty(row, "is_active")
        self.changed[id(row)] = row
        return Outcome(DEACTIVATED, row, **ident)

    # --- what one statement per kind cannot do --------------------------------------------------------

    def check_no_value_moves(self):
        """``Undecidable`` when a unique value ends the batch on another row than the one that held it."""
        for row in [*self.new, *self.changed.values()]:
            for field in UNIQUE:
                value = getattr(row, field)
                if value is None:
                    continue
                before = self.before[field].get(self.key(value))
                if before is not None and before is not row:
                    raise Undecidable(f"{field} {value!r} moves from one row to another within the batch")

    def write(self, db):
        """
        The batch's writes: one ``INSERT`` of the new rows, and an ``UPDATE`` of the changed rows per set of
        changed columns (at most ``SHAPES`` of them, the rest in one statement of every column). A row whose
        only change is a newer time keeps its ``modified``.
        """
        now = timezone.now()
        new_ids = {id(row) for row in self.new}
        for row in self.new:
            row.created = row.modified = now
        existing = []
        for key, row in {**self.timed, **self.changed}.items():
            if key in new_ids:
                continue
            columns = self.dirty[key]
            if key in self.changed:
                row.modified = now
                columns.add("modified")
            existing.append((row, columns))
        _Writer(db).write(self.new, existing)


class _Writer:
    """
    The statements of a batch, in SQL (Django's ``bulk_create`` / ``bulk_update`` compile every value of
    every row through the ORM, which cost more than the rest of the batch): plain values go as they are,
    the columns whose database form differs (uuid, time, JSON) through the field's own ``get_db_prep_save``.

    New rows: one ``INSERT`` without ids. Changed rows: ``UPDATE ... FROM (VALUES ...)`` on PostgreSQL and
    SQLite (3.33+), ``UPDATE ... JOIN (SELECT ... UNION ALL ...)`` on MariaDB/MySQL, of only the columns
    that changed (sending every column of every row cost more than the database's work); on an older
    SQLite, an upsert of every column. Each update must match all its rows (they were read and locked);
    one that does not raises ``IntegrityError``, and the batch falls back to the per-event path.
    """

    def __init__(self, db):
        self.db = db
        ops = db.ops
        self.table = ops.quote_name(EnterpriseAcademy._meta.db_table)
        fields = list(EnterpriseAcademy._meta.concrete_fields)
        self.fields = fields
        self.by_name = {field.name: field for field in fields}
        self.adapt = [field if field.get_internal_type() in ("UUIDField", "DateTimeField", "JSONField") else None
                      for field in fields]
        self.columns = [ops.quote_name(field.column) for field in fields]
        self.written = [ops.quote_name(EnterpriseAcademy._meta.get_field(name).column) for name in WRITTEN]
        self.update_from = db.vendor == "postgresql" or (
            db.vendor == "sqlite" and db.Database.sqlite_version_info >= (3, 33))

    def _values(self, rows, fields, adapt):
        """The statement parameters of ``rows`` for ``fields``, each adapted for the database."""
        params, seen, db = [], {}, self.db
        for row in rows:
            for field, adapter in zip(fields, adapt):
                value = getattr(row, field.attname)
                if adapter is not None and value is not None:
                    if isinstance(value, list):  # (JSON: not hashable)
                        value = adapter.get_db_prep_save(value, db)
                    else:  # many rows share a value (the batch's ``modified``): adapted once
                        memo = (adapter.attname, value)
                        if memo not in seen:
                            seen[memo] = adapter.get_db_prep_save(value, db)
                        value = seen[memo]
                params.append(value)
        return params

    def _chunks(self, rows, width):
        most = self.db.features.max_query_params or 60_000
        step = max(1, min(1000, most // width))
        for start in range(0, len(rows), step):
            yield rows[start:start + step]

    def write(self, new, existing):
        """``new``: rows to insert; ``existing``: ``(row, names of the columns to set)`` of rows read."""
        with self.db.cursor() as cursor:
            if new:  # the new rows, without ids (the database numbers them)
                fields, adapt = self.fields[1:], self.adapt[1:]
                row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
                for rows in self._chunks(new, len(fields)):
                    cursor.execute(f"INSERT INTO {self.table} ({', '.join(self.columns[1:])}) VALUES "
                                   + ", ".join([row_sql] * len(rows)), self._values(rows, fields, adapt))
            if not existing:
                return
            if not self.update_from and self.db.vendor != "mysql":
                self._upsert_every_column(cursor, [row for row, _ in existing])
                return
            shapes = {}
            for row, columns in existing:
                shapes.setdefault(frozenset(columns), []).append(row)
            ordered = sorted(shapes.items(), key=lambda shape: -len(shape[1]))
            groups = [(sorted(columns), rows) for columns, rows in ordered[:SHAPES]]
            rest = [row for _, rows in ordered[SHAPES:] for row in rows]
            if rest:
                groups.append((WRITTEN, rest))
            for columns, rows in groups:
                self._update(cursor, columns, rows)

    def _update(self, cursor, names, rows):
        """Update the columns ``names`` of ``rows``, in as few statements as the parameter limit allows."""
        fields = [self.fields[0], *(self.by_name[name] for name in names)]
        adapt = [self.adapt[self.fields.index(field)] for field in fields]
        quote = self.db.ops.quote_name
        columns = [quote(field.column) for field in fields]
        for chunk in self._chunks(rows, len(fields)):
            params = self._values(chunk, fields, adapt)
            if self.update_from:  # PostgreSQL, SQLite: a VALUES list joined by id
                # (SQLite names a VALUES column ``columnN`` and takes no column list; a statement that starts
                # with WITH has no rowcount in Python's sqlite3: hence the positional names)
                names = [f"column{n}" for n in range(1, len(fields) + 1)]
                row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
                sets = ", ".join(f"{column} = v.{name}{self._cast(field)}"
                                 for column, name, field in zip(columns[1:], names[1:], fields[1:]))
                alias = f"v ({', '.join(names)})" if self.db.vendor == "postgresql" else "v"
                sql = (f"UPDATE {self.table} SET {sets} FROM (VALUES {', '.join([row_sql] * len(chunk))}) AS {alias} "
                       f"WHERE {self.table}.{columns[0]} = v.{names[0]}")
            else:  # MariaDB/MySQL: a derived table joined by id
                first = "SELECT " + ", ".join(f"%s AS {column}" for column in columns)
                more = " UNION ALL SELECT " + ", ".join(["%s"] * len(columns))
                sets = ", ".join(f"t.{column} = v.{column}" for column in columns[1:])
                sql = (f"UPDATE {self.table} AS t JOIN ({first}{more * (len(chunk) - 1)}) AS v "
                       f"ON t.{columns[0]} = v.{columns[0]} SET {sets}")
            cursor.execute(sql, params)
            if cursor.rowcount != len(chunk):
                raise IntegrityError(f"an update matched {cursor.rowcount} of {len(chunk)} rows read and locked")

    def _cast(self, field):
        """PostgreSQL types a VALUES column from its literals: text (and NULL) must be cast to the column's type."""
        if self.db.vendor != "postgresql" or field.get_internal_type() in ("CharField", "TextField", "SlugField"):
            return ""
        return "::" + field.db_type(self.db)

    def _upsert_every_column(self, cursor, rows):
        """Every column of the changed rows, by id (SQLite before 3.33 has no ``UPDATE ... FROM``)."""
        row_sql = "(" + ", ".join(["%s"] * len(self.fields)) + ")"
        tail = (f" ON CONFLICT ({self.columns[0]}) DO UPDATE SET "
                + ", ".join(f"{c} = EXCLUDED.{c}" for c in self.written))
        for chunk in self._chunks(rows, len(self.fields)):
            cursor.execute(f"INSERT INTO {self.table} ({', '.join(self.columns)}) VALUES "
                           + ", ".join([row_sql] * len(chunk)) + tail, self._values(chunk, self.fields, self.adapt))
