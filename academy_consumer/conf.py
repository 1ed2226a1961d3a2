"""
The settings academy-consumer reads, with their defaults: each setting is documented once, here, above the
accessor that reads it.

A host service that adds ``academy_consumer`` to ``INSTALLED_APPS`` sets these in its own Django
settings (environment variables do not reach them there: the host's settings decide); the standalone
``academy_consumer.settings`` sets each from the environment variable of the same name, then
``.devstack.env`` (as a string: the accessors below convert and check values of either kind). Event bus
connection settings keep edx-event-bus-kafka's names (``EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS``,
``EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL``, ``EVENT_BUS_TOPIC_PREFIX``...) and are read by that library. The
catalog API's client uses the host's own names (``ENTERPRISE_CATALOG_URL``, ``BACKEND_SERVICE_EDX_OAUTH2_KEY``
/ ``_SECRET``, ``SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT``), as the host's own API clients do.

A value that is not what the setting takes raises ``ImproperlyConfigured`` with one line naming the
setting, what it takes and what it got (never a secret); the commands print that line and exit 2, and
``academy_consumer.checks`` reports it to Django's system checks (``manage.py check``). ``problems()``
lists every bad value of the app's own settings at once; ``check_all()`` raises them as one line. The
catalog API's settings are the host's and are checked where they are used (``catalog_api()``).
"""

import json
import math
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from academy_consumer.normalize import parse_uuid
from academy_consumer.redact import mask_url


def _raw(name, default):
    value = getattr(settings, name, None)
    return default if value is None or value == "" else value


def _number(name, default, kind, minimum, maximum):
    """Setting ``name`` as a finite ``kind`` (int or float) from ``minimum`` to ``maximum``; strings are parsed."""
    value = _raw(name, default)
    what = f"{'an integer' if kind is int else 'a number'} from {minimum} to {maximum}"
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        number = kind(value.strip()) if isinstance(value, str) else kind(value)
        if kind is int and not isinstance(value, str) and number != value:
            raise ValueError(value)  # 2.5 is not an integer
    except (TypeError, ValueError, OverflowError):
        raise ImproperlyConfigured(f"{name} must be {what}, not {str(value)[:80]!r}") from None
    if not math.isfinite(number) or not minimum <= number <= maximum:
        raise ImproperlyConfigured(f"{name} must be {what}, not {str(value)[:80]!r}")
    return number


_ACCESSORS = {}  # setting name -> the accessor below that reads it (SETTING_NAMES, problems)
_HOST_OWNED = set()  # the names of those settings that belong to the host (checked where used, see problems)


def _reads(name, host_owned=False):
    """
    Register the decorated function as the one accessor of setting ``name``; ``host_owned``: a setting of the
    host's own that the app reads too (the catalog API's), not checked by ``problems()``.
    """
    def register(accessor):
        _ACCESSORS[name] = accessor
        if host_owned:
            _HOST_OWNED.add(name)
        return accessor
    return register


# The event bus connection is edx-event-bus-kafka's: ``EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS`` and
# ``EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL`` (with their API keys) are annotated by that library, where it reads
# them, and by ``academy_consumer/settings.py`` for the standalone script. This app reads them only here.
def bootstrap_servers():
    """``EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS``, or None when it is unset or empty."""
    return _raw("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS", None) or None


def schema_registry_url():
    """``EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL``, or None when it is unset or empty."""
    return _raw("EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL", None) or None


def require_event_bus(registry=True):
    """``ImproperlyConfigured`` naming the first connection setting (the registry's too, with ``registry``) unset."""
    if not bootstrap_servers():
        raise ImproperlyConfigured("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS is not set")
    if registry and not schema_registry_url():
        raise ImproperlyConfigured("EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL is not set")


def _http_url(name):
    """Setting ``name`` as an http(s) URL without the trailing slash, or None when it is unset or empty."""
    value = _raw(name, None)
    if value is None:
        return None
    text = str(value).strip()
    try:
        parts = urlsplit(text)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname) and not any(c.isspace() for c in text)
        parts.port  # pylint: disable=pointless-statement  # raises ValueError on a port that is not one
    except ValueError:  # a bad port or IPv6 literal
        usable = False
    if not usable:
        raise ImproperlyConfigured(f"{name} must be an http:// or https:// URL, not {mask_url(text)[:80]!r}")
    return text.rstrip("/")


