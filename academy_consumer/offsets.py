"""
Offsets: what is applied, what is committed, and when.

* ``applied`` notes the offset after each applied (or dead-lettered) event, per partition, until it is committed;
* ``commit_uncommitted`` commits all of them at once, synchronously, after a batch (or after a poll, for those
  a failed commit left): offsets are committed only after the batch's transaction committed, its dead letters
  were acknowledged and its events were sent to the host's receivers (at-least-once; re-applying is harmless:
  upserts are idempotent and stale-guarded);
* a failed commit does not hold the loop up: its offsets are kept and committed with the next batch or after
  the next poll, and on a clean stop (``commit_before_exit``, which retries for a few seconds);
* a revoke commits what was applied on the partitions taken away (once), then forgets them (``revoke``);
* ``committed`` is the group's committed offset per partition of the consumed topic as far as this run knows it,
  which the lag is counted from (``lags``).
"""

import logging
import time

from confluent_kafka import KafkaException, TopicPartition

from academy_consumer import kafka
from academy_consumer.errors import FatalError

log = logging.getLogger("academy_consumer.consumer")  # the consumer's lines, under one logger name

COMMIT_RETRIES = 5
COMMITTED_TIMEOUT_SECONDS = 2.0  # longest the lag waits for the coordinator to give a committed offset


class Offsets:
    """The offsets of one consumer client: those to commit, those it knows committed, and committing them."""

    def __init__(self, consumer, topic, monitor):
        self.consumer = consumer
        self.topic = topic  # the consumed topic (prefixed): ``committed`` is about its partitions
        self.monitor = monitor
        self.uncommitted = {}  # (topic, partition) -> offset after the newest applied event, until committed
        self.committed = {}  # partition -> the group's committed offset, as far as this run knows it
        self._failures = 0

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

    def commit_uncommitted(self):
        """
        Commit the offsets of the applied batches not committed yet; True when none is left.

        A failed commit (broker or coordinator unavailable, group rebalancing, ...) is not retried here: its
        offsets are kept and committed with the next batch or after the next poll -- polling is also what lets
        the client reconnect and rejoin its group -- so the loop never stalls on it and nothing applied is
        left uncommitted once the broker answers again. A revoke drops the offsets of its partitions.
        """
        if not self.uncommitted:
            return True
        offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in self.uncommitted.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if error is not None and getattr(error, "fatal", lambda: False)():
                raise FatalError(f"fatal Kafka error on commit: {error}") from exc
            self.monitor.commit_failed()
            self._failures += 1
            if self._failures & (self._failures - 1) == 0:  # 1st, 2nd, 4th, 8th... failure in a row
                log.warning("offset commit failed (%s), %d time(s) in a row; retried after the next poll",
                            exc, self._failures)
            return False
        if self._failures:
            log.info("offsets committed after %d failed attempt(s)", self._failures)
        self._failures = 0
        for (topic, partition), offset in self.uncommitted.items():
            if topic == self.topic:
                self.committed[partition] = offset
        self.uncommitted.clear()
        self.monitor.committed()
        return True

    def commit_before_exit(self):
        """A clean stop: commit what is still uncommitted, retrying for a few seconds."""
        for attempt in range(1, COMMIT_RETRIES + 1):
            if self.commit_uncommitted():
                return
            if attempt < COMMIT_RETRIES:
                time.sleep(kafka.backoff(attempt, 1.0))
        log.warning("offsets %s not committed; those events will be read and applied again (harmless)",
                    sorted((partition, offset) for (_, partition), offset in self.uncommitted.items()))

    def revoke(self, consumer, partitions):
        """Commit what was applied on the partitions being taken away (once), then forget it: not ours now."""
        revoked = {(p.topic, p.partition) for p in partitions}
        pending = [TopicPartition(t, p, o) for (t, p), o in self.uncommitted.items() if (t, p) in revoked]
        if pending:
            try:
                consumer.commit(offsets=pending, asynchronous=False)
            except KafkaException as exc:
                log.warning("offsets %s not committed before the rebalance (%s); those events will be read and "
                            "applied again (harmless)", [(o.partition, o.offset) for o in pending], exc)
            for key in revoked:
                self.uncommitted.pop(key, None)
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
