"""
The consumer loop: poll a batch of academy events, decode it, apply it, dead-letter what can never apply,
commit. Each step is a call into its own module, and their results are read here as values:

    message --decode.Decoder.decode--> AcademyEvent | Rejection
    events  --apply.apply_changes--> one apply.Outcome per event, in one transaction
    skipped outcomes and rejections --dlq.send--> the dead-letter topic (before the offsets are committed)
    applied events --host_signals.send_applied--> the host's own receivers (before the offsets are committed)
    where to start --replay.plan--> start offsets; which exceptions mean what --errors

The delivery guarantees:

* a batch is applied in ONE database transaction, in offset order (events with the same key -- the
  academy uuid, hence the same partition -- apply in order), by ``apply.apply_changes``: the one
  implementation of the apply rules, whose outcomes do not depend on the batch size (docs/decisions/0001);
* an event that can never apply (undecodable value, missing/unknown/duplicated ``ce_type``, missing
  ``ce_time``, a payload the normalizer rejects, a key conflict, a time too far ahead) goes to the
  dead-letter topic with headers naming the original topic, partition, offset, error class and message;
* a transient failure (database unreachable, deadlock, lock timeout, schema registry or dead-letter topic
  unreachable) rolls the batch back and retries it with capped exponential backoff -- never skipped;
* once the batch's transaction committed and its dead letters were acknowledged, each applied event is sent
  to the host's own receivers of its openedx-events signal (``host_signals``; skipped when there are none);
* offsets are committed only after the batch's transaction committed, its dead letters were acknowledged
  and its events were sent (at-least-once; re-applying is harmless: upserts are idempotent and stale-guarded); a
  failed commit does not hold the loop up: its offsets are committed with the next batch or after the
  next poll, and on a clean stop;
* a group with no committed offset starts at the earliest retained event; replay: see ``replay``;
* configuration faults are not bad events: a schema id the registry does not know, when the registry knows
  none of the academy subjects or when the same id comes back on another event, is a ``FatalError`` (nothing
  dead-lettered, nothing committed); and a circuit breaker stops the consumer before it dead-letters more
  than ``conf.max_consecutive_dead_letters()`` events in a row of one error class;
* waiting for a partition assignment is never fatal (a rebalance can take a whole session timeout): it is
  logged every 30 s; ``--until-idle`` counts from the first assignment;
* librdkafka's own log lines and errors go through one Python logger, one line per distinct error per 30 s;
* ``stop()`` (SIGTERM/SIGINT) lets the batch in hand finish and commit; fatal errors raise.

The consumer uses confluent-kafka directly and edx-event-bus-kafka for its settings (see ``_bus_config``) and
its header -> metadata mapping (``host_signals``). The openedx-events signals stay the event contract: the stock
``consume_events`` command applies the same events through ``academy_consumer.receivers``, which call the same
apply functions, and this consumer sends the events it applied to the host's other receivers of those signals.
"""

import datetime
import logging
import math
import re
import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, close_old_connections, connections, transaction
# The event bus's settings contract (EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS, _API_KEY/_SECRET, EVENT_BUS_TOPIC_PREFIX,
# EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL/_API_KEY/_SECRET) is read by these functions of an internal module:
# edx-event-bus-kafka exports no public equivalent. So setup.cfg bounds it to the tested line (>=6.1,<7): a new
# major version may move or rename them.
from edx_event_bus_kafka.internal.config import get_full_topic, get_schema_registry_client, load_common_settings

from academy_consumer import conf, dlq, host_signals, monitoring, preflight, replay
from academy_consumer.apply import ERRORS, SKIPPED, apply_changes
from academy_consumer.decode import Decoder, Rejection
from academy_consumer.dlq import DeadLetter
from academy_consumer.errors import (
    AcademyEventRejected,
    BadKafkaConfig,
    FatalError,
    TransientError,
    database_failure,
    error_class,
    registry_unavailable,
)
from academy_consumer.redact import mask_url, mask_urls
from academy_consumer.replay import Start
from academy_consumer_signals import ACADEMY_SIGNALS

log = logging.getLogger(__name__)

COMMIT_RETRIES = 5
WAITING_LOG_SECONDS = 30.0  # how often "waiting for a partition assignment" is logged
KAFKA_LOG_SECONDS = 30.0  # one librdkafka line per distinct error per this many seconds
PREFLIGHT_TIMEOUT_SECONDS = 10.0  # longest the start-up checks wait for Kafka and the registry
LAG_SECONDS = 1.0  # how often the lag gauges are brought up to date


