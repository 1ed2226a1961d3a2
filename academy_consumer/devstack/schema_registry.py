"""
A small, in-memory, Confluent-Schema-Registry-compatible HTTP server for development and tests.

It implements the part of the Schema Registry REST API that
``confluent_kafka.schema_registry.SchemaRegistryClient`` (2.x) and its Avro/JSON/Protobuf
serializers call, with the same JSON shapes, HTTP statuses and ``error_code`` values:

==========================================================  ====================================
``POST   /subjects/{subject}/versions``                      register (``?normalize=``)
``POST   /subjects/{subject}``                               look a schema up (``?deleted=``)
``GET    /subjects``                                         (``?deleted=&deleted_only=&subjectPrefix=``)
``GET    /subjects/{subject}/versions``                      (``?deleted=&deleted_only=``)
``GET    /subjects/{subject}/versions/{version|latest}``     (``?deleted=&format=``)
``GET    /subjects/{subject}/versions/{version}/schema``     the bare schema
``GET    /subjects/{subject}/versions/{version}/referencedby``
``GET    /subjects/{subject}/metadata``                      latest version with metadata ``?key=&value=``
``DELETE /subjects/{subject}``                               soft, or ``?permanent=true``
``DELETE /subjects/{subject}/versions/{version}``            soft, or ``?permanent=true``
``GET    /schemas/ids/{id}``                                 (``?subject=&format=`` accepted, ignored)
``GET    /schemas/ids/{id}/subjects``, ``/versions``
``GET    /schemas/guids/{guid}``, ``GET /schemas/types``
``GET|PUT|DELETE /config``, ``/config/{subject}``            compatibility (``?defaultToGlobal=``)
``GET|PUT|DELETE /mode``, ``/mode/{subject}``                READWRITE / READONLY
``POST   /compatibility/subjects/{subject}/versions[/{v}]``  (``?verbose=``)
``GET    /contexts``
``POST   /associations``, ``GET /associations/resources/{namespace}/{name}``,
``DELETE /associations/resources/{id}``
==========================================================  ====================================

Behaviour follows the real registry where it matters to clients: a schema gets one global id
(registering the same schema again, under any subject, answers the same id); a new schema
under a subject becomes the next version after a compatibility check (BACKWARD by default;
Avro only, following the Avro schema-resolution rules; other schema types are accepted as
they are); soft deletes hide versions unless ``deleted=true`` is passed, and a permanent
delete needs a soft delete first. Errors are ``{"error_code": ..., "message": ...}`` with the
registry's codes (40401 subject not found, 40402 version not found, 40403 schema not found,
409 incompatible, 42201 invalid schema, ...). Unknown query parameters are ignored.

Not implemented: authentication, schema contexts beyond the default one, exporters, the
``format`` conversions, data-contract rules execution (rule sets are stored and returned).
"""
from __future__ import annotations

import json
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["SchemaRegistryServer", "SchemaRegistryState", "RegistryError", "COMPATIBILITY_LEVELS"]

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
COMPATIBILITY_LEVELS = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)
MODES = ("READWRITE", "READONLY", "READONLY_OVERRIDE", "IMPORT")
SCHEMA_TYPES = ("AVRO", "JSON", "PROTOBUF")


class RegistryError(Exception):
    """An error answered to the client: HTTP status plus the registry's ``error_code``."""

    def __init__(self, status: int, error_code: int, message: str):
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message

    def body(self) -> dict:
        return {"error_code": self.error_code, "message": self.message}


def _subject_not_found(subject):
    return RegistryError(404, 40401, f"Subject '{subject}' not found.")


def _version_not_found(subject, version):
    return RegistryError(404, 40402, f"Version {version} not found.")


def _schema_not_found(what="Schema not found"):
    return RegistryError(404, 40403, what)


