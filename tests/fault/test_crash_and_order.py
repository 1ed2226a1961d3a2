"""
Crash and order: the consumer killed at random moments, and events delivered twice, late and out of order.

1. ``test_sigkill_at_random_moments_loses_nothing``: a history of 20,000 events over 500 academies
   (creates, updates with renames, deletes) is produced from this process while the real
   ``consume_academy_events`` (a subprocess, one fixed consumer group) applies it; the stream stays at
   most ``AHEAD`` events ahead of the table, so a fast consumer cannot finish before the kills. The consumer is
   SIGKILLed five times at random moments -- each time after the table moved past a random threshold,
   plus a random delay, so the kill lands in the middle of a batch's transaction -- and restarted; a last
   run with ``--until-idle`` finishes. The table must then hold exactly the newest state of every academy.
2. ``test_duplicated_and_shuffled_old_events_never_overwrite_newer_state``: after a history the topic gets
   same-time follow-ups (where only offset order tells which event wins), duplicates, shuffled older
   events with their original times, and finally newer updates. Consumed in batches of 7 across a SIGTERM
   and a SIGKILL restart, the table must hold the newest state of every academy (at equal times: the
   later offset: events with the same key are applied in offset order).

Both also check what the table cannot show (``history.check_all_read``): the broker still holds every
produced event (low watermarks 0) and, over all the runs of the group, the consumer read every offset.

Every restart waits for the mock broker to give the group's partitions to the new member: it keeps a
killed member for ``session.timeout.ms`` (6 s in the devstack consumer config), and a new member that
joins before that is often answered with a second rebalance round: 7-12 s per restart.

Randomness comes from one seed, printed and named in every failure message; ``ACADEMY_FAULT_SEED``
replays a run. Waits are polls of a condition with a deadline; the only sleeps are the random delays
that place a fault at a random moment and the pacing of a stream a fault is aimed inside.
"""

import dataclasses
import datetime
import random
import re
import signal
import threading
import time
import typing

import pytest

from tests.factories import Event, academy_uuid, generate
from tests.fault.history import check_all_read, check_table, expected_state, final_progress, progress
from tests.helpers import CONSUMER_ENV, FAULT_IDLE, GroupOffsets, produce_events
from tests.waiting import seeded_wait_for as wait_for

RESTART_TIMEOUT = 90.0  # a restart (7-12 s, see above) and the next stretch of progress
KILLS = 5  # each restart costs that wait: kill as often as the guarantee table says, no more
PACED_SECONDS = 4.0  # how long a phase of test 2 streams in while a fault is aimed inside it
AHEAD = 500  # test 1 produces at most this many events beyond what the table shows applied ...
PIECE, PIECE_SECONDS = 100, 0.05  # ... in pieces of PIECE at most every PIECE_SECONDS (<= 2,000 events/s)


def produce_paced(events, seconds, piece=10):
    """
    Produce ``events`` in pieces of ``piece`` spread over about ``seconds``: a stream the consumer cannot
    outrun, so a fault aimed inside it lands while events are still arriving (the batch apply drains a
    few hundred events in well under the random delay of a fault).
    """
    pieces = range(0, len(events), piece)
    for start in pieces:
        produce_events(events[start:start + piece])
        time.sleep(seconds / len(pieces))  # pacing of the stream, not a synchronisation


def applied_progress(events):
    """``floors[k]``: ``progress()`` of the table once ``events[:k]`` are applied (times grow per academy)."""
    floors, orders, total = [0], {}, 0
    for event in events:
        if event.uuid not in orders:
            orders[event.uuid], total = 0, total + 1
        if event.action != "deleted":
            total += event.academy["display_order"] - orders[event.uuid]
            orders[event.uuid] = event.academy["display_order"]
        floors.append(total)
    return floors


def produce_behind_the_table(events, seed):
    """
    Produce ``events`` in pieces of ``PIECE``, at most one piece per ``PIECE_SECONDS`` and never more than
    ``AHEAD`` events beyond what the table shows applied (``progress()``, polled): the stream waits for the
    consumer through each restart, so however fast the apply is, the consumer cannot outrun it and reach the
    end before the last kill; from the last kill's threshold (90 % at most) the rest of the history takes
    at least a second to stream, longer than the random delay of a kill.
    """
    from django.db import connection  # pylint: disable=import-outside-toplevel

    floors = applied_progress(events)
    try:
        for start in range(0, len(events), PIECE):
            floor = floors[max(0, start - AHEAD)]
            wait_for(lambda floor=floor: progress() >= floor, RESTART_TIMEOUT,
                     f"the table to apply {start - AHEAD} events", seed, interval=0.02)
            produce_events(events[start:start + PIECE])
            time.sleep(PIECE_SECONDS)  # the pace of the stream, not a synchronisation
    finally:
        connection.close()  # this thread's own connection


