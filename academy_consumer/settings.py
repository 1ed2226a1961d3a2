"""
Settings for running academy-consumer on its own (the ``academy-consumer`` console script).

Every setting below that is read with ``env()``, and every setting ``academy_consumer/conf.py`` reads
(``conf.SETTING_NAMES``: academy-consumer's own and the catalog API's), can be set by an environment
variable of the same name. Values are looked up in this order: the process environment, then
``.devstack.env`` in the working directory (written by ``academy-consumer devstack``), then the defaults
below. Django settings not read with ``env()`` (``INSTALLED_APPS``, ``EVENT_BUS_PRODUCER``...) are fixed.

A host service that adds ``academy_consumer`` to its ``INSTALLED_APPS`` does not use this module, and
there none of these environment variables does anything: the host sets the settings ``conf.py`` documents
in its own Django settings (see ``docs/how-tos/run-inside-a-host.md``).
"""

import importlib
import logging
import os
import re
import shlex
from pathlib import Path

from academy_consumer import conf as _academy_conf
from academy_consumer import db_session as _db_session

try:
    import dj_database_url
except ImportError as _missing:  # academy-consumer installed as a host service installs it, without the extra
    raise ImportError("academy_consumer.settings (the standalone service's settings) needs dj-database-url, which "
                      "is not installed: pip install 'academy-consumer[standalone]'", name=_missing.name) from None


def _read_env_file(path):
    """
    ``({NAME: value}, None)`` of the dev stack's env file read as a POSIX shell reads it (``NAME=value``
    assignments, values shell-quoted, ``#`` comments: ``shlex``, the rule of the dev stack that writes it, see
    devstack/academy_devstack/envfile.py); ``({}, None)`` without the file; ``({}, error)`` for a file that is
    not only such assignments (the error becomes a settings error: exit 2, one line).
    """
    try:
        with open(path, "rb") as handle:  # bytes, bounded; no newline translation: a quoted \r stays one
            data = handle.read(1024 * 1024)
    except OSError:
        return {}, None
    values = {}
    try:
        for word in shlex.split(data.decode("utf-8"), comments=True):
            name, equals, value = word.partition("=")
            if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{word[:40]!r} is not a NAME=value assignment")
            values[name] = value
    except ValueError as exc:
        return {}, (f"{path} cannot be read as a dev stack env file ({exc}): remove it, or start "
                    f"`academy-consumer devstack` again to write it")
    return values, None


_ENV_FILE, _ENV_FILE_ERROR = _read_env_file(Path.cwd() / ".devstack.env")


def env(name, default=None):
    """The value of setting ``name`` from the environment, then ``.devstack.env``, else ``default``."""
    if name in os.environ:
        return os.environ[name]
    return _ENV_FILE.get(name, default)


def env_bool(name, default=False):
    """A boolean setting: ``1/true/yes/on`` are true (any case)."""
    value = env(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name, default=()):
    """A comma-separated list setting."""
    value = env(name)
    if value is None:
        return list(default)
    return [part.strip() for part in value.split(",") if part.strip()]


# .. setting_name: SECRET_KEY
# .. setting_default: an insecure development key
# .. setting_description: Django's secret key. Nothing here signs user data, but set a real one in production.
SECRET_KEY = env("SECRET_KEY", "academy-consumer-insecure-development-key")

# .. toggle_name: DEBUG
# .. toggle_implementation: DjangoSetting
# .. toggle_default: False
# .. toggle_description: Django's debug mode (tracebacks in the admin's error pages). Never on in production.
# .. toggle_use_cases: open_edx
# .. toggle_creation_date: 2026-11-28
DEBUG = env_bool("DEBUG", False)

# .. setting_name: ALLOWED_HOSTS
# .. setting_default: localhost,127.0.0.1
# .. setting_description: Django's host names the admin (``academy-consumer runserver``) answers to, comma
#   separated in the environment. The consumer's metrics server does not use it.
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # openedx-events' management commands, for the stock `consume_events` (see README, "Commands").
    "openedx_events",
    "academy_consumer",
]

# Django's stock stack: the only pages served are the (read-only) admin's.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.request",
            ]
        },
    }
]

# Bad values of the settings read here are not raised at import (``academy-consumer --help`` must still
# work): each is recorded as one line in ACADEMY_CONSUMER_SETTINGS_ERRORS, a harmless value is used in
# its place, and ``academy_consumer.cli`` prints the line and exits 2 for any command but help.
ACADEMY_CONSUMER_SETTINGS_ERRORS = [_ENV_FILE_ERROR] if _ENV_FILE_ERROR else []

