"""
Apply changes to the ``EnterpriseAcademy`` table: the one implementation of the apply rules.

``apply_changes(changes)`` applies any number of ``Change`` s in order and returns one ``Outcome`` per change:
the consumer's batch, a redrive's batch, a reconcile chunk (``sync.py``), and one event of the stock
``consume_events`` receivers (``apply_change``: a batch of one). docs/reference/rules.md lists the rules;
docs/decisions/0001 says why they are applied this way.

How a batch is applied (inside the caller's transaction, or in one of its own when there is none):

1. Prepare every change (``_prepare``): normalize it (``normalize.py``: the catalog's shapes, or an
   event's typed record) and check its time against the future bound. A rejected item or a time beyond
   the bound is final here (``skipped``).
2. Fold (``Fold``): one locking read (``SELECT ... FOR UPDATE``, ``Rows``) of the rows the changes can
   touch, by uuid, name key, lookup key and slug; then the rules applied change by change to those rows in
   memory.
3. Write what the fold decided (``writes.py``): one ``INSERT`` and a few ``UPDATE`` s, in one savepoint.

A fold decides a change only from rows it has read: it knows, column by column, which values it looked up.
When a change needs a row it has not read (a slug probe past the suffixes read, a default key of an academy
that lost its row's name earlier in the batch), or would give a row a unique value that another row held
when the fold began (a rename chain or swap, a key moving between academies: one statement cannot move it
without colliding with itself), the fold stops before that change: what it decided is written, and a new
fold starts at that change, reading again. A write the database refuses (a concurrent writer that won a
race, a trigger) rolls the savepoint back and the same changes are folded again, fewer at a time, until
the change it refuses is alone: its ``Outcome`` says why. So every change is decided by the same rules,
whatever the batch size; only the number of statements differs.

Transient errors (deadlocks, lock timeouts) and lost connections propagate: the caller retries or stops
the whole batch. Memory grows with the batch (its rows and changes), never with the table.
"""

import dataclasses
import datetime
import logging
import re

from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from academy_consumer import conf, writes
from academy_consumer.errors import is_connection_lost, is_transient
from academy_consumer.models import EnterpriseAcademy, name_key
from academy_consumer.normalize import MAX_NAME_LENGTH, Rejected, normalize_academy, normalize_event, parse_uuid

log = logging.getLogger(__name__)

CREATED, UPDATED, UNCHANGED, SKIPPED, STALE, DEACTIVATED, ERRORS = (
    "created", "updated", "unchanged", "skipped", "stale", "deactivated", "errors",
)
OUTCOMES = (CREATED, UPDATED, UNCHANGED, SKIPPED, STALE, DEACTIVATED, ERRORS)
UPSERT, DELETE = "upsert", "delete"
CATALOG, EVENT = "catalog", "event"  # the shapes of ``Change.item``
_NORMALIZERS = {CATALOG: normalize_academy, EVENT: normalize_event}

_UNPRINTABLE_RE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # control characters, unpaired surrogates

# How often a change whose write the database refuses with an IntegrityError (a uniqueness race lost to
# another writer) is folded again on its own before it counts as an error.
INTEGRITY_RETRIES = 3
# The unique columns a fold keeps an index of, and reads rows by.
UNIQUE = ("uuid", "name_key", "stripe_price_lookup_key", "slug")
# Values per read query: SQLite before 3.32 allows 999 parameters in one statement.
READ_CHUNK = 900
# Slug suffixes read at once when a slug is taken (-2 to -9, then -10 to -17...).
SLUG_PROBE = 8
# The columns a fold reads of a row (all of them, by attribute name).
COLUMNS = tuple(field.attname for field in EnterpriseAcademy._meta.concrete_fields)


@dataclasses.dataclass(slots=True)
class Outcome:
    """What applying one change did: one of ``OUTCOMES``, why (when not plain), and which academy."""

    outcome: str
    reason: str = ""
    uuid: str | None = None
    name: str | None = None

    def as_dict(self):
        data = {"outcome": self.outcome, "uuid": self.uuid, "name": self.name}
        if self.reason:
            data["reason"] = self.reason
        return data


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """
    One thing to apply: an academy event or a catalog item.

    ``action`` is ``UPSERT`` (a ``created``/``updated`` event, or a catalog item) or ``DELETE``; ``item`` is
    the academy, in the ``shape`` given: ``CATALOG`` (a catalog item in any of the catalog's shapes, read by
    ``normalize_academy``) or ``EVENT`` (the typed record of an event, ``AcademyData``'s fields, read by
    ``normalize_event``); a delete reads only ``uuid`` and ``title``. ``time`` is the event time or snapshot
    time (``None``: no stale guard, the stored time kept).
    """

    action: str
    item: object
    time: datetime.datetime | None = None
    shape: str = CATALOG


