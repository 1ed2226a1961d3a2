"""
Signal definitions for the Enterprise Catalog academy events (architecture subdomain ``enterprise``).

They follow the name and versioning conventions of OEP-41 and the payload conventions of openedx-events
(docs/decisions/0003-events-payload.rst). They are defined here, not in openedx-events, which has no
academy events; the producer (enterprise-catalog) must use the same definitions.
"""
from openedx_events.tooling import OpenEdxPublicSignal

from academy_consumer_signals.data import AcademyData

# .. event_type: org.openedx.enterprise.academy.created.v1
# .. event_name: ACADEMY_CREATED
# .. event_key_field: academy.uuid
# .. event_description: emitted when an academy is created in the Enterprise Catalog.
# .. event_data: AcademyData
# .. event_trigger_repository: openedx/enterprise-catalog
ACADEMY_CREATED = OpenEdxPublicSignal(
    event_type="org.openedx.enterprise.academy.created.v1",
    data={
        "academy": AcademyData,
    }
)

# .. event_type: org.openedx.enterprise.academy.updated.v1
# .. event_name: ACADEMY_UPDATED
# .. event_key_field: academy.uuid
# .. event_description: emitted when an academy is updated in the Enterprise Catalog.
# .. event_data: AcademyData
# .. event_trigger_repository: openedx/enterprise-catalog
ACADEMY_UPDATED = OpenEdxPublicSignal(
    event_type="org.openedx.enterprise.academy.updated.v1",
    data={
        "academy": AcademyData,
    }
)

# .. event_type: org.openedx.enterprise.academy.deleted.v1
# .. event_name: ACADEMY_DELETED
# .. event_key_field: academy.uuid
# .. event_description: emitted when an academy is deleted from the Enterprise Catalog. Carries the
#      academy as it was last known; consumers deactivate it.
# .. event_data: AcademyData
# .. event_trigger_repository: openedx/enterprise-catalog
ACADEMY_DELETED = OpenEdxPublicSignal(
    event_type="org.openedx.enterprise.academy.deleted.v1",
    data={
        "academy": AcademyData,
    }
)
