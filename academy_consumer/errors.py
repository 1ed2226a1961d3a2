"""
What can go wrong consuming an event, in three families, and which family an exception belongs to.

* ``TransientError``: the batch could not be applied *now* (database unreachable, deadlock, lock timeout,
  schema registry or dead-letter topic unreachable). The batch is rolled back and retried, never skipped.
* ``PermanentError``: this one event can never be applied as it is. It is dead-lettered with its reason;
  its subclasses name the reason's family in the dead letter's ``dlq-error-class`` header:
  ``UnusableMessageError`` (headers: ``ce_type``, ``ce_id``, ``ce_time``), ``UndecodableValueError`` (the
  value is not an academy record in Avro) and ``AcademyEventRejected`` (the normalizer or the apply rules
  refused it: a bad field, a name or lookup key of another academy, a time too far ahead).
* ``FatalError``: the consumer cannot go on (a configuration fault, a missing table, a fatal Kafka error).
  It stops with exit 1 and nothing of the batch is dead-lettered or committed. A configuration or
  infrastructure fault is never taken for a bad event.

The commands that read Kafka without consuming (``consumer_lag``, ``dead_letters``) stop on ``NoTopic`` and
``NoGroup`` (exit 2) or ``KafkaUnavailable`` (exit 1); any command on ``BadKafkaConfig`` (exit 2).
"""

import json
import sys

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, InterfaceError, OperationalError

__all__ = [
    "AcademyEventRejected", "BadKafkaConfig", "FatalError", "KafkaUnavailable", "NoGroup", "NoTopic",
    "PermanentError", "TransientError", "UndecodableValueError", "UnusableMessageError", "database_failure",
    "error_class", "is_connection_lost", "is_transient", "registry_unavailable",
]


class TransientError(Exception):
    """The batch could not be applied now; retry it (never skip it)."""


class FatalError(Exception):
    """The consumer cannot go on (misconfiguration, missing tables, fatal Kafka error)."""


class PermanentError(Exception):
    """This one event can never be applied: dead-letter it."""


class UnusableMessageError(PermanentError):
    """The message's headers do not make it an academy event: ``ce_type``, ``ce_id`` or ``ce_time``."""


class UndecodableValueError(PermanentError):
    """The message's value is not an academy record: not schema-registry framed Avro, or not this schema."""


class AcademyEventRejected(PermanentError):
    """An academy event that can never be applied as it is (bad payload, conflicting keys, time too far ahead)."""


class BadKafkaConfig(ImproperlyConfigured):
    """
    An event bus setting the consumer cannot use: a property librdkafka refuses, an empty group id, a registry
    URL confluent-kafka refuses, a dead-letter topic that is the consumed topic.
    """


class NoTopic(Exception):
    """A topic the command reads (the academy topic, the dead-letter topic) does not exist (exit 2)."""


class NoGroup(Exception):
    """The consumer group does not exist (exit 2); ``academy_consumer.lag`` says when precisely."""


class KafkaUnavailable(Exception):
    """Kafka did not answer within the bound, or refused what was asked (exit 1)."""


def error_class(kind):
    """The ``dlq-error-class`` of an exception or exception class: ``module.QualifiedName``."""
    cls = kind if isinstance(kind, type) else type(kind)
    return f"{cls.__module__}.{cls.__qualname__}"


def registry_unavailable(exc):
    """True when the schema registry could not answer (down, overloaded, network): not the event's fault."""
    # confluent-kafka's schema registry client costs half a second of start-up to import (authlib, httpx): every
    # command would pay it through ``apps.ready``. An instance of its error class exists only once it is imported.
    registry = sys.modules.get("confluent_kafka.schema_registry.error")
    while exc is not None:
        if registry is not None and isinstance(exc, registry.SchemaRegistryError):
            status = exc.http_status_code
            return status is None or status < 0 or status >= 500 or status in (408, 429)
        names = {cls.__name__ for cls in type(exc).__mro__}
        if isinstance(exc, OSError) or names & {"TransportError", "TimeoutException", "NetworkError"}:
            return True
        if isinstance(exc, json.JSONDecodeError):  # the registry (or a proxy before it) answered no JSON
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def is_connection_lost(exc):
    """True for database errors that mean the connection is gone (server down, killed, unreachable)."""
    if isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    code = getattr(cause, "pgcode", None)
    if code is not None:
        return code.startswith("08") or code.startswith("57P")
    args = getattr(cause, "args", ()) or exc.args
    if args and isinstance(args[0], int):
        return args[0] in {2002, 2003, 2006, 2013, 2055, 4031}
    message = str(exc).lower()
    return any(text in message for text in ("connection", "server closed", "terminating"))


def is_transient(exc):
    """True for database errors that go away when retried: deadlocks, lock timeouts, lost connections."""
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    code = getattr(cause, "pgcode", None)
    if code is not None:  # PostgreSQL: serialization failure, deadlock, lock timeout, connection classes
        return code in {"40001", "40P01", "55P03"} or code.startswith("08") or code.startswith("57P")
    args = getattr(cause, "args", ()) or exc.args
    if args and isinstance(args[0], int):  # MySQL/MariaDB error numbers
        return args[0] in {1205, 1213, 2002, 2003, 2006, 2013, 2055, 4031}
    # psycopg2 connection errors carry no pgcode; SQLite says "database is locked".
    message = str(exc).lower()
    return any(text in message for text in ("locked", "connection", "server closed", "terminating"))


def database_failure(exc: DatabaseError):
    """
    A ``TransientError`` or ``FatalError`` for a database error that stopped a batch: a lost connection, a
    deadlock or a lock timeout is retried; anything else (a missing table or column, a permission refused)
    would fail every event alike, so the consumer stops rather than dead-letter them all.
    """
    kind = TransientError if isinstance(exc, InterfaceError) or is_transient(exc) else FatalError
    error = kind(f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error