class Background(threading.Thread):
    """Run ``target`` in a thread; ``finish(seed)`` re-raises what it raised; ``took`` is its duration (s)."""

    def __init__(self, target):
        super().__init__(name="fault-producer", daemon=True)
        self._run_target = target
        self.error = None
        self.took = None
        self.start()

    def run(self):
        started = time.monotonic()
        try:
            self._run_target()
        except BaseException as exc:
            self.error = exc
        self.took = time.monotonic() - started

    def finish(self, seed, timeout=300):
        """Wait for the thread (at most ``timeout`` s); re-raise what ``target`` raised, naming ``seed``."""
        self.join(timeout)
        assert not self.is_alive(), f"the producer did not finish within {timeout} s (ACADEMY_FAULT_SEED={seed})"
        if self.error is not None:
            raise AssertionError(f"producing failed (ACADEMY_FAULT_SEED={seed}): {self.error!r}") from self.error


@dataclasses.dataclass
class Consumers:
    """Start ``consume_academy_events`` of one consumer group (``cli_popen``), again and again."""

    cli_popen: typing.Callable
    devstack: typing.Any
    group: str
    env: dict
    runs: list = dataclasses.field(default_factory=list)
    started: list = dataclasses.field(default_factory=list)

    def start(self, *args):
        """Start one more ``consume_academy_events`` run of the group (``args`` added)."""
        self.started.append(datetime.datetime.now())
        run = self.cli_popen("consume_academy_events", "--group-id", self.group, *args,
                             env={**self.devstack.env, **CONSUMER_ENV, **self.env})
        self.runs.append(run)
        return run

    def assignment_delays(self):
        """Seconds from each start to its first assignment (process start-up and the group's rebalance)."""
        delays = []
        for run, started in zip(self.runs, self.started):
            match = re.search(r"^(\S+ \S+) INFO academy_consumer\.consumer: assigned", run.stderr, re.M)
            if match:
                assigned = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
                delays.append(round((assigned - started).total_seconds(), 1))
        return delays

    def output(self):
        """The tail of every run's stderr, for failure messages."""
        return "\n".join(f"--- run {n} (pid {run.pid}):\n{run.stderr[-1500:]}" for n, run in enumerate(self.runs, 1))


