"""
``academy_consumer.decode``: one message -> an academy event or the reason it can never be one.

Real parts: the dev stack's schema registry over HTTP, confluent-kafka's ``SchemaRegistryClient`` and its
``AvroSerializer`` framing the values exactly as edx-event-bus-kafka's producer does, and real
confluent-kafka ``Message`` objects (built directly: no broker is needed to decode).
"""

import datetime
import io
import json
import uuid

import fastavro
import pytest
from confluent_kafka import Message
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openedx_events.event_bus.avro.deserializer import AvroSignalDeserializer
from openedx_events.event_bus.avro.serializer import AvroSignalSerializer

from academy_consumer.decode import AcademyEvent, Decoder, Rejection, _compile_reader, academy_schema
from academy_consumer.errors import TransientError, UndecodableValueError, UnusableMessageError
from academy_consumer_signals import ACADEMY_CREATED, ACADEMY_DELETED, ACADEMY_UPDATED, academy_data_from_dict
from academy_devstack.schema_registry import SchemaRegistryServer

TOPIC = "dev-academy-events"
UUID = "6f1c1f3a-2b1e-4c55-9a57-1c7d3f1e8a01"
TIME = "2026-03-01T12:00:00+00:00"


@pytest.fixture(name="registry")
def registry_fixture():
    """A dev-stack schema registry for the test."""
    server = SchemaRegistryServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="client")
def client_fixture(registry):
    return SchemaRegistryClient({"url": registry.url})


def serialize(client, signal, item, topic=TOPIC):
    """The value as the event bus producer writes it: schema-registry framed Avro of the signal's schema."""
    serializer = AvroSignalSerializer(signal)
    avro = AvroSerializer(schema_str=serializer.schema_string(), schema_registry_client=client,
                          to_dict=lambda data, ctx: serializer.to_dict(data))
    return avro({"academy": academy_data_from_dict(item)}, SerializationContext(topic, MessageField.VALUE))


def message(value, *, event_type=ACADEMY_UPDATED.event_type, time=TIME, headers=None, offset=7):
    if headers is None:
        headers = [("ce_type", event_type.encode()), ("ce_id", str(uuid.uuid4()).encode()),
                   ("ce_source", b"openedx/enterprise-catalog/web"), ("ce_time", time.encode())]
    return Message(topic=TOPIC, partition=2, offset=offset, key=UUID.encode(), value=value, headers=headers)


def test_an_event_decodes_to_its_action_academy_time_and_position(client):
    item = {"uuid": UUID, "title": "Data Academy", "tags": ["Data"], "display_order": 3}
    event = Decoder(client).decode(message(serialize(client, ACADEMY_UPDATED, item)))
    assert isinstance(event, AcademyEvent)
    assert (event.action, event.event_type, event.topic, event.partition, event.offset) == (
        "updated", ACADEMY_UPDATED.event_type, TOPIC, 2, 7)
    assert event.academy == item  # None fields dropped: absent means keep
    assert event.time == datetime.datetime(2026, 3, 1, 12, tzinfo=datetime.timezone.utc)
    assert event.change.action == "upsert" and event.change.time == event.time


def test_deleted_events_are_deletes(client):
    value = serialize(client, ACADEMY_DELETED, {"uuid": UUID, "title": "Data Academy"})
    event = Decoder(client).decode(message(value, event_type=ACADEMY_DELETED.event_type))
    assert event.action == "deleted" and event.change.action == "delete"


def test_false_zero_and_empty_string_are_kept_where_the_stock_deserializer_drops_them(client):
    item = {"uuid": UUID, "title": "Data Academy", "is_active": False, "display_order": 0, "long_description": ""}
    value = serialize(client, ACADEMY_UPDATED, item)
    event = Decoder(client).decode(message(value))
    assert (event.academy["is_active"], event.academy["display_order"], event.academy["long_description"]) == (
        False, 0, "")
    # openedx-events' stock path, for contrast: the deactivation and the reset arrive as "not carried".
    stock = AvroSignalDeserializer(ACADEMY_UPDATED)
    record = AvroDeserializer(client, stock.schema_string())(value, SerializationContext(TOPIC, MessageField.VALUE))
    data = stock.from_dict(record)["academy"]
    assert (data.is_active, data.display_order, data.long_description) == (None, None, None)


