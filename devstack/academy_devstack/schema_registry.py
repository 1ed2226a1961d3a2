"""
A small, in-memory, Confluent-Schema-Registry-compatible HTTP server for development and tests.

It serves only the part of the Schema Registry REST API that this project's clients call:
confluent-kafka's ``SchemaRegistryClient`` (2.x) as its ``AvroSerializer`` (the event bus producer,
``produce_academy_event``, the tests), its ``AvroDeserializer`` (``bench/``) and this project's
decoder (``academy_consumer.decode``: a schema by id), preflight and consumer (the subject list) use
it, plus the compatibility settings the tests change. The subset was taken from the code (grep) and
from the requests a test run makes; the rest of the API (deletes, modes, contexts, metadata, schema
references, JSON/Protobuf schemas, ...) is left out because nothing here uses it:

==========================================================  ======================================
``POST   /subjects/{subject}/versions``                      register a schema (``?normalize=``)
``POST   /subjects/{subject}``                               look a schema up under a subject
``GET    /subjects``                                         every subject (``?offset=&limit=``)
``GET    /subjects/{subject}/versions``                      the subject's version numbers
``GET    /subjects/{subject}/versions/{version|latest}``     one version (``-1`` is ``latest`` too)
``GET    /schemas/ids/{id}``                                 a schema by its global id
``GET    /associations/resources/{namespace}/{name}``        always ``[]``: no association is ever
                                                             made here, so the serializers' default
                                                             subject strategy falls back to
                                                             ``<topic>-value``
``GET|PUT /config``, ``/config/{subject}``                   compatibility (``?defaultToGlobal=``)
==========================================================  ======================================

On those endpoints it answers as the real registry does, with the same JSON shapes, HTTP statuses
and ``{"error_code": ..., "message": ...}`` bodies that the client turns into ``SchemaRegistryError``
(40401 subject not found, 40402 version not found, 40403 schema not found, 40408 no subject-level
config, 409 incompatible, 42201 invalid schema, 42202 invalid version, 42203 invalid compatibility
level, 42206 invalid offset/limit). Any other path answers 404 with ``error_code`` 404, as the real
registry does for an unknown endpoint. Unknown query parameters are ignored; so are ``deleted``
and ``normalize``, since nothing is ever deleted and schemas are compared in a canonical JSON form.

Behaviour that clients depend on: a schema gets one global id (registering the same schema again,
under any subject and however its JSON is formatted, answers the same id); a new schema under a
subject becomes the next version after a compatibility check (BACKWARD by default, every level of
the real registry settable through ``/config``, following the Avro schema-resolution rules).

Only Avro schemas without references, metadata or rule sets are accepted (422, 42201 otherwise):
nothing in the project registers anything else. Not implemented either: authentication, schema
contexts, exporters, the ``format`` conversions.
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


def _version_not_found(version):
    return RegistryError(404, 40402, f"Version {version} not found.")


def _schema_not_found(what="Schema not found"):
    return RegistryError(404, 40403, what)


def _invalid_schema(message):
    return RegistryError(422, 42201, message)


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
        """What a schema node is: ``(kind, node, namespace)``, following named references."""
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
    """A registered schema text with its global id (and the guid 2.x clients read)."""

    __slots__ = ("id", "guid", "schema")

    def __init__(self, schema_id: int, schema: str):
        self.id = schema_id
        self.guid = str(uuid.uuid4())
        self.schema = schema


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _paginate(items: list, query: dict) -> list:
    """``items`` cut by the request's ``offset`` and ``limit``."""
    try:
        offset = max(int(query.get("offset", 0)), 0)
        limit = int(query.get("limit", -1))
    except (TypeError, ValueError):
        raise RegistryError(422, 42206, "Invalid offset or limit") from None
    items = items[offset:]
    return items[:limit] if limit > 0 else items


