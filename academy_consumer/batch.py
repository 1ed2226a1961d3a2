"""
One batch, from the polled messages to the rows and the dead letters (the consumer's loop hands each batch here;
the redrive uses the same pieces):

    message --decode.Decoder.decode--> AcademyEvent | Rejection  (a Rejection that points at a wrong schema
                                       registry is a FatalError: ``registry_check``)
    events  --apply.apply_changes--> one apply.Outcome per event, in ONE transaction, in offset order
    circuit breaker (inside the transaction, before anything is dead-lettered or committed)
    skipped outcomes and rejections --dead_letters.send--> the dead-letter topic, acknowledged
    applied events --host_signals.send_applied--> the host's own receivers

The guarantees of this step:

* a batch is applied in ONE database transaction, in offset order (events with the same key -- the
  academy uuid, hence the same partition -- apply in order), by ``apply.apply_changes``: the one
  implementation of the apply rules, whose outcomes do not depend on the batch size (docs/decisions/0001);
* an event that can never apply (undecodable value, missing/unknown/duplicated ``ce_type``, missing
  ``ce_time``, a payload the normalizer rejects, a key conflict, a time too far ahead) goes to the
  dead-letter topic with headers naming the original topic, partition, offset, error class and message;
* a transient failure (database unreachable, deadlock, lock timeout, schema registry or dead-letter topic
  unreachable or refusing) rolls the batch back and retries it with capped exponential backoff
  (``kafka.backoff``) -- never skipped; the wait for the dead letters and the pause between attempts end as soon
  as the consumer is told to stop (SIGTERM), which then leaves the batch unapplied and uncommitted;
* once the batch's transaction committed and its dead letters were acknowledged, each applied event is sent
  to the host's own receivers of its openedx-events signal (``host_signals``; skipped when there are none);
* a circuit breaker stops the consumer (``FatalError``) before it dead-letters more than
  ``conf.max_consecutive_dead_letters()`` events in a row of one error class.

Its offsets are the caller's to commit (``offsets``), once ``BatchProcessor.process`` returned True.
"""

import datetime
import logging
import time
from dataclasses import dataclass, field

from django.db import DatabaseError, close_old_connections, connections, transaction

from academy_consumer import conf, dead_letters, host_signals, kafka, monitoring
from academy_consumer.apply import ERRORS, SKIPPED, apply_changes
from academy_consumer.dead_letters import DeadLetter
from academy_consumer.decode import Decoder, Rejection
from academy_consumer.errors import AcademyEventRejected, FatalError, TransientError, database_failure, error_class
from academy_consumer.registry_check import RegistryCheck
from academy_consumer.replay import Start

log = logging.getLogger("academy_consumer.consumer")  # the consumer's lines, under one logger name


@dataclass
class AppliedBatch:
    """What ``BatchProcessor.apply`` did: the outcome name of each applied event and the ``DeadLetter`` s, in
    offset order; the newest event time (ce_time) among the applied events (None if none), the batch's event
    types, and the applied ``(message, AcademyEvent)`` pairs in offset order (for ``host_signals``)."""

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


class Breaker:
    """
    The circuit breaker: the run of consecutive dead letters of one error class (an applied event ends a run).
    More than ``max_run`` in a row is a ``FatalError``, raised before the batch is dead-lettered or committed:
    so many of one kind is the set-up's fault (a wrong registry, a producer bug), not the events'. 0 turns the
    breaker off.
    """

    def __init__(self, max_run):
        self.max_run = max_run
        self.run = (None, 0)  # (error class, how many events in a row were dead-lettered with it)
        self.pending = self.run  # the run once the batch in hand is through

    def check(self, messages, dead):
        """The run once this batch is through, kept as ``pending``; ``FatalError`` when it is too long."""
        classes = {id(letter.message): error_class(letter.error) for letter in dead}
        kind, count = self.run
        for message in messages:
            this = classes.get(id(message))
            kind, count = (this, count + 1 if this == kind else 1) if this else (None, 0)
            if self.max_run and count > self.max_run:
                raise FatalError(
                    f"circuit breaker: more than {self.max_run} events in a row would be dead-lettered as "
                    f"{kind} (the last at {message.topic()}[{message.partition()}]@{message.offset()}); stopped "
                    f"with none of this batch dead-lettered or committed. Fix the cause, or raise "
                    f"ACADEMY_CONSUMER_MAX_CONSECUTIVE_DEAD_LETTERS (0 turns the breaker off)")
        self.pending = (kind, count)

    def passed(self):
        """The batch went through: its run counts (once)."""
        self.run = self.pending