def apply_changes(changes, *, errors_as_outcomes=False) -> list:
    """
    Apply ``changes`` in order; return one ``Outcome`` per change, in order, once their writes are done (inside
    the caller's transaction, which commits or rolls them back; in a transaction of its own when the caller
    has none).

    An upsert whose write the database keeps refusing with an ``IntegrityError`` is ``errors``. Another
    database error of one change (a trigger refusing its row) is its ``errors`` outcome with
    ``errors_as_outcomes`` (reconcile: the other changes still apply), else it propagates (the consumer stops
    on it). Transient errors and lost connections always propagate.
    """
    changes = list(changes)
    if not changes:
        return []
    bound = future_bound()  # one clock reading for the batch
    prepared = [_prepare(change, bound) for change in changes]
    with transaction.atomic(savepoint=False):
        return _Batch(prepared, changes, bound, errors_as_outcomes).apply()


def apply_change(change: Change, *, errors_as_outcomes=False) -> Outcome:
    """Apply one ``Change``: a batch of one."""
    return apply_changes([change], errors_as_outcomes=errors_as_outcomes)[0]


# ---------------------------------------------------------------------------------------------------
# Times
# ---------------------------------------------------------------------------------------------------

def future_bound():
    """The latest event, snapshot or stored time that is believed: now + ``ACADEMY_CONSUMER_MAX_FUTURE_SECONDS``."""
    return timezone.now() + datetime.timedelta(seconds=conf.max_future_seconds())


def _too_far_ahead(source_time, bound):
    """The reason not to apply ``source_time``, when it is beyond ``bound``; else ``None``."""
    if source_time is None or source_time <= bound:
        return None
    return (f"time {source_time.isoformat()} is more than {conf.max_future_seconds():g} s ahead of this clock "
            f"(bound {bound.isoformat(timespec='seconds')}, ACADEMY_CONSUMER_MAX_FUTURE_SECONDS); not applied")


def _believed(stored, bound):
    """A stored ``source_timestamp``, or ``None`` when it lies beyond ``bound`` (a time no clock has reached)."""
    return stored if stored is not None and stored <= bound else None


def _utc(moment):
    """An aware time as the database gives it back (UTC), so reasons quote stored times alike."""
    return moment.astimezone(datetime.timezone.utc) if moment is not None else None


# ---------------------------------------------------------------------------------------------------
# Preparing a change: normalized, its time checked; final when no row can matter
# ---------------------------------------------------------------------------------------------------

def _prepare(change, bound):
    """
    What the fold needs of one change, or its final ``Outcome`` (a rejected item, a time beyond the bound):
    ``(DELETE, uuid, title, time, ident)`` or ``(UPSERT, academy, time, ident)``.
    """
    if change.action == DELETE:
        item = change.item if isinstance(change.item, dict) else {}
        title = delete_title(item)
        academy_uuid = parse_uuid(item.get("uuid"))
        ident = {"uuid": str(academy_uuid) if academy_uuid else None, "name": title}
        ahead = _too_far_ahead(change.time, bound)
        if ahead:
            return Outcome(SKIPPED, f"delete {ahead}", **ident)
        return DELETE, academy_uuid, title, change.time, ident
    try:
        academy = _NORMALIZERS[change.shape](change.item)
    except Rejected as exc:
        return Outcome(SKIPPED, exc.reason, **raw_identity(change.item))
    ident = {"uuid": str(academy.uuid) if academy.uuid else None, "name": academy.name}
    ahead = _too_far_ahead(change.time, bound)
    if ahead:
        return Outcome(SKIPPED, f"event {ahead}", **ident)
    return UPSERT, academy, change.time, ident


def delete_title(item):
    """
    The name a delete looks its row up by: the item's ``title`` when it is a string a stored name can be.
    A title with a control character (which no stored name has; PostgreSQL refuses NUL in any query) is
    ``None``: the delete then matches by uuid only, instead of failing the batch.
    """
    title = item.get("title")
    if not isinstance(title, str) or _UNPRINTABLE_RE.search(title):
        return None
    return title


