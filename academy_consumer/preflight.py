"""
Start-up checks: what can be known before the first event or item is touched, said in one line.

A command that would otherwise fail on every event (a database without the tables, a database that does
not answer) checks here first and stops with a :class:`NotReady` whose message says what to do. The
commands turn it into one line on stderr and exit status 1.
"""

import os
from urllib.parse import unquote

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor

from academy_consumer.redact import mask_urls

MIGRATE_HINT = "run `academy-consumer migrate`"


class NotReady(Exception):
    """Something the command needs is missing or unreachable; the message is one line."""


def sqlite_file(name):
    """
    The file a SQLite ``NAME`` opens: the path itself or a ``file:`` URI's path (``academy_consumer.cli``
    opens a missing file as ``file:<path>?mode=rw``, so that it is not created); None when in memory.
    """
    text = str(name or "")
    if not text or text == ":memory:" or "mode=memory" in text:
        return None
    return unquote(text[len("file:"):].partition("?")[0]) if text.startswith("file:") else text


def describe_database(alias=DEFAULT_DB_ALIAS):
    """``sqlite file.sqlite3`` / ``postgresql host:port/name``, never a password."""
    conn = connections[alias]
    settings_dict = conn.settings_dict
    if conn.vendor == "sqlite":
        return f"sqlite {sqlite_file(settings_dict['NAME']) or settings_dict['NAME']}"
    host = settings_dict.get("HOST") or "localhost"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"{conn.vendor} {host}{port}/{settings_dict.get('NAME')}"


def check_database(alias=DEFAULT_DB_ALIAS):
    """
    Raise :class:`NotReady` unless the database answers and holds academy_consumer's tables, migrated.

    A SQLite file that does not exist is reported as such and NOT created (connecting would create an
    empty one, and every later command would fail on a missing table).
    """
    conn = connections[alias]
    path = sqlite_file(conn.settings_dict.get("NAME")) if conn.vendor == "sqlite" else None
    if path and not os.path.exists(path):
        raise NotReady(f"database {path} does not exist: {MIGRATE_HINT}")
    try:
        executor = MigrationExecutor(conn)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes("academy_consumer"))
    except DatabaseError as exc:
        reason = mask_urls(" ".join(str(exc).split())) or type(exc).__name__
        raise NotReady(f"database {describe_database(alias)} unreachable: {reason}") from exc
    if plan:
        raise NotReady(f"database {describe_database(alias)} is not migrated ({len(plan)} migration(s) "
                       f"of academy_consumer not applied): {MIGRATE_HINT}")
    from academy_consumer.models import EnterpriseAcademy  # pylint: disable=import-outside-toplevel

    table = EnterpriseAcademy._meta.db_table
    try:
        present = table in conn.introspection.table_names()
    except DatabaseError as exc:
        raise NotReady(f"database {describe_database(alias)} unreachable: {mask_urls(exc)}") from exc
    if not present:  # the migration is recorded as applied, yet the table was dropped
        raise NotReady(f"database {describe_database(alias)} has no table {table} although its migration is "
                       f"recorded: run `academy-consumer migrate academy_consumer zero --fake`, then "
                       f"`academy-consumer migrate`")


class RegistryUnreachable(NotReady):
    """The schema registry did not answer (down, network, overloaded): transient, unlike a wrong URL."""


class NoSuchTopic(NotReady):
    """Kafka answered, and has no such topic."""


class KafkaUnreachable(NotReady):
    """Kafka did not answer in time, or the topic is not available now."""


def check_topic(client, topic, timeout, what="topic", setting="ACADEMY_EVENTS_TOPIC"):
    """
    The sorted partition ids of ``topic``, asked of Kafka through ``client`` (a confluent-kafka Consumer or
    Producer); :class:`KafkaUnreachable` when Kafka does not answer within ``timeout`` seconds,
    :class:`NoSuchTopic` when it has no such topic (``what`` and ``setting`` name it in the message).
    """
    # pylint: disable=import-outside-toplevel
    from confluent_kafka import KafkaError, KafkaException

    from academy_consumer.kafka import error_text

    try:
        metadata = client.list_topics(topic, timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnreachable(f"Kafka did not answer within {timeout:.0f} s ({mask_urls(error_text(exc))}): is "
                               f"EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS right and the broker up?") from None
    found = metadata.topics.get(topic)
    if found is None or (found.error is not None and found.error.code() in (
            KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC)):  # pylint: disable=protected-access
        raise NoSuchTopic(f"{what} {topic} does not exist (create it, or check {setting} and "
                          f"EVENT_BUS_TOPIC_PREFIX)")
    if found.error is not None:
        raise KafkaUnreachable(f"{what} {topic} is not available: {found.error.str()}")
    return sorted(found.partitions)


def check_schema_registry(client, url):
    """
    The subjects the schema registry at ``url`` knows (through ``client``, a SchemaRegistryClient).
    :class:`RegistryUnreachable` when it does not answer or answers 5xx/408/429; :class:`NotReady` when it
    answers as no schema registry does (e.g. 404 or 401: a wrong URL or credentials).
    """
    from confluent_kafka.schema_registry.error import SchemaRegistryError  # pylint: disable=import-outside-toplevel

    where = mask_urls(str(url))
    not_json = NotReady(f"schema registry {where} answers, but not as a schema registry does (no JSON): is "
                        f"EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL right?")
    try:
        subjects = client.get_subjects()
    except ValueError as exc:  # a 2xx answer that is not JSON: some other HTTP server
        raise not_json from exc
    except SchemaRegistryError as exc:
        status = exc.http_status_code
        if status is not None and 200 <= status <= 299:  # the same, as older confluent-kafka (2.6) reports it
            raise not_json from None
        if status is None or status < 0 or status >= 500 or status in (408, 429):
            raise RegistryUnreachable(f"schema registry {where} unavailable (HTTP {status})") from None
        raise NotReady(f"schema registry {where} answers HTTP {status} ({mask_urls(str(exc.error_message))}): "
                       f"is EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL (and its credentials) right?") from None
    except Exception as exc:  # httpx / OS errors: no answer
        reason = mask_urls(" ".join(str(exc).split())) or type(exc).__name__
        raise RegistryUnreachable(f"schema registry {where} unreachable: {reason}") from None
    if not isinstance(subjects, list):
        raise NotReady(f"schema registry {where} answers, but not as a schema registry does (no list of "
                       f"subjects): is EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL right?")
    return subjects
