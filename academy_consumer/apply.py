"""
Apply normalized academies to the ``EnterpriseAcademy`` table: the per-event apply rules (the README's
"The rules, in short" lists them; ``apply_batch.py`` applies them set-wise).

This is the thin database layer shared by the Kafka consumer and ``reconcile_academies``:

* ``upsert_academy`` -- one normalized academy, at a given source time, in its own savepoint.
* ``deactivate_academy`` -- what a ``deleted`` event does (rows are never hard-deleted).
* ``sync_academies`` -- a full sync over a catalog list, with ``deactivate_missing`` and dry run.

Rules, in the order the code applies them:

1. Identity: match by academy ``uuid`` first, else by name ignoring case. Matched by uuid, a new name
   renames the row in place; matched by name only, the stored casing is kept and the uuid filled in.
   A name already held by a row with a *different* uuid is a conflict: the item is skipped.
2. Stale guard: each row keeps ``source_timestamp``, the time of the newest event or snapshot applied
   to it. An older event or snapshot is not applied (outcome ``stale``). Times are bounded by this
   process's clock plus ``ACADEMY_CONSUMER_MAX_FUTURE_SECONDS``: a later event or snapshot time is never
   applied (outcome ``skipped``, which the consumer dead-letters: it would freeze its row against every
   later change), and a stored time beyond the bound counts as absent (it makes nothing stale, and the
   next write replaces it; ``repair_future_timestamps`` resets such times).
3. Absent means keep: an update writes only what the payload carries; defaults (slug, lookup key,
   display order, product id) are used only on create. ``is_active`` is always carried (absent = live).
4. Unchanged means no write: when no field differs, the row is not saved and ``modified`` stays.
   Only a *newer* ``source_timestamp`` is recorded (one ``UPDATE`` of that column alone, ``modified``
   untouched) -- without it a later, older event could overwrite the newer state.
5. Uniqueness: a slug taken by another row gets a deterministic ``-2``, ``-3``... suffix; a lookup key
   or name taken by another academy skips the item with a reason (it never steals the key).
   Two writers creating the same academy at once end in one row: the loser's ``IntegrityError`` rolls
   back its savepoint and the upsert runs again, now finding the row.
"""

import dataclasses
import datetime
import itertools
import logging
import re
import time

from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from academy_consumer import conf
from academy_consumer.models import EnterpriseAcademy, name_key
from academy_consumer.normalize import MAX_NAME_LENGTH, NormalizedAcademy, Rejected, normalize_academy, parse_uuid
from academy_consumer.redact import mask_urls

log = logging.getLogger(__name__)

CREATED, UPDATED, UNCHANGED, SKIPPED, STALE, DEACTIVATED, ERRORS = (
    "created", "updated", "unchanged", "skipped", "stale", "deactivated", "errors",
)
OUTCOMES = (CREATED, UPDATED, UNCHANGED, SKIPPED, STALE, DEACTIVATED, ERRORS)

_UNPRINTABLE_RE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # control characters, unpaired surrogates

# How often an upsert that lost a uniqueness race is tried again before it counts as an error.
INTEGRITY_RETRIES = 3
# A row-level transaction that hit a deadlock or lock timeout is retried this often (reconcile only;
# the consumer retries whole batches itself).
TRANSIENT_RETRIES = 5


@dataclasses.dataclass
class Outcome:
    """What applying one item did: one of ``OUTCOMES``, the row it touched, and why (when not plain)."""

    outcome: str
    row: EnterpriseAcademy | None = None
    reason: str = ""
    uuid: str | None = None
    name: str | None = None

    def as_dict(self):
        data = {"outcome": self.outcome, "uuid": self.uuid, "name": self.name}
        if self.reason:
            data["reason"] = self.reason
        return data


@dataclasses.dataclass
class SyncResult:
    """
    The counts of a sync (created, updated, unchanged, deactivated, skipped...), plus one entry per item and
    notes on what was not done.
    """

    counts: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    items: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    dry_run: bool = False

    def add(self, outcome):
        self.counts[outcome.outcome] += 1
        self.items.append(outcome.as_dict())

    def as_dict(self):
        return {**self.counts, "dry_run": self.dry_run, "items": self.items, "notes": self.notes}


