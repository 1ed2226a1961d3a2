"""
The consumer loop: poll a batch of academy events, hand it to ``batch`` (decode, apply, dead-letter, signal),
then to ``offsets`` (commit). One event from poll to row:

    consumer.py (poll) -> batch.py (one batch) -> decode.py (message -> AcademyEvent) -> normalize.py (its
    values) -> apply.py (the row), then dead_letters.py (what can never apply) and offsets.py (the commit)

The guarantees (each part is kept, and described, by the module named):

* a batch is applied in ONE database transaction, in offset order; an event that can never apply goes to the
  dead-letter topic; a transient failure is retried, never skipped; applied events are sent to the host's
  own receivers; a circuit breaker stops the consumer before a long run of dead letters of one class
  (``batch``);
* offsets are committed only after the batch's transaction committed, its dead letters were acknowledged
  and its events were sent (at-least-once; re-applying is harmless: upserts are idempotent and
  stale-guarded), asynchronously: the loop never waits on the broker for a commit; a failed commit is sent
  again with the next batch or after the next poll, never behind a newer one, and on a clean stop
  (``offsets``);
* a lone event is applied as soon as it arrives: the poll waits up to ``batch_wait`` for the FIRST message
  only, then takes what is already fetched, up to ``batch_size``, without waiting beyond a few milliseconds
  (under load, batches stay as full as before);
* a broker that stops answering is seen (``monitoring.BrokerWatch``, from librdkafka's statistics every
  second): a WARNING naming it and how long it has been silent, ``/readyz`` 503 past
  ``ACADEMY_CONSUMER_BROKER_SILENCE_SECONDS``, while the loop goes on polling;
* a group with no committed offset starts at the earliest retained event; replay: see ``replay``;
* configuration faults are not bad events: a schema id the registry does not know, when the registry knows
  none of the academy subjects or when the same id comes back on another event, is a ``FatalError`` (nothing
  dead-lettered, nothing committed) (``registry_check``);
* waiting for a partition assignment is never fatal (a rebalance can take a whole session timeout): it is
  logged every 30 s; ``--until-idle`` counts from the first assignment;
* librdkafka's own log lines and errors go through one Python logger, one line per distinct error per 30 s
  (``kafka``);
* ``stop()`` (SIGTERM/SIGINT) lets the batch in hand finish and commit (a batch being retried is left
  unapplied: the pause and the wait for dead letters end at once); the last commit waits at most
  ``offsets.EXIT_COMMIT_SECONDS``, and the dead-letter producer ``EXIT_FLUSH_SECONDS``: with librdkafka's own
  leave of the group, the process exits within about 13 s whatever the broker does; fatal errors raise.

The consumer uses confluent-kafka directly and edx-event-bus-kafka for its settings (``kafka.bus_config``) and
its header -> metadata mapping (``host_signals``). The openedx-events signals stay the event contract: the stock
``consume_events`` command applies the same events through ``academy_consumer.receivers``, which call the same
apply functions, and this consumer sends the events it applied to the host's other receivers of those signals.
"""

import datetime
import logging
import math
import time

from confluent_kafka import KafkaException

from academy_consumer import conf, dead_letters, kafka, monitoring, preflight, replay
from academy_consumer.batch import BatchProcessor
from academy_consumer.errors import FatalError
from academy_consumer.offsets import Offsets
from academy_consumer.redact import mask_url, mask_urls
from academy_consumer.replay import Start

log = logging.getLogger(__name__)

WAITING_LOG_SECONDS = 30.0  # how often "waiting for a partition assignment" is logged
PREFLIGHT_TIMEOUT_SECONDS = 10.0  # longest the start-up checks wait for Kafka and the registry
BATCH_SETTLE_SECONDS = 0.001  # after the first message of a batch, the longest wait for the rest of its fetch
EXIT_FLUSH_SECONDS = 2.0  # longest a stop waits for dead letters still queued (a batch left unapplied)
LAG_SECONDS = 1.0  # how often the lag gauges are brought up to date


