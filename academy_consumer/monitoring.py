"""
What an operator sees of a running consumer. The loop (``consumer.py``) tells a ``Monitor`` what happened at
each step and reads nothing back: nothing here changes what is applied, dead-lettered or committed.

* **Prometheus metrics** (prometheus-client, in a registry of the consumer's own), served with
  **health** on one port, off by default (``--metrics-port`` / ``ACADEMY_CONSUMER_METRICS_PORT``, on
  ``ACADEMY_CONSUMER_METRICS_HOST``, ``127.0.0.1`` by default):

  - ``GET /metrics``: the metrics below, in the Prometheus text format. prometheus-client is optional (the
    ``metrics`` and ``standalone`` extras; a host service need not have it): without it the metrics are not
    kept, ``/metrics`` answers ``501 Not Implemented`` and one line naming ``academy-consumer[metrics]`` (a
    failed scrape, never an empty page that reads as "no events"; 501, not 503, since retrying cannot help),
    and ``serve`` logs one WARNING saying so when the server starts;
  - ``GET /healthz``: 200 while the loop is alive and not stuck -- it polled within half of
    ``max.poll.interval.ms`` and has not been retrying one batch for longer than
    ``ACADEMY_CONSUMER_UNHEALTHY_AFTER_SECONDS`` --, else 503; the body is one line saying why;
  - ``GET /readyz``: 200 while the Kafka brokers answer and the database answers, whether or not this member
    holds a partition (a member with none -- more replicas than partitions, or mid-rebalance -- is ready:
    it takes partitions over when another member goes); 503 and why before the first broker answered, once a
    broker the consumer waits on has been silent for ``ACADEMY_CONSUMER_BROKER_SILENCE_SECONDS``, or when the
    database does not answer.

* **A silent broker** (``BrokerWatch``): from librdkafka's statistics (``statistics.interval.ms``, every
  second, handed to ``Monitor.kafka_statistics`` by the clients' ``stats_cb``), how long each broker the
  client waits on -- a request in flight or queued, or a connection being made -- has sent nothing
  (``rxidle``, carried over reconnections). From half the bound on, one WARNING naming the broker(s) and
  for how long, at most once per bound; one INFO line once they answer again.

* **Open edX monitoring**, per batch, as edx-event-bus-kafka's consumer does per message: edx-django-utils'
  ``set_custom_attribute`` (topic, partitions, first and last offsets, event types, counts by outcome,
  dead letters), ``function_trace`` around the batch, and ``record_exception`` for each dead letter,
  each exception of a host receiver (``host_signals``) and a fatal error. The backends are the host's
  (``OPENEDX_TELEMETRY``); none by default.

* **Progress**: one INFO line every ``PROGRESS_SECONDS`` while events are applied (events applied, events/s
  over the interval, lag left), so a replay or a backfill shows how far it is.
"""

import json
import logging
import math
import socketserver
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.db import connections
from edx_django_utils.monitoring import function_trace, record_exception, set_custom_attribute

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, make_wsgi_app
except ImportError:  # a host service without the `metrics` extra: health and readiness are still served
    CollectorRegistry = None

log = logging.getLogger(__name__)

NO_METRICS = "/metrics needs prometheus-client, which is not installed: pip install 'academy-consumer[metrics]'"

if CollectorRegistry is not None:
    # No ``*_created`` series beside each counter: ``academy_consumer_events_created{outcome="created"}`` would
    # read as a count of created academies. (prometheus-client's switch is process-wide.)
    disable_created_metrics()

PROGRESS_SECONDS = 10.0
DEFAULT_MAX_POLL_INTERVAL_MS = 300_000  # librdkafka's default max.poll.interval.ms
READY_CHECK_SECONDS = 2.0  # /readyz asks the database at most this often
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

__all__ = ["BrokerWatch", "CannotServe", "Monitor", "function_trace", "record_batch_attributes", "record_error",
           "record_exception", "serve"]


class CannotServe(Exception):
    """The metrics server cannot listen where it is told to (one line)."""


class _NoMetric:
    """What stands in for every metric without prometheus-client: each update is accepted and forgotten."""

    def labels(self, *values):  # pylint: disable=unused-argument
        return self

    def __getattr__(self, name):  # inc, set, observe, remove, set_function
        return lambda *args, **kwargs: None


_NO_METRIC = _NoMetric()