class ConflictError(Exception):
    """The item would take a unique value (name, lookup key) that belongs to another academy."""


class DatabaseUnavailable(Exception):
    """The connection to the database was lost mid-sync; the message is one line. The sync stopped there."""


def future_bound():
    """The latest event, snapshot or stored time that is believed: now + ``ACADEMY_CONSUMER_MAX_FUTURE_SECONDS``."""
    return timezone.now() + datetime.timedelta(seconds=conf.max_future_seconds())


def _too_far_ahead(source_time, bound=None):
    """The reason not to apply ``source_time``, when it is beyond ``bound`` (``future_bound()``); else ``None``."""
    if source_time is None:
        return None
    bound = future_bound() if bound is None else bound
    if source_time <= bound:
        return None
    return (f"time {source_time.isoformat()} is more than {conf.max_future_seconds():g} s ahead of this clock "
            f"(bound {bound.isoformat(timespec='seconds')}, ACADEMY_CONSUMER_MAX_FUTURE_SECONDS); not applied")


def _believed(stored, bound):
    """A stored ``source_timestamp``, or ``None`` when it lies beyond ``bound`` (a time no clock has reached)."""
    return stored if stored is not None and stored <= bound else None


def is_connection_lost(exc):
    """True for database errors that mean the connection is gone (server down, killed, unreachable)."""
    if isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    code = getattr(cause, "pgcode", None)
    if code is not None:
        return code.startswith("08") or code.startswith("57P")
    args = getattr(cause, "args", ()) or exc.args
    if args and isinstance(args[0], int):
        return args[0] in {2002, 2003, 2006, 2013, 2055, 4031}
    message = str(exc).lower()
    return any(text in message for text in ("connection", "server closed", "terminating"))


def is_transient(exc):
    """True for database errors that go away when retried: deadlocks, lock timeouts, lost connections."""
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    code = getattr(cause, "pgcode", None)
    if code is not None:  # PostgreSQL: serialization failure, deadlock, lock timeout, connection classes
        return code in {"40001", "40P01", "55P03"} or code.startswith("08") or code.startswith("57P")
    args = getattr(cause, "args", ()) or exc.args
    if args and isinstance(args[0], int):  # MySQL/MariaDB error numbers
        return args[0] in {1205, 1213, 2002, 2003, 2006, 2013, 2055, 4031}
    # psycopg2 connection errors carry no pgcode; SQLite says "database is locked".
    message = str(exc).lower()
    return any(text in message for text in ("locked", "connection", "server closed", "terminating"))


def _describe(academy):
    return str(academy.uuid) if academy.uuid else repr(academy.name)


def _first(rows):
    """
    The first row of a lookup on a unique column, or ``None``. Unlike ``.first()`` it adds no ORDER BY
    (the model's ``Meta.ordering``): pointless for at most one row, and compiling it was a large part of
    the CPU time of every applied event.
    """
    for row in rows.order_by()[:1]:
        return row
    return None


def _find_row(academy):
    """The row this academy is, by uuid then by name; raise ConflictError when the name is another's."""
    rows = EnterpriseAcademy.objects.select_for_update()
    if academy.uuid is not None:
        row = _first(rows.filter(uuid=academy.uuid))
        if row is not None:
            return row, "uuid"
    row = _first(rows.filter(name_key=name_key(academy.name)))
    if row is None:
        return None, None
    if academy.uuid is not None and row.uuid is not None and row.uuid != academy.uuid:
        raise ConflictError(f"name {academy.name!r} is already used by academy {row.uuid}")
    return row, "name"


def _check_unique(academy, row, field, value, what):
    """Raise ConflictError when another academy's row holds ``value`` in ``field`` (a unique column)."""
    # At most one row holds a value of a unique column: when it is ``row`` itself, no other does.
    holder = _first(EnterpriseAcademy.objects.filter(**{field: value}).values_list("pk", "uuid", "name", named=True))
    if holder is None or (row is not None and holder.pk == row.pk):
        return
    if academy.uuid is not None and holder.uuid == academy.uuid:
        # The same academy, committed by a concurrent writer after we looked it up: start over.
        raise IntegrityError(f"academy {academy.uuid} was created concurrently")
    raise ConflictError(f"{what} {value!r} is already used by academy {_describe(holder)}")


