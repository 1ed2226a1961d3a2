"""
Decode: one Kafka message -> one academy event, or the reason it can never be one.

The wire format is the Open edX event bus's (edx-event-bus-kafka): CloudEvents headers (``ce_type``,
``ce_id``, ``ce_time``, ...) and a schema-registry framed Avro value (magic byte 0, a 4-byte schema id,
the Avro record ``{"academy": AcademyData}`` of ``signals/schemas``).

* Each writer schema is fetched from the registry and parsed once per schema id, then cached. When it is
  the academy schema itself (the usual case) values are read with it alone; otherwise fastavro resolves
  it against the academy schema (a field added by a newer producer is dropped, a type change is a schema
  mismatch).
* The academy dict keeps ``False``, ``0`` and ``""`` (openedx-events' stock deserializer turns falsy values of
  optional fields into "absent"), and drops ``None`` (absent means "keep" to the apply rules).
* A message that can never be an academy event comes back as a ``Rejection`` (dead-lettered with its
  reason); a registry that cannot answer now raises ``TransientError`` (the batch is retried). A schema id
  the registry does not know, or a writer schema that is no academy schema, is marked on the
  ``Rejection``: many of those mean a wrong registry, which the consumer treats as a configuration fault.

Pure of Django and of the database: it needs only a schema registry client (``get_schema(id)``).
"""

import dataclasses
import datetime
import io
import json
import re
import struct
import uuid

import fastavro
from confluent_kafka.schema_registry.error import SchemaRegistryError
from fastavro.read import SchemaResolutionError

from academy_consumer.apply import DELETE, UPSERT, Change
from academy_consumer.errors import (
    PermanentError, TransientError, UndecodableValueError, UnusableMessageError, registry_unavailable,
)
from signals import ACADEMY_SIGNALS

# ce_type -> what the event does: the academy signals of ``signals.signals``.
ACTIONS = {signal.event_type: signal.event_type.split(".")[-2] for signal in ACADEMY_SIGNALS}  # created, ...
_UUID_FIELDS = ("uuid", "catalog_query_uuid")
_HEADERS = ("ce_type", "ce_id", "ce_time")
_FRAME = struct.Struct(">bI")  # magic byte, schema id
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch


@dataclasses.dataclass(slots=True)
class AcademyEvent:
    """A decoded academy event: what it does, to which academy, when, and where it was read."""

    event_type: str  # the ce_type, e.g. org.openedx.enterprise.academy.updated.v1
    action: str  # created, updated or deleted
    academy: dict  # catalog-shaped academy fields, ``None`` dropped, falsy values kept
    time: datetime.datetime  # ce_time, timezone-aware
    topic: str
    partition: int
    offset: int
    event_id: str  # ce_id

    @property
    def change(self) -> Change:
        """What the apply layer is asked to do."""
        return Change(DELETE if self.action == "deleted" else UPSERT, self.academy, self.time)

    @property
    def who(self) -> str:
        """The academy's uuid, else its title, for log lines and dead-letter reasons."""
        return self.academy.get("uuid") or repr(self.academy.get("title"))


@dataclasses.dataclass(slots=True)
class Rejection:
    """Why a message can never be an academy event (``error`` is a ``PermanentError`` carrying the reason)."""

    error: PermanentError
    unknown_schema_id: int | None = None  # the registry answered 404 for this schema id
    schema_mismatch: bool = False  # the writer schema is not an academy schema


def academy_schema():
    """The academy events' Avro schema (the same record for created, updated and deleted), as JSON."""
    import importlib.resources  # pylint: disable=import-outside-toplevel
    name = f"{ACADEMY_SIGNALS[0].event_type.replace('.', '+')}_schema.avsc"
    return json.loads(importlib.resources.files("signals").joinpath("schemas", name).read_text())