def test_a_schema_is_fetched_once_per_id_and_a_known_one_decodes_while_the_registry_is_down(client, registry):
    value = serialize(client, ACADEMY_UPDATED, {"uuid": UUID, "title": "Data Academy"})
    other = serialize(client, ACADEMY_CREATED, {"uuid": UUID, "title": "Data Academy"})  # its own subject and id
    decoder = Decoder(SchemaRegistryClient({"url": registry.url}))
    assert isinstance(decoder.decode(message(value)), AcademyEvent)
    registry.stop()
    assert isinstance(decoder.decode(message(value)), AcademyEvent)  # cached: no request
    with pytest.raises(TransientError, match="schema registry"):  # a new id needs the registry: retry, not reject
        decoder.decode(message(other, event_type=ACADEMY_CREATED.event_type))


def test_a_newer_writer_schema_with_an_extra_field_is_resolved_against_the_academy_schema(client):
    schema = json.loads(AvroSignalSerializer(ACADEMY_UPDATED).schema_string())
    schema["fields"][0]["type"]["fields"].append({"name": "color", "type": ["null", "string"], "default": None})
    avro = AvroSerializer(client, json.dumps(schema), to_dict=lambda data, ctx: data)
    value = avro({"academy": {"uuid": UUID, "title": "Data Academy", "tags": [], "color": "blue"}},
                 SerializationContext(TOPIC, MessageField.VALUE))
    event = Decoder(client).decode(message(value))
    assert event.academy == {"uuid": UUID, "title": "Data Academy", "tags": []}


def rejection(client, value, **kwargs):
    result = Decoder(client).decode(message(value, **kwargs))
    assert isinstance(result, Rejection), result
    return result


@pytest.mark.parametrize("value, mentions", [
    (None, "no value"),
    (b"", "0 bytes"),
    (b"\x07not framed at all", "magic byte"),
])
def test_values_that_are_not_framed_avro_are_rejected(client, value, mentions):
    result = rejection(client, value)
    assert isinstance(result.error, UndecodableValueError) and mentions in str(result.error)


def test_a_truncated_value_is_rejected(client):
    value = serialize(client, ACADEMY_UPDATED, {"uuid": UUID, "title": "Data Academy", "short_description": "x" * 50})
    assert "truncated" in str(rejection(client, value[:-20]).error)


def test_an_unknown_schema_id_is_rejected_and_marked_for_the_configuration_check(client):
    value = serialize(client, ACADEMY_UPDATED, {"uuid": UUID, "title": "Data Academy"})
    forged = b"\x00" + (4242).to_bytes(4, "big") + value[5:]
    result = rejection(client, forged)
    assert result.unknown_schema_id == 4242 and "4242" in str(result.error) and not result.schema_mismatch


def test_a_writer_schema_of_another_shape_is_a_schema_mismatch(client):
    schema = json.loads(AvroSignalSerializer(ACADEMY_UPDATED).schema_string())
    for field in schema["fields"][0]["type"]["fields"]:
        if field["name"] == "display_order":
            field["type"] = ["null", "string"]
    client.set_compatibility(subject_name="textual", level="NONE")
    schema_id = client.register_schema("textual", Schema(json.dumps(schema), "AVRO"))
    avro = AvroSerializer(client, json.dumps(schema), to_dict=lambda data, ctx: data,
                          conf={"auto.register.schemas": False, "use.latest.version": False,
                                "subject.name.strategy": lambda ctx, name: "textual"})
    value = avro({"academy": {"uuid": UUID, "title": "T", "tags": [], "display_order": "five"}},
                 SerializationContext(TOPIC, MessageField.VALUE))
    assert value[1:5] == schema_id.to_bytes(4, "big")
    result = rejection(client, value)
    assert result.schema_mismatch and "schema mismatch" in str(result.error).lower()


@pytest.mark.parametrize("field", ["uuid", "catalog_query_uuid"])
def test_a_uuid_field_that_does_not_parse_is_rejected(client, field):
    item = {"uuid": UUID, "title": "Data Academy", field: "not-a-uuid"}
    assert "not a valid UUID: 'not-a-uuid'" in str(rejection(client, serialize_raw(client, item)).error)


def serialize_raw(client, academy):
    """Like ``serialize``, bypassing ``academy_data_from_dict``'s checks (a producer that does not check)."""
    schema = AvroSignalSerializer(ACADEMY_UPDATED).schema_string()
    avro = AvroSerializer(client, schema, to_dict=lambda data, ctx: data)
    optional = ("short_description", "long_description", "image", "slug", "product_key", "stripe_product_id",
                "stripe_price_lookup_key", "display_order", "is_active", "catalog_query_uuid")
    full = {"tags": [], **{f: None for f in optional}, **academy}
    return avro({"academy": full}, SerializationContext(TOPIC, MessageField.VALUE))


def headers_without(name, **replace):
    base = {"ce_type": ACADEMY_UPDATED.event_type, "ce_id": str(uuid.uuid4()), "ce_time": TIME, **replace}
    return [(key, value.encode()) for key, value in base.items() if key != name]


