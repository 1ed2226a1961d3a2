"""
The dev stack's schema registry (``academy_devstack.schema_registry``) against confluent-kafka's
own ``SchemaRegistryClient``, ``AvroSerializer`` and ``AvroDeserializer``, over real HTTP (no mocks).

The server serves only the endpoints those clients and this project call (see its module docstring);
each of them is exercised here through the client method that calls it, with the error codes the
client and our code read. The endpoints left out answer the registry's JSON 404 for an unknown endpoint.
No Kafka, no database.
"""
from __future__ import annotations

import json

import pytest
import requests
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from academy_devstack.schema_registry import CONTENT_TYPE, SchemaRegistryServer

V1 = {
    "type": "record",
    "name": "AcademyEvent",
    "namespace": "org.openedx.enterprise",
    "fields": [{"name": "uuid", "type": "string"}, {"name": "seq", "type": "int"}],
}
V2 = dict(V1, fields=V1["fields"] + [{"name": "tags", "type": {"type": "array", "items": "string"}, "default": []}])
BREAKING = dict(V1, fields=V1["fields"] + [{"name": "required_new", "type": "string"}])


def avro(definition, **dumps):
    return Schema(json.dumps(definition, **dumps), "AVRO")


@pytest.fixture(name="server", scope="module")
def server_fixture():
    with SchemaRegistryServer() as server:
        yield server


@pytest.fixture(name="registry")
def registry_fixture(server):
    """A fresh registry (state reset) and a client on it; ``registry.fresh()`` gives one with cold caches."""
    server.reset()
    clients = []

    def fresh():
        clients.append(SchemaRegistryClient({"url": server.url}))
        return clients[-1]

    client = fresh()
    client.fresh = fresh
    yield client
    for c in clients:
        c.close()


def raised(call, *args, **kwargs):
    """``(http_status_code, error_code)`` of the ``SchemaRegistryError`` the call raises."""
    with pytest.raises(SchemaRegistryError) as excinfo:
        call(*args, **kwargs)
    return excinfo.value.http_status_code, excinfo.value.error_code


def test_register_lookup_versions_and_schema_by_id(registry):
    assert registry.get_subjects() == []
    first = registry.register_schema_full_response("academy-value", avro(V1))
    assert (first.schema_id, first.version) == (1, 1) and first.guid

    other = registry.fresh()
    # The same schema, formatted otherwise, under the same or another subject: the same global id.
    assert other.register_schema("academy-value", avro(V1, indent=2)) == 1
    assert other.register_schema("another-value", avro(V1)) == 1
    second = other.register_schema("academy-value", avro(V2))
    assert second == 2
    assert other.get_subjects() == ["academy-value", "another-value"]
    assert other.get_versions("academy-value") == [1, 2]

    latest = other.get_latest_version("academy-value")
    assert (latest.subject, latest.version, latest.schema_id) == ("academy-value", 2, 2)
    assert json.loads(latest.schema.schema_str) == V2
    assert other.get_version("academy-value", 1, deleted=True).schema_id == 1
    looked_up = other.lookup_schema("academy-value", avro(V1), deleted=True)
    assert (looked_up.subject, looked_up.version, looked_up.schema_id) == ("academy-value", 1, 1)
    assert json.loads(other.get_schema(2).schema_str) == V2
    assert other.get_schema(1).schema_type == "AVRO"


def test_errors_the_client_and_our_code_read(registry, server):
    assert raised(registry.get_schema, 4242) == (404, 40403)  # the decoder's "unknown schema id"
    assert raised(registry.get_versions, "missing") == (404, 40401)
    assert raised(registry.get_latest_version, "missing") == (404, 40401)
    assert raised(registry.lookup_schema, "missing", avro(V1)) == (404, 40401)
    registry.register_schema("academy-value", avro(V1))
    assert raised(registry.get_version, "academy-value", 7) == (404, 40402)
    assert raised(registry.lookup_schema, "academy-value", avro(V2)) == (404, 40403)
    assert raised(registry.register_schema, "s", Schema("{not json", "AVRO")) == (422, 42201)
    unknown_type = {"type": "record", "name": "x", "fields": [{"name": "a", "type": "strin"}]}
    assert raised(registry.register_schema, "s", avro(unknown_type)) == (422, 42201)
    assert raised(registry.set_compatibility, level="SOMETIMES") == (422, 42203)
    assert raised(registry.get_compatibility, "academy-value") == (404, 40408)
    response = requests.get(f"{server.url}/subjects/academy-value/versions/x", timeout=5)
    assert (response.status_code, response.json()["error_code"]) == (422, 42202)
    assert response.headers["Content-Type"] == CONTENT_TYPE