def _text(name, secret=False):
    """Setting ``name`` as a non-empty string, or None when unset or empty; a ``secret`` is never echoed."""
    value = _raw(name, None)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        shown = "" if secret else f", not {str(value)[:80]!r}"
        raise ImproperlyConfigured(f"{name} must be a string{shown}")
    return value.strip()


# --- The Enterprise Catalog API (``reconcile_academies`` without ``--from-file``) --------------------------
# The host's names, read as its own API clients read them: ``OAuthAPIClient(SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT,
# BACKEND_SERVICE_EDX_OAUTH2_KEY, BACKEND_SERVICE_EDX_OAUTH2_SECRET)``. They are the host's (``host_owned``): a
# host may leave them empty or as placeholders where it calls no other service (enterprise-access's base
# settings hold ``ENTERPRISE_CATALOG_URL = ''`` and ``'replace-me'`` for the others), so they are checked where
# they are used, ``catalog_api()``: missing or unusable, reconcile's API fetch stops in one line (exit 2), and
# nothing else does. ``check --deploy`` warns of them (``academy_consumer.checks``).

# .. setting_name: ENTERPRISE_CATALOG_URL
# .. setting_default: None in a host; the standalone settings: http://localhost:18160
# .. setting_description: Root URL (http or https) of the Enterprise Catalog service; academies are read from
#   ``{ENTERPRISE_CATALOG_URL}/api/v1/academies/``. Needed only by ``reconcile_academies`` without
#   ``--from-file``.
@_reads("ENTERPRISE_CATALOG_URL", host_owned=True)
def catalog_url():
    """``ENTERPRISE_CATALOG_URL`` without the trailing slash, or None."""
    return _http_url("ENTERPRISE_CATALOG_URL")


# .. setting_name: SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT
# .. setting_default: None in a host (hosts set it for their LMS login); the standalone settings:
#   http://localhost:18000
# .. setting_description: The LMS root URL (http or https). The catalog client gets its JWT from
#   ``<this url>/oauth2/access_token`` (client-credentials grant), where edx-rest-api-client's
#   ``OAuthAPIClient`` given this URL posts, as the host's own API clients do. Used when
#   ``BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL`` is not set.
@_reads("SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT", host_owned=True)
def lms_url_root():
    """``SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT`` without the trailing slash, or None."""
    return _http_url("SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT")


# .. setting_name: BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL
# .. setting_default: None (``SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT`` is used)
# .. setting_description: The LMS OAuth2 provider (http or https), e.g. ``http://lms:18000/oauth2``, for a
#   service whose token endpoint is not under its LMS root. When set, it wins over
#   ``SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT``. The token is requested from ``<url>/access_token`` (from the URL
#   itself when it ends in ``/access_token``; ``<url>/oauth2/access_token`` when it ends in neither), as
#   ``OAuthAPIClient`` does.
@_reads("BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL", host_owned=True)
def oauth2_provider_url():
    """``BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL`` without the trailing slash, or None."""
    return _http_url("BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL")


# .. setting_name: BACKEND_SERVICE_EDX_OAUTH2_KEY
# .. setting_default: None in a host; the standalone settings: academy-consumer-backend-service-key
# .. setting_description: OAuth2 client id of the host's (or this service's) backend-service application in
#   the LMS: the service-to-service client the catalog client authenticates as.
@_reads("BACKEND_SERVICE_EDX_OAUTH2_KEY", host_owned=True)
def oauth2_key():
    """``BACKEND_SERVICE_EDX_OAUTH2_KEY``, or None."""
    return _text("BACKEND_SERVICE_EDX_OAUTH2_KEY")