class Metrics:
    """
    The consumer's Prometheus metrics; every name starts with ``academy_consumer_``. Without prometheus-client
    ``registry`` is None and every metric a ``_NoMetric``.
    """

    def __init__(self):
        self.registry = None if CollectorRegistry is None else CollectorRegistry(auto_describe=True)
        if self.registry is None:
            return
        r = self.registry
        self.events = Counter("academy_consumer_events", "Events handled, by outcome (created, updated, unchanged, "
                              "stale, deactivated, dead_lettered, before_replay_time).", ["outcome"], registry=r)
        self.batches = Counter("academy_consumer_batches", "Batches applied and committed (or queued to commit).",
                               registry=r)
        self.batch_seconds = Histogram("academy_consumer_batch_duration_seconds", "Time to decode, apply, "
                                       "dead-letter one batch and send its events to the host's receivers, retries "
                                       "included.", buckets=BATCH_BUCKETS, registry=r)
        self.dead_letters = Counter("academy_consumer_dead_letters", "Events dead-lettered, by error class.",
                                    ["error_class"], registry=r)
        self.retries = Counter("academy_consumer_transient_retries", "Retries of a batch after a transient failure "
                               "(database, dead-letter topic or schema registry unreachable, deadlock).", registry=r)
        self.commit_failures = Counter("academy_consumer_commit_failures", "Offset commits that failed (retried "
                                       "after the next poll).", registry=r)
        self.lag = Gauge("academy_consumer_lag", "Events on an assigned partition after the group's committed "
                         "offset (end offset minus committed).", ["partition"], registry=r)
        self.freshness = Gauge("academy_consumer_freshness_seconds", "Age of the newest event time (ce_time) "
                               "applied in this run; NaN before the first.", registry=r)
        self.last_commit = Gauge("academy_consumer_last_commit_timestamp_seconds", "Unix time of the last "
                                 "successful offset commit; 0 before the first.", registry=r)
        self.broker_silence = Gauge("academy_consumer_broker_silence_seconds", "Longest silence of a Kafka broker "
                                    "the consumer waits on (0 while every one answers).", registry=r)
        self.assigned = Gauge("academy_consumer_assigned_partitions", "Partitions assigned to this consumer.",
                              registry=r)
        self.host_signals = Counter("academy_consumer_host_signals", "Applied events sent to the host's own "
                                    "receivers of their openedx-events signal (host_signals).", registry=r)
        self.host_receiver_errors = Counter("academy_consumer_host_receiver_errors", "Exceptions of the host's own "
                                            "receivers of the academy signals, by receiver ('(not sent)': the event "
                                            "could not be sent).", ["receiver"], registry=r)

    def __getattr__(self, name):
        """Without prometheus-client (no registry), every metric: a ``_NoMetric``."""
        if name == "registry" or self.registry is not None:
            raise AttributeError(name)
        return _NO_METRIC


# librdkafka broker states in which the client is trying to reach the broker (it needs it).
_CONNECTING = frozenset({"TRY_CONNECT", "CONNECT", "SSL_HANDSHAKE", "AUTH_LEGACY", "AUTH_HANDSHAKE", "AUTH_REQ",
                         "APIVERSION_QUERY"})

# Join states in which the group coordinator holds the member's request until the group is formed (a rebalance).
_JOINING = frozenset({"wait-join", "wait-sync"})