def _free_slug(row, slug):
    """``slug``, or the first of ``slug-2``, ``slug-3``... that no other row holds."""
    others = EnterpriseAcademy.objects.all() if row is None else EnterpriseAcademy.objects.exclude(pk=row.pk)
    candidate, suffix = slug, 1
    while others.filter(slug=candidate).exists():
        suffix += 1
        tail = f"-{suffix}"
        candidate = slug[: 255 - len(tail)] + tail
    return candidate


def _desired_values(academy, row, matched_by):
    """The field values this academy asks for: on create fields + defaults, on update fields only."""
    values = dict(academy.fields)
    if row is None:
        values = {**academy.defaults, **values}
    elif matched_by == "name":
        values.pop("name", None)  # matched by name: keep the stored casing
    if "uuid" in values and values["uuid"] is None:
        values.pop("uuid")
    return values


def _upsert_once(academy, source_time, check_rename=True):
    """
    One attempt of ``upsert_academy``. ``check_rename=False`` leaves the uniqueness of a renamed row's
    new name to the unique index (one query less per rename): a conflict then raises ``IntegrityError``
    and the caller runs the checked attempt, which reports it.
    """
    row, matched_by = _find_row(academy)
    stored = _believed(row.source_timestamp, future_bound()) if row is not None else None
    if stored is not None and source_time is not None and source_time < stored:
        return Outcome(STALE, row, f"event time {source_time.isoformat()} is older than the row's "
                                   f"{stored.isoformat()}")
    values = _desired_values(academy, row, matched_by)
    if "name" in values and (row is None or name_key(values["name"]) != row.name_key):
        if row is None or check_rename:
            _check_unique(academy, row, "name_key", name_key(values["name"]), "name")
    if "stripe_price_lookup_key" in values:
        _check_unique(academy, row, "stripe_price_lookup_key", values["stripe_price_lookup_key"],
                      "stripe_price_lookup_key")
    if "slug" in values:
        values["slug"] = _free_slug(row, values["slug"])

    if row is None:
        row = EnterpriseAcademy(**values, source_timestamp=source_time)
        row.save(force_insert=True)
        return Outcome(CREATED, row)

    changed = [field for field, value in values.items() if getattr(row, field) != value]
    # (a stored time beyond the bound is not believed: any time replaces it)
    newer = source_time is not None and (stored is None or source_time > stored)
    if not changed:
        if newer:  # record the newer time only; the data and `modified` stay as they are
            EnterpriseAcademy.objects.filter(pk=row.pk).update(source_timestamp=source_time)
            row.source_timestamp = source_time
        return Outcome(UNCHANGED, row)
    for field in changed:
        setattr(row, field, values[field])
    update_fields = [*changed, "modified"]
    if newer:
        row.source_timestamp = source_time
        update_fields.append("source_timestamp")
    row.save(update_fields=update_fields)
    return Outcome(UPDATED, row, "changed: " + ", ".join(sorted(changed)))


def upsert_academy(academy: NormalizedAcademy, source_time=None):
    """
    Create or update the row for one normalized academy, in its own savepoint.

    ``source_time`` is the event time (or catalog snapshot time); ``None`` applies unconditionally
    and leaves the stored time alone. A time beyond ``future_bound()`` is not applied (``skipped``, with
    the time and the bound). Returns an ``Outcome``; conflicts come back as ``skipped``.
    Database errors other than a lost uniqueness race propagate to the caller, whose transaction
    decides whether to retry (see ``is_transient``).
    """
    ident = {"uuid": str(academy.uuid) if academy.uuid else None, "name": academy.name}
    ahead = _too_far_ahead(source_time)
    if ahead:
        return Outcome(SKIPPED, None, f"event {ahead}", **ident)
    try:  # first without the rename check: the unique index says the same, a query less
        with transaction.atomic():
            outcome = _upsert_once(academy, source_time, check_rename=False)
    except ConflictError as exc:
        return Outcome(SKIPPED, None, str(exc), **ident)
    except IntegrityError:
        outcome = None  # a taken name or a lost race: the checked attempts below tell which
    if outcome is not None:
        outcome.uuid, outcome.name = ident["uuid"], outcome.row.name if outcome.row else academy.name
        return outcome
    for attempt in range(1, INTEGRITY_RETRIES + 1):
        try:
            with transaction.atomic():
                outcome = _upsert_once(academy, source_time)
        except ConflictError as exc:
            return Outcome(SKIPPED, None, str(exc), **ident)
        except IntegrityError as exc:
            if attempt == INTEGRITY_RETRIES:
                return Outcome(ERRORS, None, f"integrity error: {exc}", **ident)
            log.info("upsert of %s lost a uniqueness race (%s); trying again", academy.name, exc)
            continue
        outcome.uuid, outcome.name = ident["uuid"], outcome.row.name if outcome.row else academy.name
        return outcome
    raise AssertionError("unreachable")