# ---------------------------------------------------------------------------------------
# Avro helpers: canonical form, validation and a schema-resolution compatibility check
# ---------------------------------------------------------------------------------------

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "double": {"double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}


def _canonical_json(text: str) -> str:
    """Whitespace- and key-order-insensitive form of a JSON schema text."""
    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def _fullname(name: str, namespace: str | None) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def _collect_named(schema, namespace, names: dict) -> None:
    """Register every named type (record/enum/fixed) of ``schema`` in ``names`` by full name."""
    if isinstance(schema, list):
        for branch in schema:
            _collect_named(branch, namespace, names)
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    if kind in ("record", "error", "enum", "fixed") and isinstance(schema.get("name"), str):
        ns = schema.get("namespace", namespace)
        full = _fullname(schema["name"], ns)
        names[full] = (schema, full.rpartition(".")[0] or None)
        if kind in ("record", "error"):
            for field in schema.get("fields", []):
                _collect_named(field.get("type"), full.rpartition(".")[0] or None, names)
        return
    if kind == "array":
        _collect_named(schema.get("items"), namespace, names)
    elif kind == "map":
        _collect_named(schema.get("values"), namespace, names)
    elif isinstance(kind, (dict, list)):
        _collect_named(kind, namespace, names)


class _AvroSide:
    """One schema with its named types, able to resolve a node to (kind, node, namespace)."""

    def __init__(self, schema):
        self.root = schema
        self.names: dict = {}
        _collect_named(schema, None, self.names)

    def resolve(self, node, namespace):
        # Returns (kind, node, namespace) where kind is a primitive, a complex type name,
        # "union", or "unknown:<name>" for a reference that cannot be resolved here.
        while True:
            if isinstance(node, list):
                return "union", node, namespace
            if isinstance(node, str):
                if node in _PRIMITIVES:
                    return node, node, namespace
                full = node if node in self.names else _fullname(node, namespace)
                if full in self.names:
                    target, ns = self.names[full]
                    return target["type"], target, ns
                if node in self.names:
                    target, ns = self.names[node]
                    return target["type"], target, ns
                return "unknown:" + node, node, namespace
            if isinstance(node, dict):
                kind = node.get("type")
                if isinstance(kind, (list, dict)):
                    node = kind
                    continue
                if kind in _PRIMITIVES:
                    return kind, node, namespace
                if kind in ("record", "error", "enum", "fixed"):
                    ns = node.get("namespace", namespace)
                    full = _fullname(node.get("name", ""), ns)
                    return kind, node, full.rpartition(".")[0] or None
                if kind in ("array", "map"):
                    return kind, node, namespace
                if isinstance(kind, str):
                    node = kind
                    continue
            return "unknown:" + repr(node), node, namespace


def _short(name: str) -> str:
    return name.rpartition(".")[2]


def _names_match(reader_node, writer_node) -> bool:
    reader_name = _short(reader_node.get("name", ""))
    writer_name = _short(writer_node.get("name", ""))
    aliases = {_short(a) for a in reader_node.get("aliases", []) or []}
    return reader_name == writer_name or writer_name in aliases


def avro_can_read(reader_schema, writer_schema) -> list[str]:
    """
    Messages explaining why data written with ``writer_schema`` cannot be read with
    ``reader_schema`` (both parsed JSON); an empty list when it can.
    """
    reader = _AvroSide(reader_schema)
    writer = _AvroSide(writer_schema)
    problems: list[str] = []
    seen: set = set()

    def check(r_node, r_ns, w_node, w_ns, path) -> bool:
        r_kind, r_node, r_ns = reader.resolve(r_node, r_ns)
        w_kind, w_node, w_ns = writer.resolve(w_node, w_ns)
        key = (id(r_node), id(w_node))
        if key in seen:
            return True
        if w_kind == "union":
            seen.add(key)
            ok = True
            for i, branch in enumerate(w_node):
                ok = check(r_node, r_ns, branch, w_ns, f"{path}[{i}]") and ok
            return ok
        if r_kind == "union":
            for branch in r_node:
                saved = len(problems)
                if check(branch, r_ns, w_node, w_ns, path):
                    return True
                del problems[saved:]
            problems.append(f"{path}: reader union lacks a branch for writer type '{w_kind}'")
            return False
        if r_kind.startswith("unknown:") or w_kind.startswith("unknown:"):
            # A named type from a schema reference: compare by name only.
            if r_kind == w_kind or _short(str(r_node)) == _short(str(w_node)):
                return True
            problems.append(f"{path}: cannot resolve '{r_kind}' against '{w_kind}'")
            return False
        if w_kind in _PROMOTIONS or w_kind in ("null", "boolean"):
            if r_kind == w_kind or r_kind in _PROMOTIONS.get(w_kind, ()):
                return True
            problems.append(f"{path}: writer type '{w_kind}' cannot be read as '{r_kind}'")
            return False
        if r_kind != w_kind and not ({r_kind, w_kind} <= {"record", "error"}):
            problems.append(f"{path}: writer type '{w_kind}' cannot be read as '{r_kind}'")
            return False
        seen.add(key)
        if w_kind == "array":
            return check(r_node.get("items"), r_ns, w_node.get("items"), w_ns, f"{path}.items")
        if w_kind == "map":
            return check(r_node.get("values"), r_ns, w_node.get("values"), w_ns, f"{path}.values")
        if not _names_match(r_node, w_node):
            problems.append(f"{path}: name '{w_node.get('name')}' does not match reader's '{r_node.get('name')}'")
            return False
        if w_kind == "fixed":
            if r_node.get("size") != w_node.get("size"):
                problems.append(f"{path}: fixed size {w_node.get('size')} read as {r_node.get('size')}")
                return False
            return True
        if w_kind == "enum":
            missing = set(w_node.get("symbols", [])) - set(r_node.get("symbols", []))
            if missing and "default" not in r_node:
                problems.append(f"{path}: reader enum lacks symbols {sorted(missing)}")
                return False
            return True
        # records
        writer_fields = {f.get("name"): f for f in w_node.get("fields", [])}
        ok = True
        for field in r_node.get("fields", []):
            name = field.get("name")
            candidates = [name] + list(field.get("aliases", []) or [])
            match = next((writer_fields[c] for c in candidates if c in writer_fields), None)
            if match is None:
                if "default" not in field:
                    problems.append(f"{path}.{name}: reader field has no default and is missing from the writer")
                    ok = False
                continue
            ok = check(field.get("type"), r_ns, match.get("type"), w_ns, f"{path}.{name}") and ok
        return ok

    check(reader.root, None, writer.root, None, "$")
    return problems


# ---------------------------------------------------------------------------------------
# Registry state
# ---------------------------------------------------------------------------------------


class _Schema:
    __slots__ = ("id", "guid", "schema", "schema_type", "references", "metadata", "rule_set")

    def __init__(self, schema_id, schema, schema_type, references, metadata, rule_set):
        self.id = schema_id
        self.guid = str(uuid.uuid4())
        self.schema = schema
        self.schema_type = schema_type
        self.references = references
        self.metadata = metadata
        self.rule_set = rule_set

    def body(self) -> dict:
        out = {"schema": self.schema}
        if self.schema_type != "AVRO":
            out["schemaType"] = self.schema_type
        if self.references:
            out["references"] = self.references
        if self.metadata is not None:
            out["metadata"] = self.metadata
        if self.rule_set is not None:
            out["ruleSet"] = self.rule_set
        return out


class _Version:
    __slots__ = ("version", "schema", "deleted")

    def __init__(self, version, schema):
        self.version = version
        self.schema = schema
        self.deleted = False


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _paginate(items: list, query: dict) -> list:
    try:
        offset = max(int(query.get("offset", 0)), 0)
        limit = int(query.get("limit", -1))
    except (TypeError, ValueError):
        raise RegistryError(422, 42206, "Invalid offset or limit")
    items = items[offset:]
    return items[:limit] if limit > 0 else items


class SchemaRegistryState:
    """The registry's data and operations, independent of HTTP. Thread safe."""

    def __init__(self, compatibility: str = "BACKWARD"):
        self._lock = threading.RLock()
        self.reset(compatibility)

    def reset(self, compatibility: str = "BACKWARD") -> None:
        with self._lock:
            self._schemas: dict[int, _Schema] = {}
            self._by_key: dict[tuple, _Schema] = {}
            self._subjects: dict[str, list[_Version]] = {}
            self._default_compatibility = compatibility
            self._global_config: dict = {"compatibilityLevel": compatibility}
            self._subject_config: dict[str, dict] = {}
            self._global_mode = "READWRITE"
            self._subject_mode: dict[str, str] = {}
            self._associations: list[dict] = []
            self._next_id = 1

    # -- schema identity / validation ----------------------------------------------------

    def _parse_request(self, body: dict, normalize: bool = False):
        if not isinstance(body, dict):
            raise RegistryError(422, 42201, "Invalid schema: request body must be a JSON object")
        schema = body.get("schema")
        schema_type = (body.get("schemaType") or "AVRO").upper()
        references = body.get("references") or []
        if schema_type not in SCHEMA_TYPES:
            raise RegistryError(422, 42201, f"Invalid schema type {schema_type}")
        if not isinstance(schema, str) or not schema.strip():
            raise RegistryError(422, 42201, "Invalid schema: 'schema' must be a non-empty string")
        if not isinstance(references, list):
            raise RegistryError(422, 42201, "Invalid schema: 'references' must be a list")
        metadata = body.get("metadata")
        rule_set = body.get("ruleSet")
        if schema_type in ("AVRO", "JSON"):
            try:
                canonical = _canonical_json(schema)
            except ValueError as exc:
                raise RegistryError(422, 42201, f"Invalid schema {schema}, details: {exc}")
        else:
            canonical = schema.strip()
        if schema_type == "AVRO":
            self._validate_avro(schema, references)
        norm_refs = [
            {"name": r.get("name"), "subject": r.get("subject"), "version": r.get("version")} for r in references
        ]
        key = (
            schema_type,
            canonical,
            json.dumps(norm_refs, sort_keys=True),
            json.dumps(metadata, sort_keys=True),
            json.dumps(rule_set, sort_keys=True),
        )
        return key, schema, schema_type, norm_refs, metadata, rule_set

    def _validate_avro(self, schema: str, references: list) -> None:
        try:
            import fastavro
        except ImportError:  # pragma: no cover - fastavro comes with confluent-kafka[avro]
            return
        named: dict = {}
        try:
            for ref in references:
                ref_schema = self._version_of(ref.get("subject"), ref.get("version"), deleted=True).schema
                fastavro.parse_schema(json.loads(ref_schema.schema), named_schemas=named)
            fastavro.parse_schema(json.loads(schema), named_schemas=named)
        except RegistryError as exc:
            raise RegistryError(422, 42201, f"Invalid schema: reference not found: {exc.message}")
        except Exception as exc:
            raise RegistryError(422, 42201, f"Invalid schema {schema}, details: {exc}")

    # -- config / mode -------------------------------------------------------------------

    def compatibility_of(self, subject: str) -> str:
        with self._lock:
            config = self._subject_config.get(subject) or {}
            return (
                config.get("compatibilityLevel")
                or self._global_config.get("compatibilityLevel")
                or "BACKWARD"
            )

    def get_config(self, subject: str | None, default_to_global: bool = False) -> dict:
        with self._lock:
            if subject is None:
                return dict(self._global_config)
            if subject in self._subject_config:
                return dict(self._subject_config[subject])
            if default_to_global:
                return dict(self._global_config)
            raise RegistryError(
                404, 40408, f"Subject '{subject}' does not have subject-level compatibility configured"
            )

    def set_config(self, subject: str | None, body: dict) -> dict:
        if not isinstance(body, dict):
            raise RegistryError(422, 42203, "Invalid compatibility level")
        level = body.get("compatibility") or body.get("compatibilityLevel")
        if level is not None:
            level = str(level).upper()
            if level not in COMPATIBILITY_LEVELS:
                raise RegistryError(422, 42203, f"Invalid compatibility level. Valid values are {COMPATIBILITY_LEVELS}")
        with self._lock:
            target = self._global_config if subject is None else self._subject_config.setdefault(subject, {})
            extras = {k: v for k, v in body.items() if k not in ("compatibility", "compatibilityLevel")}
            target.update(extras)
            if level is not None:
                target["compatibilityLevel"] = level
            answer = dict(extras)
            if level is not None:
                answer["compatibility"] = level
            return answer

    def delete_config(self, subject: str | None) -> dict:
        with self._lock:
            if subject is None:
                previous = dict(self._global_config)
                self._global_config = {"compatibilityLevel": self._default_compatibility}
                return previous
            if subject not in self._subject_config:
                if subject not in self._subjects:
                    raise _subject_not_found(subject)
                return dict(self._global_config)
            return self._subject_config.pop(subject)

    def get_mode(self, subject: str | None, default_to_global: bool = True) -> dict:
        with self._lock:
            if subject is None:
                return {"mode": self._global_mode}
            if subject in self._subject_mode:
                return {"mode": self._subject_mode[subject]}
            if default_to_global:
                return {"mode": self._global_mode}
            raise RegistryError(404, 40409, f"Subject '{subject}' does not have subject-level mode configured")

    def set_mode(self, subject: str | None, body: dict) -> dict:
        mode = str((body or {}).get("mode", "")).upper()
        if mode not in MODES:
            raise RegistryError(422, 42204, f"Invalid mode. Valid values are {MODES}")
        with self._lock:
            if subject is None:
                self._global_mode = mode
            else:
                self._subject_mode[subject] = mode
        return {"mode": mode}

    def delete_mode(self, subject: str) -> dict:
        with self._lock:
            previous = self._subject_mode.pop(subject, None)
            return {"mode": previous or self._global_mode}

    def _check_writable(self, subject: str) -> None:
        mode = self._subject_mode.get(subject, self._global_mode)
        if mode in ("READONLY", "READONLY_OVERRIDE"):
            raise RegistryError(422, 42205, f"Subject {subject} is in read-only mode")

    # -- subjects / versions -------------------------------------------------------------

    def _versions(self, subject: str, deleted: bool = False) -> list[_Version]:
        versions = self._subjects.get(subject) or []
        return [v for v in versions if deleted or not v.deleted]

    def _version_of(self, subject, version, deleted: bool = False) -> _Version:
        with self._lock:
            if subject not in self._subjects:
                raise _subject_not_found(subject)
            all_versions = self._subjects[subject]
            visible = self._versions(subject, deleted)
            if str(version) in ("latest", "-1"):
                if not visible:
                    raise _subject_not_found(subject)
                return visible[-1]
            try:
                number = int(version)
            except (TypeError, ValueError):
                raise RegistryError(
                    422,
                    42202,
                    f"The specified version '{version}' is not a valid version id. Allowed values are "
                    "between [1, 2^31-1] and the string \"latest\"",
                )
            if number < 1:
                raise RegistryError(422, 42202, f"The specified version '{version}' is not a valid version id.")
            for v in all_versions:
                if v.version == number and (deleted or not v.deleted):
                    return v
            if not visible and not deleted:
                raise _subject_not_found(subject)
            raise _version_not_found(subject, number)

    def _registered_body(self, subject: str, version: _Version) -> dict:
        out = {"subject": subject, "version": version.version, "id": version.schema.id, "guid": version.schema.guid}
        out.update(version.schema.body())
        return out

    def compatibility_problems(self, subject: str, candidate_schema: str, schema_type: str, against=None) -> list[str]:
        """Why ``candidate_schema`` breaks the subject's compatibility level ([] if it does not)."""
        if schema_type != "AVRO":
            return []
        level = self.compatibility_of(subject)
        if level == "NONE":
            return []
        existing = [v for v in self._versions(subject) if v.schema.schema_type == "AVRO"]
        if against is not None:
            existing = [against]
        elif not level.endswith("_TRANSITIVE"):
            existing = existing[-1:]
        new = json.loads(candidate_schema)
        problems = []
        for old_version in existing:
            old = json.loads(old_version.schema.schema)
            if level.startswith(("BACKWARD", "FULL")):
                for p in avro_can_read(new, old):
                    problems.append(f"BACKWARD vs version {old_version.version}: {p}")
            if level.startswith(("FORWARD", "FULL")):
                for p in avro_can_read(old, new):
                    problems.append(f"FORWARD vs version {old_version.version}: {p}")
        return problems

    def register(self, subject: str, body: dict, normalize: bool = False) -> dict:
        key, schema, schema_type, refs, metadata, rule_set = self._parse_request(body, normalize)
        with self._lock:
            existing = self._by_key.get(key)
            for version in self._versions(subject):
                if version.schema is existing:
                    return {"id": existing.id, "version": version.version, "guid": existing.guid}
            self._check_writable(subject)
            if body.get("id") is not None and existing is None:
                requested = int(body["id"])
                if requested in self._schemas:
                    raise RegistryError(422, 42207, f"Schema id {requested} is already in use")
            problems = self.compatibility_problems(subject, schema, schema_type)
            if problems:
                raise RegistryError(
                    409,
                    409,
                    "Schema being registered is incompatible with an earlier schema for subject "
                    f"\"{subject}\", details: " + "; ".join(problems),
                )
            if existing is None:
                schema_id = int(body["id"]) if body.get("id") is not None else self._next_id
                existing = _Schema(schema_id, schema, schema_type, refs, metadata, rule_set)
                self._schemas[schema_id] = existing
                self._by_key[key] = existing
                self._next_id = max(self._next_id, schema_id + 1)
            versions = self._subjects.setdefault(subject, [])
            number = int(body["version"]) if body.get("version") else (versions[-1].version + 1 if versions else 1)
            versions.append(_Version(number, existing))
            return {"id": existing.id, "version": number, "guid": existing.guid}

    def lookup(self, subject: str, body: dict, deleted: bool = False, normalize: bool = False) -> dict:
        key = self._parse_request(body, normalize)[0]
        with self._lock:
            if subject not in self._subjects or not self._versions(subject, deleted):
                raise _subject_not_found(subject)
            target = self._by_key.get(key)
            for version in reversed(self._versions(subject, deleted)):
                if version.schema is target:
                    return self._registered_body(subject, version)
            raise _schema_not_found()

    def subjects(self, query: dict) -> list[str]:
        deleted = _truthy(query.get("deleted", "false"))
        deleted_only = _truthy(query.get("deleted_only", "false"))
        prefix = query.get("subjectPrefix") or ""
        with self._lock:
            names = []
            for name, versions in self._subjects.items():
                if not name.startswith(prefix):
                    continue
                live = any(not v.deleted for v in versions)
                dead = any(v.deleted for v in versions)
                if (deleted_only and dead) or (not deleted_only and (live or (deleted and dead))):
                    names.append(name)
        return _paginate(sorted(names), query)

    def versions(self, subject: str, query: dict) -> list[int]:
        deleted = _truthy(query.get("deleted", "false"))
        deleted_only = _truthy(query.get("deleted_only", "false"))
        with self._lock:
            if subject not in self._subjects:
                raise _subject_not_found(subject)
            if deleted_only:
                numbers = [v.version for v in self._subjects[subject] if v.deleted]
            else:
                numbers = [v.version for v in self._versions(subject, deleted)]
            if not numbers and not deleted_only:
                raise _subject_not_found(subject)
        return _paginate(numbers, query)

    def get_version(self, subject: str, version: str, deleted: bool = False) -> dict:
        with self._lock:
            return self._registered_body(subject, self._version_of(subject, version, deleted))

    def latest_with_metadata(self, subject: str, keys: list, values: list, deleted: bool = False) -> dict:
        wanted = dict(zip(keys, values))
        with self._lock:
            if subject not in self._subjects:
                raise _subject_not_found(subject)
            for version in reversed(self._versions(subject, deleted)):
                props = ((version.schema.metadata or {}).get("properties") or {})
                if all(props.get(k) == v for k, v in wanted.items()):
                    return self._registered_body(subject, version)
        raise _schema_not_found(f"Schema with metadata {wanted} not found in subject '{subject}'")

    def referenced_by(self, subject: str, version: str) -> list[int]:
        with self._lock:
            target = self._version_of(subject, version)
            ids = []
            for schema in self._schemas.values():
                for ref in schema.references:
                    if ref.get("subject") == subject and ref.get("version") == target.version:
                        ids.append(schema.id)
            return sorted(set(ids))

    def delete_subject(self, subject: str, permanent: bool = False) -> list[int]:
        with self._lock:
            versions = self._subjects.get(subject)
            if not versions:
                raise _subject_not_found(subject)
            self._check_writable(subject)
            if permanent:
                live = [v.version for v in versions if not v.deleted]
                if live:
                    raise RegistryError(
                        404, 40405, f"Subject '{subject}' was not deleted first before being permanently deleted"
                    )
                numbers = [v.version for v in versions]
                del self._subjects[subject]
                self._subject_config.pop(subject, None)
                self._subject_mode.pop(subject, None)
                self._drop_unreferenced()
                return numbers
            live = [v for v in versions if not v.deleted]
            if not live:
                raise RegistryError(
                    404, 40404, f"Subject '{subject}' was soft deleted.Set permanent=true to delete permanently"
                )
            for v in live:
                v.deleted = True
            return [v.version for v in live]

    def delete_version(self, subject: str, version: str, permanent: bool = False) -> int:
        with self._lock:
            target = self._version_of(subject, version, deleted=permanent)
            self._check_writable(subject)
            if permanent:
                if not target.deleted:
                    raise RegistryError(
                        404,
                        40407,
                        f"Subject '{subject}' Version {target.version} was not deleted first before being "
                        "permanently deleted",
                    )
                self._subjects[subject].remove(target)
                if not self._subjects[subject]:
                    del self._subjects[subject]
                self._drop_unreferenced()
            else:
                target.deleted = True
            return target.version

    def _drop_unreferenced(self) -> None:
        used = {id(v.schema) for versions in self._subjects.values() for v in versions}
        for key, schema in list(self._by_key.items()):
            if id(schema) not in used:
                del self._by_key[key]
                del self._schemas[schema.id]

    # -- schemas by id -------------------------------------------------------------------

    def schema_by_id(self, schema_id: str) -> dict:
        with self._lock:
            schema = self._schema(schema_id)
            out = schema.body()
            out["guid"] = schema.guid
            return out

    def _schema(self, schema_id) -> _Schema:
        try:
            number = int(schema_id)
        except (TypeError, ValueError):
            raise _schema_not_found(f"Schema {schema_id} not found")
        schema = self._schemas.get(number)
        if schema is None:
            raise _schema_not_found(f"Schema {number} not found")
        return schema

    def schema_by_guid(self, guid: str) -> dict:
        with self._lock:
            for schema in self._schemas.values():
                if schema.guid == guid:
                    out = schema.body()
                    out["id"] = schema.id
                    out["guid"] = schema.guid
                    return out
        raise _schema_not_found(f"Schema {guid} not found")

    def subject_versions_of(self, schema_id: str, query: dict) -> list[dict]:
        deleted = _truthy(query.get("deleted", "false"))
        only = query.get("subject")
        with self._lock:
            schema = self._schema(schema_id)
            out = [
                {"subject": name, "version": v.version}
                for name, versions in sorted(self._subjects.items())
                for v in versions
                if v.schema is schema and (deleted or not v.deleted) and (only is None or name == only)
            ]
        return _paginate(out, query)

    # -- associations --------------------------------------------------------------------

    def create_associations(self, body: dict) -> dict:
        if not isinstance(body, dict):
            raise RegistryError(422, 42212, "Invalid association request")
        name = body.get("resourceName")
        namespace = body.get("resourceNamespace") or "-"
        resource_id = body.get("resourceId") or f"{namespace}:{name}"
        resource_type = body.get("resourceType") or "topic"
        created = []
        with self._lock:
            for info in body.get("associations") or []:
                subject = info.get("subject")
                association_type = info.get("associationType") or "value"
                if not subject:
                    raise RegistryError(422, 42212, "Association needs a subject")
                if info.get("schema"):
                    self.register(subject, info["schema"], _truthy(info.get("normalize", False)))
                record = {
                    "subject": subject,
                    "guid": str(uuid.uuid4()),
                    "resourceName": name,
                    "resourceNamespace": namespace,
                    "resourceId": resource_id,
                    "resourceType": resource_type,
                    "associationType": association_type,
                    "lifecycle": info.get("lifecycle") or "STRONG",
                    "frozen": bool(info.get("frozen", False)),
                }
                self._associations = [
                    a
                    for a in self._associations
                    if not (a["resourceId"] == resource_id and a["associationType"] == association_type)
                ]
                self._associations.append(record)
                created.append(
                    {
                        "subject": subject,
                        "associationType": association_type,
                        "lifecycle": record["lifecycle"],
                        "frozen": record["frozen"],
                    }
                )
        return {
            "resourceName": name,
            "resourceNamespace": namespace,
            "resourceId": resource_id,
            "resourceType": resource_type,
            "associations": created,
        }

    def associations_for(self, namespace: str, name: str, query: dict, multi: dict) -> list[dict]:
        resource_type = query.get("resourceType")
        types = multi.get("associationType") or []
        with self._lock:
            found = [
                dict(a)
                for a in self._associations
                if a["resourceName"] == name
                and (namespace in ("-", "*") or a["resourceNamespace"] in (namespace, "-"))
                and (resource_type is None or a["resourceType"] == resource_type)
                and (not types or a["associationType"] in types)
            ]
        return _paginate(found, query)

    def delete_associations(self, resource_id: str, query: dict, multi: dict) -> None:
        types = multi.get("associationType") or []
        resource_type = query.get("resourceType")
        with self._lock:
            self._associations = [
                a
                for a in self._associations
                if not (
                    a["resourceId"] == resource_id
                    and (resource_type is None or a["resourceType"] == resource_type)
                    and (not types or a["associationType"] in types)
                )
            ]


# ---------------------------------------------------------------------------------------
# HTTP layer
# ---------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "academy-devstack-schema-registry/1.0"
    timeout = 60  # idle keep-alive connections go away eventually
    # Buffer each response and send it in one go (flushed by handle_one_request); with
    # unbuffered headers-then-body writes, Nagle + delayed ACK cost ~40 ms per request.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    # The server object carries the state (see _Server).
    def setup(self):
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def log_message(self, format, *args):  # noqa: A002 - keep the stdlib signature
        if self.server.verbose:
            super().log_message(format, *args)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _send(self, status: int, payload) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    def _read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise RegistryError(400, 400, f"Unrecognized request body: {exc}")

    def _dispatch(self, method: str) -> None:
        try:
            parts = urlsplit(self.path)
            multi = parse_qs(parts.query, keep_blank_values=True)
            query = {k: v[-1] for k, v in multi.items()}
            # Split before unquoting: subjects may contain an encoded '/'.
            segments = [unquote(s) for s in parts.path.split("/") if s]
            body = self._read_body() if method in ("POST", "PUT") else None
            status, payload = _route(self.server.state, method, segments, query, multi, body)
        except RegistryError as exc:
            status, payload = exc.status, exc.body()
        except Exception as exc:  # pragma: no cover - a bug in this server
            status, payload = 500, {"error_code": 50001, "message": f"Error in the backend data store: {exc!r}"}
        self._send(status, payload)


def _bare_schema(registered: dict):
    """The schema itself, as the ``.../schema`` endpoints answer it (JSON when it is JSON)."""
    if registered.get("schemaType", "AVRO") in ("AVRO", "JSON"):
        return json.loads(registered["schema"])
    return registered["schema"]


def _route(state: SchemaRegistryState, method: str, seg: list, query: dict, multi: dict, body):
    """Map (method, path segments) to a state call; returns (status, payload)."""
    n = len(seg)
    head = seg[0] if seg else ""
    deleted = _truthy(query.get("deleted", "false"))
    permanent = _truthy(query.get("permanent", "false"))
    normalize = _truthy(query.get("normalize", "false"))

    if n == 0:
        if method == "GET":
            return 200, {}
    elif head == "subjects":
        if n == 1 and method == "GET":
            return 200, state.subjects(query)
        if n == 2:
            subject = seg[1]
            if method == "POST":
                return 200, state.lookup(subject, body, deleted=deleted, normalize=normalize)
            if method == "DELETE":
                return 200, state.delete_subject(subject, permanent)
        if n >= 3 and seg[2] == "versions":
            subject = seg[1]
            if n == 3 and method == "GET":
                return 200, state.versions(subject, query)
            if n == 3 and method == "POST":
                return 200, state.register(subject, body, normalize)
            if n == 4 and method == "GET":
                return 200, state.get_version(subject, seg[3], deleted)
            if n == 4 and method == "DELETE":
                return 200, state.delete_version(subject, seg[3], permanent)
            if n == 5 and seg[4] == "schema" and method == "GET":
                return 200, _bare_schema(state.get_version(subject, seg[3], deleted))
            if n == 5 and seg[4] == "referencedby" and method == "GET":
                return 200, _paginate(state.referenced_by(seg[1], seg[3]), query)
        if n == 3 and seg[2] == "metadata" and method == "GET":
            return 200, state.latest_with_metadata(
                seg[1], multi.get("key", []), multi.get("value", []), deleted
            )
    elif head == "schemas":
        if n == 2 and seg[1] == "types" and method == "GET":
            return 200, list(SCHEMA_TYPES)
        if n >= 3 and seg[1] == "ids" and method == "GET":
            if n == 3:
                return 200, state.schema_by_id(seg[2])
            if n == 4 and seg[3] == "schema":
                return 200, _bare_schema(state.schema_by_id(seg[2]))
            if n == 4 and seg[3] == "subjects":
                return 200, sorted({sv["subject"] for sv in state.subject_versions_of(seg[2], query)})
            if n == 4 and seg[3] == "versions":
                return 200, state.subject_versions_of(seg[2], query)
        if n == 3 and seg[1] == "guids" and method == "GET":
            return 200, state.schema_by_guid(seg[2])
    elif head == "config" and n in (1, 2):
        subject = seg[1] if n == 2 else None
        if method == "GET":
            return 200, state.get_config(subject, _truthy(query.get("defaultToGlobal", "false")))
        if method == "PUT":
            return 200, state.set_config(subject, body)
        if method == "DELETE":
            return 200, state.delete_config(subject)
    elif head == "mode" and n in (1, 2):
        subject = seg[1] if n == 2 else None
        if method == "GET":
            return 200, state.get_mode(subject, _truthy(query.get("defaultToGlobal", "true")))
        if method == "PUT":
            return 200, state.set_mode(subject, body)
        if method == "DELETE" and subject is not None:
            return 200, state.delete_mode(subject)
    elif head == "compatibility" and n >= 4 and seg[1] == "subjects" and seg[3] == "versions" and method == "POST":
        subject = seg[2]
        _, schema, schema_type, *_rest = state._parse_request(body, normalize)
        against = None
        if n == 5:
            try:
                against = state._version_of(subject, seg[4])
            except RegistryError as exc:
                if exc.error_code == 40401 and seg[4] in ("latest", "-1"):
                    return 200, {"is_compatible": True}
                raise
        problems = state.compatibility_problems(subject, schema, schema_type, against=against)
        answer = {"is_compatible": not problems}
        if _truthy(query.get("verbose", "false")):
            answer["messages"] = problems
        return 200, answer
    elif head == "contexts" and n == 1 and method == "GET":
        return 200, ["."]
    elif head == "associations":
        if n == 1 and method == "POST":
            return 200, state.create_associations(body)
        if n == 4 and seg[1] == "resources" and method == "GET":
            return 200, state.associations_for(seg[2], seg[3], query, multi)
        if n == 3 and seg[1] == "resources" and method == "DELETE":
            state.delete_associations(seg[2], query, multi)
            return 204, None
    raise RegistryError(404, 404, "HTTP 404 Not Found")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, state: SchemaRegistryState, verbose: bool):
        self.state = state
        self.verbose = verbose
        self._connections: set = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class SchemaRegistryServer:
    """
    Serve a :class:`SchemaRegistryState` over HTTP on ``host:port`` (127.0.0.1 and an
    ephemeral port by default) from a background thread.

    >>> with SchemaRegistryServer() as registry:
    ...     conf = {"url": registry.url}
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, compatibility: str = "BACKWARD", verbose=False):
        self.host = host
        self.port = port
        self.compatibility = compatibility
        self.state = SchemaRegistryState(compatibility)
        self.verbose = verbose
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("schema registry server is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> "SchemaRegistryServer":
        if self._server is not None:
            return self
        server = _Server((self.host, self.port), self.state, self.verbose)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="devstack-schema-registry", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def reset(self) -> None:
        """Forget every schema, subject and setting."""
        self.state.reset(self.compatibility)

    def __enter__(self) -> "SchemaRegistryServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return f"<SchemaRegistryServer {where}>"