def test_compatibility_is_checked_and_configurable(registry):
    registry.register_schema("academy-value", avro(V1))
    assert registry.get_compatibility() == "BACKWARD"
    assert raised(registry.register_schema, "academy-value", avro(BREAKING)) == (409, 409)

    registry.set_compatibility("academy-value", "NONE")
    assert registry.get_compatibility("academy-value") == "NONE"
    assert registry.get_compatibility() == "BACKWARD"
    assert registry.register_schema("academy-value", avro(BREAKING)) == 2

    # FORWARD: the old schema must read data written with the new one; BREAKING's extra field is fine.
    registry.set_compatibility(level="FORWARD")
    assert registry.get_compatibility() == "FORWARD"
    registry.register_schema("forward-value", avro(V1))
    assert registry.register_schema("forward-value", avro(BREAKING)) == 2
    assert registry.get_config("academy-value").compatibility_level.value == "NONE"


def test_serializer_and_deserializer_round_trip(registry):
    """The default subject strategy asks for associations (none here) and falls back to ``<topic>-value``."""
    topic = "academies"
    context = SerializationContext(topic, MessageField.VALUE)
    payload = AvroSerializer(registry, json.dumps(V1))({"uuid": "u", "seq": 1}, context)
    assert payload[0] == 0 and int.from_bytes(payload[1:5], "big") == 1
    assert registry.get_subjects() == [f"{topic}-value"]
    assert registry.get_associations_by_resource_name(topic, "-", "topic", ["value"], 0, -1) == []
    assert AvroDeserializer(registry.fresh())(payload, context) == {"uuid": "u", "seq": 1}
    # A v2 reader of v1 data, and a serializer using the latest registered version instead of its own.
    registry.register_schema(f"{topic}-value", avro(V2))
    assert AvroDeserializer(registry.fresh(), json.dumps(V2))(payload, context) == {"uuid": "u", "seq": 1, "tags": []}
    latest = AvroSerializer(registry.fresh(), json.dumps(V2),
                            conf={"auto.register.schemas": False, "use.latest.version": True})
    assert int.from_bytes(latest({"uuid": "u", "seq": 2, "tags": ["a"]}, context)[1:5], "big") == 2


@pytest.mark.parametrize("method, path", [
    ("GET", "/"),
    ("DELETE", "/subjects/academy-value"),
    ("DELETE", "/subjects/academy-value/versions/1"),
    ("GET", "/subjects/academy-value/versions/1/schema"),
    ("GET", "/subjects/academy-value/metadata"),
    ("GET", "/schemas/ids/1/subjects"),
    ("GET", "/schemas/types"),
    ("GET", "/mode"),
    ("DELETE", "/config"),
    ("POST", "/compatibility/subjects/academy-value/versions/latest"),
    ("GET", "/contexts"),
    ("POST", "/associations"),
])
def test_endpoints_left_out_answer_the_registry_404(registry, server, method, path):
    registry.register_schema("academy-value", avro(V1))
    response = requests.request(method, f"{server.url}{path}", json={"schema": json.dumps(V1)}, timeout=5)
    assert (response.status_code, response.json()["error_code"]) == (404, 404)
    assert response.headers["Content-Type"] == CONTENT_TYPE


def test_only_plain_avro_is_accepted(registry):
    assert raised(registry.register_schema, "j", Schema('{"type": "object"}', "JSON")) == (422, 42201)
    from confluent_kafka.schema_registry import SchemaReference  # pylint: disable=import-outside-toplevel
    referencing = Schema(json.dumps(V1), "AVRO", [SchemaReference("x", "other-value", 1)])
    assert raised(registry.register_schema, "r", referencing) == (422, 42201)
    assert registry.get_subjects() == []