class SchemaRegistryState:
    """The registry's data and operations, independent of HTTP. Thread safe."""

    def __init__(self, compatibility: str = "BACKWARD"):
        self._lock = threading.RLock()
        self.reset(compatibility)

    def reset(self, compatibility: str = "BACKWARD") -> None:
        """Forget every schema and subject; the global compatibility becomes ``compatibility``."""
        with self._lock:
            self._schemas: dict[int, _Schema] = {}  # global id -> schema
            self._by_key: dict[str, _Schema] = {}  # canonical JSON -> schema
            # subject -> its schemas, version N at index N - 1 (nothing is ever deleted)
            self._subjects: dict[str, list[_Schema]] = {}
            self._global_config: dict = {"compatibilityLevel": compatibility}
            self._subject_config: dict[str, dict] = {}
            self._next_id = 1

    # -- schema identity / validation ----------------------------------------------------

    @staticmethod
    def _parse_request(body) -> tuple[str, str]:
        """``(canonical key, schema text)`` of a register/lookup body; 422/42201 when it is unusable."""
        if not isinstance(body, dict):
            raise _invalid_schema("Invalid schema: request body must be a JSON object")
        schema = body.get("schema")
        schema_type = (body.get("schemaType") or "AVRO").upper()
        if schema_type != "AVRO":
            raise _invalid_schema(f"Invalid schema type {schema_type}: this development registry serves Avro only")
        if not isinstance(schema, str) or not schema.strip():
            raise _invalid_schema("Invalid schema: 'schema' must be a non-empty string")
        for unsupported in ("references", "metadata", "ruleSet"):
            if body.get(unsupported):
                raise _invalid_schema(f"Invalid schema: '{unsupported}' is not supported by this development registry")
        try:
            canonical = _canonical_json(schema)
        except ValueError as exc:
            raise _invalid_schema(f"Invalid schema {schema}, details: {exc}") from exc
        try:
            import fastavro  # pylint: disable=import-outside-toplevel
        except ImportError:  # pragma: no cover - fastavro comes with confluent-kafka[avro]
            return canonical, schema
        try:
            fastavro.parse_schema(json.loads(schema), named_schemas={})
        except Exception as exc:
            raise _invalid_schema(f"Invalid schema {schema}, details: {exc}") from exc
        return canonical, schema

    # -- config --------------------------------------------------------------------------

    def compatibility_of(self, subject: str) -> str:
        with self._lock:
            config = self._subject_config.get(subject) or {}
            return (
                config.get("compatibilityLevel")
                or self._global_config.get("compatibilityLevel")
                or "BACKWARD"
            )

    def get_config(self, subject: str | None, default_to_global: bool = False) -> dict:
        """``GET /config[/subject]``: the compatibility level."""
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
        """``PUT /config[/subject]``: set the compatibility level."""
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

    # -- subjects / versions -------------------------------------------------------------

    def _versions(self, subject: str) -> list[_Schema]:
        versions = self._subjects.get(subject)
        if not versions:
            raise _subject_not_found(subject)
        return versions

    def _version_of(self, subject: str, version) -> tuple[int, _Schema]:
        """The number and schema of a subject's version (a number, ``latest`` or -1)."""
        with self._lock:
            versions = self._versions(subject)
            if str(version) in ("latest", "-1"):
                return len(versions), versions[-1]
            try:
                number = int(version)
            except (TypeError, ValueError):
                raise RegistryError(
                    422,
                    42202,
                    f"The specified version '{version}' is not a valid version id. Allowed values are "
                    "between [1, 2^31-1] and the string \"latest\"",
                ) from None
            if number < 1:
                raise RegistryError(422, 42202, f"The specified version '{version}' is not a valid version id.")
            if number > len(versions):
                raise _version_not_found(number)
            return number, versions[number - 1]

    @staticmethod
    def _registered_body(subject: str, number: int, schema: _Schema) -> dict:
        return {"subject": subject, "version": number, "id": schema.id, "guid": schema.guid, "schema": schema.schema}

    def compatibility_problems(self, subject: str, candidate_schema: str) -> list[str]:
        """Why ``candidate_schema`` breaks the subject's compatibility level ([] if it does not)."""
        level = self.compatibility_of(subject)
        if level == "NONE":
            return []
        existing = list(enumerate(self._subjects.get(subject) or [], start=1))
        if not level.endswith("_TRANSITIVE"):
            existing = existing[-1:]
        new = json.loads(candidate_schema)
        problems = []
        for number, old_schema in existing:
            old = json.loads(old_schema.schema)
            if level.startswith(("BACKWARD", "FULL")):
                for p in avro_can_read(new, old):
                    problems.append(f"BACKWARD vs version {number}: {p}")
            if level.startswith(("FORWARD", "FULL")):
                for p in avro_can_read(old, new):
                    problems.append(f"FORWARD vs version {number}: {p}")
        return problems

    def register(self, subject: str, body: dict) -> dict:
        """``POST /subjects/<subject>/versions``: register a schema (or find it registered)."""
        key, schema = self._parse_request(body)
        with self._lock:
            existing = self._by_key.get(key)
            versions = self._subjects.get(subject) or []
            if existing is not None and existing in versions:
                return {"id": existing.id, "version": versions.index(existing) + 1, "guid": existing.guid}
            problems = self.compatibility_problems(subject, schema)
            if problems:
                raise RegistryError(
                    409,
                    409,
                    "Schema being registered is incompatible with an earlier schema for subject "
                    f"\"{subject}\", details: " + "; ".join(problems),
                )
            if existing is None:
                existing = _Schema(self._next_id, schema)
                self._schemas[existing.id] = existing
                self._by_key[key] = existing
                self._next_id += 1
            self._subjects.setdefault(subject, []).append(existing)
            return {"id": existing.id, "version": len(self._subjects[subject]), "guid": existing.guid}

    def lookup(self, subject: str, body: dict) -> dict:
        """``POST /subjects/<subject>``: the version under which a schema is registered."""
        key = self._parse_request(body)[0]
        with self._lock:
            versions = self._versions(subject)
            target = self._by_key.get(key)
            if target is None or target not in versions:
                raise _schema_not_found()
            return self._registered_body(subject, versions.index(target) + 1, target)

    def subjects(self, query: dict) -> list[str]:
        with self._lock:
            names = sorted(self._subjects)
        return _paginate(names, query)

    def versions(self, subject: str, query: dict) -> list[int]:
        with self._lock:
            numbers = list(range(1, len(self._versions(subject)) + 1))
        return _paginate(numbers, query)

    def get_version(self, subject: str, version: str) -> dict:
        with self._lock:
            return self._registered_body(subject, *self._version_of(subject, version))

    # -- schemas by id -------------------------------------------------------------------

    def schema_by_id(self, schema_id: str) -> dict:
        """``GET /schemas/ids/<id>``: a schema by its global id."""
        try:
            number = int(schema_id)
        except (TypeError, ValueError):
            raise _schema_not_found(f"Schema {schema_id} not found") from None
        with self._lock:
            schema = self._schemas.get(number)
        if schema is None:
            raise _schema_not_found(f"Schema {number} not found")
        return {"schema": schema.schema, "guid": schema.guid}