# --- 1. SIGKILL at random moments ----------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing(producing, devstack, cli_popen, guarantee, seed):
    rng = random.Random(seed)
    history = generate(academies=500, events=20_000, seed=seed, namespace="crash")
    expected = expected_state(history)
    target = final_progress(expected)
    # One random threshold in each of KILLS equal slices of [4 %, 90 %] of the final progress, and a random
    # delay after it: every kill lands at a random moment while events are still being applied.
    low, high = 0.04, 0.90
    width = (high - low) / KILLS
    plan = [(low + width * (n + rng.random()), rng.uniform(0.0, 0.4)) for n in range(KILLS)]

    started = time.monotonic()
    # This process produces while the consumer consumes, keeping the stream just ahead of the table.
    producer = Background(lambda: produce_behind_the_table(history, seed))
    consumers = Consumers(cli_popen, devstack, "crash-restart", {})
    consumer = consumers.start()
    at_kill = []
    for fraction, delay in plan:
        wait_for(lambda fraction=fraction: progress() >= fraction * target or not consumer.running() or producer.error,
                 RESTART_TIMEOUT, f"the table to reach {fraction:.0%} of the history", seed)
        if producer.error:
            producer.finish(seed)
        assert consumer.running(), f"consumer exited (ACADEMY_FAULT_SEED={seed})\n{consumers.output()}"
        time.sleep(delay)  # the random moment of the fault
        consumer.send_signal(signal.SIGKILL)
        assert consumer.wait(timeout=30) == -signal.SIGKILL
        at_kill.append(progress())
        if len(at_kill) < KILLS:
            consumer = consumers.start()
    assert all(reached < target for reached in at_kill), (
        f"a kill landed after the end: progress {at_kill} of {target} (ACADEMY_FAULT_SEED={seed})")
    # The last restart of the group runs until idle: it finishes what the kills left, and the stream that
    # waits for it (well within FAULT_IDLE between pieces).
    final = consumers.start("--until-idle", FAULT_IDLE)
    producer.finish(seed)
    assert final.wait(timeout=180) == 0, consumers.output()
    took = time.monotonic() - started

    check = check_table(expected)
    dead = devstack.read_dlq()
    read = check_all_read(devstack, consumers.runs, len(history))
    print(f"{len(history)} events produced in {producer.took:.1f} s and all applied after {took:.1f} s, with "
          f"{KILLS} SIGKILLs at {[f'{reached / target:.0%}' for reached in at_kill]} of the history; "
          f"{len(dead)} dead-lettered; {read.read} of {read.on_topic} offsets read over {len(consumers.runs)} runs, "
          f"low watermarks {read.low_watermarks}; seconds to assignment per run {consumers.assignment_delays()}; "
          f"last run: {final.stdout.strip()}")
    guarantee("crash and restart (SIGKILL)", events=len(history), faults=KILLS, fault_kinds="SIGKILL",
              bad_inputs=0, lost=check.lost + len(dead) + read.unread, duplicates=check.duplicates, stale=check.stale)
    assert not dead, f"valid events were dead-lettered (ACADEMY_FAULT_SEED={seed}): {dead[:3]}"
    assert not read.problems, f"ACADEMY_FAULT_SEED={seed}: {read.problems}"
    assert (check.lost, check.duplicates, check.stale) == (0, 0, 0), check.describe(seed)


# --- 2. duplicates, re-deliveries and shuffled old events ----------------------------------------------