class BrokerWatch:
    """
    How long each Kafka broker a client waits on has been silent, read from librdkafka's statistics (JSON).

    A broker is waited on when a request to it is in flight or queued (``waitresp_cnt``, ``outbuf_cnt``) or the
    client is connecting to it -- but the group coordinator while a rebalance holds the member's JoinGroup or
    SyncGroup request --; it is silent for the time since it last sent anything (``rxidle``). librdkafka
    resets ``rxidle`` with each new connection (a broker that accepts connections but never answers, as a
    stopped process does, shows ``-1`` again and again), so the last time heard is kept here, per client and
    broker, on librdkafka's own clock (``ts``, microseconds). A broker nobody waits on (idle, not needed) is
    never silent.
    """

    def __init__(self):
        self._heard = {}  # (client name, broker key) -> ts (µs) when it last answered, or was first waited on
        self._silent = {}  # client name -> {broker address: seconds silent} as of that client's last statistics
        self.heard = False  # a broker answered once

    def update(self, stats):
        """Take one client's statistics (a dict); returns ``silent()``."""
        client, now = stats.get("name", ""), stats.get("ts", 0)
        joining = (stats.get("cgrp") or {}).get("join_state") in _JOINING
        silent = {}
        for key, broker in (stats.get("brokers") or {}).items():
            if broker.get("source") == "internal":
                continue
            heard_key = (client, key)
            rxidle = broker.get("rxidle", -1)
            if isinstance(rxidle, int) and rxidle >= 0:
                self.heard = True
                self._heard[heard_key] = max(self._heard.get(heard_key, 0), now - rxidle)
            requests = broker.get("waitresp_cnt", 0) or broker.get("outbuf_cnt", 0)
            if joining and broker.get("source") == "logical":
                requests = 0  # the coordinator holds a JoinGroup/SyncGroup until the group is formed: no silence
            if not (requests or broker.get("state") in _CONNECTING):
                continue
            heard = self._heard.setdefault(heard_key, now)  # never heard: silent since first waited on
            address = broker.get("nodename") or key
            silent[address] = max(silent.get(address, 0.0), 0.0, (now - heard) / 1e6)
        self._silent[client] = silent
        return self.silent()

    def silent(self):
        """``{broker address: seconds}``: the longest silence of each waited-on broker over the clients."""
        merged = {}
        for silent in self._silent.values():
            for address, seconds in silent.items():
                merged[address] = max(merged.get(address, 0.0), seconds)
        return merged

    @staticmethod
    def describe(silent, over=0.0):
        """``127.0.0.1:9092 silent for 31 s, ...``: the brokers silent for more than ``over`` seconds, longest first."""
        return ", ".join(f"{address} silent for {seconds:.0f} s" for address, seconds in
                         sorted(silent.items(), key=lambda item: (-item[1], item[0])) if seconds > over)