@pytest.mark.parametrize("headers, mentions", [
    (headers_without("ce_type"), "Missing ce_type"),
    (headers_without(None) + [("ce_type", ACADEMY_CREATED.event_type.encode())], "Multiple ce_type"),
    (headers_without(None, ce_type="org.openedx.learning.auth.session.login.completed.v1"), "not an academy event"),
    (headers_without(None, ce_type="org.openedx.enterprise.academy.archived.v1"), "academy.archived.v1"),
    (headers_without("ce_id"), "Missing ce_id"),
    (headers_without(None, ce_id="42"), "not a UUID"),
    (headers_without("ce_time"), "missing ce_time"),
    (headers_without(None, ce_time="yesterday"), "'yesterday' is not an ISO 8601 time"),
    (headers_without(None, ce_time="2026-03-01T12:00:00"), "no UTC offset"),
    (headers_without(None) + [("ce_time", b"\xff\xfe")], "Multiple ce_time"),
    (list(headers_without("ce_time")) + [("ce_time", b"\xff\xfe")], "not UTF-8"),
])
def test_headers_that_do_not_make_an_academy_event_are_rejected(client, headers, mentions):
    value = serialize(client, ACADEMY_UPDATED, {"uuid": UUID, "title": "Data Academy"})
    result = rejection(client, value, headers=headers)
    assert isinstance(result.error, UnusableMessageError) and mentions in str(result.error)


@pytest.mark.parametrize("event_id", [
    UUID, UUID.upper(), "{" + UUID + "}", UUID.replace("-", ""), "urn:uuid:" + UUID,
])
def test_a_ce_id_is_any_uuid_uuid_reads_and_is_kept_as_sent(client, event_id):
    value = serialize(client, ACADEMY_UPDATED, {"uuid": UUID, "title": "Data Academy"})
    event = Decoder(client).decode(message(value, headers=headers_without(None, ce_id=event_id)))
    assert isinstance(event, AcademyEvent) and event.event_id == event_id


@pytest.mark.parametrize("headers, mentions", [
    ([("ce_type", None)] + headers_without("ce_type"), "ce_type header has no value"),
    ([("ce_type", b"\xff" + ACADEMY_UPDATED.event_type.encode())] + headers_without("ce_type"),
     "ce_type header is not UTF-8"),
    ([("ce_id", None)] + headers_without("ce_id"), "ce_id header has no value"),
    ([("ce_id", b"\xff\xfe")] + headers_without("ce_id"), "ce_id header is not UTF-8"),
    (headers_without(None, ce_id=UUID + " "), "is not a UUID"),
    (headers_without(None) + [("ce_id", UUID.encode())], "Multiple ce_id"),
    ([("ce_time", None)] + headers_without("ce_time"), "ce_time header has no value"),
    (headers_without(None, ce_type=ACADEMY_UPDATED.event_type + " "), "is not an academy event type"),
    (headers_without(None, ce_type="x") + [("ce_type", b"y")], "Multiple ce_type"),
])
def test_more_header_variants_are_rejected_with_their_reason(client, headers, mentions):
    value = serialize(client, ACADEMY_UPDATED, {"uuid": UUID, "title": "Data Academy"})
    result = rejection(client, value, headers=headers)
    assert isinstance(result.error, UnusableMessageError) and mentions in str(result.error)


def test_the_first_problem_in_header_order_is_the_reason():
    """Duplicates are found during the one pass; then ce_type, ce_id and ce_time are checked in that order."""
    decoder = Decoder(_StaticRegistry())
    bad = [("ce_time", b"yesterday"), ("ce_id", b"42"), ("ce_type", b"nope"), ("ce_time", b"x")]
    assert "Multiple ce_time" in str(decoder.decode(message(b"", headers=bad)).error)
    assert "'nope' is not an academy event" in str(decoder.decode(message(b"", headers=bad[:3])).error)
    assert "not a UUID" in str(decoder.decode(message(b"", headers=bad[:2] + [("ce_type", _TYPE)])).error)
    headers = [bad[0], ("ce_id", UUID.encode()), ("ce_type", _TYPE)]
    assert "not an ISO 8601" in str(decoder.decode(message(b"", headers=headers)).error)


# --- the compiled reader of the academy schema, against fastavro ---------------------------------------------

_TYPE = ACADEMY_UPDATED.event_type.encode()
_OPTIONAL = ("short_description", "long_description", "image", "slug", "product_key", "stripe_product_id",
             "stripe_price_lookup_key", "catalog_query_uuid")


