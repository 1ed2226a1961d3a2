"""
Tests of the academy event contract (``signals``): schemas, compatibility, Avro round trips, dict helpers.
"""
import copy
import io
import json
import re
from pathlib import Path
from uuid import UUID

import fastavro
import pytest
from edx_event_bus_kafka.internal.producer import extract_event_key, extract_key_schema
from fastavro.read import SchemaResolutionError
from openedx_events.event_bus.avro.deserializer import deserialize_bytes_to_event_data
from openedx_events.event_bus.avro.serializer import AvroSignalSerializer, serialize_event_data_to_bytes
from openedx_events.tooling import OpenEdxPublicSignal

from academy_consumer.normalize import normalize_academy
from academy_consumer_signals import (
    ACADEMY_CREATED,
    ACADEMY_DELETED,
    ACADEMY_SIGNALS,
    ACADEMY_SIGNALS_BY_EVENT_TYPE,
    ACADEMY_UPDATED,
    AcademyData,
    academy_data_from_dict,
    academy_data_to_dict,
)
from academy_consumer_signals.generate_schemas import generate_schema, schema_path

ACADEMY_UUID = "6f1c1f3a-2b1e-4c55-9a57-1c7d3f1e8a01"
QUERY_UUID = "3e5a6f2c-8d1b-4c4e-9f7a-2b6c0d9e1f10"

# A catalog API result item: no billing fields, tags as dicts (plus a plain string tag).
CATALOG_ITEM = {
    "uuid": ACADEMY_UUID,
    "title": "Data Academy",
    "short_description": "Data literacy for every team.",
    "long_description": "SQL, statistics and data storytelling.",
    "image": "https://catalog.example.com/media/academies/data.png",
    "tags": [{"id": 1, "title": "Data", "description": "Data skills"}, {"id": 2, "title": "Analytics"}, "SQL"],
    "enterprise_customer": "not part of the contract",
}

FULL_ACADEMY = AcademyData(
    uuid=UUID(ACADEMY_UUID),
    title="Data Academy",
    short_description="Data literacy for every team.",
    long_description="SQL, statistics and data storytelling.",
    image="https://catalog.example.com/media/academies/data.png",
    tags=["Data", "Analytics"],
    slug="data-academy",
    product_key="Data Academy",
    stripe_product_id="prod_123",
    stripe_price_lookup_key="essentials_data_academy_yearly",
    display_order=3,
    is_active=True,
    catalog_query_uuid=UUID(QUERY_UUID),
)


# ---------------------------------------------------------------------------------------------------
# Schema compatibility check (as openedx-events' test_avro.py does it: write a sample with one schema,
# read it with the other; fastavro's schema resolution raises on an incompatibility).
# ---------------------------------------------------------------------------------------------------

_PRIMITIVE_SAMPLES = {"string": "x", "long": 1, "boolean": True, "double": 1.0, "bytes": b"x", "null": None}


def sample_datum(schema, optional_values=True):
    """A datum for ``schema``: nullable fields get a value (``optional_values``) or ``None``."""
    if isinstance(schema, str):
        return _PRIMITIVE_SAMPLES[schema]
    if isinstance(schema, list):  # union: ["null", T]
        branches = [branch for branch in schema if branch != "null"] if optional_values else ["null"]
        return sample_datum(branches[0], optional_values)
    kind = schema["type"]
    if kind == "record":
        return {field["name"]: sample_datum(field["type"], optional_values) for field in schema["fields"]}
    if kind == "array":
        return [sample_datum(schema["items"], optional_values)]
    if kind == "map":
        return {"key": sample_datum(schema["values"], optional_values)}
    return sample_datum(kind, optional_values)


def read_as(writer_schema, reader_schema, datum):
    """Encode ``datum`` with ``writer_schema`` and decode it with ``reader_schema``."""
    writer, reader = fastavro.parse_schema(writer_schema), fastavro.parse_schema(reader_schema)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, writer, datum)
    out.seek(0)
    return fastavro.schemaless_reader(out, writer, reader)


def assert_compatible(old_schema, new_schema):
    """
    Fail unless ``new_schema`` is FULL compatible with ``old_schema``.

    Backward: data written with the old (checked-in) schema reads with the new one (a new consumer reads
    old events, e.g. on replay). Forward: data written with the new schema reads with the old one (old
    consumers keep working while producers upgrade). Both with optional fields set and with them null.
    """
    for writer, reader in ((old_schema, new_schema), (new_schema, old_schema)):
        for optional_values in (True, False):
            read_as(writer, reader, sample_datum(writer, optional_values))


def checked_in_schema(signal):
    """The checked-in schema of ``signal`` (fails with a hint when the file is missing)."""
    path = schema_path(signal)
    if not path.exists():
        pytest.fail(f"Missing {path}. For a new signal, run: python -m academy_consumer_signals.generate_schemas")
    return json.loads(path.read_text())


def _with_academy_fields(schema, change):
    """A copy of ``schema`` whose ``AcademyData`` field list was passed through ``change``."""
    schema = copy.deepcopy(schema)
    record = schema["fields"][0]["type"]
    record["fields"] = change(record["fields"])
    return schema


