"""
Offsets: what is applied, what is committed, and when.

* ``applied`` notes the offset after each applied (or dead-lettered) event, per partition, until it is committed;
* ``commit_uncommitted`` commits all of them at once after a batch (or after a poll, for those a failed commit
  left): offsets are committed only after the batch's transaction committed, its dead letters were
  acknowledged and its events were sent to the host's receivers (at-least-once; re-applying is harmless:
  upserts are idempotent and stale-guarded);
* the consumer's commits are asynchronous (``asynchronous=True``): the loop never waits on the broker for one.
  librdkafka reports each result to ``on_commit`` (its ``on_commit`` callback, served by the loop's polls);
  offsets whose commit failed are committed again with the next batch or after the next poll. Each partition's
  commits only move forward: an offset is sent again only when no higher one was sent or committed since, so
  a late failure never sends an older position after a newer one, and nothing applied is skipped;
* a clean stop commits what is left and waits for the answers at most ``EXIT_COMMIT_SECONDS``
  (``commit_before_exit``); a revoke commits what was applied on the partitions taken away, without waiting,
  then forgets them (``revoke``): their events are read and applied again if that commit does not go through;
* ``committed`` is the group's committed offset per partition of the consumed topic as far as this run knows it,
  which the lag is counted from (``lags``).

The redrive, a client that is no group member and has no ``on_commit``, commits synchronously
(``asynchronous=False``).
"""

import logging
import time

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from academy_consumer import kafka
from academy_consumer.errors import FatalError

log = logging.getLogger("academy_consumer.consumer")  # the consumer's lines, under one logger name

EXIT_COMMIT_SECONDS = 5.0  # longest a clean stop waits for its last commit
COMMITTED_TIMEOUT_SECONDS = 2.0  # longest the lag waits for the coordinator to give a committed offset


def _fatal(error):
    """Whether a commit's ``KafkaError`` (or None) is fatal: the client cannot go on."""
    return error is not None and getattr(error, "fatal", lambda: False)()


