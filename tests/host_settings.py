"""
A host service's Django settings, modelled on enterprise-access (the app's first host), for the tests that
run the app as a host maintainer does (``python -m django ... --settings`` with this module, or one that
imports it): the host decides everything here, nothing is read from the environment.

What it has of enterprise-access: ``academy_consumer`` (and ``openedx_events``) in ``INSTALLED_APPS`` beside
Django's admin apps; ``LOGGING`` in the shape of edx's ``get_logger_config``, where every logger writes to
**stdout** at INFO (one ``StreamHandler`` on ``sys.stdout``: the root logger, Django's, the app's, and with
them edx-event-bus-kafka's and librdkafka's, which the app logs through ``academy_consumer.kafka``); the
host's own OAuth2 names (``BACKEND_SERVICE_EDX_OAUTH2_KEY`` / ``_SECRET``, the LMS root
``SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT``, and no ``BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL``);
``ENTERPRISE_CATALOG_URL``; the event bus set in Django settings (``EVENT_BUS_*``, topic prefix ``dev`` as in
its devstack settings), not in the environment; a database of its own (SQLite, ``host.sqlite3`` in the working
directory).

The dev stack's and the catalog stand-in's addresses are known only at test time: a test writes a small
module into a temporary directory that does ``from tests.host_settings import *`` and sets
``EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS``, ``EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL``, ``ENTERPRISE_CATALOG_URL``,
``SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT`` and ``DATABASES`` (``tests/test_host.py``).
"""

from pathlib import Path

SECRET_KEY = "host-insecure-secret-key"
DEBUG = False
ALLOWED_HOSTS = []
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"  # the host's own default; the app sets its own in its AppConfig

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "openedx_events",
    "academy_consumer",
]

MIDDLEWARE = [
    "edx_django_utils.cache.middleware.RequestCacheMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "edx_django_utils.cache.middleware.TieredCacheMiddleware",
]

TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.contrib.auth.context_processors.auth",
        "django.template.context_processors.request",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
ROOT_URLCONF = "academy_consumer.urls"
STATIC_URL = "/static/"

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(Path.cwd() / "host.sqlite3")}}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# edx's get_logger_config: every logger on stdout.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "standard": {"format": "%(asctime)s %(levelname)s %(process)d [%(name)s] [user %(userid)s] "
                               "[ip %(remoteip)s] %(filename)s:%(lineno)d - %(message)s"},
    },
    "filters": {
        "userid_context": {"()": "edx_django_utils.logging.UserIdFilter"},
        "remoteip_context": {"()": "edx_django_utils.logging.RemoteIpFilter"},
    },
    "handlers": {
        "console": {
            "level": "INFO",
            "class": "logging.StreamHandler",
            "formatter": "standard",
            "filters": ["userid_context", "remoteip_context"],
            "stream": "ext://sys.stdout",
        },
    },
    "loggers": {
        "django": {"handlers": ["console"], "propagate": True, "level": "INFO"},
        "academy_consumer": {"handlers": ["console"], "propagate": False, "level": "INFO"},
        "edx_event_bus_kafka": {"handlers": ["console"], "propagate": False, "level": "INFO"},
        "": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}

# The host's service-to-service OAuth2 client and its LMS root, as its API clients use them; no
# BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL. Placeholders here, as in the host's base settings; tests set real ones.
SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT = "http://localhost:18000"
BACKEND_SERVICE_EDX_OAUTH2_KEY = "enterprise-access-backend-service-key"
BACKEND_SERVICE_EDX_OAUTH2_SECRET = "enterprise-access-backend-service-secret"
ENTERPRISE_CATALOG_URL = "http://localhost:18160"

# The event bus, in Django settings (the addresses are set by the test's module).
EVENT_BUS_PRODUCER = "edx_event_bus_kafka.create_producer"
EVENT_BUS_CONSUMER = "edx_event_bus_kafka.KafkaEventConsumer"
EVENT_BUS_TOPIC_PREFIX = "dev"
EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS = None
EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL = None
EVENTS_SERVICE_NAME = "enterprise-access"

# edx-django-utils' monitoring defaults to New Relic, which this host does not install.
OPENEDX_TELEMETRY = []