# .. setting_name: DATABASE_URL
# .. setting_default: sqlite:///academy_consumer.sqlite3 (a file in the working directory)
# .. setting_description: The database, as a URL: ``sqlite:///path``, ``postgres://user@host:5432/name``,
#   ``mysql://user:password@host:3306/name`` (MySQL or MariaDB). Empty means the default. Commands other
#   than ``migrate`` never create the SQLite file: they say "run `academy-consumer migrate`".
DATABASE_URL = env("DATABASE_URL") or "sqlite:///" + str(Path.cwd() / "academy_consumer.sqlite3")
_ENGINES = ("django.db.backends.sqlite3", "django.db.backends.postgresql", "django.db.backends.mysql")


def _parse_database_url(url):
    """``DATABASES["default"]`` for ``url``; a bad URL is recorded (never echoed: it may hold a password)."""
    scheme = url.partition("://")[0] if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,30}://.*", url, re.S) else None
    try:
        database = dj_database_url.parse(url)
    except dj_database_url.UnknownSchemeError:
        database = {"ENGINE": "unknown"}
    except Exception:  # pylint: disable=broad-except  # a bad port, say: ValueError, KeyError...
        database = {}
    if database.get("ENGINE") in _ENGINES:
        return database
    what = f"scheme {scheme!r} is not supported" if scheme and database else "it cannot be parsed"
    ACADEMY_CONSUMER_SETTINGS_ERRORS.append(
        f"DATABASE_URL is not a usable database URL ({what}): use sqlite:///PATH, "
        f"postgres://HOST:PORT/NAME or mysql://HOST:PORT/NAME (credentials as USER:PASSWORD@HOST)")
    return {"ENGINE": "django.db.backends.dummy"}


def _non_negative_int(name, default):
    """Setting ``name`` as an integer >= 0; a bad value is recorded and ``default`` used."""
    value = (env(name) or str(default)).strip()
    if re.fullmatch(r"\+?[0-9]{1,9}", value):
        return int(value)
    ACADEMY_CONSUMER_SETTINGS_ERRORS.append(f"{name} must be an integer >= 0, not {value[:80]!r}")
    return default