# ---------------------------------------------------------------------------------------
# HTTP layer
# ---------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """The registry's HTTP API, over ``SchemaRegistryState``."""
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

    def do_DELETE(self):  # nothing is deleted here, but the answer is the registry's JSON 404, not a 501
        self._dispatch("DELETE")

    def _send(self, status: int, payload) -> None:
        """Send one JSON response."""
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    def _read_body(self):
        """The request's JSON body, or None when empty."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise RegistryError(400, 400, f"Unrecognized request body: {exc}") from exc

    def _dispatch(self, method: str) -> None:
        """Route one request and send the answer (a ``RegistryError`` as the registry's JSON error)."""
        try:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            # Split before unquoting: subjects may contain an encoded '/'.
            segments = [unquote(s) for s in parts.path.split("/") if s]
            body = self._read_body() if method in ("POST", "PUT") else None
            status, payload = _route(self.server.state, method, segments, query, body)
        except RegistryError as exc:
            status, payload = exc.status, exc.body()
        except Exception as exc:  # pylint: disable=broad-exception-caught  # pragma: no cover - a bug here: a 500
            status, payload = 500, {"error_code": 50001, "message": f"Error in the backend data store: {exc!r}"}
        self._send(status, payload)


def _route(state: SchemaRegistryState, method: str, seg: list, query: dict, body):
    """Map (method, path segments) to a state call; returns (status, payload). See the module docstring."""
    n = len(seg)
    head = seg[0] if seg else ""
    if head == "subjects":
        if n == 1 and method == "GET":
            return 200, state.subjects(query)
        if n == 2 and method == "POST":
            return 200, state.lookup(seg[1], body)
        if n in (3, 4) and seg[2] == "versions":
            if n == 3 and method == "GET":
                return 200, state.versions(seg[1], query)
            if n == 3 and method == "POST":
                return 200, state.register(seg[1], body)
            if n == 4 and method == "GET":
                return 200, state.get_version(seg[1], seg[3])
    elif head == "schemas":
        if n == 3 and seg[1] == "ids" and method == "GET":
            return 200, state.schema_by_id(seg[2])
    elif head == "config" and n in (1, 2):
        subject = seg[1] if n == 2 else None
        if method == "GET":
            return 200, state.get_config(subject, _truthy(query.get("defaultToGlobal", "false")))
        if method == "PUT":
            return 200, state.set_config(subject, body)
    elif head == "associations":
        if n == 4 and seg[1] == "resources" and method == "GET":
            return 200, []  # no association is ever created here
    raise RegistryError(404, 404, "HTTP 404 Not Found")


class _Server(ThreadingHTTPServer):
    """The HTTP server, tracking its connections so that ``stop`` can close them."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, state: SchemaRegistryState, verbose: bool):
        self.state = state
        self.verbose = verbose
        self._connections: set = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection, add: bool) -> None:
        """Note an open connection, or forget a closed one."""
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """Shut every open connection down (idle keep-alive ones included)."""
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
        """Serve in a daemon thread (once); returns self."""
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
        """Stop serving and close every connection."""
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
