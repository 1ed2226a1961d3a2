"""
Signal receivers: academy events from the event bus -> the apply layer.

They run for every academy signal sent in this process: openedx-events' stock ``consume_events`` (and
any in-process sender) applies academy events through them, each a batch of one of the same
``apply.apply_changes`` that this project's ``consume_academy_events`` applies its batches with, the event's
``AcademyData`` read by the same event mapping (``normalize.normalize_event``). A receiver that cannot apply
its event raises ``AcademyEventRejected``, which the stock consumer logs.

``consume_academy_events`` applies events itself, then sends each applied one to the host's own receivers
(``host_signals``): these receivers then return at once, without touching the database, for that very event
(``host_signals.applied_here``): it was applied already.
"""

import logging

from django.dispatch import receiver

from academy_consumer.apply import DELETE, ERRORS, EVENT, SKIPPED, UPSERT, Change, apply_change
from academy_consumer.errors import AcademyEventRejected
from academy_consumer.host_signals import OWN_RECEIVERS, applied_here
from academy_consumer_signals import ACADEMY_CREATED, ACADEMY_DELETED, ACADEMY_UPDATED, academy_data_to_dict

__all__ = ["AcademyEventRejected", "deactivate_academy_from_event", "upsert_academy_from_event"]

log = logging.getLogger(__name__)


def _checked(outcome, event_type):
    if outcome.outcome in (SKIPPED, ERRORS):
        raise AcademyEventRejected(f"{event_type} for {outcome.uuid or outcome.name}: {outcome.reason}")
    log.debug("%s %s: %s %s", event_type, outcome.uuid or outcome.name, outcome.outcome, outcome.reason)
    return outcome


@receiver(ACADEMY_CREATED)
@receiver(ACADEMY_UPDATED)
def upsert_academy_from_event(sender, signal, academy, metadata, **kwargs):  # pylint: disable=unused-argument
    """A created or updated academy: normalize and upsert it, stale-guarded by the event's own time."""
    if applied_here(metadata):
        return None
    change = Change(UPSERT, academy_data_to_dict(academy), metadata.time, EVENT)
    return _checked(apply_change(change), signal.event_type)


@receiver(ACADEMY_DELETED)
def deactivate_academy_from_event(sender, signal, academy, metadata, **kwargs):  # pylint: disable=unused-argument
    """A deleted academy: deactivate its row (never a hard delete), stale-guarded by the event time."""
    if applied_here(metadata):
        return None
    change = Change(DELETE, academy_data_to_dict(academy), metadata.time, EVENT)
    return _checked(apply_change(change), signal.event_type)


OWN_RECEIVERS.extend([upsert_academy_from_event, deactivate_academy_from_event])