class Offsets:
    """The offsets of one consumer client: those to commit, those it knows committed, and committing them."""

    def __init__(self, consumer, topic, monitor, *, asynchronous=False):
        self.consumer = consumer
        self.topic = topic  # the consumed topic (prefixed): ``committed`` is about its partitions
        self.monitor = monitor
        self.asynchronous = asynchronous
        self.uncommitted = {}  # (topic, partition) -> offset after the newest applied event, until committed
        self.in_flight = {}  # (topic, partition) -> the highest offset sent and not answered yet (asynchronous)
        self.committed = {}  # partition -> the group's committed offset, as far as this run knows it
        self._failures = 0
        self._fatal = None  # a fatal commit error an ``on_commit`` reported, raised by the next commit

    def advance(self, topic, partition, offset):
        """Note that ``topic[partition]`` is done up to (not including) ``offset``."""
        key = (topic, partition)
        self.uncommitted[key] = max(self.uncommitted.get(key, 0), offset)

    def applied(self, messages):
        """Note the offset after the last of ``messages`` of each partition."""
        for message in messages:
            self.advance(message.topic(), message.partition(), message.offset() + 1)

    def commit(self, messages):
        """Commit the offset after the last event of each partition in the batch (and any earlier, uncommitted)."""
        self.applied(messages)
        self.commit_uncommitted()

    @property
    def pending(self):
        """Offsets not known committed yet: to send, or sent and not answered."""
        return bool(self.uncommitted or self.in_flight)

    def commit_uncommitted(self):
        """
        Commit the offsets of the applied batches not committed yet; True when the commit was sent (or, not
        ``asynchronous``, went through) or there was none to send.

        A failed commit (broker or coordinator unavailable, group rebalancing, ...) is not retried here: its
        offsets are kept and committed with the next batch or after the next poll -- polling is also what lets
        the client reconnect and rejoin its group -- so the loop never stalls on it and nothing applied is
        left uncommitted once the broker answers again. A revoke drops the offsets of its partitions.
        """
        if self._fatal is not None:
            raise self._fatal
        if not self.uncommitted:
            return True
        sent = dict(self.uncommitted)
        offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in sent.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=self.asynchronous)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if _fatal(error):
                raise FatalError(f"fatal Kafka error on commit: {error}") from exc
            self._failed(exc)
            return False
        self.uncommitted.clear()
        if self.asynchronous:
            for key, offset in sent.items():
                self.in_flight[key] = max(self.in_flight.get(key, 0), offset)
        else:
            self._done(sent)
        return True

    def on_commit(self, error, partitions):
        """librdkafka's ``on_commit``: the result of an asynchronous commit, per partition."""
        done, failed = {}, None
        for tp in partitions:
            key, problem = (tp.topic, tp.partition), error or tp.error
            waited = key in self.in_flight  # (not after a revoke: those partitions are no longer ours)
            if self.in_flight.get(key, -1) <= tp.offset:
                self.in_flight.pop(key, None)  # (a higher offset still in flight stays)
            if problem is None:
                done[key] = tp.offset
            elif getattr(problem, "code", lambda: None)() == KafkaError._NO_OFFSET:  # pylint: disable=W0212
                continue  # nothing to commit: not a failure
            else:
                failed = problem
                if _fatal(problem):
                    self._fatal = FatalError(f"fatal Kafka error on commit: {problem}")
                if waited:
                    self._retry(key, tp.offset)
        if failed is not None:
            self._failed(failed)
        if done:
            self._done(done)

    def _retry(self, key, offset):
        """Send ``offset`` again later, unless a higher one was sent, queued or committed since."""
        topic, partition = key
        newer = max(self.uncommitted.get(key, -1), self.in_flight.get(key, -1),
                    self.committed.get(partition, -1) if topic == self.topic else -1)
        if offset > newer:
            self.uncommitted[key] = offset

    def _failed(self, exc):
        self.monitor.commit_failed()
        self._failures += 1
        if self._failures & (self._failures - 1) == 0:  # 1st, 2nd, 4th, 8th... failure in a row
            log.warning("offset commit failed (%s), %d time(s) in a row; retried after the next poll",
                        kafka.error_text(exc) if isinstance(exc, KafkaException) else exc, self._failures)

    def _done(self, offsets):
        """``offsets`` (``{(topic, partition): offset}``) are committed."""
        if self._failures:
            log.info("offsets committed after %d failed attempt(s)", self._failures)
        self._failures = 0
        for (topic, partition), offset in offsets.items():
            if topic == self.topic and offset > (self.committed.get(partition) or -1):
                self.committed[partition] = offset
        self.monitor.committed()

    def commit_before_exit(self, serve=None):
        """
        A clean stop: commit what is still uncommitted and wait for the answers, at most ``EXIT_COMMIT_SECONDS``
        (re-sending what failed meanwhile). ``serve(seconds)`` hands librdkafka's callbacks to ``on_commit``
        (asynchronous commits); without it, synchronous commits are retried.
        """
        deadline = time.monotonic() + EXIT_COMMIT_SECONDS
        attempt = 0
        while time.monotonic() < deadline:
            sent = self.commit_uncommitted()
            if not self.pending:
                return
            attempt += 1
            pause = min(max(0.0, deadline - time.monotonic()), kafka.backoff(attempt, 1.0))
            if serve is not None and sent:
                serve(min(pause, 0.1))
            else:
                time.sleep(pause)
        left = {**self.in_flight, **self.uncommitted}
        if left:
            log.warning("offsets %s not committed within %g s; those events will be read and applied again "
                        "(harmless)", sorted((partition, offset) for (_, partition), offset in left.items()),
                        EXIT_COMMIT_SECONDS)

    def revoke(self, consumer, partitions):
        """
        Commit what was applied on the partitions being taken away (once, without waiting), then forget it:
        not ours now. If that commit does not go through, their events are read and applied again (harmless).
        """
        revoked = {(p.topic, p.partition) for p in partitions}
        pending = [TopicPartition(t, p, o) for (t, p), o in self.uncommitted.items() if (t, p) in revoked]
        if pending:
            try:
                consumer.commit(offsets=pending, asynchronous=self.asynchronous)
            except KafkaException as exc:
                log.warning("offsets %s not committed before the rebalance (%s); those events will be read and "
                            "applied again (harmless)", [(o.partition, o.offset) for o in pending],
                            kafka.error_text(exc))
        for key in revoked:
            self.uncommitted.pop(key, None)
            self.in_flight.pop(key, None)  # (its answer, if any, is no longer waited for)
        for _, partition in revoked:
            self.committed.pop(partition, None)

    def lags(self, assigned):
        """
        The lag of each of the ``assigned`` partitions that fetched anything yet: end offset minus the group's
        committed offset, or minus the low watermark where the group committed nothing. End offsets are the
        client's cached high watermarks (updated by every fetch: no request); a committed offset this run did
        not commit itself is asked of the coordinator once. ``KafkaException`` when it does not answer in time.
        """
        unknown = [p for p in assigned if p not in self.committed]
        if unknown:
            self.committed.update(kafka.committed(self.consumer, self.topic, unknown, COMMITTED_TIMEOUT_SECONDS))
        lags = {}
        for partition in assigned:
            low, high = kafka.watermark(self.consumer, self.topic, partition)
            if high < 0:
                continue  # nothing fetched from this partition yet
            committed = self.committed.get(partition)
            lags[partition] = max(0, high - (committed if committed is not None else max(low, 0)))
        return lags