class _StaticRegistry:
    """A registry that knows one schema (the academy schema, or ``schema``) under every id."""

    def __init__(self, schema=None):
        self.schema = json.dumps(schema or academy_schema())

    def get_schema(self, schema_id):  # pylint: disable=unused-argument
        return Schema(self.schema, "AVRO")


def _framed(academy, schema=None):
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema or academy_schema()), {"academy": academy})
    return b"\x00\x00\x00\x00\x01" + out.getvalue()


def _slow(schema=None):
    """A decoder reading every value with fastavro (the compiled reader off)."""
    decoder = Decoder(_StaticRegistry(schema))
    decoder._fast = None  # pylint: disable=protected-access
    return decoder


def _outcome(result):
    if isinstance(result, Rejection):
        return ("rejected", type(result.error), str(result.error), result.unknown_schema_id, result.schema_mismatch)
    return ("event", result.event_type, result.action, result.academy, result.time, result.event_id, result.offset)


# lengths and numbers around the one-byte/two-byte varint edge (63/64), short and long
_texts = st.text(max_size=300) | st.text(st.characters(max_codepoint=127), min_size=60, max_size=70)
_longs = st.sampled_from([0, 1, -1, 63, 64, -64, -65, 8191, 8192, -8193, 2**63 - 1, -2**63]) | \
    st.integers(-2**63, 2**63 - 1)
_academies = st.fixed_dictionaries(
    {"uuid": _texts, "title": _texts, "tags": st.lists(_texts, max_size=5)},
    optional={**{name: st.none() | _texts for name in _OPTIONAL},
              "display_order": st.none() | _longs, "is_active": st.none() | st.booleans()})


def test_the_academy_schema_has_a_compiled_reader_and_it_reads_what_fastavro_reads():
    fast = _compile_reader(academy_schema())
    assert fast is not None
    item = {"uuid": UUID, "title": "T" * 300, "tags": ["a", "é" * 100], "display_order": -(2**63), "is_active": False,
            "long_description": "", "image": None, "catalog_query_uuid": UUID}
    value = _framed(item)
    assert fast(value, 5) == {k: v for k, v in item.items() if v is not None}
    assert fast(value, 5) == _slow()._read_value(value)  # pylint: disable=protected-access


def test_a_schema_the_compiled_reader_cannot_read_has_none():
    schema = academy_schema()
    schema["fields"][0]["type"]["fields"].append({"name": "price", "type": ["null", "double"], "default": None})
    assert _compile_reader(schema) is None
    assert _compile_reader({"type": "record", "name": "X", "fields": []}) is None


def test_an_array_written_in_blocks_with_sizes_is_read_as_fastavro_reads_it():
    plain = _framed({"uuid": UUID, "title": "T", "tags": []})
    assert plain.endswith(b"\x02T" + b"\x00" * 11)  # title, 3 nulls, the empty tags, 7 nulls
    blocks = b"\x03\x08\x02a\x02b" * 2 + b"\x00"  # twice a block of count -2 (zigzag 3) and 4 bytes (zigzag 8)
    value = plain[:-8] + blocks + b"\x00" * 7
    assert _slow()._read_value(value)["tags"] == ["a", "b", "a", "b"]  # pylint: disable=protected-access
    assert _compile_reader(academy_schema())(value, 5)["tags"] == ["a", "b", "a", "b"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(academy=_academies, cut=st.integers(0, 2000),
       flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=3))
def test_the_compiled_reader_decodes_every_value_as_fastavro_does(academy, cut, flips):
    """Random academies, then truncated and with random bytes replaced: the same event or the same rejection."""
    value = bytearray(_framed(academy))
    fast, slow = Decoder(_StaticRegistry()), _slow()
    headers = [("ce_type", _TYPE), ("ce_id", UUID.encode()), ("ce_time", TIME.encode())]
    expected = {k: v for k, v in academy.items() if v is not None}
    assert _compile_reader(academy_schema())(bytes(value), 5) == expected  # the compiled reader itself, no fallback
    assert slow._read_value(bytes(value)) == expected  # pylint: disable=protected-access
    for position, byte in flips:
        if 5 <= position < len(value):
            value[position] = byte
    for variant in (bytes(value), bytes(value[:max(5, cut)])):
        assert _outcome(fast.decode(message(variant, headers=headers))) == \
            _outcome(slow.decode(message(variant, headers=headers)))


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=200))
def test_random_bytes_are_decoded_or_rejected_as_fastavro_does(body):
    headers = [("ce_type", _TYPE), ("ce_id", UUID.encode()), ("ce_time", TIME.encode())]
    value = b"\x00\x00\x00\x00\x01" + body
    assert _outcome(Decoder(_StaticRegistry()).decode(message(value, headers=headers))) == \
        _outcome(_slow().decode(message(value, headers=headers)))
