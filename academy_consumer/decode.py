"""
Decode: one Kafka message -> one academy event, or the reason it can never be one.

The wire format is the Open edX event bus's (edx-event-bus-kafka): CloudEvents headers (``ce_type``,
``ce_id``, ``ce_time``, ...) and a schema-registry framed Avro value (magic byte 0, a 4-byte schema id,
the Avro record ``{"academy": AcademyData}`` of ``signals/schemas``).

* Each writer schema is fetched from the registry and parsed once per schema id, then cached. When it is
  the academy schema itself (the usual case) values are read by a reader compiled from that schema at
  start-up (``_compile_reader``: straight-line code for its fields, building the academy dict directly);
  any value it finds unusual (truncated, a union index or boolean byte out of range, not UTF-8, ...) is
  read again by fastavro, whose result or error is then the answer, so the compiled reader only ever
  speeds up what fastavro reads the same. Otherwise fastavro resolves the writer schema against the
  academy schema (a field added by a newer producer is dropped, a type change is a schema mismatch).
* The event carries the typed Avro record (``AcademyEvent.academy``: the fields of ``AcademyData``, of the
  types the schema gives them) as it was read, not a catalog-shaped guess: ``AcademyEvent.change`` hands it
  to the apply layer as an ``EVENT`` change, which maps it field by field (``normalize.normalize_event``).
  The record keeps ``False``, ``0`` and ``""`` (openedx-events' stock deserializer turns falsy values of
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

from academy_consumer.apply import DELETE, EVENT, UPSERT, Change
from academy_consumer.errors import (
    PermanentError,
    TransientError,
    UndecodableValueError,
    UnusableMessageError,
    registry_unavailable,
)
from academy_consumer_signals import ACADEMY_SIGNALS

# ce_type -> what the event does: the academy signals of ``signals.signals``.
ACTIONS = {signal.event_type: signal.event_type.split(".")[-2] for signal in ACADEMY_SIGNALS}  # created, ...
_UUID_FIELDS = ("uuid", "catalog_query_uuid")
_FRAME = struct.Struct(">bI")  # magic byte, schema id
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch
_CANONICAL_UUID_BYTES = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch
# ce_type header value (bytes, as Kafka carries it) -> (ce_type, action): the usual case needs no decoding.
_TYPES = {event_type.encode(): (event_type, action) for event_type, action in ACTIONS.items()}
_ABSENT = object()  # a header not (yet) seen (``None`` is a header without a value)


@dataclasses.dataclass(slots=True)
class AcademyEvent:
    """A decoded academy event: what it does, to which academy, when, and where it was read."""

    event_type: str  # the ce_type, e.g. org.openedx.enterprise.academy.updated.v1
    action: str  # created, updated or deleted
    academy: dict  # the typed Avro record: AcademyData's fields as the schema types them, ``None`` dropped
    time: datetime.datetime  # ce_time, timezone-aware
    topic: str
    partition: int
    offset: int
    event_id: str  # ce_id

    @property
    def change(self) -> Change:
        """What the apply layer is asked to do: the record, read by the event mapping (``normalize_event``)."""
        return Change(DELETE if self.action == "deleted" else UPSERT, self.academy, self.time, EVENT)

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
    return json.loads(importlib.resources.files("academy_consumer_signals").joinpath("schemas", name).read_text())


class Decoder:
    """Decode messages of the academy topic; holds the per-schema-id cache of parsed writer schemas."""

    def __init__(self, registry_client):
        self.registry = registry_client
        self._academy = academy_schema()
        self._reader = fastavro.parse_schema(self._academy)
        self._canonical = _canonical(self._academy)
        self._fast = _compile_reader(self._academy)  # None if the schema has a type it does not read
        # schema id -> (parsed writer schema, reader schema or None when it is the writer's, compiled reader or None)
        self._schemas = {}

    def decode(self, message) -> AcademyEvent | Rejection:
        """One message -> an ``AcademyEvent`` or a ``Rejection``; ``TransientError`` when the registry is down."""
        try:
            event_type, action, event_id, when = _read_headers(message.headers())
            academy = self._read_value(message.value())
        except _Rejected as rejected:
            return rejected.rejection
        for field in _UUID_FIELDS:
            value = academy.get(field)
            if value is not None and not _is_uuid(value):
                return Rejection(UndecodableValueError(f"academy {field!r} is not a valid UUID: {value!r}"))
        return AcademyEvent(event_type, action, academy, when, message.topic(), message.partition(),
                            message.offset(), event_id)

    def _read_value(self, value):
        """The academy dict of a framed value, ``None`` fields dropped."""
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
        writer, reader, fast = self._schemas.get(schema_id) or self._fetch(schema_id)
        if fast is not None:
            try:
                return fast(value, _FRAME.size)
            except Exception:  # pylint: disable=broad-except  # unusual: fastavro reads it and says what is wrong
                pass
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
        return {key: value for key, value in academy.items() if value is not None}

    def _fetch(self, schema_id):
        """Fetch, parse and cache writer schema ``schema_id``."""
        try:
            schema = self.registry.get_schema(schema_id)
        except Exception as exc:
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
        except Exception as exc:
            reason = (f"schema mismatch: writer schema {schema_id} is no Avro record schema "
                      f"({type(exc).__name__}: {exc})")
            raise _Rejected(UndecodableValueError(reason), schema_mismatch=True) from None
        same = _canonical(written) == self._canonical
        cached = (writer, None, self._fast) if same else (writer, self._reader, None)
        self._schemas[schema_id] = cached
        return cached


class _Rejected(Exception):
    def __init__(self, error, **marks):
        super().__init__(str(error))
        self.rejection = Rejection(error, **marks)


def _read_headers(headers):
    """
    ``(ce_type, action, ce_id, ce_time)`` of an academy event's headers, each present exactly once: one pass
    over the header list; the usual values (a known ce_type, a canonical ce_id) are checked as bytes.
    """
    ce_type = ce_id = ce_time = _ABSENT
    for key, value in headers or ():
        if key == "ce_type":
            if ce_type is not _ABSENT:
                raise _Rejected(UnusableMessageError("Multiple ce_type headers found on message"))
            ce_type = value
        elif key == "ce_id":
            if ce_id is not _ABSENT:
                raise _Rejected(UnusableMessageError("Multiple ce_id headers found on message"))
            ce_id = value
        elif key == "ce_time":
            if ce_time is not _ABSENT:
                raise _Rejected(UnusableMessageError("Multiple ce_time headers found on message"))
            ce_time = value
    if ce_type is _ABSENT:
        raise _Rejected(UnusableMessageError("Missing ce_type header on message, cannot determine signal"))
    try:
        event_type, action = _TYPES[ce_type]
    except (KeyError, TypeError):
        event_type = _text("ce_type", ce_type)
        raise _Rejected(UnusableMessageError(
            f"ce_type {event_type!r} is not an academy event type (expected one of {', '.join(ACTIONS)})")) from None
    if ce_id is _ABSENT:
        raise _Rejected(UnusableMessageError("Missing ce_id header on message"))
    if type(ce_id) is bytes and _CANONICAL_UUID_BYTES(ce_id):  # pylint: disable=unidiomatic-typecheck
        event_id = ce_id.decode("ascii")
    else:
        event_id = _text("ce_id", ce_id)
        if not _is_uuid(event_id):
            raise _Rejected(UnusableMessageError(f"ce_id header {event_id!r} is not a UUID"))
    if ce_time is _ABSENT:
        raise _Rejected(UnusableMessageError("missing ce_time header: the event time is needed for the stale guard"))
    text = _text("ce_time", ce_time)
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise _Rejected(UnusableMessageError(f"ce_time header {text!r} is not an ISO 8601 time")) from None
    if when.tzinfo is None:
        raise _Rejected(UnusableMessageError(f"ce_time header {text!r} has no UTC offset"))
    return event_type, action, event_id, when


def _is_uuid(text):
    """Whether ``text`` is a UUID as ``uuid.UUID`` reads one (the canonical form is checked without parsing)."""
    if _CANONICAL_UUID(text):
        return True
    try:
        uuid.UUID(text)
    except (ValueError, TypeError):
        return False
    return True


def _text(key, value):
    """A header's value as text."""
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