class AcademyEventConsumer:
    """Consume the academy topic in batches; see the module docstring for the guarantees."""

    def __init__(self, topic=None, group_id=None, *, start=None, batch_size=None, batch_wait=None,
                 max_events=None, until_idle=None, metrics_address=None):
        self.start = start or Start()
        self.batch_size = batch_size or conf.batch_size()
        self.batch_wait = conf.batch_wait_seconds() if batch_wait is None else batch_wait
        self.max_events = max_events
        self.until_idle = until_idle
        self._stopping = False
        self._waiting_since = None  # (monotonic, wall clock) while no partitions are assigned
        self._waiting_logged = 0.0
        self._last_activity = time.monotonic()
        self._start_offsets = {}  # partition -> offset to seek on first assignment
        self._lag_updated = -math.inf
        self._lag_left = None  # the total lag at the last update (None: not known yet)
        self.metrics_address = metrics_address  # (host, port) to serve /metrics, /healthz, /readyz on, or None
        self.metrics_server = None
        endpoints = kafka.endpoints(topic, group_id)  # before a consumer is built that can never connect
        self.group_id, self.topic, self.full_topic = endpoints.group_id, endpoints.topic, endpoints.full_topic
        self.schema_registry_client = endpoints.registry
        self.monitor = monitoring.Monitor(
            self.full_topic, unhealthy_after=conf.unhealthy_after_seconds(),
            broker_silence=conf.broker_silence_seconds(),
            max_poll_interval_ms=float(conf.kafka_config().get("max.poll.interval.ms",
                                                               monitoring.DEFAULT_MAX_POLL_INTERVAL_MS)))
        self.consumer = kafka.new_consumer(self.group_id, stats_cb=self.monitor.kafka_statistics,
                                           on_commit=self._on_commit)
        self.batches = BatchProcessor(endpoints, self.monitor, start=self.start,
                                      dlq_producer=dead_letters.new_producer(stats_cb=self.monitor.kafka_statistics))
        self.stats = self.batches.stats
        self.offsets = Offsets(self.consumer, self.full_topic, self.monitor, asynchronous=True)

    # --- start-up checks -----------------------------------------------------------------------------

    def check_ready(self):
        """
        Before the first poll: the topic exists (``NotReady`` also when Kafka does not answer in time), the
        replay start fits it (``BadStart``), the schema registry answers as one (``NotReady``; a registry
        that does not answer now is only logged: that is transient and batches are retried). One line says it.
        """
        partitions = preflight.check_topic(self.consumer, self.full_topic, PREFLIGHT_TIMEOUT_SECONDS)
        self._start_offsets = replay.plan(self.consumer, self.full_topic, self.start, partitions)
        url = conf.schema_registry_url()
        level = logging.INFO
        try:
            subjects = preflight.check_schema_registry(self.schema_registry_client, url)
            registry = f"schema registry {mask_url(url)} ({len(subjects)} subject(s))"
        except preflight.RegistryUnreachable as exc:
            level, registry = logging.WARNING, f"{exc} (batches are retried until it answers)"
        log.log(level, "ready: database %s; topic %s (%d partition(s)) of %s, group %s; %s",
                preflight.describe_database(), self.full_topic, len(partitions),
                mask_urls(str(conf.bootstrap_servers())), self.group_id, registry)

    # --- rebalances ----------------------------------------------------------------------------------

    def _on_assign(self, consumer, partitions):
        """On assignment: apply the replay start offsets and note the partitions."""
        for partition in partitions:
            if partition.partition in self._start_offsets:
                partition.offset = self._start_offsets.pop(partition.partition)
        consumer.assign(partitions)
        self.monitor.assigned(p.partition for p in partitions)
        self._waiting_since = None
        self._last_activity = time.monotonic()
        log.info("assigned %s", [(p.partition, p.offset) for p in partitions])

    def _on_commit(self, error, partitions):
        """librdkafka's ``on_commit`` (served by the polls): the result of an asynchronous commit."""
        self.offsets.on_commit(error, partitions)

    def _on_revoke(self, consumer, partitions):
        """Commit what was applied on the partitions being taken away (once), then forget it: not ours now."""
        self.offsets.revoke(consumer, partitions)
        self.monitor.revoked([p.partition for p in partitions])
        self._waiting_since = (time.monotonic(), datetime.datetime.now(datetime.timezone.utc))
        log.info("revoked %s", [p.partition for p in partitions])

    # --- the loop ------------------------------------------------------------------------------------

    def stop(self):
        """Finish the batch in hand, commit it and return from ``run`` (safe from a signal handler)."""
        self._stopping = True

    def run(self):
        """Consume until stopped, idle for ``until_idle`` seconds, or ``max_events`` handled. Returns stats."""
        stopped = "stopped"
        try:
            if self.metrics_address is not None:
                self.metrics_server = monitoring.serve(self.monitor, *self.metrics_address)
                host, port = self.metrics_server.server_address[:2]
                log.info("metrics on http://%s:%d/metrics (and /healthz, /readyz)", host, port)
            self.check_ready()
            self.consumer.subscribe([self.full_topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
            self._last_activity = time.monotonic()
            self._waiting_since = (self._last_activity, datetime.datetime.now(datetime.timezone.utc))
            self._loop()
            self._pause_fetching()
            self.offsets.commit_before_exit(serve=self._serve)
        except BaseException as exc:
            stopped = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, Exception):
                monitoring.record_exception()  # (a fatal error, for the host's monitoring)
            raise
        finally:
            self.monitor.stopped(stopped)
            self.consumer.close()
            if self.batches.dlq_producer.flush(EXIT_FLUSH_SECONDS):  # letters of a batch left unapplied
                self.batches.dlq_producer.purge()  # (it will be read again and dead-lettered then)
            if self.metrics_server is not None:
                self.metrics_server.shutdown()
                self.metrics_server.server_close()
        return self.stats

    def _loop(self):
        """Poll and process batches until stopped, idle for ``until_idle`` seconds, or ``max_events`` handled."""
        while not self._stopping:
            if self.max_events is not None and self.stats.events >= self.max_events:
                break
            want = self.batch_size if self.max_events is None else min(
                self.batch_size, self.max_events - self.stats.events)
            messages = self._poll(want)
            self.batches.dlq_producer.poll(0)  # (serves its statistics: unserved, they would pile up in memory)
            self.monitor.polled()
            now = time.monotonic()
            if messages:
                self._last_activity = now
                with monitoring.function_trace("academy_consumer.batch"):
                    if self.batches.process(messages, stopping=lambda: self._stopping):
                        self.offsets.commit(messages)
                self._report_lag(now)
                continue
            self.offsets.commit_uncommitted()  # commits that failed earlier (no-op when there are none)
            self._report_lag(now)
            if self._waiting_since is not None:
                self._log_waiting(now)
            elif self.until_idle is not None and now - self._last_activity >= self.until_idle:
                log.info("idle for %.1f s: stopping", self.until_idle)
                break

    def _report_lag(self, now):
        """Bring the lag gauges up to date (at most every ``LAG_SECONDS``) and log progress when it is due."""
        if now - self._lag_updated >= LAG_SECONDS:
            self._lag_updated = now
            self._lag_left = self._lag()
        self.monitor.progress(self._lag_left)

    def _lag(self):
        """The total lag of the assigned partitions (``Offsets.lags``) and its gauges; None when unknown."""
        try:
            assigned = [p.partition for p in self.consumer.assignment()]
            lags = self.offsets.lags(assigned)
        except KafkaException as exc:  # (the coordinator did not answer in time: next time)
            log.debug("lag not known now: %s", exc)
            return self._lag_left
        self.monitor.lag(lags)
        return sum(lags.values()) if len(lags) == len(assigned) else None

    def _log_waiting(self, now):
        """Waiting for an assignment is never fatal (a rebalance can last a session timeout): say so every 30 s."""
        since, wall = self._waiting_since
        if now - since >= WAITING_LOG_SECONDS and now - self._waiting_logged >= WAITING_LOG_SECONDS:
            self._waiting_logged = now
            log.warning("waiting for a partition assignment of %s in group %s since %s (%.0f s): the group "
                        "coordinator rebalances when the previous member leaves or its session times out",
                        self.full_topic, self.group_id, wall.isoformat(timespec="seconds"), now - since)

    def _pause_fetching(self):
        """Before the last commit: fetch nothing more (``_serve`` only hands librdkafka's callbacks over)."""
        try:
            self.consumer.pause(self.consumer.assignment())
        except KafkaException as exc:
            log.debug("not paused: %s", exc)

    def _serve(self, seconds):
        """Serve librdkafka's callbacks (commit results) for up to ``seconds``; a message polled meanwhile is
        dropped unapplied and uncommitted (the loop is over: it will be read again)."""
        self.consumer.consume(num_messages=1, timeout=seconds)

    def _poll(self, want):
        """
        Up to ``want`` messages: waits up to ``batch_wait`` for the first only, then takes what is already
        fetched, waiting at most ``BATCH_SETTLE_SECONDS`` for the rest of the fetch response the first came with
        (librdkafka hands a response over one record batch at a time): a lone event is applied at once, and
        under load batches fill from the fetched queue. A fatal Kafka error or a missing topic raises
        ``FatalError``.
        """
        first = self.consumer.consume(num_messages=1, timeout=self.batch_wait)
        rest = self.consumer.consume(num_messages=want - 1, timeout=min(BATCH_SETTLE_SECONDS, self.batch_wait)) \
            if want > 1 and first else []
        return self._usable(first + rest)

    def _usable(self, polled):
        """The messages of ``polled`` without the errors, each error handled (``FatalError`` or a line)."""
        messages = []
        for message in polled:
            error = message.error()
            if error is None:
                messages.append(message)
                continue
            kind = kafka.polled_error(error)
            if kind == kafka.FATAL:
                raise FatalError(f"fatal Kafka error: {error.str()}")
            if kind == kafka.MISSING_TOPIC:
                raise FatalError(f"topic {self.full_topic} does not exist")
            if kind == kafka.LOG:
                kafka.kafka_log.warning("Kafka reports: %s (the client retries by itself)", error.str())
        return messages
