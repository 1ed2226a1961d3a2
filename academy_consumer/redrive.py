"""
The redrive: re-apply dead letters through the consumer's own pieces -- the same ``batch.BatchProcessor``
(decoding through the schema registry, apply layer, transaction, error classification, dead-letter producer),
``offsets.Offsets`` and ``kafka`` helpers -- reading the dead-letter topic (``dead_letters``) instead of the
academy topic. Its rules:

* Position: the consumer group ``<ACADEMY_CONSUMER_GROUP_ID>-redrive`` on the dead-letter topic. A run reads from
  the committed position (the beginning when there is none) to the end the topic had when the run started, and
  commits after each batch, once its events are applied and its failures re-dead-lettered (like the consumer).
* Filters (``--since``, ``--error-class``) never skip a letter for good: in each partition the position stops at
  the first letter the filters leave out, so a later run (say without filters) still reaches it. A matching
  letter after that point is applied all the same (harmless: idempotent and stale-guarded) but, should it fail
  again, it is left where it is rather than copied (the next run reaching it tries it again): nothing is
  duplicated.
* What fails again goes back to the dead-letter topic: the event's key, value and own headers, its original
  ``dlq-original-topic/-partition/-offset``, fresh ``dlq-error-class`` / ``dlq-error-message`` and
  ``dlq-redrive-count`` incremented. When those copies directly follow the run's end, the position is
  committed past them too, so a rerun does nothing: a letter that failed again is retried only once the
  redrive position is moved back to it.
* A transient failure (database down, dead-letter topic unreachable) re-dead-letters nothing: the batch is
  retried a few times with backoff, then the run stops (exit 1) with that batch uncommitted.
* The letters a run applies are sent to the host's own receivers of their signal, as the consumer sends the
  events it applies (``host_signals``: after the batch's transaction and re-dead-lettering, before its
  commit), when they are applied: out of their original order.
* Dry run: every matching letter is applied inside one transaction that is rolled back; nothing is
  re-dead-lettered, nothing committed, nothing sent to the host's receivers.
* No circuit breaker: letters failing again is what a redrive may well find.
"""

import dataclasses
import logging
import time

from django.db import transaction

from academy_consumer import conf, dead_letters, host_signals, kafka, monitoring
from academy_consumer.batch import BatchProcessor, close_connections
from academy_consumer.dead_letters import Letter
from academy_consumer.errors import TransientError
from academy_consumer.offsets import Offsets

log = logging.getLogger("academy_consumer.dead_letters")  # the redrive's lines, as the command's module names them

REDRIVE_ATTEMPTS = 5  # tries of a batch that meets a transient failure before the run stops


class AsEvent:
    """
    A dead letter presented as the event it was, to the consumer's apply and dead-letter code: the original
    topic, partition and offset, the event's own headers (no ``dlq-*``) plus the incremented redrive count.
    """

    def __init__(self, letter):
        self.letter = letter
        own = [(k, v) for k, v in (letter.message.headers() or []) if not k.startswith(dead_letters.PREFIX)]
        self._headers = own + [(dead_letters.REDRIVE_COUNT, str(letter.redrive_count + 1).encode())]

    def topic(self):
        return self.letter.original_topic or self.letter.message.topic()

    def partition(self):
        return self.letter.original_partition if self.letter.original_partition is not None else -1

    def offset(self):
        return self.letter.original_offset if self.letter.original_offset is not None else -1

    def headers(self):
        return list(self._headers)

    def key(self):
        return self.letter.message.key()

    def value(self):
        return self.letter.message.value()

    def timestamp(self):
        return self.letter.message.timestamp()

    def error(self):
        return None


@dataclasses.dataclass
class Result:
    """One redriven letter: the apply outcome (``created``, ``updated``, ... or ``failed``) and why."""

    letter: Letter
    outcome: str
    reason: str = ""
    back_in_dlq: bool = False

    def as_dict(self):
        return {**self.letter.as_dict(), "outcome": self.outcome, "reason": self.reason,
                "back_in_dead_letter_topic": self.back_in_dlq}


class _RecordingProducer:
    """The dead-letter producer, noting where each copy landed (to commit past the run's own copies)."""

    def __init__(self, producer):
        self.producer = producer
        self.landed = {}  # partition -> {offsets}

    def produce(self, topic, on_delivery, **kwargs):
        """``Producer.produce``, noting the partition and offset each copy lands at."""
        def delivered(err, msg):
            if err is None:
                self.landed.setdefault(msg.partition(), set()).add(msg.offset())
            on_delivery(err, msg)
        self.producer.produce(topic, on_delivery=delivered, **kwargs)

    def flush(self, *args):
        return self.producer.flush(*args)