class _Unusual(Exception):
    """What the compiled reader does not read itself (fastavro then reads the value)."""


def _varint(data, pos):
    """The zigzag varint at ``data[pos]`` (a long as Avro writes it) and the position after it."""
    number = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        number |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift > 63:
            raise _Unusual("a varint of more than 10 bytes")
    if number >> 64:
        raise _Unusual("a varint of more than 64 bits")
    return (number >> 1) ^ -(number & 1), pos


_LONG = """\
byte = data[pos]
if byte < 0x80:
    {target} = (byte >> 1) ^ -(byte & 1)
    pos += 1
else:
    {target}, pos = _varint(data, pos)
"""
_STRING = _LONG.format(target="length") + """\
end = pos + length
if length < 0 or end > size:
    raise _Unusual("a string past the end")
{target} = data[pos:end].decode()
pos = end
"""
_BOOLEAN = """\
byte = data[pos]
if byte == 1:
    {target} = True
elif byte:
    raise _Unusual("a boolean byte out of range")
else:
    {target} = False
pos += 1
"""
_PRIMITIVES = {"string": _STRING, "long": _LONG, "boolean": _BOOLEAN}
_ARRAY = _LONG.format(target="count") + """\
while count:
    if count < 0:  # a block with its size in bytes
        count = -count
        _, pos = _varint(data, pos)
    for _ in range(count):
{item}        items.append(item)
""" + "".join("    " + line + "\n" for line in _LONG.format(target="count").splitlines())