class Monitor:
    """
    Told by the loop what happens; keeps the metrics, what health and readiness answer, and the progress
    line. ``max_poll_interval_ms``: the consumer's ``max.poll.interval.ms``; ``unhealthy_after``: seconds of
    retrying one batch after which ``/healthz`` answers 503; ``broker_silence``: seconds of silence of a broker
    the consumer waits on after which ``/readyz`` answers 503 (a WARNING from half of it, at most once per it).
    """

    def __init__(self, topic, *, max_poll_interval_ms, unhealthy_after, broker_silence=30.0, clock=time.monotonic):
        self.topic = topic
        self.metrics = Metrics()
        self.clock = clock
        self.poll_bound = max_poll_interval_ms / 1000.0 / 2
        self.unhealthy_after = unhealthy_after
        self._lock = threading.Lock()
        self._ready_lock = threading.Lock()
        self._last_poll = clock()
        self._retrying_since = None  # clock() of the first failed attempt of the batch in hand
        self._retry_reason = ""
        self._stopped = None  # why the loop ended, once it has
        self._assigned = set()
        self._newest_event_time = None  # unix time of the newest applied ce_time
        self._progress = (clock(), 0)  # (when the last progress line was due, events applied by then)
        self._applied = 0
        self._ready_cache = (-float("inf"), False, "")
        self.broker_silence = broker_silence
        self._watch = BrokerWatch()
        self._broker_heard = False  # a broker answered once (statistics, or an assignment)
        self._silent = {}  # broker address -> seconds silent, as of the latest statistics
        self._silence_warned = -math.inf  # clock() of the last WARNING about a silent broker
        self.metrics.freshness.set_function(self._freshness)

    # --- what the loop reports -------------------------------------------------------------------------

    def polled(self):
        with self._lock:
            self._last_poll = self.clock()

    def assigned(self, partitions):
        with self._lock:
            self._broker_heard = True
            self._assigned.update(partitions)
            self.metrics.assigned.set(len(self._assigned))

    def revoked(self, partitions):
        """Forget revoked partitions: their assignment and their lag gauges."""
        with self._lock:
            self._assigned.difference_update(partitions)
            self.metrics.assigned.set(len(self._assigned))
        for partition in partitions:
            try:
                self.metrics.lag.remove(str(partition))
            except KeyError:
                pass

    def retrying(self, reason):
        """A batch attempt failed transiently; the loop retries it."""
        self.metrics.retries.inc()
        with self._lock:
            if self._retrying_since is None:
                self._retrying_since = self.clock()
            self._retry_reason = reason

    def batch_done(self, counts, dead, seconds, newest_event_time):
        """
        A batch went through: ``counts`` by outcome, ``dead`` its ``DeadLetter`` s, ``newest_event_time``
        the newest ce_time of its applied events (None if none was applied).
        """
        with self._lock:
            self._retrying_since = None
            if newest_event_time is not None:
                stamp = newest_event_time.timestamp()
                if self._newest_event_time is None or stamp > self._newest_event_time:
                    self._newest_event_time = stamp
        for outcome, n in counts.items():
            self.metrics.events.labels(outcome).inc(n)
        for letter in dead:
            self.metrics.dead_letters.labels(_class_name(letter.error)).inc()
        self.metrics.batches.inc()
        self.metrics.batch_seconds.observe(seconds)
        self._applied += sum(n for outcome, n in counts.items()
                             if outcome not in ("dead_lettered", "before_replay_time"))

    def committed(self):
        self.metrics.last_commit.set(time.time())

    def host_signals_sent(self, n):
        """``n`` applied events were sent to the host's own receivers."""
        self.metrics.host_signals.inc(n)

    def host_receiver_failed(self, receiver):
        """A host receiver (``module.qualname``) raised on an event."""
        self.metrics.host_receiver_errors.labels(receiver).inc()

    def commit_failed(self):
        self.metrics.commit_failures.inc()

    def lag(self, lags):
        """``{partition: events after the committed offset}`` of the assigned partitions."""
        for partition, value in lags.items():
            self.metrics.lag.labels(str(partition)).set(value)

    def kafka_statistics(self, text):
        """
        librdkafka's statistics of one client (its ``stats_cb``): when each broker it waits on last answered.
        Logs a WARNING naming the broker(s) silent for half of ``broker_silence`` or more (at most once per
        ``broker_silence``), and one INFO line once they answer again.
        """
        try:
            stats = json.loads(text)
        except ValueError:
            return
        silent = self._watch.update(stats)
        longest = max(silent.values(), default=0.0)
        with self._lock:
            self._silent = silent
            self._broker_heard = self._broker_heard or self._watch.heard
        self.metrics.broker_silence.set(longest)
        now = self.clock()
        if longest >= self.broker_silence / 2:
            if now - self._silence_warned >= self.broker_silence:
                self._silence_warned = now
                log.warning("Kafka broker(s) not answering: %s, with requests waiting; /readyz answers 503 "
                            "past %g s (the consumer goes on once they answer)",
                            BrokerWatch.describe(silent, self.broker_silence / 4), self.broker_silence)
        elif self._silence_warned > -math.inf:
            self._silence_warned = -math.inf
            log.info("Kafka broker(s) answer again")

    def stopped(self, reason):
        with self._lock:
            self._stopped = reason

    def progress(self, lag_left):
        """Log the progress line when one is due (every ``PROGRESS_SECONDS`` while events were applied)."""
        now = self.clock()
        since, applied_then = self._progress
        if now - since < PROGRESS_SECONDS:
            return
        self._progress = (now, self._applied)
        applied = self._applied - applied_then
        if applied or lag_left:
            log.info("progress: %d events applied in this run, %.0f events/s over the last %.0f s, lag %s",
                     self._applied, applied / (now - since), now - since,
                     "unknown" if lag_left is None else f"{lag_left} event(s)")

    # --- what the endpoints answer ---------------------------------------------------------------------

    def health(self):
        """``(healthy, one line)``."""
        now = self.clock()
        with self._lock:
            if self._stopped is not None:
                return False, f"the consumer loop has stopped: {self._stopped}"
            if self._retrying_since is not None:  # (the loop does not poll while it retries a batch)
                if now - self._retrying_since > self.unhealthy_after:
                    return False, (f"retrying one batch for {now - self._retrying_since:.0f} s (more than "
                                   f"{self.unhealthy_after:g} s): {self._retry_reason}")
            elif now - self._last_poll > self.poll_bound:
                return False, (f"no poll for {now - self._last_poll:.0f} s (more than half of "
                               f"max.poll.interval.ms, {self.poll_bound:g} s)")
            retrying = f"; retrying a batch for {now - self._retrying_since:.0f} s" if self._retrying_since else ""
        return True, f"ok: polled {now - self._last_poll:.1f} s ago{retrying}"

    def readiness(self):
        """
        ``(ready, one line)``: the brokers answer (none waited on has been silent for ``broker_silence``) and
        the database answers. Holding no partition is no reason to be unready: more members than partitions,
        or a rebalance.
        """
        with self._lock:
            assigned, silent, heard = sorted(self._assigned), dict(self._silent), self._broker_heard
        if not heard:
            return False, "no Kafka broker has answered yet"
        if max(silent.values(), default=0.0) >= self.broker_silence:
            return False, (f"Kafka broker(s) not answering for {self.broker_silence:g} s or more: "
                           f"{BrokerWatch.describe(silent, self.broker_silence / 4)}")
        database_ok, why = self._database_answers()
        if not database_ok:
            return False, f"the database does not answer: {why}"
        held = (f"partitions {assigned} of {self.topic} assigned" if assigned else
                f"no partition of {self.topic} assigned to this member (more members than partitions, or a "
                f"rebalance)")
        return True, f"ok: {held}; the Kafka brokers and the database answer"

    def _database_answers(self):
        """``SELECT 1`` on this thread's own connection, at most every ``READY_CHECK_SECONDS``."""
        when, ok, why = self._ready_cache
        now = self.clock()
        if now - when < READY_CHECK_SECONDS:
            return ok, why
        with self._ready_lock:  # (one check at a time; each request has a thread, hence a connection, of its own)
            connection = connections["default"]
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 1")
                    cursor.fetchone()
                ok, why = True, ""
            except Exception as exc:  # pylint: disable=broad-except  # any failure means "not ready", in one line
                ok, why = False, " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            finally:
                connection.close()  # the request's thread ends: so does its connection
            self._ready_cache = (self.clock(), ok, why)
        return ok, why

    def _freshness(self):
        newest = self._newest_event_time
        return float("nan") if newest is None else max(0.0, time.time() - newest)