@pytest.mark.parametrize("signal", ACADEMY_SIGNALS, ids=lambda signal: signal.event_type)
def test_checked_in_schema_matches_data_classes(signal):
    assert checked_in_schema(signal) == generate_schema(signal), (
        f"{schema_path(signal).name} no longer matches the data classes of {signal.event_type}. If the change "
        "is intended (and test_schema_evolution_is_compatible passes), run: "
        "python -m academy_consumer_signals.generate_schemas"
    )


@pytest.mark.parametrize("signal", ACADEMY_SIGNALS, ids=lambda signal: signal.event_type)
def test_schema_evolution_is_compatible(signal):
    assert_compatible(checked_in_schema(signal), generate_schema(signal))


def test_compatibility_check_accepts_a_new_optional_field():
    old = generate_schema(ACADEMY_UPDATED)
    subtitle = {"name": "subtitle", "type": ["null", "string"], "default": None}
    new = _with_academy_fields(old, lambda fields: fields + [subtitle])
    assert_compatible(old, new)


@pytest.mark.parametrize("change", [
    pytest.param(lambda fields: fields + [{"name": "price_cents", "type": "long"}], id="new-required-field"),
    pytest.param(lambda fields: [f for f in fields if f["name"] != "title"], id="removed-required-field"),
    pytest.param(lambda fields: [dict(f, type=["null", "string"]) if f["name"] == "display_order" else f
                                 for f in fields], id="changed-field-type"),
])
def test_compatibility_check_detects_breaking_changes(change):
    old = generate_schema(ACADEMY_UPDATED)
    with pytest.raises(SchemaResolutionError):
        assert_compatible(old, _with_academy_fields(old, change))


# ---------------------------------------------------------------------------------------------------
# Avro round trips through openedx-events' serializer
# ---------------------------------------------------------------------------------------------------

FALSY_ACADEMY = AcademyData(uuid=UUID(ACADEMY_UUID), title="Data Academy", tags=[], stripe_product_id="",
                            display_order=0, is_active=False)


@pytest.mark.parametrize("signal", ACADEMY_SIGNALS, ids=lambda signal: signal.event_type)
@pytest.mark.parametrize("academy", [FULL_ACADEMY, FALSY_ACADEMY, AcademyData(uuid=UUID(ACADEMY_UUID), title="T")],
                         ids=["full", "falsy", "minimal"])
def test_avro_round_trip(signal, academy):
    """The bytes openedx-events' serializer writes carry every value, falsy ones included."""
    serialized = serialize_event_data_to_bytes({"academy": academy}, signal)
    record = fastavro.schemaless_reader(io.BytesIO(serialized), fastavro.parse_schema(generate_schema(signal)))
    assert academy_data_from_dict(record["academy"]) == academy


def test_stock_deserializer_reads_the_same_bytes():
    serialized = serialize_event_data_to_bytes({"academy": FULL_ACADEMY}, ACADEMY_CREATED)
    assert deserialize_bytes_to_event_data(serialized, ACADEMY_CREATED) == {"academy": FULL_ACADEMY}


def test_stock_deserializer_drops_falsy_values():
    """
    Documents the openedx-events limitation (10.5.0 and later) that ``academy_consumer.decode`` does not share:
    its ``AvroSignalDeserializer`` turns ``False``, ``0`` and ``""`` of an optional field into ``None`` ("not
    carried"), so the stock ``consume_events`` path through ``academy_consumer.receivers`` applies such an
    event as if the field were absent (docs/reference/guarantees.md, known limits). If this fails,
    openedx-events keeps falsy values now, and that limit is gone.
    """
    serialized = serialize_event_data_to_bytes({"academy": FALSY_ACADEMY}, ACADEMY_DELETED)
    academy = deserialize_bytes_to_event_data(serialized, ACADEMY_DELETED)["academy"]
    assert (academy.is_active, academy.display_order, academy.stripe_product_id) == (None, None, None)


def test_event_key_is_the_academy_uuid_string():
    """The ``event_key_field`` annotation works with edx-event-bus-kafka's key extraction."""
    serializer = AvroSignalSerializer(ACADEMY_CREATED)
    assert json.loads(extract_key_schema(serializer, "academy.uuid")) == {"name": "uuid", "type": "string"}
    key = extract_event_key({"academy": FULL_ACADEMY}, "academy.uuid")
    assert serializer.to_dict(key) == ACADEMY_UUID


# ---------------------------------------------------------------------------------------------------
# Signal definitions
# ---------------------------------------------------------------------------------------------------

EVENT_TYPE = re.compile(r"^org\.openedx\.[a-z_]+\.[a-z_]+\.[a-z_-]+\.v[1-9][0-9]*$")


def test_event_types_follow_the_convention():
    for signal in ACADEMY_SIGNALS:
        assert EVENT_TYPE.match(signal.event_type), signal.event_type
    assert [signal.event_type for signal in ACADEMY_SIGNALS] == [
        "org.openedx.enterprise.academy.created.v1",
        "org.openedx.enterprise.academy.updated.v1",
        "org.openedx.enterprise.academy.deleted.v1",
    ]