def _compile_reader(schema):
    """
    ``read(data, pos) -> academy dict`` (``None`` fields dropped) for values written with ``schema`` (the
    academy schema: a record of one ``academy`` record), compiled to straight-line code; ``None`` when a
    field has a type it does not read (anything but string, long, boolean, ``["null", one of those]`` and
    arrays of them), fastavro then reads every value. It raises on anything unusual, never answers
    differently from fastavro (``tests/test_decode.py`` checks that on random values and random bytes).
    """
    def indent(code, spaces):
        return "".join(" " * spaces + line + "\n" for line in code.splitlines())

    def emit(kind, target):
        if isinstance(kind, str) and kind in _PRIMITIVES:
            return _PRIMITIVES[kind].format(target=target)
        if isinstance(kind, dict) and set(kind) == {"type", "items"} and kind["type"] == "array" \
                and isinstance(kind["items"], str) and kind["items"] in _PRIMITIVES:
            return "items = []\n" + _ARRAY.format(item=indent(_PRIMITIVES[kind["items"]].format(target="item"), 8)) \
                + f"{target} = items\n"
        return None

    try:
        (field,) = schema["fields"]
        record = field["type"]
        if schema["type"] != "record" or field["name"] != "academy" or record["type"] != "record":
            return None
        body = ""
        for item in record["fields"]:
            kind, target = item["type"], f"academy[{item['name']!r}]"
            if isinstance(kind, list) and len(kind) == 2 and kind[0] == "null":
                code = emit(kind[1], target)
                if code is None:
                    return None
                body += ("byte = data[pos]\npos += 1\nif byte == 2:\n" + indent(code, 4)
                         + "elif byte:\n    raise _Unusual('a union index out of range')\n")
            else:
                code = emit(kind, target)
                if code is None:
                    return None
                body += code
    except (KeyError, TypeError, ValueError):
        return None
    source = "def read(data, pos):\n    size = len(data)\n    academy = {}\n" + indent(body, 4) + "    return academy\n"
    namespace = {"_varint": _varint, "_Unusual": _Unusual}
    exec(compile(source, "<academy reader>", "exec"), namespace)  # pylint: disable=exec-used
    namespace["read"].source = source
    return namespace["read"]