def deactivate_academy(academy_uuid=None, name=None, source_time=None):
    """
    What a ``deleted`` event does: mark the academy's row inactive (never a hard delete).

    An academy that has no row is nothing to deactivate (``unchanged``, with that reason). A row
    already inactive only records the newer time. The stale guard and the bound on times apply as for
    upserts.
    """
    ident = {"uuid": str(academy_uuid) if academy_uuid else None, "name": name}
    ahead = _too_far_ahead(source_time)
    if ahead:
        return Outcome(SKIPPED, None, f"delete {ahead}", **ident)
    with transaction.atomic():
        rows = EnterpriseAcademy.objects.select_for_update()
        row = _first(rows.filter(uuid=academy_uuid)) if academy_uuid else None
        if row is None and name:
            row = _first(rows.filter(name_key=name_key(name)))
            if row is not None and academy_uuid and row.uuid and row.uuid != academy_uuid:
                row = None
        if row is None:
            return Outcome(UNCHANGED, None, "no such academy in the table; nothing to deactivate", **ident)
        ident["name"] = row.name
        stored = _believed(row.source_timestamp, future_bound())
        if source_time is not None and stored is not None and source_time < stored:
            return Outcome(STALE, row, "delete is older than the row's newest update", **ident)
        newer = source_time is not None and (stored is None or source_time > stored)
        if not row.is_active:
            if newer:
                EnterpriseAcademy.objects.filter(pk=row.pk).update(source_timestamp=source_time)
            return Outcome(UNCHANGED, row, "already inactive", **ident)
        row.is_active = False
        fields = ["is_active", "modified"]
        if newer:
            row.source_timestamp = source_time
            fields.append("source_timestamp")
        row.save(update_fields=fields)
        return Outcome(DEACTIVATED, row, **ident)


def apply_item(item, source_time=None):
    """Normalize one raw catalog item and upsert it; a rejected item comes back as ``skipped``."""
    try:
        academy = normalize_academy(item)
    except Rejected as exc:
        return Outcome(SKIPPED, None, exc.reason, **_raw_identity(item))
    return upsert_academy(academy, source_time)


UPSERT, DELETE = "upsert", "delete"


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """
    One thing to apply: an academy event or a catalog item.

    ``action`` is ``"upsert"`` (a ``created``/``updated`` event, or a catalog item) or ``"delete"``;
    ``item`` is the raw catalog-shaped academy dict (what ``normalize_academy`` reads; for a delete only
    ``uuid`` and ``title`` are read); ``time`` is the event time or snapshot time (``None``: no stale guard).
    """

    action: str
    item: dict
    time: datetime.datetime | None = None


def apply_change(change: Change) -> Outcome:
    """
    Apply one ``Change`` on its own, in its own savepoint(s): the per-event path, and the reference the
    set-based batch path must agree with outcome for outcome.
    """
    if change.action == DELETE:
        item = change.item if isinstance(change.item, dict) else {}
        return deactivate_academy(parse_uuid(item.get("uuid")), delete_title(item), change.time)
    return apply_item(change.item, change.time)


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


def error_outcome(exc, item):
    """The ``errors`` outcome of an item the database refused (a trigger, a constraint): its reason is the error."""
    return Outcome(ERRORS, None, f"{type(exc).__name__}: {exc}".strip(), **_raw_identity(item))


