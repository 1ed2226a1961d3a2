"""
Signal receivers: academy events from the event bus -> the apply layer.

They run for every academy signal sent in this process, whoever consumes the bus: this project's
``consume_academy_events`` or openedx-events' stock ``consume_events``. A receiver that cannot apply
its event raises ``AcademyEventRejected`` (the stock consumer logs it; ours dead-letters it).
"""

import logging

from django.dispatch import receiver

from academy_consumer.apply import ERRORS, SKIPPED, apply_item, deactivate_academy
from signals import ACADEMY_CREATED, ACADEMY_DELETED, ACADEMY_UPDATED, academy_data_to_dict

log = logging.getLogger(__name__)


class AcademyEventRejected(Exception):
    """An academy event that can never be applied as it is (bad payload, conflicting keys)."""


def _checked(outcome, event_type):
    if outcome.outcome in (SKIPPED, ERRORS):
        raise AcademyEventRejected(f"{event_type} for {outcome.uuid or outcome.name}: {outcome.reason}")
    log.debug("%s %s: %s %s", event_type, outcome.uuid or outcome.name, outcome.outcome, outcome.reason)
    return outcome


@receiver(ACADEMY_CREATED)
@receiver(ACADEMY_UPDATED)
def upsert_academy_from_event(sender, signal, academy, metadata, **kwargs):  # pylint: disable=unused-argument
    """A created or updated academy: normalize and upsert it, stale-guarded by the event's own time."""
    return _checked(apply_item(academy_data_to_dict(academy), metadata.time), signal.event_type)


@receiver(ACADEMY_DELETED)
def deactivate_academy_from_event(sender, signal, academy, metadata, **kwargs):  # pylint: disable=unused-argument
    """A deleted academy: deactivate its row (never a hard delete), stale-guarded by the event time."""
    outcome = deactivate_academy(academy.uuid, academy.title, metadata.time)
    return _checked(outcome, signal.event_type)
