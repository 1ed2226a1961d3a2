"""
Configuration faults are not bad events (docs/decisions/0004): whether an event that fails on its schema points
at a wrong schema registry rather than at itself.

A schema id the registry does not know is a corrupt message only if the registry is the right one: it is a
``FatalError`` (nothing dead-lettered, nothing committed) when the registry knows none of the academy subjects
of the topic, or when the same unknown id comes back on another event. A writer schema that is no academy
schema is checked the same way against the registry's subjects.
"""

from academy_consumer import conf
from academy_consumer.errors import FatalError, TransientError, registry_unavailable
from academy_consumer.redact import mask_url
from academy_consumer_signals import ACADEMY_SIGNALS


class RegistryCheck:
    """The checks of one run over the topic ``full_topic``, through ``registry`` (a SchemaRegistryClient)."""

    def __init__(self, registry, full_topic):
        self.registry = registry
        self.full_topic = full_topic
        self._unknown_schemas = {}  # schema id the registry does not know -> {(partition, offset)} using it
        self._registry_has_academy_subjects = False

    def check(self, rejection, message):
        """A ``FatalError`` when ``rejection`` points at a wrong schema registry rather than a bad event."""
        if rejection.unknown_schema_id is not None:
            self._check_unknown_schema(rejection.unknown_schema_id, message)
        elif rejection.schema_mismatch:
            self._check_registry_knows_academy(
                f"the writer schema of {message.topic()}[{message.partition()}]@{message.offset()} is no academy "
                f"schema")

    def _check_unknown_schema(self, schema_id, message):
        """
        A schema id the registry does not know is a corrupt message only if the registry is the right one:
        a ``FatalError`` (a configuration fault: nothing dead-lettered or committed) when the registry knows
        none of the academy subjects of the topic, or when a second event uses the same unknown id.
        """
        url = mask_url(conf.schema_registry_url())
        seen = self._unknown_schemas.setdefault(schema_id, set())
        seen.add((message.partition(), message.offset()))
        if len(seen) > 1:
            raise FatalError(f"schema id {schema_id} is unknown to the schema registry {url} yet used by {len(seen)} "
                             f"events of {self.full_topic}: is EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL the registry "
                             f"the producers use? (nothing dead-lettered or committed)")
        self._check_registry_knows_academy(f"schema id {schema_id} not found")

    def _check_registry_knows_academy(self, detail):
        """
        A ``FatalError`` (a configuration fault) when the schema registry knows none of the academy subjects
        of the topic: academy events were then produced through another registry, and no event of them can
        be decoded here. Asked once per run, when an event first fails on its schema.
        """
        url = mask_url(conf.schema_registry_url())
        if self._registry_has_academy_subjects:
            return
        try:
            subjects = self.registry.get_subjects()
        except Exception as exc:
            raise (TransientError if registry_unavailable(exc) else FatalError)(
                f"schema registry {url}: {type(exc).__name__}: {exc}") from exc
        prefixes = tuple(f"{self.full_topic}-{signal.event_type}" for signal in ACADEMY_SIGNALS)
        if not any(str(subject).startswith(prefixes) for subject in subjects):
            raise FatalError(f"the schema registry {url} knows none of the academy schemas of {self.full_topic} "
                             f"({detail}; no subject {self.full_topic}-<academy event type>): "
                             f"is EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL right? (nothing dead-lettered or committed)")
        self._registry_has_academy_subjects = True