def _class_name(error):
    cls = type(error)
    return f"{cls.__module__}.{cls.__qualname__}"


def record_batch_attributes(topic, messages, counts, dead, event_types):
    """
    edx-django-utils custom attributes of one batch (the names edx-event-bus-kafka uses per message, with
    ``kafka_`` in front, plus the batch's own): a New Relic or Datadog trace of the batch shows where it read
    and what it did.
    """
    partitions = sorted({message.partition() for message in messages})
    offsets = [message.offset() for message in messages]
    set_custom_attribute("kafka_topic", topic)
    set_custom_attribute("kafka_partitions", ",".join(map(str, partitions)))
    if offsets:
        set_custom_attribute("kafka_first_offset", min(offsets))
        set_custom_attribute("kafka_last_offset", max(offsets))
    set_custom_attribute("kafka_event_types", ",".join(sorted(event_types)))
    set_custom_attribute("kafka_batch_events", len(messages))
    for outcome, n in sorted(counts.items()):
        set_custom_attribute(f"academy_outcome_{outcome}", n)
    set_custom_attribute("academy_dead_letters", len(dead))
    for letter in dead:
        record_error(letter.error)


def record_error(error):
    """edx-django-utils' ``record_exception`` of ``error`` (it records the exception being handled: hand it one)."""
    try:
        raise error
    except Exception:  # pylint: disable=broad-except
        record_exception()


def _no_metrics(environ, start_response):  # pylint: disable=unused-argument
    """``/metrics`` without prometheus-client: a failed scrape that says what to install."""
    start_response("501 Not Implemented",
                   [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")])
    return [(NO_METRICS + "\n").encode()]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        """Scrapes and probes every few seconds are not log lines."""


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


def serve(monitor, host, port):
    """
    Serve ``/metrics``, ``/healthz`` and ``/readyz`` of ``monitor`` on ``host:port`` in a daemon thread;
    returns the server (``server.server_port`` is the port, ``server.shutdown()`` stops it).
    """
    if monitor.metrics.registry is None:
        log.warning("%s; /healthz and /readyz are served", NO_METRICS)
        metrics_app = _no_metrics
    else:
        metrics_app = make_wsgi_app(monitor.metrics.registry)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            ok, line = monitor.health() if path == "/healthz" else monitor.readiness()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")])
            return [(line + "\n").encode()]
        if path == "/metrics":
            return metrics_app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: /metrics, /healthz and /readyz are served\n"]

    try:
        server = make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    except OSError as exc:  # the port is taken, not allowed, or the address is not this host's
        raise CannotServe(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    thread = threading.Thread(target=server.serve_forever, name="academy-consumer-metrics", daemon=True)
    thread.start()
    return server