def raw_identity(item):
    """
    Best-effort uuid and name of an item (of either shape), for reports and for ``deactivate_missing``.

    The item may be a rejected one holding anything, so the name is made one short printable line (it
    ends up in reports, logs and dead-letter headers): whitespace collapsed, control characters and
    unpaired surrogates replaced by U+FFFD, and a name over 255 characters cut there with a ``…`` added
    (so a cut name never equals a stored one).
    """
    if not isinstance(item, dict):
        return {"uuid": None, "name": None}
    found = parse_uuid(item.get("uuid")) or parse_uuid(item.get("academy_uuid"))
    name = next((item[k] for k in ("name", "title", "short_name") if isinstance(item.get(k), str) and item[k]), None)
    if name:
        name = _UNPRINTABLE_RE.sub("\ufffd", " ".join(name.split()))
        if len(name) > MAX_NAME_LENGTH:
            name = name[:MAX_NAME_LENGTH] + "…"
    return {"uuid": str(found) if found else None, "name": name}


def error_outcome(exc, item):
    """The ``errors`` outcome of an item the database refused (a trigger, a constraint): its reason is the error."""
    return Outcome(ERRORS, f"{type(exc).__name__}: {exc}".strip(), **raw_identity(item))


# ---------------------------------------------------------------------------------------------------
# The batch: fold after fold until every change is decided and written
# ---------------------------------------------------------------------------------------------------