class Decoder:
    """Decode messages of the academy topic; holds the per-schema-id cache of parsed writer schemas."""

    def __init__(self, registry_client):
        self.registry = registry_client
        self._academy = academy_schema()
        self._reader = fastavro.parse_schema(self._academy)
        self._canonical = _canonical(self._academy)
        self._schemas = {}  # schema id -> (parsed writer schema, reader schema or None when it is the writer's)

    def decode(self, message) -> AcademyEvent | Rejection:
        """One message -> an ``AcademyEvent`` or a ``Rejection``; ``TransientError`` when the registry is down."""
        try:
            event_type, event_id, when = _read_headers(message.headers())
            record = self._read_value(message.value())
        except _Rejected as rejected:
            return rejected.rejection
        academy = {key: value for key, value in record.items() if value is not None}
        for field in _UUID_FIELDS:
            value = academy.get(field)
            if value is not None and not _is_uuid(value):
                return Rejection(UndecodableValueError(f"academy {field!r} is not a valid UUID: {value!r}"))
        return AcademyEvent(event_type, ACTIONS[event_type], academy, when, message.topic(), message.partition(),
                            message.offset(), event_id)

    def _read_value(self, value):
        if value is None:
            raise _Rejected(UndecodableValueError("message has no value (a tombstone): no academy to apply"))
        if len(value) < _FRAME.size:
            raise _Rejected(UndecodableValueError(
                f"the value is {len(value)} bytes: too short for schema-registry framing (a magic byte and a 4-byte "
                f"schema id before the Avro record)"))
        magic, schema_id = _FRAME.unpack_from(value)
        if magic != 0:
            raise _Rejected(UndecodableValueError(
                f"unexpected magic byte {magic & 0xff}: the value was not produced with a schema-registry serializer"))
        writer, reader = self._schemas.get(schema_id) or self._fetch(schema_id)
        stream = io.BytesIO(value)
        stream.seek(_FRAME.size)
        try:
            record = fastavro.schemaless_reader(stream, writer, reader)
        except SchemaResolutionError as exc:
            raise _Rejected(UndecodableValueError(f"schema mismatch: {exc}"), schema_mismatch=True) from None
        except EOFError:
            raise _Rejected(UndecodableValueError(
                "the value ends before the Avro record does: truncated or not written with this schema")) from None
        except (ValueError, TypeError, IndexError, KeyError, UnicodeDecodeError, OverflowError) as exc:
            raise _Rejected(UndecodableValueError(f"the value is not an academy record: {type(exc).__name__}: "
                                                  f"{exc}")) from None
        academy = record.get("academy") if isinstance(record, dict) else None
        if not isinstance(academy, dict):
            raise _Rejected(UndecodableValueError("the record has no academy"), schema_mismatch=True)
        return academy

    def _fetch(self, schema_id):
        """Fetch, parse and cache writer schema ``schema_id``."""
        try:
            schema = self.registry.get_schema(schema_id)
        except Exception as exc:  # pylint: disable=broad-except
            if registry_unavailable(exc):
                raise TransientError(f"schema registry: {type(exc).__name__}: {exc}") from exc
            if isinstance(exc, SchemaRegistryError) and exc.http_status_code == 404:
                raise _Rejected(UndecodableValueError(f"schema id {schema_id}: {exc}"),
                                unknown_schema_id=schema_id) from None
            raise _Rejected(UndecodableValueError(f"schema id {schema_id}: {type(exc).__name__}: {exc}")) from None
        try:
            if (schema.schema_type or "AVRO") != "AVRO":
                raise ValueError(f"a {schema.schema_type} schema")
            written = json.loads(schema.schema_str)
            writer = fastavro.parse_schema(written)
        except Exception as exc:  # pylint: disable=broad-except
            raise _Rejected(UndecodableValueError(f"schema mismatch: writer schema {schema_id} is no Avro record "
                                                  f"schema ({type(exc).__name__}: {exc})"), schema_mismatch=True) from None
        cached = (writer, None if _canonical(written) == self._canonical else self._reader)
        self._schemas[schema_id] = cached
        return cached


class _Rejected(Exception):
    def __init__(self, error, **marks):
        super().__init__(str(error))
        self.rejection = Rejection(error, **marks)


def _read_headers(headers):
    """``(ce_type, ce_id, ce_time)`` of an academy event's headers, each present exactly once."""
    found = {}
    for key, value in headers or ():
        if key in _HEADERS:
            if key in found:
                raise _Rejected(UnusableMessageError(f"Multiple {key} headers found on message"))
            found[key] = value
    if "ce_type" not in found:
        raise _Rejected(UnusableMessageError("Missing ce_type header on message, cannot determine signal"))
    event_type = _text(found, "ce_type")
    if event_type not in ACTIONS:
        raise _Rejected(UnusableMessageError(
            f"ce_type {event_type!r} is not an academy event type (expected one of {', '.join(ACTIONS)})"))
    if "ce_id" not in found:
        raise _Rejected(UnusableMessageError("Missing ce_id header on message"))
    event_id = _text(found, "ce_id")
    if not _is_uuid(event_id):
        raise _Rejected(UnusableMessageError(f"ce_id header {event_id!r} is not a UUID")) from None
    if "ce_time" not in found:
        raise _Rejected(UnusableMessageError("missing ce_time header: the event time is needed for the stale guard"))
    text = _text(found, "ce_time")
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise _Rejected(UnusableMessageError(f"ce_time header {text!r} is not an ISO 8601 time")) from None
    if when.tzinfo is None:
        raise _Rejected(UnusableMessageError(f"ce_time header {text!r} has no UTC offset"))
    return event_type, event_id, when


def _is_uuid(text):
    """Whether ``text`` is a UUID as ``uuid.UUID`` reads one (the canonical form is checked without parsing)."""
    if _CANONICAL_UUID(text):
        return True
    try:
        uuid.UUID(text)
    except (ValueError, TypeError):
        return False
    return True


def _text(found, key):
    value = found[key]
    if value is None:
        raise _Rejected(UnusableMessageError(f"{key} header has no value"))
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise _Rejected(UnusableMessageError(f"{key} header is not UTF-8: {value[:80]!r}")) from None


def _canonical(schema):
    """
    A schema as comparable JSON, less what does not change how a value is read: doc strings, and namespaces
    (openedx-events gives each event type's schema its own, ``org.openedx.enterprise.academy.updated.v1``).
    """
    def strip(node):
        if isinstance(node, dict):
            return {key: strip(value) for key, value in node.items() if key not in ("doc", "namespace")}
        if isinstance(node, list):
            return [strip(value) for value in node]
        return node
    return json.dumps(strip(schema), sort_keys=True)
