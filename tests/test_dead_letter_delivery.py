"""
The README's promise about dead letters, end to end: a dead letter is sent to the dead-letter topic and
acknowledged by the broker *before* the offset of its event is committed, and a dead-letter topic that does not
take it is retried (the whole batch, as any transient failure), never skipped.

The refusal is the broker's own: the dev stack's mock cluster answers the consumer's Produce requests with an
error (``push_request_errors``, consumed one per request), a non-retriable one (TOPIC_AUTHORIZATION_FAILED), so
librdkafka reports the failed delivery to the consumer instead of retrying it by itself.
"""

import signal

from academy_devstack import ApiKey, Err
from tests.factories import academy
from tests.helpers import CONSUMER_ENV, GroupOffsets, academy_table, consumer_counts
from tests.waiting import wait_for

REFUSALS = 4
REFUSED = "did not take"  # the consumer's warning: "... dead-letter topic T did not take 1 event(s): ..."


def test_a_refused_dead_letter_holds_the_commit_and_is_retried_until_the_topic_takes_it(bus, devstack, cli_popen):
    good_a, good_b = academy(1, "Alpha Academy"), academy(2, "Beta Academy")
    poison = academy(3, "Negative Academy", display_order=-1)  # the producer takes any int; the normalizer does not
    bus.produce("created", [good_a, poison, good_b])
    records = devstack.read_topic()
    (bad,) = [r for r in records if poison["uuid"].encode() in r.key]
    devstack.stack.kafka.push_request_errors(ApiKey.PRODUCE, [Err.TOPIC_AUTHORIZATION_FAILED] * REFUSALS)

    consumer = cli_popen("consume_academy_events", "--group-id", "dlq-refused", env={
        **devstack.env, **CONSUMER_ENV, "ACADEMY_CONSUMER_RETRY_MAX_SECONDS": "1"})
    with GroupOffsets(devstack, "dlq-refused") as offsets:
        wait_for(lambda: REFUSED in consumer.stderr, 30, "the dead-letter topic's first refusal",
                 while_running=consumer)
        # Refused, with more refusals to come (retries at least 0.4 s apart): the poison's offset is not committed
        # (a good event fetched in an earlier batch may be), nothing is in the dead-letter topic.
        assert offsets.committed()[bad.partition] <= bad.offset, (offsets.committed(), bad)
        assert devstack.read_dlq() == []

        wait_for(lambda: offsets.lag() == 0, 60, "the batch committed once the topic takes the letter",
                 while_running=consumer)
        # Committed only now that the letter is there: exactly one, the poison's (retried, neither skipped
        # nor duplicated).
        letters = devstack.read_dlq()
        assert offsets.total_committed() == len(records)
    assert len(letters) == 1 and poison["uuid"].encode() in letters[0].key, letters
    assert "display_order" in letters[0].headers["dlq-error-message"]
    assert consumer.stderr.count(REFUSED) >= 2, consumer.stderr  # retried after refusals, not given up at the first
    assert academy_table() == {good_a["uuid"]: ("Alpha Academy", True), good_b["uuid"]: ("Beta Academy", True)}

    consumer.send_signal(signal.SIGTERM)
    assert consumer.wait(timeout=30) == 0, consumer.stderr
    counts = consumer_counts(consumer.stdout)  # (the retried batch found its two rows written: "unchanged")
    assert (counts["events"], counts["dead_lettered"]) == (3, 1), counts