def _importable(module):
    """Whether ``module`` imports (a driver module may be found and still not import)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


DATABASES = {"default": _parse_database_url(DATABASE_URL)}
# The driver modules of each server, and the extra of setup.cfg that installs one.
_DRIVERS = {"django.db.backends.postgresql": (("psycopg", "psycopg2"), "postgresql", "PostgreSQL"),
            "django.db.backends.mysql": (("MySQLdb",), "mysql", "MySQL/MariaDB")}
if DATABASES["default"]["ENGINE"] in _DRIVERS:
    _modules, _extra, _server = _DRIVERS[DATABASES["default"]["ENGINE"]]
    if not any(_importable(module) for module in _modules):
        ACADEMY_CONSUMER_SETTINGS_ERRORS.append(
            f"DATABASE_URL names a {_server} database, and no {_server} driver is installed: "
            f"pip install 'academy-consumer[{_extra}]'")
if DATABASES["default"]["ENGINE"] == "django.db.backends.mysql":
    DATABASES["default"].setdefault("OPTIONS", {}).update({"charset": "utf8mb4"})
    DATABASES["default"]["TEST"] = {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"}
# .. setting_name: DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS
# .. setting_default: 120
# .. setting_description: A bound on a session that sits idle inside a transaction. This service never does;
#   a session the network cut off does, and its row locks would otherwise block the reconnected consumer
#   (PostgreSQL would wait on them forever, MySQL for its 8-hour wait_timeout). PostgreSQL:
#   ``idle_in_transaction_session_timeout``. ``mysql://`` URLs name MySQL and MariaDB, so each new connection
#   asks the server what it is (``academy_consumer.db_session``): MariaDB gets ``idle_transaction_timeout``;
#   MySQL 8, which has no such variable, gets ``wait_timeout`` (the nearest it has: any session idle that long
#   is closed, in a transaction or not; the health check before each batch replaces a closed kept connection).
#   0 turns it off (the server's defaults apply). An integer >= 0.
_IDLE_TIMEOUT = _non_negative_int("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS", 120)
if _IDLE_TIMEOUT and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = (
        f"-c idle_in_transaction_session_timeout={_IDLE_TIMEOUT * 1000}")
elif _IDLE_TIMEOUT and DATABASES["default"]["ENGINE"] == "django.db.backends.mysql":
    _db_session.install(_IDLE_TIMEOUT)

# .. setting_name: DATABASE_CONNECT_TIMEOUT_SECONDS
# .. setting_default: 10
# .. setting_description: How long PostgreSQL and MariaDB connection attempts wait for the server, so that a
#   host that drops packets gives a one-line "unreachable" instead of a hang. An integer >= 1.
_CONNECT_TIMEOUT = max(1, _non_negative_int("DATABASE_CONNECT_TIMEOUT_SECONDS", 10))
if DATABASES["default"]["ENGINE"] in ("django.db.backends.postgresql", "django.db.backends.mysql"):
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = _CONNECT_TIMEOUT

# .. setting_name: DATABASE_CONN_MAX_AGE_SECONDS
# .. setting_default: 300
# .. setting_description: How long a database connection is kept and reused (Django's ``CONN_MAX_AGE``),
#   with Django's health check before its first use in each batch, so a connection the server or the
#   network closed is replaced, not used. A new connection per batch cost the consumer a connect and its
#   session set-up each batch. 0: a new connection per batch (per request in the admin). An integer >= 0.
DATABASES["default"]["CONN_MAX_AGE"] = _non_negative_int("DATABASE_CONN_MAX_AGE_SECONDS", 300)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

# .. setting_name: DATABASE_TEST_NAME
# .. setting_default: None (Django's ``test_<name>``)
# .. setting_description: Name of the throw-away database the test suite creates, so that two test runs
#   can share one database server without dropping each other's database.
if env("DATABASE_TEST_NAME"):
    DATABASES["default"].setdefault("TEST", {})["NAME"] = env("DATABASE_TEST_NAME")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "/static/"

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# The Enterprise Catalog API and the OAuth2 client that reads it: the host's own names, documented (and read)
# in academy_consumer/conf.py, each taken from the environment below. These are the standalone defaults, an LMS
# and a catalog on this machine's devstack ports; BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL has none, so that
# SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT applies unless the provider URL is set (which then wins).
ENTERPRISE_CATALOG_URL = "http://localhost:18160"
SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT = "http://localhost:18000"
BACKEND_SERVICE_EDX_OAUTH2_KEY = "academy-consumer-backend-service-key"
BACKEND_SERVICE_EDX_OAUTH2_SECRET = "academy-consumer-backend-service-secret"

# .. setting_name: LOG_LEVEL
# .. setting_default: None (WARNING for libraries, INFO for academy_consumer)
# .. setting_description: Log level of every logger: DEBUG, INFO, WARNING, ERROR or CRITICAL (any case).
_LOG_LEVEL = (env("LOG_LEVEL") or "").strip().upper() or None
if _LOG_LEVEL and _LOG_LEVEL not in logging.getLevelNamesMapping():
    ACADEMY_CONSUMER_SETTINGS_ERRORS.append(
        f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {_LOG_LEVEL[:80]!r}")
    _LOG_LEVEL = None

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": _LOG_LEVEL or "WARNING"},
    "loggers": {
        "academy_consumer": {"level": _LOG_LEVEL or "INFO"},
        # Django logs a receiver's exception with its traceback; the consumer then handles it (a dead letter,
        # logged in one line), so the traceback is for LOG_LEVEL=DEBUG only.
        "django.dispatch": {"level": "DEBUG" if _LOG_LEVEL == "DEBUG" else "CRITICAL"},
        # urllib3 logs every retry of a catalog request; the catalog client's one-line error says the outcome.
        "urllib3": {"level": _LOG_LEVEL or "ERROR"},
    },
}
ROOT_URLCONF = "academy_consumer.urls"

# .. setting_name: OPENEDX_TELEMETRY
# .. setting_default: none (empty list)
# .. setting_description: edx-django-utils' telemetry backends (dotted class paths, comma separated in the
#   environment, e.g. ``edx_django_utils.monitoring.OpenTelemetryBackend``) that receive the consumer's custom
#   attributes and traces. edx-django-utils defaults to New Relic, which this service does not install, so
#   the standalone default is none.
OPENEDX_TELEMETRY = env_list("OPENEDX_TELEMETRY", [])

# --- Open edX event bus (names and meaning as in openedx-events and edx-event-bus-kafka) ---------------
# .. setting_name: EVENTS_SERVICE_NAME
# .. setting_default: academy-consumer
# .. setting_description: openedx-events' name of this service: the ``source`` of the events it produces
#   and the Kafka ``client.id`` (read by openedx-events and edx-event-bus-kafka).
EVENTS_SERVICE_NAME = env("EVENTS_SERVICE_NAME", "academy-consumer")
EVENT_BUS_PRODUCER = "edx_event_bus_kafka.create_producer"
EVENT_BUS_CONSUMER = "edx_event_bus_kafka.KafkaEventConsumer"
# .. setting_name: EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS
# .. setting_default: None (``academy-consumer devstack`` writes it to .devstack.env)
# .. setting_description: Kafka bootstrap servers, comma separated (read by edx-event-bus-kafka).
EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS = env("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS")
# .. setting_name: EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL
# .. setting_default: None (``academy-consumer devstack`` writes it to .devstack.env)
# .. setting_description: Confluent Schema Registry URL (read by edx-event-bus-kafka).
EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL = env("EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL")
# .. setting_name: EVENT_BUS_KAFKA_SCHEMA_REGISTRY_API_KEY
# .. setting_default: '' (no authentication)
# .. setting_description: The schema registry's API key, sent as the HTTP basic-auth user (read by
#   edx-event-bus-kafka). A secret: keep it in a secret store.
EVENT_BUS_KAFKA_SCHEMA_REGISTRY_API_KEY = env("EVENT_BUS_KAFKA_SCHEMA_REGISTRY_API_KEY", "")
# .. setting_name: EVENT_BUS_KAFKA_SCHEMA_REGISTRY_API_SECRET
# .. setting_default: '' (no authentication)
# .. setting_description: The schema registry's API secret, the basic-auth password matching
#   ``EVENT_BUS_KAFKA_SCHEMA_REGISTRY_API_KEY`` (read by edx-event-bus-kafka). A secret.
EVENT_BUS_KAFKA_SCHEMA_REGISTRY_API_SECRET = env("EVENT_BUS_KAFKA_SCHEMA_REGISTRY_API_SECRET", "")
# .. setting_name: EVENT_BUS_KAFKA_API_KEY
# .. setting_default: None (no authentication, plaintext)
# .. setting_description: Kafka API key: with ``EVENT_BUS_KAFKA_API_SECRET`` set too, every Kafka client
#   (consumer, dead-letter producer, ``consumer_lag``, ``dead_letters``, ``produce_academy_event``) connects
#   with SASL/PLAIN over TLS (``security.protocol=SASL_SSL``), this key as the user name (read by
#   edx-event-bus-kafka). Other mechanisms go in ``ACADEMY_CONSUMER_KAFKA_CONFIG``.
EVENT_BUS_KAFKA_API_KEY = env("EVENT_BUS_KAFKA_API_KEY")
# .. setting_name: EVENT_BUS_KAFKA_API_SECRET
# .. setting_default: None (no authentication, plaintext)
# .. setting_description: Kafka API secret, the SASL/PLAIN password matching ``EVENT_BUS_KAFKA_API_KEY``
#   (read by edx-event-bus-kafka). A secret.
EVENT_BUS_KAFKA_API_SECRET = env("EVENT_BUS_KAFKA_API_SECRET")
# .. setting_name: EVENT_BUS_TOPIC_PREFIX
# .. setting_default: None
# .. setting_description: Environment prefix of every topic name (``<prefix>-<topic>``), as in edx-event-bus-kafka.
EVENT_BUS_TOPIC_PREFIX = env("EVENT_BUS_TOPIC_PREFIX")
# .. toggle_name: EVENT_BUS_KAFKA_CONSUMERS_ENABLED
# .. toggle_implementation: SettingToggle
# .. toggle_default: True
# .. toggle_description: edx-event-bus-kafka's consumer kill switch. Off, ``consume_academy_events`` says so in
#   one line and exits 0 without consuming, like the stock ``consume_events``. In the environment,
#   ``1``, ``true``, ``yes`` or ``on`` (any case) is on, any other value off.
# .. toggle_use_cases: circuit_breaker
# .. toggle_creation_date: 2026-12-04
EVENT_BUS_KAFKA_CONSUMERS_ENABLED = env_bool("EVENT_BUS_KAFKA_CONSUMERS_ENABLED", True)

# The settings academy_consumer/conf.py reads (academy-consumer's own, the catalog API's), as the environment or
# .devstack.env spells them: conf.py documents each, holds its default, and converts and checks its value where it
# is read. Only here: under a host's settings module these variables do nothing (the host's settings decide).
for _name in _academy_conf.SETTING_NAMES:
    if env(_name) is not None:
        globals()[_name] = env(_name)
