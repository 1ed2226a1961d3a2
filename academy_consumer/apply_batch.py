"""
Apply a batch of changes set-wise: the consumer's and reconcile's entry point, ``apply_changes``.

(Placeholder: each change is applied with ``apply.apply_change`` in its own savepoint. The set-based
version replaces the body of ``apply_changes`` and must give exactly these outcomes.)
"""

from django.db import DatabaseError, transaction

from academy_consumer.apply import ERRORS, Change, Outcome, _raw_identity, apply_change, is_connection_lost, is_transient

__all__ = ["Change", "apply_changes"]


def apply_changes(changes, *, errors_as_outcomes=False):
    """
    Apply ``changes`` in order inside the caller's transaction; yield one ``Outcome`` per change.

    ``errors_as_outcomes``: a database error of one change that is neither transient nor a lost
    connection (a trigger or constraint refusing the row) becomes that change's ``errors`` outcome and
    the others still apply (reconcile); without it, it propagates (the consumer stops on it). Transient
    errors and lost connections always propagate: the caller retries or stops the whole batch.
    """
    for change in changes:
        yield _apply_one(change, errors_as_outcomes)


def _apply_one(change, errors_as_outcomes):
    if not errors_as_outcomes:
        return apply_change(change)
    try:
        with transaction.atomic():
            return apply_change(change)
    except DatabaseError as exc:
        if is_connection_lost(exc) or is_transient(exc):
            raise
        return Outcome(ERRORS, None, f"{type(exc).__name__}: {exc}".strip(), **_raw_identity(change.item))
