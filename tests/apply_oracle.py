"""
The test oracle of the apply rules: the per-event implementation the product had before it had one
(``academy_consumer/apply.py`` up to the commit that made the set-based fold the only one), kept here, in
the tests only, as a second and simple reading of the rules.

Each change is applied on its own, in its own savepoint, with plain ORM queries: find the row by uuid then by
name, the stale guard, the uniqueness checks against the table, the slug probe (``-2``, ``-3``... one query
each), then ``save()``. ``tests/test_differential.py`` checks that ``apply.apply_changes`` gives its outcomes
and its table, on generated histories and any batch sizes. It reads every item with the catalog normalizer
(``normalize_academy``), whatever the change's shape: an event change so checks the event mapping as well.
"""

import dataclasses

from django.db import DatabaseError, IntegrityError, transaction

from academy_consumer import apply as product
from academy_consumer import conf
from academy_consumer.apply import DELETE
from academy_consumer.errors import is_connection_lost, is_transient
from academy_consumer.models import EnterpriseAcademy, name_key
from academy_consumer.normalize import NormalizedAcademy, Rejected, normalize_academy, parse_uuid

SKIPPED, STALE, CREATED, UPDATED, UNCHANGED, DEACTIVATED, ERRORS = (
    "skipped", "stale", "created", "updated", "unchanged", "deactivated", "errors")
INTEGRITY_RETRIES = 3


@dataclasses.dataclass
class Outcome:
    """What the oracle says one change does (``as_dict`` as the product's ``Outcome``)."""

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


class ConflictError(Exception):
    """The item would take a unique value (name, lookup key) that belongs to another academy."""


def future_bound():
    """The product's bound (looked up at call time: the tests pin it)."""
    return product.future_bound()


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
        return Outcome(SKIPPED, None, exc.reason, **product.raw_identity(item))
    return upsert_academy(academy, source_time)


def apply_change(change, errors_as_outcomes=False):
    """Apply one ``apply.Change`` on its own, in its own savepoint(s)."""
    if errors_as_outcomes:
        try:
            with transaction.atomic():
                return apply_change(change)
        except DatabaseError as exc:
            if is_connection_lost(exc) or is_transient(exc):
                raise
            return Outcome(ERRORS, None, f"{type(exc).__name__}: {exc}".strip(), **product.raw_identity(change.item))
    if change.action == DELETE:
        item = change.item if isinstance(change.item, dict) else {}
        return deactivate_academy(parse_uuid(item.get("uuid")), product.delete_title(item), change.time)
    return apply_item(change.item, change.time)
