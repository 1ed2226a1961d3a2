"""
A full sync of the table with a catalog list (``reconcile_academies``): ``sync_academies``.

Every item is upserted through the same ``apply.apply_changes`` as the consumer's events (catalog shape,
the snapshot time as every item's time), ``chunk_size`` items per transaction; then, when asked, the active
rows the list does not name are deactivated. docs/decisions/0007 says why it is chunked; the rules are
``apply.py``'s (docs/reference/rules.md).
"""

import dataclasses
import itertools
import logging
import time

from django.db import DatabaseError, InterfaceError, connection, transaction
from django.utils import timezone

from academy_consumer import kafka
from academy_consumer.apply import (
    CATALOG,
    DEACTIVATED,
    ERRORS,
    OUTCOMES,
    SKIPPED,
    UPSERT,
    Change,
    Outcome,
    apply_changes,
    error_outcome,
    future_bound,
    raw_identity,
)
from academy_consumer.errors import is_connection_lost, is_transient
from academy_consumer.models import EnterpriseAcademy, name_key
from academy_consumer.redact import mask_urls

log = logging.getLogger(__name__)

# A chunk's transaction that hit a deadlock or lock timeout is retried this often in all (the consumer
# retries whole batches itself).
TRANSIENT_RETRIES = 5
# Primary keys per bulk UPDATE of ``_deactivate_missing`` (well under SQLite's 999 bound parameters).
DEACTIVATE_BATCH = 500


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


class DatabaseUnavailable(Exception):
    """The connection to the database was lost mid-sync; the message is one line. The sync stopped there."""


def _apply_chunk(chunk, source_time, retry):
    """
    The catalog items of one chunk through ``apply.apply_changes``, in ONE transaction (a savepoint
    inside a dry run's outer transaction): one ``Outcome`` per item, in order. With ``retry``, a deadlock
    or lock timeout rolls the whole chunk back and runs it again with backoff (``TRANSIENT_RETRIES``
    attempts in all). A lost connection is not retried: it raises at once (see ``_sync``).
    """
    changes = [Change(UPSERT, item, source_time, CATALOG) for item in chunk]
    attempts = TRANSIENT_RETRIES if retry else 1
    for attempt in range(1, attempts + 1):
        try:
            with transaction.atomic():
                outcomes = apply_changes(changes, errors_as_outcomes=True)
                if len(outcomes) != len(changes):
                    raise RuntimeError(f"apply_changes gave {len(outcomes)} outcome(s) for {len(changes)} change(s)")
                return outcomes
        except DatabaseError as exc:
            if is_connection_lost(exc) or not is_transient(exc) or attempt == attempts:
                raise
            log.warning("transient database error (%s); retrying chunk of %d item(s) (attempt %d)",
                        exc, len(chunk), attempt)
            time.sleep(kafka.backoff(attempt, 2.0, base=0.05))
            if not connection.in_atomic_block:
                connection.close_if_unusable_or_obsolete()
    raise AssertionError("unreachable")


def sync_academies(items, *, source_time=None, deactivate_missing=False, dry_run=False, limited=False,
                   chunk_size=500, on_chunk=None):
    """
    Apply a full catalog list (every item upserted, then the unlisted rows deactivated when asked) and
    return a ``SyncResult``.

    * Items are applied ``chunk_size`` at a time, one transaction per chunk (``apply.apply_changes``);
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
            ident = raw_identity(item)
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
            stored = row.source_timestamp
            if stored is not None and source_time < stored <= bound:
                continue
            chosen.append(row)
        now = timezone.now()
        for start in range(0, len(chosen), DEACTIVATE_BATCH):
            batch = [row.pk for row in chosen[start:start + DEACTIVATE_BATCH]]
            EnterpriseAcademy.objects.filter(pk__in=batch).update(
                is_active=False, source_timestamp=source_time, modified=now)
        for row in chosen:
            result.items.append(Outcome(DEACTIVATED, "not in the catalog list",
                                        str(row.uuid) if row.uuid else None, row.name).as_dict())
    return len(chosen)