def order_history(seed, academies=100, events=1500, namespace="order"):
    """
    A history, then what a misbehaving world delivers after it, as phases in topic order:

    * ``main``: the history (``history.generate``);
    * ``ties``: for a quarter of the academies, an update with the SAME time as its newest event and the
      next version: only offset order says it wins;
    * ``duplicates``: a shuffled random sample of the events so far, re-produced as they were (except
      the events a tie follow-up replaced: re-delivered after it, those would rightly win the tie again);
    * ``old``: a shuffled sample of older events (original, older times);
    * ``late``: newer updates for a third of the academies, after all that.

    Returns (``[(phase name, events)]``, the newest state the table must show).
    """
    rng = random.Random(seed ^ 0x5EED)
    main = generate(academies, events, seed, namespace)
    index = {academy_uuid(n, namespace): n for n in range(academies)}
    newest, last_upsert = {}, {}
    for event in main:  # times grow per academy: the last event of an academy is its newest
        newest[event.uuid] = event
        if event.action != "deleted":
            last_upsert[event.uuid] = event.academy

    def follow_up(uuid, label, when):
        version = newest[uuid].version + 1
        academy = {**last_upsert[uuid], "title": f"Academy {index[uuid]} {label} v{version}",
                   "short_description": f"v{version}", "display_order": version, "tags": [f"tag{version % 5}"]}
        newest[uuid], last_upsert[uuid] = Event("updated", academy, when), academy
        return newest[uuid]

    tied = rng.sample(sorted(newest), academies // 4)
    replaced = {id(newest[uuid]) for uuid in tied}
    ties = [follow_up(uuid, "tie", newest[uuid].time) for uuid in tied]

    candidates = [event for event in main + ties if id(event) not in replaced]
    duplicates = rng.sample(candidates, len(candidates) // 5)  # (a sample comes in random order)
    old = rng.sample([event for event in main if event.time < newest[event.uuid].time], len(main) // 4)

    late = [follow_up(uuid, "late", newest[uuid].time + datetime.timedelta(seconds=rng.randint(1, 60)))
            for uuid in rng.sample(sorted(newest), academies // 3)]

    phases = [("main", main), ("ties", ties), ("duplicates", duplicates), ("old", old), ("late", late)]
    # expected_state sorts by time, stably: at equal times the later event in topic order wins.
    expected = expected_state([event for _, events in phases for event in events])
    assert expected == expected_state(main + ties + late), "duplicates and old events must not change the newest state"
    return phases, expected


@pytest.mark.slow
def test_duplicated_and_shuffled_old_events_never_overwrite_newer_state(producing, devstack, cli_popen, guarantee,
                                                                        seed):
    # pylint: disable=too-many-statements  # one scenario, its phases in the order they run
    rng = random.Random(seed)
    phases, expected = order_history(seed)
    phase = dict(phases)
    consumers = Consumers(cli_popen, devstack, "order-restart", {"ACADEMY_CONSUMER_BATCH_SIZE": "7"})
    # Reads the group's committed offsets (it never subscribes, so it never joins the group).
    reader = GroupOffsets(devstack, "order-restart")
    produced, restarts = 0, []

    def acknowledged(count, what):
        wait_for(lambda: reader.total_committed() >= count or not consumer.running(),
                 RESTART_TIMEOUT, what, seed)
        assert consumer.running(), f"consumer exited (ACADEMY_FAULT_SEED={seed})\n{consumers.output()}"

    try:
        produce_events(phase["main"] + phase["ties"])
        produced += len(phase["main"]) + len(phase["ties"])
        consumer = consumers.start()
        acknowledged(rng.randint(produced // 4, produced // 2), "the first part of the history")

        # Duplicates stream in while it runs; a SIGTERM mid-stream (it finishes the batch, commits, exits 0).
        # The fault is aimed inside the first three quarters of a stream that lasts PACED_SECONDS.
        before, count = produced, len(phase["duplicates"])
        producer = Background(lambda: produce_paced(phase["duplicates"], PACED_SECONDS))
        produced += count
        acknowledged(rng.randint(before + count // 4, before + count * 3 // 4), "part of the duplicates")
        time.sleep(rng.uniform(0.0, 0.3))  # the random moment of the fault
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(timeout=60) == 0, consumers.output()
        assert "consumed " in consumer.stdout, consumers.output()
        restarts.append("SIGTERM")
        at_term = reader.total_committed()
        producer.finish(seed)
        assert at_term < produced, f"the SIGTERM did not land mid-stream (ACADEMY_FAULT_SEED={seed})"

        # Old events, shuffled, after the newer ones; the restarted consumer is SIGKILLed among them.
        consumer = consumers.start()
        before, count = produced, len(phase["old"])
        acknowledged(before, "the rest of the duplicates")  # the restart has joined and caught up
        producer = Background(lambda: produce_paced(phase["old"], PACED_SECONDS))
        produced += count
        acknowledged(rng.randint(before + 1, before + count * 3 // 4), "some of the old events")
        time.sleep(rng.uniform(0.0, 0.3))  # the random moment of the fault
        consumer.send_signal(signal.SIGKILL)
        assert consumer.wait(timeout=30) == -signal.SIGKILL
        restarts.append("SIGKILL")
        at_kill = reader.total_committed()
        producer.finish(seed)
        assert at_kill < produced, f"the SIGKILL did not land mid-stream (ACADEMY_FAULT_SEED={seed})"

        # Newer updates after all of that; the last run goes until idle.
        produce_events(phase["late"])
        produced += len(phase["late"])
        final = consumers.start("--until-idle", FAULT_IDLE)
        assert final.wait(timeout=180) == 0, consumers.output()
        assert reader.total_committed() == produced, consumers.output()
    finally:
        reader.close()

    check = check_table(expected)
    dead = devstack.read_dlq()
    read = check_all_read(devstack, consumers.runs, produced)
    print(f"phases {[(name, len(events)) for name, events in phases]}; {restarts} with {at_term} and {at_kill} "
          f"events acknowledged; {read.read} of {read.on_topic} offsets read over {len(consumers.runs)} runs, "
          f"low watermarks {read.low_watermarks}; seconds to assignment per run {consumers.assignment_delays()}; "
          f"last run: {final.stdout.strip()}")
    guarantee("order: duplicates, re-deliveries, shuffled old events", events=produced, faults=len(restarts),
              fault_kinds=", ".join(restarts), bad_inputs=0, lost=check.lost + len(dead) + read.unread,
              duplicates=check.duplicates, stale=check.stale)
    assert not dead, f"valid events were dead-lettered (ACADEMY_FAULT_SEED={seed}): {dead[:3]}"
    assert not read.problems, f"ACADEMY_FAULT_SEED={seed}: {read.problems}"
    assert (check.lost, check.duplicates, check.stale) == (0, 0, 0), check.describe(seed)