class _Batch:
    """The prepared changes of one ``apply_changes`` call, folded and written a run of changes at a time."""

    def __init__(self, prepared, changes, bound, errors_as_outcomes):
        self.prepared, self.changes, self.bound = prepared, changes, bound
        self.errors_as_outcomes = errors_as_outcomes
        self.db = transaction.get_connection()  # (not the ``connection`` proxy: it costs a lookup per use)
        self.key = _keyer(self.db)

    def apply(self):
        """The outcomes of every change, in order."""
        outcomes = [item if isinstance(item, Outcome) else None for item in self.prepared]
        todo = [number for number, outcome in enumerate(outcomes) if outcome is None]
        start, limit, narrowed_until, wanted, refusals = 0, len(todo), 0, {}, 0
        while start < len(todo):
            window = todo[start:start + limit]
            fold = Fold(self.bound, self.key)
            fold.read([self.prepared[number] for number in window], wanted)
            decided, more = fold.run([self.prepared[number] for number in window])
            if not decided:  # the first change needs rows not read yet: read them too, and fold again
                wanted = _merged(wanted, more)
                continue
            wanted = more or {}
            try:
                with transaction.atomic():
                    fold.write(self.db)
            except DatabaseError as exc:
                if is_connection_lost(exc) or is_transient(exc):
                    raise
                wanted = {}
                if len(decided) > 1:  # find the change the database refuses: fewer changes per fold
                    log.info("the database refused a fold of %d changes (%s: %s); folding fewer at a time",
                             len(decided), type(exc).__name__, " ".join(str(exc).split()))
                    limit, narrowed_until = max(1, len(decided) // 2), start + len(decided)
                    continue
                refusals += 1
                decided = [self._refused(window[0], exc, refusals)]
                if decided[0] is None:
                    continue
            for number, outcome in zip(window, decided):
                outcomes[number] = outcome
            start, refusals = start + len(decided), 0
            if start >= narrowed_until:
                limit = len(todo)
        return outcomes

    def _refused(self, number, exc, refusals):
        """
        The outcome of change ``number`` whose write the database refused alone; ``None``: fold it again (a
        uniqueness race lost to another writer: the new read finds the winner's row).
        """
        prepared = self.prepared[number]
        if isinstance(exc, IntegrityError) and prepared[0] == UPSERT:
            if refusals <= INTEGRITY_RETRIES:
                log.info("the write of %s lost a uniqueness race (%s); trying again", prepared[1].name, exc)
                return None
            return Outcome(ERRORS, f"integrity error: {exc}", **prepared[3])
        if self.errors_as_outcomes:
            return error_outcome(exc, self.changes[number].item)
        raise exc


def _merged(wanted, more):
    """``wanted`` (column -> values to read) with ``more`` added."""
    merged = {field: set(values) for field, values in wanted.items()}
    for field, values in (more or {}).items():
        merged.setdefault(field, set()).update(values)
    return merged


def _keyer(db):
    """
    How a unique column's value compares in ``db``: MariaDB/MySQL's ``utf8mb4_bin`` is a PAD SPACE collation
    (``"a"`` and ``"a "`` are one key); PostgreSQL and SQLite compare exactly.
    """
    if db.vendor == "mysql":
        return lambda value: value.rstrip(" ") if isinstance(value, str) else value
    return lambda value: value


_NOT_READ = object()  # (a value the fold did not look up)


class _Stop(Exception):
    """
    The fold cannot decide this change with the rows it holds: ``wanted`` (column -> values) are to be read
    first; ``None``: what the fold decided is to be written first (a unique value would move between rows).
    """

    def __init__(self, wanted=None):
        super().__init__(wanted)
        self.wanted = wanted


# A row read: its columns as attributes, as Django's converters give them (``values_list``; building model
# instances cost more than the rest of the read), in slots (``_Row(*values)``: five times cheaper than a dict).
_Row = dataclasses.make_dataclass("_Row", COLUMNS, slots=True, eq=False)


def _suffixed(slug, suffix):
    """The ``suffix``-th candidate of a taken slug: ``slug-2``, ``slug-3``..., cut to fit 255 characters."""
    tail = f"-{suffix}"
    return slug[: 255 - len(tail)] + tail


def _desired_values(academy, row, matched_by):
    """The field values this academy asks for: on create fields + defaults, on update fields only."""
    values = dict(academy.fields)
    if row is None:
        values = {**academy.defaults, **values}
    elif matched_by == "name":
        values.pop("name", None)  # matched by name: keep the stored casing
    return values


# ---------------------------------------------------------------------------------------------------
# The fold: the rules, change by change, over the rows read
# ---------------------------------------------------------------------------------------------------

class Rows:
    """
    The rows a fold reads and locks, with an index per unique column that also says which values were looked
    up: a fold decides a change only from values it looked up (``holder`` raises ``_Stop`` for another).
    """

    def __init__(self, key):
        self.key = key
        # column -> key of a value looked up -> the row holding it now, or None: no row holds it. A value not
        # in the index was not looked up: the fold cannot say whether a row holds it.
        self.index = {field: {} for field in UNIQUE}
        self.before = {}  # the index when the fold began

    def read(self, ops, wanted):
        """
        Lock and index the rows ``ops`` can touch: by uuid and name key; then by the lookup keys and slugs
        they carry, and the default ones of the academies that have no row; then the first slug suffixes of
        the slugs another row holds; and the values of ``wanted`` (column -> values).
        """
        upserts = [op[1] for op in ops if op[0] == UPSERT]
        first = {"uuid": {academy.uuid for academy in upserts if academy.uuid is not None},
                 "name_key": {name_key(academy.name) for academy in upserts}}
        for op in ops:
            if op[0] == DELETE:
                if op[1]:
                    first["uuid"].add(op[1])
                if op[2]:
                    first["name_key"].add(name_key(op[2]))
        self._lock(_merged(first, {f: v for f, v in wanted.items() if f in first}))
        then = {"stripe_price_lookup_key": set(), "slug": set()}
        for academy in upserts:
            own = self._own_row(academy)
            for field, values in then.items():
                value = academy.fields.get(field, academy.defaults.get(field) if own is None else None)
                if value is not None:
                    values.add(value)
        self._lock(_merged(then, {f: v for f, v in wanted.items() if f in then}))
        probe = set()
        for academy in upserts:
            own = self._own_row(academy)
            slug = academy.fields.get("slug", academy.defaults.get("slug") if own is None else None)
            holder = self.index["slug"].get(self.key(slug)) if slug is not None else None
            if holder is not None and holder is not own:
                probe.update(_suffixed(slug, suffix) for suffix in range(2, 2 + SLUG_PROBE))
        self._lock({"slug": probe})
        self.before = {field: dict(index) for field, index in self.index.items()}

    def _own_row(self, academy):
        """The row read that an academy is, by uuid then by name (before any change of the fold)."""
        row = self.index["uuid"].get(academy.uuid) if academy.uuid is not None else None
        return row if row is not None else self.index["name_key"].get(self.key(name_key(academy.name)))

    def _lock(self, wanted):
        """Read and lock the rows holding ``wanted`` values (column -> values) not looked up yet."""
        locking = EnterpriseAcademy.objects.select_for_update().order_by()
        key = self.key
        for field, values in wanted.items():
            index = self.index[field]
            fresh = [value for value in set(values) if key(value) not in index]
            for start in range(0, len(fresh), READ_CHUNK):
                chunk = fresh[start:start + READ_CHUNK]
                for values_read in locking.filter(**{f"{field}__in": chunk}).values_list(*COLUMNS):
                    self.add(_Row(*values_read))
                for value in chunk:
                    index.setdefault(key(value), None)

    def add(self, row):
        """Index a row (read, or created by the fold): its unique values are looked up, no other row holds them."""
        for field in UNIQUE:
            value = getattr(row, field)
            if value is not None:
                index, value = self.index[field], self.key(value)
                if index.get(value) is None:
                    index[value] = row

    def holder(self, field, value):
        """The row holding ``value`` in ``field`` now (``None``: no row); ``_Stop`` when it was not looked up."""
        row = self.index[field].get(self.key(value), _NOT_READ)
        if row is _NOT_READ:
            raise _Stop({field: {value}})
        return row

    def held_before(self, field, value):
        """The row that held ``value`` in ``field`` when the fold began (``None``: none, or not looked up)."""
        return self.before[field].get(self.key(value))

    def move(self, row, field, value):
        """Set a unique column of ``row``, keeping its index true (the old value is then free)."""
        old = getattr(row, field)
        index = self.index[field]
        if old is not None and index.get(self.key(old)) is row:
            index[self.key(old)] = None
        setattr(row, field, value)
        if value is not None:
            index[self.key(value)] = row


class Fold:
    """
    The apply rules over the rows a run of changes can touch (``Rows``: read and locked), change by change in
    memory; ``write`` then writes what changed.
    """

    def __init__(self, bound, key):
        self.bound = bound
        self.rows = Rows(key)
        self.new, self.changed, self.timed = [], {}, {}
        self.dirty = {}  # id(row) -> the columns its write must set (of a row read, not of a new one)

    def read(self, ops, wanted):
        """Read and lock the rows ``ops`` can touch, and the values of ``wanted`` (``Rows.read``)."""
        self.rows.read(ops, wanted)

    def _dirty(self, row, *fields):
        self.dirty.setdefault(id(row), set()).update(fields)

    # --- the rules -------------------------------------------------------------------------------------

    def run(self, ops):
        """
        Apply ``ops`` in order until one cannot be decided: ``(outcomes of the ops decided, what to read before
        the next one)`` (the second ``None`` when all were decided, or when the next is to be folded anew).
        """
        decided = []
        for op in ops:
            try:
                decided.append(self._delete(*op[1:]) if op[0] == DELETE else self._upsert(*op[1:]))
            except _Stop as stop:
                if not decided and stop.wanted is None:
                    raise AssertionError("a fold's first change cannot move a value another row held") from stop
                return decided, stop.wanted
        return decided, None

    def _upsert(self, academy, source_time, ident):
        """Create or update the row of one normalized academy (docs/reference/rules.md, "Apply")."""
        row, matched_by = None, None
        if academy.uuid is not None:
            row = self.rows.holder("uuid", academy.uuid)
            matched_by = "uuid" if row is not None else None
        if row is None:
            row = self.rows.holder("name_key", name_key(academy.name))
            if row is not None:
                if academy.uuid is not None and row.uuid is not None and row.uuid != academy.uuid:
                    return Outcome(SKIPPED, f"name {academy.name!r} is already used by academy {row.uuid}", **ident)
                matched_by = "name"
        stored = _believed(row.source_timestamp, self.bound) if row is not None else None
        if stored is not None and source_time is not None and source_time < stored:
            return Outcome(STALE, f"event time {source_time.isoformat()} is older than the row's "
                                  f"{stored.isoformat()}", ident["uuid"], row.name)
        values = _desired_values(academy, row, matched_by)
        taken = self._taken(row, values, ident)
        if taken is not None:
            return taken
        if "slug" in values:
            values["slug"] = self._free_slug(row, values["slug"])
        self._check_moves(row, values)
        # (decided: from here on the rows in memory change)
        if row is None:
            row = EnterpriseAcademy(**values, source_timestamp=_utc(source_time))
            row.name_key = name_key(row.name)
            self.rows.add(row)
            self.new.append(row)
            return Outcome(CREATED, "", ident["uuid"], row.name)
        return self._update(row, values, stored, source_time, ident)

    def _update(self, row, values, stored, source_time, ident):
        """Write the values that differ (only a newer time when none does: ``modified`` untouched)."""
        changed = [field for field, value in values.items() if getattr(row, field) != value]
        # (a stored time beyond the bound is not believed: any time replaces it)
        newer = source_time is not None and (stored is None or source_time > stored)
        if newer:
            row.source_timestamp = _utc(source_time)
            self._dirty(row, "source_timestamp")
        if not changed:
            if newer:
                self.timed[id(row)] = row
            return Outcome(UNCHANGED, "", ident["uuid"], row.name)
        self._dirty(row, *changed)
        for field in changed:
            if field in UNIQUE:
                self.rows.move(row, field, values[field])
            else:
                setattr(row, field, values[field])
        if "name" in changed:
            self.rows.move(row, "name_key", name_key(row.name))
            self._dirty(row, "name_key")
        self.changed[id(row)] = row
        return Outcome(UPDATED, "changed: " + ", ".join(sorted(changed)), ident["uuid"], row.name)

    def _taken(self, row, values, ident):
        """The ``SKIPPED`` outcome when another row holds the name or lookup key ``values`` give ``row``; else None."""
        renamed = "name" in values and (row is None or name_key(values["name"]) != row.name_key)
        # A new row's name is checked before its lookup key; a rename's after it (the rules' order of reasons).
        checks = []
        if renamed and row is None:
            checks.append(("name_key", name_key(values["name"]), "name"))
        if "stripe_price_lookup_key" in values:
            checks.append(("stripe_price_lookup_key", values["stripe_price_lookup_key"], "stripe_price_lookup_key"))
        if renamed and row is not None:
            checks.append(("name_key", name_key(values["name"]), "name"))
        for field, value, what in checks:
            holder = self.rows.holder(field, value)
            if holder is not None and holder is not row:
                holder_name = str(holder.uuid) if holder.uuid else repr(holder.name)
                return Outcome(SKIPPED, f"{what} {value!r} is already used by academy {holder_name}", **ident)
        return None

    def _free_slug(self, row, slug):
        """``slug``, or the first of ``slug-2``, ``slug-3``... that no other row holds."""
        candidate, suffix = slug, 1
        while True:
            try:
                holder = self.rows.holder("slug", candidate)
            except _Stop:  # past the suffixes read: read the next ones
                raise _Stop({"slug": {_suffixed(slug, n) for n in range(max(2, suffix), suffix + SLUG_PROBE)}
                             | {candidate}}) from None
            if holder is None or holder is row:
                return candidate
            suffix += 1
            candidate = _suffixed(slug, suffix)

    def _check_moves(self, row, values):
        """``_Stop``: a unique value ``row`` would take was another row's when the fold began (write first)."""
        taking = []
        if values.get("uuid") is not None and (row is None or row.uuid != values["uuid"]):
            taking.append(("uuid", values["uuid"]))
        if "name" in values and (row is None or name_key(values["name"]) != row.name_key):
            taking.append(("name_key", name_key(values["name"])))
        for field in ("stripe_price_lookup_key", "slug"):
            if field in values and (row is None or getattr(row, field) != values[field]):
                taking.append((field, values[field]))
        for field, value in taking:
            held = self.rows.held_before(field, value)
            if held is not None and held is not row:
                raise _Stop(None)

    def _delete(self, academy_uuid, title, source_time, ident):
        """Deactivate the row of a ``deleted`` event, by uuid, else by name (never a hard delete)."""
        row = self.rows.holder("uuid", academy_uuid) if academy_uuid else None
        if row is None and title:
            row = self.rows.holder("name_key", name_key(title))
            if row is not None and academy_uuid and row.uuid and row.uuid != academy_uuid:
                row = None
        if row is None:
            return Outcome(UNCHANGED, "no such academy in the table; nothing to deactivate", **ident)
        ident = {**ident, "name": row.name}
        stored = _believed(row.source_timestamp, self.bound)
        if source_time is not None and stored is not None and source_time < stored:
            return Outcome(STALE, "delete is older than the row's newest update", **ident)
        newer = source_time is not None and (stored is None or source_time > stored)
        if newer:
            row.source_timestamp = _utc(source_time)
            self._dirty(row, "source_timestamp")
        if not row.is_active:
            if newer:
                self.timed[id(row)] = row
            return Outcome(UNCHANGED, "already inactive", **ident)
        row.is_active = False
        self._dirty(row, "is_active")
        self.changed[id(row)] = row
        return Outcome(DEACTIVATED, "", **ident)

    # --- writing ---------------------------------------------------------------------------------------

    def write(self, db):
        """
        What the fold decided: the new rows, and the changed columns of the rows read (a row whose only change
        is a newer time keeps its ``modified``), through ``writes.write_rows``.
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
        if self.new or existing:
            writes.write_rows(db, self.new, existing)