def test_signals_are_registered_and_mapped():
    assert ACADEMY_SIGNALS == (ACADEMY_CREATED, ACADEMY_UPDATED, ACADEMY_DELETED)
    for event_type, signal in ACADEMY_SIGNALS_BY_EVENT_TYPE.items():
        assert OpenEdxPublicSignal.get_signal_by_type(event_type) is signal
        assert signal.init_data == {"academy": AcademyData}


def test_signals_carry_the_openedx_annotations():
    source = (Path(__file__).resolve().parents[1] / "signals" / "signals.py").read_text()
    for name in ("ACADEMY_CREATED", "ACADEMY_UPDATED", "ACADEMY_DELETED"):
        signal = ACADEMY_SIGNALS_BY_EVENT_TYPE[f"org.openedx.enterprise.academy.{name[8:].lower()}.v1"]
        block = re.search(rf"((?:^#.*\n)+){name} = OpenEdxPublicSignal\(", source, re.MULTILINE).group(1)
        for annotation in (f"event_type: {signal.event_type}", f"event_name: {name}",
                           "event_key_field: academy.uuid", "event_description: ", "event_data: AcademyData"):
            assert f"# .. {annotation}" in block, (name, annotation)


# ---------------------------------------------------------------------------------------------------
# academy_data_from_dict / academy_data_to_dict
# ---------------------------------------------------------------------------------------------------

def test_from_dict_maps_a_catalog_item():
    assert academy_data_from_dict(CATALOG_ITEM) == AcademyData(
        uuid=UUID(ACADEMY_UUID),
        title="Data Academy",
        short_description="Data literacy for every team.",
        long_description="SQL, statistics and data storytelling.",
        image="https://catalog.example.com/media/academies/data.png",
        tags=["Data", "Analytics", "SQL"],
    )


def test_to_dict_omits_none_and_round_trips():
    item = academy_data_to_dict(academy_data_from_dict(CATALOG_ITEM))
    assert item == {key: value for key, value in CATALOG_ITEM.items() if key != "enterprise_customer"} | {
        "tags": ["Data", "Analytics", "SQL"]}
    assert academy_data_to_dict(academy_data_from_dict({"uuid": ACADEMY_UUID, "title": "T"})) == {
        "uuid": ACADEMY_UUID, "title": "T", "tags": []}
    for academy in (FULL_ACADEMY, FALSY_ACADEMY):
        assert academy_data_from_dict(academy_data_to_dict(academy)) == academy


def test_to_dict_is_accepted_by_the_normalizer():
    normalized = normalize_academy(academy_data_to_dict(FULL_ACADEMY))
    assert (normalized.name, normalized.uuid) == ("Data Academy", UUID(ACADEMY_UUID))
    assert normalized.fields["catalog_query_uuid"] == UUID(QUERY_UUID)


def test_from_dict_accepts_uuid_objects_and_none_for_optional_fields():
    academy = academy_data_from_dict({"uuid": UUID(ACADEMY_UUID), "title": "T", "image": None, "tags": None,
                                      "catalog_query_uuid": QUERY_UUID.upper(), "is_active": False})
    assert academy == AcademyData(uuid=UUID(ACADEMY_UUID), title="T", catalog_query_uuid=UUID(QUERY_UUID),
                                  is_active=False)


@pytest.mark.parametrize("item, error, message", [
    ([CATALOG_ITEM], TypeError, "academy must be a dict"),
    ({"title": "T"}, ValueError, "'uuid' is required"),
    ({"uuid": ACADEMY_UUID, "title": None}, ValueError, "'title' is required"),
    ({"uuid": "not-a-uuid", "title": "T"}, ValueError, "'uuid' is not a valid UUID"),
    ({"uuid": 42, "title": "T"}, TypeError, "'uuid' must be a UUID string, got int"),
    ({"uuid": ACADEMY_UUID, "title": {"rendered": "T"}}, TypeError, "'title' must be str, got dict"),
    ({"uuid": ACADEMY_UUID, "title": "T", "display_order": "3"}, TypeError, "'display_order' must be int"),
    ({"uuid": ACADEMY_UUID, "title": "T", "display_order": True}, TypeError, "'display_order' must be int"),
    ({"uuid": ACADEMY_UUID, "title": "T", "display_order": 2 ** 63}, ValueError, "does not fit an Avro long"),
    ({"uuid": ACADEMY_UUID, "title": "T", "is_active": "false"}, TypeError, "'is_active' must be bool, got str"),
    ({"uuid": ACADEMY_UUID, "title": "T", "tags": "Data"}, TypeError, "'tags' must be a list"),
    ({"uuid": ACADEMY_UUID, "title": "T", "tags": [{"id": 1}]}, TypeError, "tag must be a string or a dict"),
])
def test_from_dict_rejects_what_avro_cannot_carry(item, error, message):
    with pytest.raises(error, match=re.escape(message)):
        academy_data_from_dict(item)