class BatchProcessor:
    """Decode, apply, dead-letter and signal batches of the topic of ``endpoints`` (a ``kafka.Endpoints``)."""

    def __init__(self, endpoints, monitor, *, start=None, max_dead_run=None, dlq_producer=None):
        self.full_topic = endpoints.full_topic
        self.dlq_topic = endpoints.dlq_topic
        self.monitor = monitor
        self.start = start or Start()
        self.decoder = Decoder(endpoints.registry)
        self.registry_check = RegistryCheck(endpoints.registry, endpoints.full_topic)
        self.breaker = Breaker(conf.max_consecutive_dead_letters() if max_dead_run is None else max_dead_run)
        self.dlq_producer = dead_letters.new_producer() if dlq_producer is None else dlq_producer
        self.stats = Stats()

    def process(self, messages, stopping=lambda: False):
        """
        Apply, dead-letter and signal one batch; retry it whole on transient failures. The circuit breaker
        is checked after the apply and before anything is dead-lettered or committed. True once the batch went
        through (its offsets may be committed); False when ``stopping()`` said to stop with it unapplied.
        """
        started = time.monotonic()
        to_apply = [m for m in messages if not self.start.skips(m)]
        applied = self._apply_until_done(to_apply, len(messages), stopping)
        if applied is None:
            return False
        for letter in applied.dead:
            message = letter.message
            log.warning("dead-lettered %s[%d]@%d (ce_id %s, academy %s): %s: %s", message.topic(),
                        message.partition(), message.offset(), dead_letters.header_text(message, "ce_id"),
                        letter.academy or "-", type(letter.error).__name__, letter.error)
        # Committed rows and acknowledged dead letters, offsets not yet committed: at least once to the host.
        host_signals.send_applied(applied.events, self.monitor)
        batch = self._count(applied, skipped=len(messages) - len(to_apply))
        # Logged before the commit: a crash between the two re-reads a logged batch (harmless), never
        # commits one that no line shows.
        took = time.monotonic() - started
        log.info("batch %s: %s (%.2f s)", positions(messages), batch.summary(), took)
        self.monitor.batch_done(batch.counts, applied.dead, took, applied.newest_time)
        monitoring.record_batch_attributes(self.full_topic, messages, batch.counts, applied.dead,
                                           applied.event_types)
        return True

    def _apply_until_done(self, to_apply, size, stopping):
        """``apply`` and ``send_dead_letters``, retried with backoff on a ``TransientError``; None when stopping."""
        attempt = 0
        while True:
            try:
                applied = self.apply(to_apply)
                self.send_dead_letters(applied.dead, stopping)
                self.breaker.passed()  # counted once, when the batch went through
                return applied
            except TransientError as exc:
                self.monitor.retrying(" ".join(str(exc).split())[:300])
                attempt += 1
                delay = kafka.backoff(attempt, conf.retry_max_seconds())
                log.warning("batch of %d events not applied (%s); retry %d in %.1f s", size, exc, attempt, delay)
                close_connections()
                if kafka.pause(delay, stopping):
                    log.warning("stopping with the batch unapplied and uncommitted; it will be read again")
                    return None

    def _count(self, applied, skipped):
        """The batch's counts by outcome, added to the run's ``stats``."""
        batch = Stats()
        for outcome in applied.outcomes:
            batch.add(outcome)
        if applied.dead:
            batch.add("dead_lettered", len(applied.dead))
        if skipped:
            batch.add("before_replay_time", skipped)
        for outcome, n in batch.counts.items():
            self.stats.add(outcome, n)
        self.stats.batches += 1
        return batch

    def apply(self, messages):
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
                self.registry_check.check(result, message)
            decoded.append(result)
        events = [(message, result) for message, result in zip(messages, decoded) if not isinstance(result, Rejection)]
        if not transaction.get_connection().in_atomic_block:  # (a dry-run redrive holds one open)
            close_old_connections()
        try:
            with transaction.atomic():
                results = iter(apply_changes([event.change for _, event in events]))
                applied = AppliedBatch([], [])
                for message, result in zip(messages, decoded):
                    if isinstance(result, Rejection):
                        applied.dead.append(DeadLetter(message, result.error))
                    else:
                        _add(applied, message, result, next(results))
                self.breaker.check(messages, applied.dead)
        except DatabaseError as exc:  # a statement, the transaction's commit, or the connection failed
            raise database_failure(exc) from exc
        return applied

    def send_dead_letters(self, dead, stopping=None):
        """
        Send ``dead`` to the dead-letter topic and wait until the broker took them (``TransientError`` if not, or
        when ``stopping()``).
        """
        dead_letters.send(self.dlq_producer, self.dlq_topic, dead, stopping)


def _add(applied, message, event, outcome):
    """Add one decoded event's apply ``outcome`` to ``applied``: an applied event, or a dead letter."""
    log.debug("%s %s: %s %s", event.event_type, outcome.uuid or outcome.name, outcome.outcome, outcome.reason)
    if outcome.outcome in (SKIPPED, ERRORS):
        applied.dead.append(DeadLetter(message, AcademyEventRejected(
            f"{event.event_type} for {outcome.uuid or outcome.name}: {outcome.reason}"),
            academy=outcome.uuid or event.who))
    else:
        applied.outcomes.append(outcome.outcome)
        applied.events.append((message, event))
        if applied.newest_time is None or event.time > applied.newest_time:
            applied.newest_time = event.time
    applied.event_types.add(event.event_type)


def positions(messages):
    """``topic[0]@10-19 [2]@5``: where a batch's messages are, per partition."""
    ranges = {}
    for message in messages:
        low, high = ranges.get(message.partition(), (message.offset(), message.offset()))
        ranges[message.partition()] = (min(low, message.offset()), max(high, message.offset()))
    parts = [f"[{p}]@{low}" + (f"-{high}" if high != low else "") for p, (low, high) in sorted(ranges.items())]
    return (messages[0].topic() if messages else "") + " ".join(parts)


def close_connections():
    """Close every database connection, ignoring those already gone."""
    for conn in connections.all():
        try:
            conn.close()
        except DatabaseError:
            pass