# .. setting_name: BACKEND_SERVICE_EDX_OAUTH2_SECRET
# .. setting_default: None in a host; the standalone settings: academy-consumer-backend-service-secret
# .. setting_description: OAuth2 client secret matching ``BACKEND_SERVICE_EDX_OAUTH2_KEY``. Never printed.
@_reads("BACKEND_SERVICE_EDX_OAUTH2_SECRET", host_owned=True)
def oauth2_secret():
    """``BACKEND_SERVICE_EDX_OAUTH2_SECRET``, or None."""
    return _text("BACKEND_SERVICE_EDX_OAUTH2_SECRET", secret=True)


def oauth2_url():
    """
    The base URL the catalog client hands to ``OAuthAPIClient``: ``BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL``
    when set (the app-specific name wins), else ``SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT``; None when neither is.
    """
    return oauth2_provider_url() or lms_url_root()


@dataclass(frozen=True)
class CatalogApi:
    """Where and as whom the catalog client reads the catalog API (``catalog_api()``)."""

    catalog_url: str
    oauth2_url: str
    key: str
    secret: str = field(repr=False)


_CATALOG_API_SETTINGS = {  # CatalogApi field: (its accessor, the setting(s) to name when it is missing)
    "catalog_url": (catalog_url, "ENTERPRISE_CATALOG_URL"),
    "oauth2_url": (oauth2_url, "SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT (or BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL)"),
    "key": (oauth2_key, "BACKEND_SERVICE_EDX_OAUTH2_KEY"),
    "secret": (oauth2_secret, "BACKEND_SERVICE_EDX_OAUTH2_SECRET"),
}


def catalog_api(**given):
    """
    The ``CatalogApi`` of the settings above; a field given as a keyword (``catalog_url=...``) takes the place
    of its setting. ``ImproperlyConfigured`` in one line naming every setting missing or unusable.
    """
    values, unset = {}, []
    for name, (accessor, setting) in _CATALOG_API_SETTINGS.items():
        values[name] = given.get(name) or accessor()
        if not values[name]:
            unset.append(setting)
    if unset:
        raise ImproperlyConfigured(f"the catalog API is not configured: set {', '.join(unset)}")
    return CatalogApi(**values)


# .. setting_name: ENTERPRISE_CUSTOMER_UUID
# .. setting_default: None
# .. setting_description: The enterprise customer whose academies ``reconcile_academies`` reads when
#   ``--enterprise-customer`` is not given (a UUID).
@_reads("ENTERPRISE_CUSTOMER_UUID")
def enterprise_customer_uuid():
    """``ENTERPRISE_CUSTOMER_UUID`` as a ``uuid.UUID``, or None."""
    value = _raw("ENTERPRISE_CUSTOMER_UUID", None)
    if value is None:
        return None
    parsed = parse_uuid(value if isinstance(value, str) else str(value))
    if parsed is None:
        raise ImproperlyConfigured(f"ENTERPRISE_CUSTOMER_UUID must be a UUID, not {str(value)[:80]!r}")
    return parsed


# .. setting_name: ACADEMY_EVENTS_TOPIC
# .. setting_default: "enterprise-academy-lifecycle"
# .. setting_description: Base name (without ``EVENT_BUS_TOPIC_PREFIX``) of the topic the academy events are
#   produced to and consumed from. Producer and consumer share this one default.
DEFAULT_TOPIC = "enterprise-academy-lifecycle"


@_reads("ACADEMY_EVENTS_TOPIC")
def topic():
    """The academy events topic (without the environment prefix)."""
    return str(_raw("ACADEMY_EVENTS_TOPIC", DEFAULT_TOPIC))


# .. setting_name: ACADEMY_EVENTS_DLQ_TOPIC
# .. setting_default: None (meaning ``<ACADEMY_EVENTS_TOPIC>-dlq``)
# .. setting_description: Base name of the dead-letter topic that receives events which can never be applied
#   (undecodable, unknown or missing ``ce_type``, rejected payload, future-dated), with error headers.
@_reads("ACADEMY_EVENTS_DLQ_TOPIC")
def dlq_topic(base_topic=None):
    """The dead-letter topic for ``base_topic`` (without the environment prefix)."""
    configured = _raw("ACADEMY_EVENTS_DLQ_TOPIC", None)
    return str(configured) if configured else f"{base_topic or topic()}-dlq"