def _raw_identity(item):
    """
    Best-effort uuid and name of an item, for reports and for ``deactivate_missing``.

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


def _apply_chunk(chunk, source_time, retry):
    """
    The catalog items of one chunk through ``apply_batch.apply_changes``, in ONE transaction (a savepoint
    inside a dry run's outer transaction): one ``Outcome`` per item, in order. With ``retry``, a deadlock
    or lock timeout rolls the whole chunk back and runs it again with backoff (``TRANSIENT_RETRIES``
    attempts in all). A lost connection is not retried: it raises at once (see ``_sync``).
    """
    from academy_consumer.apply_batch import apply_changes  # pylint: disable=import-outside-toplevel  # a cycle

    changes = [Change(UPSERT, item, source_time) for item in chunk]
    attempts = TRANSIENT_RETRIES if retry else 1
    for attempt in range(1, attempts + 1):
        try:
            with transaction.atomic():
                outcomes = list(apply_changes(changes, errors_as_outcomes=True))
                if len(outcomes) != len(changes):
                    raise RuntimeError(f"apply_changes gave {len(outcomes)} outcome(s) for {len(changes)} change(s)")
                return outcomes
        except DatabaseError as exc:
            if is_connection_lost(exc) or not is_transient(exc) or attempt == attempts:
                raise
            log.warning("transient database error (%s); retrying chunk of %d item(s) (attempt %d)",
                        exc, len(chunk), attempt)
            time.sleep(min(2.0, 0.05 * 2 ** attempt))
            if not connection.in_atomic_block:
                connection.close_if_unusable_or_obsolete()
    raise AssertionError("unreachable")


def sync_academies(items, *, source_time=None, deactivate_missing=False, dry_run=False, limited=False,
                   chunk_size=500, on_chunk=None):
    """
    Apply a full catalog list (every item upserted, then the unlisted rows deactivated when asked) and
    return a ``SyncResult``.

    * Items are applied ``chunk_size`` at a time, one transaction per chunk (``apply_batch.apply_changes``);
      each item still has its own outcome, and one bad row never aborts the others. A deadlock or lock
      timeout retries the whole chunk; a chunk that still fails is applied again one item per transaction,
      so only the item that fails counts as ``errors``.
    * ``source_time`` is the snapshot time (default: now); rows changed by a newer event are ``stale``.
    * ``deactivate_missing`` deactivates active rows that no item names -- except when the list is
      empty, when no item could be normalized, or when ``limited`` (the sync covered one academy).
    * ``dry_run`` runs the very same code inside a transaction that is rolled back: same counts,
      zero writes.
    * A lost database connection stops the sync at that chunk: ``DatabaseUnavailable`` is raised (no
      retries, no further items, no ``deactivate_missing``); the chunks committed before it stay applied,
      which is harmless, since a rerun converges.
    * ``on_chunk(done, total)``, when given, is called after each chunk with the items applied so far
      (in a dry run: checked so far) and the list's length.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a whole number >= 1, not {chunk_size!r}")
    source_time = source_time or timezone.now()
    result = SyncResult(dry_run=dry_run)
    if dry_run:
        with transaction.atomic():
            _sync(items, source_time, deactivate_missing, limited, result, dry_run=True, chunk_size=chunk_size,
                  on_chunk=on_chunk)
            transaction.set_rollback(True)
    else:
        _sync(items, source_time, deactivate_missing, limited, result, dry_run=False, chunk_size=chunk_size,
              on_chunk=on_chunk)
    return result


class _Progress:
    """How many items the committed chunks held (never counted in a dry run: nothing is committed)."""

    def __init__(self, dry_run):
        self.dry_run = dry_run
        self.committed = 0

    def done(self, count):
        if not self.dry_run:
            self.committed += count

    def lost(self, exc, number):
        """The ``DatabaseUnavailable`` for a connection lost at item ``number``, saying what was applied before it."""
        reason = mask_urls(" ".join(str(exc).split())) or type(exc).__name__
        if self.dry_run:
            tail = "sync stopped; dry run, nothing was written"
        else:
            tail = f"sync stopped, {self.committed} item(s) before it were applied"
        return DatabaseUnavailable(f"database connection lost at item {number} ({reason}); {tail}")


def _apply_numbered(chunk, first, source_time, progress):
    """
    The outcomes of ``chunk``, whose first item is item number ``first`` of the list. A chunk that fails
    as a whole (retries spent, or an error ``apply_changes`` did not turn into an outcome) is applied again
    one item per transaction; a single item that fails is its ``errors`` outcome, as it always was.
    """
    try:
        outcomes = _apply_chunk(chunk, source_time, retry=not progress.dry_run)
    except (DatabaseError, InterfaceError) as exc:
        if is_connection_lost(exc):
            raise progress.lost(exc, first) from exc
        if len(chunk) == 1:
            progress.done(1)
            return [error_outcome(exc, chunk[0])]
        log.warning("chunk of items %d-%d failed (%s); applying them one per transaction",
                    first, first + len(chunk) - 1, exc)
        outcomes = []
        for offset, item in enumerate(chunk):
            outcomes.extend(_apply_numbered([item], first + offset, source_time, progress))
        return outcomes
    progress.done(len(chunk))
    return outcomes


def _sync(items, source_time, deactivate_missing, limited, result, *, dry_run, chunk_size, on_chunk=None):
    """The sync of ``sync_academies``: apply ``items`` chunk by chunk, then deactivate the missing ones when asked."""
    seen_uuids, seen_names = set(), set()
    progress = _Progress(dry_run)
    pending = iter(items)
    first = 1
    while chunk := list(itertools.islice(pending, chunk_size)):
        outcomes = _apply_numbered(chunk, first, source_time, progress)
        first += len(chunk)
        for item, outcome in zip(chunk, outcomes):
            ident = _raw_identity(item)
            result.add(outcome)
            for uuid_text in (ident["uuid"], outcome.uuid):
                if uuid_text:
                    seen_uuids.add(uuid_text)
            for name in (ident["name"], outcome.name):
                if name:
                    seen_names.add(name_key(name))
        if on_chunk is not None:
            on_chunk(first - 1, len(items))
    if not deactivate_missing:
        return
    if limited:
        result.notes.append("deactivate_missing ignored: the sync was limited to one academy")
    elif not items:
        result.notes.append("deactivate_missing ignored: the catalog list is empty")
    elif not any(entry["outcome"] not in (SKIPPED, ERRORS) for entry in result.items):
        result.notes.append("deactivate_missing ignored: no item of the list could be applied")
    else:
        result.counts[DEACTIVATED] += _deactivate_missing(seen_uuids, seen_names, source_time, result)


# Primary keys per bulk UPDATE of ``_deactivate_missing`` (well under SQLite's 999 bound parameters).
DEACTIVATE_BATCH = 500


def _deactivate_missing(seen_uuids, seen_names, source_time, result):
    """
    Deactivate active rows the list did not name and no newer event touched; return how many. A stored
    time beyond ``future_bound()`` is not taken for a newer event. One locking read of the active rows,
    the decision here, then one bulk UPDATE (per ``DEACTIVATE_BATCH`` rows); one entry per row, by pk.
    """
    bound = future_bound()
    with transaction.atomic():
        candidates = (EnterpriseAcademy.objects.select_for_update().filter(is_active=True).order_by("pk")
                      .values_list("pk", "uuid", "name", "name_key", "source_timestamp", named=True))
        chosen = []
        for row in candidates:
            if (row.uuid and str(row.uuid) in seen_uuids) or row.name_key in seen_names:
                continue
            stored = _believed(row.source_timestamp, bound)
            if stored is not None and stored > source_time:
                continue
            chosen.append(row)
        now = timezone.now()
        for start in range(0, len(chosen), DEACTIVATE_BATCH):
            batch = [row.pk for row in chosen[start:start + DEACTIVATE_BATCH]]
            EnterpriseAcademy.objects.filter(pk__in=batch).update(
                is_active=False, source_timestamp=source_time, modified=now)
        for row in chosen:
            result.items.append(Outcome(DEACTIVATED, None, "not in the catalog list",
                                        str(row.uuid) if row.uuid else None, row.name).as_dict())
    return len(chosen)