class _OncePer(logging.Filter):
    """
    Let a record through once per ``seconds`` per distinct message, digits ignored ("after 3ms",
    "5 identical error(s) suppressed" vary on every repetition): a broker that is down for an hour
    gives a few lines, not thousands.
    """

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds
        self._last = {}

    def filter(self, record):
        key = (record.levelno, re.sub(r"\d+", "#", record.getMessage()))
        now = time.monotonic()
        if now - self._last.get(key, -math.inf) < self.seconds:
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = now
        return True


# librdkafka's log lines (its ``logger`` setting) and client errors (``error_cb``), rate-limited.
kafka_log = logging.getLogger("academy_consumer.kafka")
kafka_log.addFilter(_OncePer(KAFKA_LOG_SECONDS))


def _kafka_error(error):
    """librdkafka's ``error_cb``: a client-level error (broker down, ...); the client retries by itself."""
    kafka_log.warning("Kafka: %s", error.str())


def kafka_client(kind, config):
    """
    ``kind(config)`` (a ``Consumer`` or ``Producer``) with librdkafka's logs and errors sent to ``kafka_log``;
    an unknown or invalid librdkafka property is a ``BadKafkaConfig`` (one line).
    """
    try:
        return kind({"logger": kafka_log, "error_cb": _kafka_error, **config})
    except (KafkaException, ValueError, TypeError) as exc:
        error = exc.args[0] if exc.args else exc
        text = error.str() if hasattr(error, "str") else str(error)
        raise BadKafkaConfig(f"ACADEMY_CONSUMER_KAFKA_CONFIG (librdkafka): {mask_urls(text)}") from None


@dataclass
class AppliedBatch:
    """What ``_apply_batch`` did: the outcome name of each applied event and the ``DeadLetter`` s, in offset
    order; the newest event time (ce_time) among the applied events (None if none), the batch's event types,
    and the applied ``(message, AcademyEvent)`` pairs in offset order (for ``host_signals``)."""

    outcomes: list
    dead: list
    newest_time: datetime.datetime | None = None
    event_types: set = field(default_factory=set)
    events: list = field(default_factory=list)


@dataclass
class Stats:
    """What a run did, by outcome (``created``, ``updated``, ... of the apply layer, plus ``dead_lettered``)."""

    counts: dict = field(default_factory=dict)
    batches: int = 0

    def add(self, outcome, n=1):
        self.counts[outcome] = self.counts.get(outcome, 0) + n

    @property
    def events(self):
        return sum(self.counts.values())

    def summary(self):
        return ", ".join(f"{key} {value}" for key, value in sorted(self.counts.items())) or "no events"


def _bus_config():
    """The event bus's connection settings for librdkafka (bootstrap servers, SASL when a key is set)."""
    conf.require_event_bus(registry=False)
    return load_common_settings()