class Redrive:
    """Re-apply dead letters through the consumer's apply path; see the module docstring for the rules."""

    def __init__(self, *, since=None, error_class=None, dry_run=False):
        self.since, self.error_class, self.dry_run = since, error_class, dry_run
        self.batch_size = conf.batch_size()
        endpoints = kafka.endpoints(conf.topic(), dead_letters.redrive_group_id())
        self.dlq_topic = endpoints.dlq_topic
        # Reads the dead-letter topic by assignment and commits for its group: no static membership.
        self.consumer = kafka.new_reader(endpoints.group_id)
        self.monitor = monitoring.Monitor(  # (never served: what the pieces report goes nowhere)
            endpoints.full_topic, unhealthy_after=conf.unhealthy_after_seconds(),
            max_poll_interval_ms=monitoring.DEFAULT_MAX_POLL_INTERVAL_MS)
        self.dlq_producer = _RecordingProducer(dead_letters.new_producer())
        self.batches = BatchProcessor(endpoints, self.monitor, max_dead_run=0, dlq_producer=self.dlq_producer)
        self.offsets = Offsets(self.consumer, endpoints.full_topic, self.monitor)
        self.results = []
        self._left_out = {}  # partition -> offset of the first letter the filters left out

    def redrive(self):
        """Redrive the matching letters from the position to the current end; returns the ``Result`` s."""
        try:
            partitions = dead_letters.partitions_of(self.consumer, self.dlq_topic)
            marks = dead_letters.bounds(self.consumer, self.dlq_topic, partitions)
            committed = dead_letters.redrive_position(self.consumer, self.dlq_topic, partitions)
            starts = {p: max(low, committed.get(p) or 0) for p, (low, _) in marks.items()}
            ends = {p: high for p, (_, high) in marks.items()}
            self._left_out = {}  # partition -> offset of the first letter the filters left out
            if self.dry_run:
                with transaction.atomic():
                    self._run(starts, ends)
                    transaction.set_rollback(True)
            else:
                self._run(starts, ends)
                self._commit_past_own_copies(ends)
                self.offsets.commit_before_exit()
        finally:
            self.consumer.close()
            self.dlq_producer.flush(10)
        return self.results

    def _run(self, starts, ends):
        """Read the dead-letter topic from ``starts`` to ``ends`` and handle the letters batch by batch."""
        batch = []
        for message in dead_letters.read_range(self.consumer, self.dlq_topic, starts, ends):
            batch.append(Letter.of(message))
            if len(batch) >= self.batch_size:
                self._handle(batch)
                batch = []
        if batch:
            self._handle(batch)

    def _handle(self, letters):
        """One batch: apply the matching letters, re-dead-letter what fails again, then commit."""
        chosen = []
        for letter in letters:
            if letter.matches(self.since, self.error_class):
                chosen.append(letter)
            else:
                self._left_out.setdefault(letter.partition, letter.offset)
        if self.dry_run:
            self._dry(chosen)
            return
        events = [AsEvent(letter) for letter in chosen]
        applied = self._apply(events)
        self._record(events, applied.outcomes, {id(d.message): d.error for d in applied.dead})
        for letter in letters:
            if self._passed(letter):
                self.offsets.advance(self.dlq_topic, letter.partition, letter.offset + 1)
        host_signals.send_applied(applied.events, self.monitor)  # as the consumer: applied, not yet committed
        self.offsets.commit_uncommitted()

    def _apply(self, events):
        """Apply ``events`` and re-dead-letter what fails again, retried a few times on a ``TransientError``."""
        for attempt in range(1, REDRIVE_ATTEMPTS + 1):
            try:
                applied = self.batches.apply(events)
                self.batches.send_dead_letters([d for d in applied.dead if self._passed(d.message.letter)])
                return applied
            except TransientError as exc:
                if attempt == REDRIVE_ATTEMPTS:
                    raise TransientError(f"{exc} ({attempt} attempts; this batch was not committed)") from exc
                delay = kafka.backoff(attempt, conf.retry_max_seconds())
                log.warning("batch of %d dead letters not redriven (%s); retry %d in %.1f s", len(events), exc,
                            attempt, delay)
                close_connections()
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _passed(self, letter):
        """Whether the position will move past ``letter``: no letter before it in its partition was left out."""
        first = self._left_out.get(letter.partition)
        return first is None or letter.offset < first

    def _record(self, events, outcomes, failed, dry_run=False):
        """One ``Result`` per redriven letter: its outcome, or ``failed`` with the reason it failed again."""
        outcomes = iter(outcomes)
        for event in events:
            cause = failed.get(id(event))
            if cause is None:
                self.results.append(Result(event.letter, next(outcomes)))
            else:
                self.results.append(Result(event.letter, "failed", f"{type(cause).__name__}: {cause}",
                                           back_in_dlq=not dry_run and self._passed(event.letter)))

    def _dry(self, letters):
        """The same apply, inside the dry run's rolled-back transaction; nothing is sent or committed."""
        events = [AsEvent(letter) for letter in letters]
        applied = self.batches.apply(events)
        self._record(events, applied.outcomes, {id(d.message): d.error for d in applied.dead}, dry_run=True)

    def _commit_past_own_copies(self, ends):
        """Move the position over this run's own copies when they directly follow the run's end."""
        for partition, end in ends.items():
            if partition in self._left_out:
                continue
            landed, position = self.dlq_producer.landed.get(partition, set()), end
            while position in landed:
                position += 1
            if position > end:
                self.offsets.advance(self.dlq_topic, partition, position)