# .. setting_name: ACADEMY_CONSUMER_GROUP_ID
# .. setting_default: "academy-consumer"
# .. setting_description: Kafka consumer group of ``consume_academy_events`` when ``--group-id`` is not given.
DEFAULT_GROUP_ID = "academy-consumer"


@_reads("ACADEMY_CONSUMER_GROUP_ID")
def group_id():
    return str(_raw("ACADEMY_CONSUMER_GROUP_ID", DEFAULT_GROUP_ID))


# .. setting_name: ACADEMY_CONSUMER_GROUP_INSTANCE_ID
# .. setting_default: None (dynamic membership)
# .. setting_description: Kafka static membership (``group.instance.id``): give each consumer process a
#   stable id of its own (e.g. the Kubernetes pod name of a StatefulSet). A restarted process with the same
#   id takes its partitions back at once instead of waiting for the broker to time its old session out.
@_reads("ACADEMY_CONSUMER_GROUP_INSTANCE_ID")
def group_instance_id():
    value = _raw("ACADEMY_CONSUMER_GROUP_INSTANCE_ID", None)
    return str(value) if value else None


# .. setting_name: ACADEMY_CONSUMER_BATCH_SIZE
# .. setting_default: 500
# .. setting_description: Most events the consumer polls and applies in one database transaction (>= 1).
#   The set-based apply costs a few statements per batch, so larger batches go faster; memory grows with
#   the batch (about 110 MB of RSS at 500).
@_reads("ACADEMY_CONSUMER_BATCH_SIZE")
def batch_size():
    return _number("ACADEMY_CONSUMER_BATCH_SIZE", 500, int, 1, 1_000_000)  # librdkafka's most per poll


# .. setting_name: ACADEMY_CONSUMER_BATCH_WAIT_SECONDS
# .. setting_default: 1.0
# .. setting_description: Longest one poll of the consumer waits for the first event of a batch (> 0). Once
#   one has arrived, the consumer takes what is already fetched, up to the batch size, without waiting more:
#   a lone event is applied at once, and under load batches fill from what librdkafka has fetched.
@_reads("ACADEMY_CONSUMER_BATCH_WAIT_SECONDS")
def batch_wait_seconds():
    """``ACADEMY_CONSUMER_BATCH_WAIT_SECONDS``: seconds, more than 0."""
    value = _number("ACADEMY_CONSUMER_BATCH_WAIT_SECONDS", 1.0, float, 0.0, 3600.0)
    if value == 0:
        raise ImproperlyConfigured("ACADEMY_CONSUMER_BATCH_WAIT_SECONDS must be a number > 0 (up to 3600), not '0'")
    return value


# .. setting_name: ACADEMY_CONSUMER_RETRY_MAX_SECONDS
# .. setting_default: 30
# .. setting_description: Cap of the exponential backoff between retries of a batch that met a transient
#   failure (database unreachable, deadlock, lock timeout, dead-letter topic unreachable). Such a batch
#   is retried until it succeeds; it is never skipped.
@_reads("ACADEMY_CONSUMER_RETRY_MAX_SECONDS")
def retry_max_seconds():
    return _number("ACADEMY_CONSUMER_RETRY_MAX_SECONDS", 30.0, float, 0.0, 86400.0)