class AcademyEventConsumer:
    """Consume the academy topic in batches; see the module docstring for the guarantees."""

    def __init__(self, topic=None, group_id=None, *, start=None, batch_size=None, batch_wait=None,
                 max_events=None, until_idle=None, metrics_address=None):
        self.start = start or Start()
        self.batch_size = batch_size or conf.batch_size()
        self.batch_wait = conf.batch_wait_seconds() if batch_wait is None else batch_wait
        self.max_events = max_events
        self.until_idle = until_idle
        self.max_dead_run = conf.max_consecutive_dead_letters()
        self.stats = Stats()
        self._stopping = False
        self._waiting_since = None  # (monotonic, wall clock) while no partitions are assigned
        self._waiting_logged = 0.0
        self._last_activity = time.monotonic()
        self._start_offsets = {}  # partition -> offset to seek on first assignment
        self._dead_run = (None, 0)  # (error class, how many events in a row were dead-lettered with it)
        self._pending_dead_run = self._dead_run  # the run once the batch in hand is through
        self._unknown_schemas = {}  # schema id the registry does not know -> {(partition, offset)} using it
        self._registry_has_academy_subjects = False
        self._uncommitted = {}  # (topic, partition) -> offset after the newest applied event, until committed
        self._commit_failures = 0
        self._committed = {}  # partition -> the group's committed offset, as far as this run knows it
        self._lag_updated = -math.inf
        self._lag_left = None  # the total lag at the last update (None: not known yet)
        self.metrics_address = metrics_address  # (host, port) to serve /metrics, /healthz, /readyz on, or None
        self.metrics_server = None
        conf.require_event_bus()  # before a consumer is built that can never connect
        self.group_id = conf.group_id() if group_id is None else group_id
        if not str(self.group_id).strip():
            raise BadKafkaConfig("the consumer group id (--group-id / ACADEMY_CONSUMER_GROUP_ID) is empty")
        if topic is not None and not str(topic).strip():
            raise BadKafkaConfig("--topic is empty")
        self.topic = topic or conf.topic()
        try:
            self.schema_registry_client = get_schema_registry_client()
        except ValueError as exc:  # confluent-kafka refuses the registry URL (malformed, credentials in it, ...)
            raise BadKafkaConfig(f"EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL: {mask_urls(exc)}") from None
        if self.schema_registry_client is None:
            raise ImproperlyConfigured("EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL is not set")
        self.decoder = Decoder(self.schema_registry_client)
        self.full_topic = get_full_topic(self.topic)
        self.dlq_topic = get_full_topic(conf.dlq_topic(self.topic))
        if self.dlq_topic == self.full_topic:
            raise BadKafkaConfig(f"the dead-letter topic is the consumed topic {self.full_topic}: every dead "
                                 f"letter would be read again (check ACADEMY_EVENTS_DLQ_TOPIC)")
        self.consumer = self._create_consumer()
        self.monitor = monitoring.Monitor(
            self.full_topic, unhealthy_after=conf.unhealthy_after_seconds(),
            max_poll_interval_ms=float(conf.kafka_config().get("max.poll.interval.ms",
                                                               monitoring.DEFAULT_MAX_POLL_INTERVAL_MS)))
        # A dead letter is as large as the event it copies, which the broker took (librdkafka's default 1 MB
        # client-side limit would refuse it): let the broker judge the size.
        self.dlq_producer = kafka_client(Producer, {
            **_bus_config(), "enable.idempotence": True, "acks": "all",
            "message.max.bytes": dlq.MESSAGE_MAX_BYTES, **conf.producer_kafka_config()})

    # --- configuration -------------------------------------------------------------------------------

    def _create_consumer(self):
        """
        The stock consumer's configuration, plus: start at the earliest event; no auto-commit; static
        membership (``group.instance.id``) when ``ACADEMY_CONSUMER_GROUP_INSTANCE_ID`` is set.
        """
        instance = conf.group_instance_id()
        return kafka_client(Consumer, {
            **_bus_config(),
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **({"group.instance.id": instance} if instance else {}),
            **conf.kafka_config(),
        })

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

    def _on_revoke(self, consumer, partitions):
        """Commit what was applied on the partitions being taken away (once), then forget it: not ours now."""
        revoked = {(p.topic, p.partition) for p in partitions}
        pending = [TopicPartition(t, p, o) for (t, p), o in self._uncommitted.items() if (t, p) in revoked]
        if pending:
            try:
                consumer.commit(offsets=pending, asynchronous=False)
            except KafkaException as exc:
                log.warning("offsets %s not committed before the rebalance (%s); those events will be read and "
                            "applied again (harmless)", [(o.partition, o.offset) for o in pending], exc)
            for key in revoked:
                self._uncommitted.pop(key, None)
        for _, partition in revoked:
            self._committed.pop(partition, None)
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
            while not self._stopping:
                if self.max_events is not None and self.stats.events >= self.max_events:
                    break
                want = self.batch_size if self.max_events is None else min(
                    self.batch_size, self.max_events - self.stats.events)
                messages = self._poll(want)
                self.monitor.polled()
                now = time.monotonic()
                if messages:
                    self._last_activity = now
                    with monitoring.function_trace("academy_consumer.batch"):
                        self._process_batch(messages)
                    self._report_lag(now)
                    continue
                self._commit_uncommitted()  # commits that failed earlier (no-op when there are none)
                self._report_lag(now)
                if self._waiting_since is not None:
                    self._log_waiting(now)
                elif self.until_idle is not None and now - self._last_activity >= self.until_idle:
                    log.info("idle for %.1f s: stopping", self.until_idle)
                    break
            self._commit_before_exit()
        except BaseException as exc:
            stopped = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, Exception):
                monitoring.record_exception()  # (a fatal error, for the host's monitoring)
            raise
        finally:
            self.monitor.stopped(stopped)
            self.consumer.close()
            self.dlq_producer.flush(10)
            if self.metrics_server is not None:
                self.metrics_server.shutdown()
                self.metrics_server.server_close()
        return self.stats

    def _report_lag(self, now):
        """Bring the lag gauges up to date (at most every ``LAG_SECONDS``) and log progress when it is due."""
        if now - self._lag_updated >= LAG_SECONDS:
            self._lag_updated = now
            self._lag_left = self._lag()
        self.monitor.progress(self._lag_left)

    def _lag(self):
        """
        The total lag of the assigned partitions (end offset minus the group's committed offset, or minus the
        low watermark where the group committed nothing), and the per-partition gauges; None when unknown.
        End offsets are the client's cached high watermarks (updated by every fetch: no request); a committed
        offset this run did not commit itself is asked of the coordinator once.
        """
        try:
            assigned = [p.partition for p in self.consumer.assignment()]
            unknown = [TopicPartition(self.full_topic, p) for p in assigned if p not in self._committed]
            if unknown:
                for found in self.consumer.committed(unknown, timeout=2):
                    self._committed[found.partition] = found.offset if found.offset >= 0 else None
            lags = {}
            for partition in assigned:
                low, high = self.consumer.get_watermark_offsets(TopicPartition(self.full_topic, partition),
                                                                cached=True)
                if high < 0:
                    continue  # nothing fetched from this partition yet
                committed = self._committed.get(partition)
                lags[partition] = max(0, high - (committed if committed is not None else max(low, 0)))
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

    def _poll(self, want):
        """Up to ``want`` messages; a fatal Kafka error or a missing topic raises ``FatalError``."""
        messages = []
        for message in self.consumer.consume(num_messages=want, timeout=self.batch_wait):
            error = message.error()
            if error is None:
                messages.append(message)
            elif error.fatal():
                raise FatalError(f"fatal Kafka error: {error.str()}")
            # librdkafka's client-side error codes are spelled with a leading underscore (RD_KAFKA_RESP_ERR__*):
            # public constants of confluent-kafka, not private members.
            elif error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART,
                                  KafkaError._UNKNOWN_TOPIC):  # pylint: disable=protected-access
                raise FatalError(f"topic {self.full_topic} does not exist")
            elif error.code() != KafkaError._PARTITION_EOF:  # pylint: disable=protected-access
                kafka_log.warning("Kafka reports: %s (the client retries by itself)", error.str())
        return messages

    def _process_batch(self, messages):
        """
        Apply, dead-letter and commit one batch; retry it whole on transient failures. The circuit breaker
        is checked after the apply and before anything is dead-lettered or committed.
        """
        started = time.monotonic()
        to_apply = [m for m in messages if not self.start.skips(m)]
        skipped = len(messages) - len(to_apply)
        attempt = 0
        while True:
            try:
                applied = self._apply_batch(to_apply)
                self._send_dead_letters(applied.dead)
                self._dead_run = self._pending_dead_run  # counted once, when the batch went through
                break
            except TransientError as exc:
                self.monitor.retrying(" ".join(str(exc).split())[:300])
                attempt += 1
                delay = min(conf.retry_max_seconds(), 0.2 * 2 ** min(attempt, 10))
                log.warning("batch of %d events not applied (%s); retry %d in %.1f s",
                            len(messages), exc, attempt, delay)
                _close_connections()
                if self._stopping:
                    log.warning("stopping with the batch unapplied and uncommitted; it will be read again")
                    return
                time.sleep(delay)
        outcomes, dead = applied.outcomes, applied.dead
        for letter in dead:
            message = letter.message
            log.warning("dead-lettered %s[%d]@%d (ce_id %s, academy %s): %s: %s", message.topic(),
                        message.partition(), message.offset(), dlq.header_text(message, "ce_id"),
                        letter.academy or "-", type(letter.error).__name__, letter.error)
        # Committed rows and acknowledged dead letters, offsets not yet committed: at least once to the host.
        host_signals.send_applied(applied.events, self.monitor)
        batch = Stats()
        for outcome in outcomes:
            batch.add(outcome)
        if dead:
            batch.add("dead_lettered", len(dead))
        if skipped:
            batch.add("before_replay_time", skipped)
        for outcome, n in batch.counts.items():
            self.stats.add(outcome, n)
        self.stats.batches += 1
        # Logged before the commit: a crash between the two re-reads a logged batch (harmless), never
        # commits one that no line shows.
        took = time.monotonic() - started
        log.info("batch %s: %s (%.2f s)", _positions(messages), batch.summary(), took)
        self.monitor.batch_done(batch.counts, dead, took, applied.newest_time)
        monitoring.record_batch_attributes(self.full_topic, messages, batch.counts, dead, applied.event_types)
        self._commit(messages)

    def _apply_batch(self, messages):
        """
        Decode ``messages``, then apply the academy events among them in ONE transaction, in offset order.
        Returns an ``AppliedBatch``: the outcome name of each applied event, the ``DeadLetter`` s, in offset
        order, of the messages that can never apply, the newest applied event time and the event types. The
        circuit breaker runs inside the transaction: when it trips, nothing of the batch is applied,
        dead-lettered or committed.
        """
        decoded = []
        for message in messages:
            result = self.decoder.decode(message)  # TransientError when the registry cannot answer
            if isinstance(result, Rejection):
                self._check_configuration(result, message)
            decoded.append(result)
        events = [(message, result) for message, result in zip(messages, decoded) if not isinstance(result, Rejection)]
        if not transaction.get_connection().in_atomic_block:  # (a dry-run redrive holds one open)
            close_old_connections()
        try:
            with transaction.atomic():
                results = iter(apply_changes([event.change for _, event in events]))
                applied = AppliedBatch([], [])
                outcomes, dead = applied.outcomes, applied.dead
                for message, result in zip(messages, decoded):
                    if isinstance(result, Rejection):
                        dead.append(DeadLetter(message, result.error))
                        continue
                    outcome = next(results)
                    log.debug("%s %s: %s %s", result.event_type, outcome.uuid or outcome.name, outcome.outcome,
                              outcome.reason)
                    if outcome.outcome in (SKIPPED, ERRORS):
                        dead.append(DeadLetter(message, AcademyEventRejected(
                            f"{result.event_type} for {outcome.uuid or outcome.name}: {outcome.reason}"),
                            academy=outcome.uuid or result.who))
                    else:
                        outcomes.append(outcome.outcome)
                        applied.events.append((message, result))
                        if applied.newest_time is None or result.time > applied.newest_time:
                            applied.newest_time = result.time
                    applied.event_types.add(result.event_type)
                self._pending_dead_run = self._breaker(messages, dead)
        except DatabaseError as exc:  # a statement, the transaction's commit, or the connection failed
            raise database_failure(exc) from exc
        return applied

    def _send_dead_letters(self, dead):
        dlq.send(self.dlq_producer, self.dlq_topic, dead)

    def _breaker(self, messages, dead):
        """
        The circuit breaker: the run of consecutive dead letters of one error class once this batch is
        through (an applied event ends a run). More than ``max_dead_run`` in a row is a ``FatalError``,
        raised before this batch is dead-lettered or committed: so many of one kind is the set-up's fault
        (a wrong registry, a producer bug), not the events'. Returns the new run; 0 turns the breaker off.
        """
        classes = {id(letter.message): error_class(letter.error) for letter in dead}
        kind, count = self._dead_run
        for message in messages:
            this = classes.get(id(message))
            kind, count = (this, count + 1 if this == kind else 1) if this else (None, 0)
            if self.max_dead_run and count > self.max_dead_run:
                raise FatalError(
                    f"circuit breaker: more than {self.max_dead_run} events in a row would be dead-lettered as "
                    f"{kind} (the last at {message.topic()}[{message.partition()}]@{message.offset()}); stopped "
                    f"with none of this batch dead-lettered or committed. Fix the cause, or raise "
                    f"ACADEMY_CONSUMER_MAX_CONSECUTIVE_DEAD_LETTERS (0 turns the breaker off)")
        return kind, count

    # --- configuration faults are not bad events -----------------------------------------------------

    def _check_configuration(self, rejection, message):
        """A ``FatalError`` when ``rejection`` points at a wrong schema registry rather than a bad event."""
        if rejection.unknown_schema_id is not None:
            self._check_unknown_schema(rejection.unknown_schema_id, message)
        elif rejection.schema_mismatch:
            self._check_registry_knows_academy(
                f"the writer schema of {message.topic()}[{message.partition()}]@{message.offset()} is no academy "
                f"schema")

    def _check_unknown_schema(self, schema_id, message):
        """
        A schema id the registry does not know is a corrupt message only if the registry is the right one:
        a ``FatalError`` (a configuration fault: nothing dead-lettered or committed) when the registry knows
        none of the academy subjects of the topic, or when a second event uses the same unknown id.
        """
        url = mask_url(conf.schema_registry_url())
        seen = self._unknown_schemas.setdefault(schema_id, set())
        seen.add((message.partition(), message.offset()))
        if len(seen) > 1:
            raise FatalError(f"schema id {schema_id} is unknown to the schema registry {url} yet used by {len(seen)} "
                             f"events of {self.full_topic}: is EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL the registry "
                             f"the producers use? (nothing dead-lettered or committed)")
        self._check_registry_knows_academy(f"schema id {schema_id} not found")

    def _check_registry_knows_academy(self, detail):
        """
        A ``FatalError`` (a configuration fault) when the schema registry knows none of the academy subjects
        of the topic: academy events were then produced through another registry, and no event of them can
        be decoded here. Asked once per run, when an event first fails on its schema.
        """
        url = mask_url(conf.schema_registry_url())
        if self._registry_has_academy_subjects:
            return
        try:
            subjects = self.schema_registry_client.get_subjects()
        except Exception as exc:
            raise (TransientError if registry_unavailable(exc) else FatalError)(
                f"schema registry {url}: {type(exc).__name__}: {exc}") from exc
        prefixes = tuple(f"{self.full_topic}-{signal.event_type}" for signal in ACADEMY_SIGNALS)
        if not any(str(subject).startswith(prefixes) for subject in subjects):
            raise FatalError(f"the schema registry {url} knows none of the academy schemas of {self.full_topic} "
                             f"({detail}; no subject {self.full_topic}-<academy event type>): "
                             f"is EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL right? (nothing dead-lettered or committed)")
        self._registry_has_academy_subjects = True

    # --- commits -------------------------------------------------------------------------------------

    def _commit(self, messages):
        """Commit the offset after the last event of each partition in the batch (and any earlier, uncommitted)."""
        for message in messages:
            key = (message.topic(), message.partition())
            self._uncommitted[key] = max(self._uncommitted.get(key, 0), message.offset() + 1)
        self._commit_uncommitted()

    def _commit_uncommitted(self):
        """
        Commit the offsets of the applied batches not committed yet; True when none is left.

        A failed commit (broker or coordinator unavailable, group rebalancing, ...) is not retried here: its
        offsets are kept and committed with the next batch or after the next poll -- polling is also what lets
        the client reconnect and rejoin its group -- so the loop never stalls on it and nothing applied is
        left uncommitted once the broker answers again. A revoke drops the offsets of its partitions.
        """
        if not self._uncommitted:
            return True
        offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in self._uncommitted.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if error is not None and getattr(error, "fatal", lambda: False)():
                raise FatalError(f"fatal Kafka error on commit: {error}") from exc
            self.monitor.commit_failed()
            self._commit_failures += 1
            if self._commit_failures & (self._commit_failures - 1) == 0:  # 1st, 2nd, 4th, 8th... failure in a row
                log.warning("offset commit failed (%s), %d time(s) in a row; retried after the next poll",
                            exc, self._commit_failures)
            return False
        if self._commit_failures:
            log.info("offsets committed after %d failed attempt(s)", self._commit_failures)
        self._commit_failures = 0
        for (topic, partition), offset in self._uncommitted.items():
            if topic == self.full_topic:
                self._committed[partition] = offset
        self._uncommitted.clear()
        self.monitor.committed()
        return True

    def _commit_before_exit(self):
        """A clean stop: commit what is still uncommitted, retrying for a few seconds."""
        for attempt in range(1, COMMIT_RETRIES + 1):
            if self._commit_uncommitted():
                return
            if attempt < COMMIT_RETRIES:
                time.sleep(min(1.0, 0.2 * 2 ** attempt))
        log.warning("offsets %s not committed; those events will be read and applied again (harmless)",
                    sorted((partition, offset) for (_, partition), offset in self._uncommitted.items()))


def _positions(messages):
    """``topic[0]@10-19 [2]@5``: where a batch's messages are, per partition."""
    ranges = {}
    for message in messages:
        low, high = ranges.get(message.partition(), (message.offset(), message.offset()))
        ranges[message.partition()] = (min(low, message.offset()), max(high, message.offset()))
    parts = [f"[{p}]@{low}" + (f"-{high}" if high != low else "") for p, (low, high) in sorted(ranges.items())]
    return (messages[0].topic() if messages else "") + " ".join(parts)


def _close_connections():
    """Close every database connection, ignoring those already gone."""
    for conn in connections.all():
        try:
            conn.close()
        except DatabaseError:
            pass