# .. setting_name: ACADEMY_CONSUMER_KAFKA_CONFIG
# .. setting_default: {}
# .. setting_description: Extra librdkafka settings for the consumer and its dead-letter producer (a dict; a
#   JSON object in the environment), e.g. ``{"session.timeout.ms": 10000}``. An unknown property stops the
#   consumer at start with one line naming it. ``consumer_lag`` and ``dead_letters`` connect with it too; the
#   properties of ``CONSUMER_ONLY_PROPERTIES`` are left out for the dead-letter producer and the AdminClient,
#   and ``group.instance.id`` for the clients that are no group member.
@_reads("ACADEMY_CONSUMER_KAFKA_CONFIG")
def kafka_config():
    """``ACADEMY_CONSUMER_KAFKA_CONFIG`` as a dict (a JSON text is parsed); see the annotation above."""
    value = _raw("ACADEMY_CONSUMER_KAFKA_CONFIG", {})
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ImproperlyConfigured(f"ACADEMY_CONSUMER_KAFKA_CONFIG is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ImproperlyConfigured(f"ACADEMY_CONSUMER_KAFKA_CONFIG must be a JSON object, not {type(value).__name__}")
    return dict(value)


# The librdkafka properties of a consumer (a producer-type handle, the dead-letter producer or an AdminClient,
# does not take them).
CONSUMER_ONLY_PROPERTIES = frozenset({
    "session.timeout.ms", "heartbeat.interval.ms", "max.poll.interval.ms", "group.id", "auto.offset.reset",
    "enable.auto.commit", "fetch.wait.max.ms", "fetch.min.bytes", "group.instance.id",
    "partition.assignment.strategy", "enable.partition.eof", "group.protocol", "group.remote.assignor",
    "auto.commit.interval.ms", "enable.auto.offset.store", "isolation.level", "fetch.max.bytes",
    "fetch.message.max.bytes", "max.partition.fetch.bytes", "queued.min.messages", "queued.max.messages.kbytes",
    "check.crcs", "fetch.error.backoff.ms", "fetch.queue.backoff.ms", "coordinator.query.interval.ms",
    "rebalance_cb", "offset_commit_cb", "on_commit",
})


def producer_kafka_config():
    """``kafka_config()`` without ``CONSUMER_ONLY_PROPERTIES``: what a producer-type handle takes of it."""
    return {key: value for key, value in kafka_config().items() if key not in CONSUMER_ONLY_PROPERTIES}


def reader_kafka_config():
    """``kafka_config()`` without ``group.instance.id``: for a consumer that is no group member (no static
    membership)."""
    return {key: value for key, value in kafka_config().items() if key != "group.instance.id"}


# .. setting_name: ACADEMY_PRODUCER_FLUSH_TIMEOUT_SECONDS
# .. setting_default: 30
# .. setting_description: How long ``produce_academy_event`` waits for the broker to acknowledge every event
#   before it exits non-zero.
@_reads("ACADEMY_PRODUCER_FLUSH_TIMEOUT_SECONDS")
def producer_flush_timeout():
    return _number("ACADEMY_PRODUCER_FLUSH_TIMEOUT_SECONDS", 30.0, float, 0.0, 86400.0)


# .. setting_name: ACADEMY_CONSUMER_MAX_CONSECUTIVE_DEAD_LETTERS
# .. setting_default: 100
# .. setting_description: The consumer's circuit breaker. When more than this many events in a row would be
#   dead-lettered with the same error class, something is wrong with the set-up rather than with the events
#   (a wrong schema registry, a producer bug): the consumer stops with exit 1 and a line naming the class,
#   before committing or dead-lettering the run. Any applied event, or another error class, resets the
#   count. 0 turns the breaker off.
@_reads("ACADEMY_CONSUMER_MAX_CONSECUTIVE_DEAD_LETTERS")
def max_consecutive_dead_letters():
    return _number("ACADEMY_CONSUMER_MAX_CONSECUTIVE_DEAD_LETTERS", 100, int, 0, 1_000_000_000)


# .. setting_name: ACADEMY_CONSUMER_MAX_FUTURE_SECONDS
# .. setting_default: 300
# .. setting_description: How far ahead of this process's clock an event time (``ce_time``) or a stored
#   ``source_timestamp`` may be (at most 10 years: a larger bound would not bound anything). A later event
#   is dead-lettered (it would freeze its row against every later change); a stored time beyond it no
#   longer makes newer events and reconcile ``stale``, and
#   ``repair_future_timestamps`` resets such times.
MAX_FUTURE_SECONDS_LIMIT = 10 * 365 * 86400.0


@_reads("ACADEMY_CONSUMER_MAX_FUTURE_SECONDS")
def max_future_seconds():
    return _number("ACADEMY_CONSUMER_MAX_FUTURE_SECONDS", 300.0, float, 0.0, MAX_FUTURE_SECONDS_LIMIT)


# .. setting_name: ACADEMY_MAX_INPUT_BYTES
# .. setting_default: 268435456 (256 MiB)
# .. setting_description: The most bytes a command reads from one input file or stdin
#   (``reconcile_academies --from-file``, ``produce_academy_event --file``); a larger input is refused
#   with one line, before it can exhaust memory.
@_reads("ACADEMY_MAX_INPUT_BYTES")
def max_input_bytes():
    return _number("ACADEMY_MAX_INPUT_BYTES", 256 * 1024 * 1024, int, 1, 2**40)


# .. setting_name: ACADEMY_CONSUMER_METRICS_PORT
# .. setting_default: None (no metrics server)
# .. setting_description: TCP port on which ``consume_academy_events`` serves ``/metrics`` (Prometheus text
#   format), ``/healthz`` and ``/readyz``; ``--metrics-port`` overrides it. 0 picks a free port (logged).
@_reads("ACADEMY_CONSUMER_METRICS_PORT")
def metrics_port():
    value = _raw("ACADEMY_CONSUMER_METRICS_PORT", None)
    return None if value is None else _number("ACADEMY_CONSUMER_METRICS_PORT", None, int, 0, 65535)


# .. setting_name: ACADEMY_CONSUMER_METRICS_HOST
# .. setting_default: "127.0.0.1"
# .. setting_description: Address the metrics server listens on. Only this host by default: set ``0.0.0.0``
#   (or the pod address) for a Prometheus scraper or a Kubernetes probe from outside the container.
@_reads("ACADEMY_CONSUMER_METRICS_HOST")
def metrics_host():
    return str(_raw("ACADEMY_CONSUMER_METRICS_HOST", "127.0.0.1")).strip()


# .. setting_name: ACADEMY_CONSUMER_UNHEALTHY_AFTER_SECONDS
# .. setting_default: 300
# .. setting_description: ``/healthz`` answers 503 once the consumer has been retrying one batch (database or
#   dead-letter topic unreachable, ...) for longer than this, and 200 again once the batch went through.
@_reads("ACADEMY_CONSUMER_UNHEALTHY_AFTER_SECONDS")
def unhealthy_after_seconds():
    return _number("ACADEMY_CONSUMER_UNHEALTHY_AFTER_SECONDS", 300.0, float, 0.0, 86400.0)


# .. setting_name: ACADEMY_CONSUMER_BROKER_SILENCE_SECONDS
# .. setting_default: 30
# .. setting_description: How long a Kafka broker the consumer is waiting on (a request in flight or queued,
#   or a connection being made) may stay silent before ``/readyz`` answers 503 (200 again once it answers).
#   From half this silence on, the consumer logs a WARNING naming the broker and how long it has been
#   silent, at most once per this many seconds. Measured from librdkafka's statistics (every second).
#   From 1 to 86400.
@_reads("ACADEMY_CONSUMER_BROKER_SILENCE_SECONDS")
def broker_silence_seconds():
    return _number("ACADEMY_CONSUMER_BROKER_SILENCE_SECONDS", 30.0, float, 1.0, 86400.0)


# Every setting read above through ``@_reads`` (the standalone settings module takes each from the environment).
SETTING_NAMES = tuple(_ACCESSORS)
# The catalog API's settings: the host's own names (see above).
HOST_OWNED_SETTING_NAMES = tuple(name for name in _ACCESSORS if name in _HOST_OWNED)


def problems(names=None):
    """
    ``[(setting name, one-line message)]`` of every setting of ``names`` (default: the app's own, every setting
    above but the host-owned catalog API's) whose value is not what it takes.
    """
    found = []
    for name in (names if names is not None else [n for n in _ACCESSORS if n not in _HOST_OWNED]):
        accessor = _ACCESSORS[name]
        try:
            accessor()
        except ImproperlyConfigured as exc:
            found.append((name, " ".join(str(exc).split())))
    return found


def check_all():
    """
    Read every setting of the app's own once, so that a bad value fails at start, not mid-run:
    ``ImproperlyConfigured`` with every bad value, in one line. (The catalog API's are checked by
    ``catalog_api()``, where they are used.)
    """
    found = problems()
    if found:
        raise ImproperlyConfigured("; ".join(message for _, message in found))
