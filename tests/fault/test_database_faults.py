"""
Database faults: the database going away under the consumer, and reconcile racing the consumer.

Both scenarios need a database server (connections to kill, row locks and unique indexes shared by two
processes), so they run on PostgreSQL and MariaDB and are skipped on SQLite.

1. ``test_database_outage_is_retried_never_skipped``: the real ``consume_academy_events`` (a subprocess)
   reaches the test database through a ``TcpProxy``. While it applies a history, its connections are
   killed from the server side (``pg_terminate_backend`` / ``KILL``, only backends that are inside a
   transaction and come through the proxy) and the server is made unreachable for several seconds
   (``proxy.cut``), several times each. The consumer must retry every failed batch: after it went idle,
   the group's committed offsets are the end offsets, the table holds the newest state of every academy
   and the dead-letter topic is empty (an outage is transient, never a reason to dead-letter).
2. ``test_reconcile_concurrent_with_consumer_keeps_newest_state``: ``reconcile_academies`` runs again
   and again (subprocesses, against a ``CatalogServer``) while the consumer applies events for the same
   academies. The catalog grows by one cohort per run while that cohort's ``created`` events are
   produced, so both create the same rows at the same moment: each run is held at its first page (its
   snapshot time taken) and released either first (it creates rows the consumer is creating) or once
   the consumer has inserted, not yet committed, an academy it then lists first (it creates a row the
   consumer's pending batch holds). Lock waits seen on the server prove the collisions. Events are
   older than every reconcile snapshot (the snapshot must win, whichever applied first) or newer (the
   event must win). One row per academy, nothing dead-lettered, both commands exit 0, reconcile reports
   ``errors`` 0, and the table equals the expected newest state.

Both also check what the table cannot show (``history.check_all_read``): the broker still holds every
produced event (low watermarks 0) and the consumer read every offset.

Randomness comes from one seed, printed and named in every failure message; ``ACADEMY_FAULT_SEED``
replays a run. Waits are polls of a condition with a deadline; the only sleeps make a fault last.
"""

import dataclasses
import datetime
import json
import random
import re
import signal
import threading
import time
import uuid

import pytest
from django.db import connection

from academy_consumer.models import EnterpriseAcademy
from tests.factories import Event, academy_uuid, generate, versioned_academy
from tests.fault.history import check_all_read, check_table, expected_state, final_progress, progress
from tests.fault.tcp_proxy import database_proxy, proxied_database_url
from tests.helpers import CONSUMER_ENV, FAULT_IDLE, GroupOffsets, produce_events
from tests.waiting import seeded_wait_for as wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        connection.vendor == "sqlite",
        reason="database faults need a database server (killed connections, concurrent writers): "
               "they run on PostgreSQL and MariaDB"),
]

# The backoff cap of transient failures: 1 s keeps the retries of a several-second outage frequent.
OUTAGE_CONSUMER_ENV = {**CONSUMER_ENV, "ACADEMY_CONSUMER_RETRY_MAX_SECONDS": "1"}
RETRY_LINE = re.compile(r"batch of \d+ events not applied \((\w+)")  # the consumer's warning, and the error class


def offsets(devstack, group):
    """(the group's committed offset, the end offset) of every partition of the academy topic."""
    with GroupOffsets(devstack, group) as read:
        return read.positions()


# --- database connections of the consumer, seen from the server -------------------------------------


def proxied_ports(proxy):
    """The local ports of the proxy's open connections to the server: how the server sees the consumer."""
    ports = set()
    with proxy._lock:  # pylint: disable=protected-access
        pairs = list(proxy._pairs)  # pylint: disable=protected-access
    for _, upstream in pairs:
        try:
            ports.add(upstream.getsockname()[1])
        except OSError:  # already closed
            pass
    return ports


def consumer_backends_in_transaction(proxy):
    """
    Server-side ids of the consumer's connections that are inside a transaction right now.

    Only connections to the test database, by the test's user, arriving through the proxy (so never the
    test's own connection, nor anybody else's), and only those inside a transaction: killing an idle
    connection between two batches would be a fault nobody notices.
    """
    ports = proxied_ports(proxy)
    if not ports:
        return []
    settings = connection.settings_dict
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT pid, client_port FROM pg_stat_activity WHERE datname = current_database() "
                "AND usename = %s AND pid <> pg_backend_pid() "
                "AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')",
                [settings["USER"]])
            return [pid for pid, port in cursor.fetchall() if port in ports]
        cursor.execute(
            "SELECT p.ID, p.HOST FROM information_schema.PROCESSLIST p "
            "WHERE p.DB = DATABASE() AND p.USER = %s AND p.ID <> CONNECTION_ID() "
            "AND (p.COMMAND = 'Query' OR p.ID IN "
            "(SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX))",
            [settings["USER"]])
        found = []
        for ident, host in cursor.fetchall():
            _, _, port = (host or "").rpartition(":")
            if port.isdigit() and int(port) in ports:
                found.append(ident)
        return found


def kill_backends(backends):
    """Terminate these server-side connections; returns how many the server actually terminated."""
    from django.db import DatabaseError  # pylint: disable=import-outside-toplevel

    killed = 0
    with connection.cursor() as cursor:
        for backend in backends:
            if connection.vendor == "postgresql":
                cursor.execute("SELECT pg_terminate_backend(%s)", [backend])
                killed += bool(cursor.fetchone()[0])
            else:
                try:
                    cursor.execute(f"KILL {int(backend)}")
                    killed += 1
                except DatabaseError:  # the connection ended by itself meanwhile
                    pass
    return killed


# --- 1. database outage -------------------------------------------------------------------------------


OUTAGE_FAULTS = ["kill", "cut", "kill", "cut", "kill", "cut", "kill"]
CUT_SECONDS = 3


def test_database_outage_is_retried_never_skipped(producing, devstack, cli_popen, guarantee, seed):
    rng = random.Random(seed)
    history = generate(academies=200, events=5000, seed=seed, namespace="db-outage")
    expected = expected_state(history)
    target = final_progress(expected)
    proxy = database_proxy()
    url = proxied_database_url(proxy)
    assert f":{proxy.port}/" in url, url
    started = time.monotonic()
    try:
        produce_events(history)
        produced_in = time.monotonic() - started
        consumer = cli_popen("consume_academy_events", "--group-id", "db-outage", "--until-idle", FAULT_IDLE,
                             env={**devstack.env, **OUTAGE_CONSUMER_ENV, "DATABASE_URL": url,
                                  "ACADEMY_CONSUMER_BATCH_SIZE": "50"})

        def output():
            return f"(ACADEMY_FAULT_SEED={seed})\n--- consumer stdout:\n{consumer.stdout[-2000:]}\n" \
                   f"--- consumer stderr:\n{consumer.stderr[-4000:]}"

        kills = cuts = 0
        at_fault = []
        # One random threshold in each of len(OUTAGE_FAULTS) equal slices of [3 %, 85 %] of the final
        # progress: every fault lands while events are still being applied.
        low, high = 0.03, 0.85
        width = (high - low) / len(OUTAGE_FAULTS)
        for n, fault in enumerate(OUTAGE_FAULTS):
            fraction = low + width * (n + rng.random())
            wait_for(lambda fraction=fraction: progress() >= fraction * target or not consumer.running(), 90,
                     f"the table to reach {fraction:.0%} of the history", seed)
            assert consumer.running(), f"consumer exited {output()}"
            at_fault.append(progress())
            if fault == "kill":
                # Kill the consumer's connection while it is inside a batch's transaction (a connection that
                # ended by itself between finding and killing it does not count: try again).
                wait_for(lambda: kill_backends(consumer_backends_in_transaction(proxy)) or not consumer.running(),
                         30, "a consumer connection inside a transaction to kill", seed, interval=0.002)
                assert consumer.running(), f"consumer exited {output()}"
                kills += 1
            else:
                proxy.cut(CUT_SECONDS)
                cuts += 1
                time.sleep(CUT_SECONDS)  # the outage lasts; not a synchronisation
        mid_stream = sum(1 for reached in at_fault if reached < target)
        assert mid_stream == len(OUTAGE_FAULTS), (
            f"only {mid_stream} of {len(OUTAGE_FAULTS)} faults landed before the end "
            f"(progress {at_fault} of {target}) {output()}")
        assert consumer.wait(timeout=180) == 0, output()
        consumed_in = time.monotonic() - started - produced_in
    finally:
        proxy.close()

    retries = RETRY_LINE.findall(consumer.stderr)
    positions = offsets(devstack, "db-outage")
    check = check_table(expected)
    dead = devstack.read_dlq()
    read = check_all_read(devstack, [consumer], len(history))
    print(f"{connection.vendor}: produced {len(history)} events in {produced_in:.1f} s; consumed in "
          f"{consumed_in:.1f} s through {kills} connection kills and {cuts} outages of {CUT_SECONDS} s "
          f"(progress at each fault: {[f'{p / target:.0%}' for p in at_fault]}); {len(retries)} batch retries "
          f"({', '.join(sorted(set(retries)))}); offsets {positions}; {len(dead)} dead-lettered; "
          f"{read.read} of {read.on_topic} offsets read, low watermarks {read.low_watermarks}; "
          f"{consumer.stdout.strip()}")
    guarantee("database outage", events=len(history), faults=kills + cuts,
              fault_kinds=f"connections killed, DB unreachable {CUT_SECONDS} s", bad_inputs=0,
              lost=check.lost + len(dead) + read.unread, duplicates=check.duplicates, stale=check.stale)
    assert len(retries) >= kills + cuts, f"{len(retries)} retries for {kills + cuts} faults {output()}"
    assert not read.problems, f"ACADEMY_FAULT_SEED={seed}: {read.problems}"
    assert not dead, f"a database outage dead-lettered valid events (ACADEMY_FAULT_SEED={seed}): {dead[:3]}"
    assert all(committed == end for committed, end in positions.values()), (
        f"committed offsets are not the end offsets: {positions} {output()}")
    assert (check.lost, check.duplicates, check.stale) == (0, 0, 0), check.describe(seed)


# --- 2. reconcile concurrent with the consumer --------------------------------------------------------


COHORTS = 5  # reconcile runs while events arrive: run k lists cohorts 0..k (the catalog grows)
COHORT_SIZE = 20
EXTRA_RUNS = 2  # reconcile runs after the last cohort, while the last events are applied
CUSTOMER = "5d3f0c1e-7a2b-4c8d-9e6f-112233445566"
RACE_LINE = "lost a uniqueness race"
# The newer events are dated a month ahead (newer than every reconcile snapshot); the future bound
# (ACADEMY_CONSUMER_MAX_FUTURE_SECONDS, 300 s by default) would dead-letter them: this scenario is about
# concurrency, so both commands get a bound past them.
FUTURE_BOUND_ENV = {"ACADEMY_CONSUMER_MAX_FUTURE_SECONDS": str(60 * 24 * 3600)}


@dataclasses.dataclass
class RaceAcademy:
    """One academy of the concurrency scenario: its events, what the catalog lists, and what may remain."""

    events: list  # history.Event s, in time order: some older than every snapshot, then some newer
    item: dict  # the catalog's item (its state at the snapshot)
    snapshot: Event  # the item as an event at the nominal snapshot time, for expected_state()
    fallback: Event | None  # see concurrent_history()


def concurrent_history(seed, now):
    """
    Per academy: a few events OLDER than any reconcile snapshot (times a month before ``now``), the state
    the catalog lists (version ``n_old``, at the snapshot), and some events NEWER than any snapshot (a
    month after ``now``). Versions (``display_order``) grow with time, so the newest state is known.

    One case has two right answers. When every newer event is a ``deleted`` one, the row must end
    inactive, but its data depends on the order of arrival: a snapshot applied before the delete leaves
    the snapshot's data; a snapshot arriving after the delete is older than the row and, by the stale
    guard (docs/decisions/0003), is not applied, which leaves the data of the newest older upsert: ``fallback``.
    """
    rng = random.Random(seed)
    academies = []
    for index in range(COHORTS * COHORT_SIZE):
        ident = academy_uuid(index, "reconcile-race")
        n_old = 0 if rng.random() < 0.15 else rng.randint(1, 6)  # 0: even the `created` event is newer
        n_new = rng.choice([0, 0, 1, 2, 3])  # 0: the snapshot must win
        old_clock = now - datetime.timedelta(days=30)
        new_clock = now + datetime.timedelta(days=30)
        events, item, snapshot = [], None, None
        for version in range(n_old + 1 + n_new):
            state = versioned_academy(ident, index, version, rng.random() < 0.3, name="Race", product="prod_race")
            if version == n_old:
                item, snapshot = state, Event("updated", state, now)
                continue
            if version < n_old:
                old_clock += datetime.timedelta(seconds=rng.randint(1, 600))
                when = old_clock
            else:
                new_clock += datetime.timedelta(seconds=rng.randint(1, 600))
                when = new_clock
            action = "created" if not events else rng.choices(["updated", "deleted"], weights=[75, 25])[0]
            events.append(Event(action, state, when))
        newer = [event for event in events if event.time > now]
        fallback = None
        if newer and all(event.action == "deleted" for event in newer):
            fallback = [event for event in events if event.time < now and event.action != "deleted"][-1]
        academies.append(RaceAcademy(events, item, snapshot, fallback))
    return academies


class GatedCatalog:
    """
    Hold every reconcile run at its first list page until ``release()``: the run has started (and taken
    its snapshot time) and waits there, so the test can let it go at the moment it chooses. The catalog
    lists ``first`` (when set), then its newest cohort first (``cohort_of``: uuid -> cohort), so a released
    run applies the academies the consumer is creating right now before anything else.
    """

    def __init__(self, server, monkeypatch, cohort_of):
        self.server = server
        self._open = threading.Event()
        self._lock = threading.Lock()
        self.arrivals = 0
        self.first = None  # a uuid the next released run lists before all others
        original = server._page

        def gated(academies, query):
            if query.get("page", "1") == "1":
                with self._lock:
                    self.arrivals += 1
                self._open.wait(timeout=60)
            ordered = sorted(academies, key=lambda item: (item["uuid"] != self.first, -cohort_of[item["uuid"]]))
            return original(ordered, query)

        monkeypatch.setattr(server, "_page", gated)

    def close(self):
        self._open.clear()

    def release(self):
        self._open.set()


class LockWaits:
    """
    Watch the server, from a thread, for sessions of the test database waiting on a lock: the evidence
    that reconcile and the consumer really collided (e.g. one creating a row the other has inserted but
    not committed yet). ``count`` is the number of distinct waits seen (polled every few milliseconds).
    """

    def __init__(self):
        self._seen = set()
        self._stop = threading.Event()
        self.error = None
        self._thread = threading.Thread(target=self._run, name="lock-waits", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def count(self):
        return len(self._seen)

    def _run(self):
        """Read the table in a loop, on this thread's own connection, until stopped."""
        from django.db import connection as own  # pylint: disable=import-outside-toplevel,reimported

        try:
            while not self._stop.is_set():
                with own.cursor() as cursor:
                    if own.vendor == "postgresql":
                        cursor.execute("SELECT pid, query_start FROM pg_stat_activity "
                                       "WHERE datname = current_database() AND wait_event_type = 'Lock' "
                                       "AND wait_event <> 'advisory'")  # (not HeldInsert's own hold)
                    else:
                        cursor.execute("SELECT trx_mysql_thread_id, trx_wait_started "
                                       "FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT'")
                    self._seen.update(cursor.fetchall())
                # InnoDB refreshes its transaction table only when it was not read for 0.1 s.
                self._stop.wait(0.003 if own.vendor == "postgresql" else 0.12)
        except Exception as exc:  # pylint: disable=broad-except
            self.error = exc
        finally:
            own.close()


class HeldInsert:
    """
    Hold the consumer's transaction open right after it inserted one academy: a trigger makes the insert of
    that uuid wait for a lock this test holds (a PostgreSQL advisory lock, a MariaDB user lock), once the
    row and its index entries are written. Another writer creating the same academy then waits on that
    uncommitted row: the collision of reconcile and consumer, made certain. (The set-based apply inserts
    and commits a batch within milliseconds, far too fast for a race by timing alone.) ``release()`` lets
    the consumer go on and commit.
    """

    TABLE = "academy_consumer_enterpriseacademy"

    def __init__(self, academy_uuid):
        self.uuid = uuid.UUID(academy_uuid)
        self.held = False
        self.connection = connection

    def __enter__(self):
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(f"""CREATE OR REPLACE FUNCTION academy_hold() RETURNS trigger AS $$ BEGIN
                    IF NEW.uuid = '{self.uuid}'::uuid THEN PERFORM pg_advisory_xact_lock_shared(4242); END IF;
                    RETURN NEW; END $$ LANGUAGE plpgsql""")
                cursor.execute(f"CREATE TRIGGER academy_hold AFTER INSERT ON {self.TABLE} FOR EACH ROW "
                               f"EXECUTE FUNCTION academy_hold()")
                cursor.execute("SELECT pg_advisory_lock(4242)")
            else:
                cursor.execute(f"""CREATE TRIGGER academy_hold AFTER INSERT ON {self.TABLE} FOR EACH ROW
                    BEGIN IF NEW.uuid = '{self.uuid.hex}' THEN
                    DO GET_LOCK('academy_hold', 120); DO RELEASE_LOCK('academy_hold'); END IF; END""")
                cursor.execute("SELECT GET_LOCK('academy_hold', 10)")
        self.held = True
        return self

    def waiting(self):
        """True while a session waits in the trigger (the consumer, having inserted the academy)."""
        from django.db import connections  # pylint: disable=import-outside-toplevel
        with connections["default"].cursor() as cursor:
            if self.connection.vendor == "postgresql":
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                               "AND wait_event = 'advisory'")
            else:
                cursor.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE STATE = 'User lock'")
            return cursor.fetchone()[0] > 0

    def release(self):
        """Let go of the lock, if still held."""
        if self.held:
            with self.connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(4242)" if self.connection.vendor == "postgresql"
                               else "SELECT RELEASE_LOCK('academy_hold')")
            self.held = False

    def __exit__(self, *exc_info):
        self.release()
        with self.connection.cursor() as cursor:
            if self.connection.vendor == "postgresql":
                cursor.execute(f"DROP TRIGGER academy_hold ON {self.TABLE}")
                cursor.execute("DROP FUNCTION academy_hold()")
            else:
                cursor.execute("DROP TRIGGER academy_hold")


def test_reconcile_concurrent_with_consumer_keeps_newest_state(producing, devstack, cli_popen, catalog_server,
                                                               monkeypatch, guarantee, seed):
    # pylint: disable=too-many-statements  # one scenario, its steps in the order they run
    from django.utils import timezone  # pylint: disable=import-outside-toplevel

    now = timezone.now()
    academies = concurrent_history(seed, now)
    expected = expected_state([event for academy in academies for event in [*academy.events, academy.snapshot]])
    produced = [event for academy in academies for event in academy.events]
    # Each academy's events in two parts: the first with the reconcile run that first lists it (its
    # `created` event races reconcile's create), the rest with the next run.
    parts = []
    for academy in academies:
        cut = (len(academy.events) + 1) // 2
        parts.append((academy.events[:cut], academy.events[cut:]))

    gate = GatedCatalog(catalog_server, monkeypatch,
                        {academy.item["uuid"]: n // COHORT_SIZE for n, academy in enumerate(academies)})
    catalog_env = {
        "ENTERPRISE_CATALOG_URL": catalog_server.url,
        "BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL": catalog_server.oauth_url,
        "BACKEND_SERVICE_EDX_OAUTH2_KEY": catalog_server.client_id,
        "BACKEND_SERVICE_EDX_OAUTH2_SECRET": catalog_server.client_secret,
        **FUTURE_BOUND_ENV,
    }
    # The default batch wait (1 s): a round's events, produced at once, make one batch (a long transaction).
    consumer = cli_popen("consume_academy_events", "--group-id", "reconcile-race",
                         env={**devstack.env, **OUTAGE_CONSUMER_ENV, **FUTURE_BOUND_ENV,
                              "ACADEMY_CONSUMER_BATCH_WAIT_SECONDS": "1", "LOG_LEVEL": "DEBUG"})
    runs = []

    def output():
        text = [f"(ACADEMY_FAULT_SEED={seed})", f"--- consumer stderr:\n{consumer.stderr[-3000:]}"]
        for n, run in enumerate(runs, 1):
            text.append(f"--- reconcile run {n} (exit {run.process.poll()}):\n{run.stdout[-500:]}\n"
                        f"{run.stderr[-1500:]}")
        return "\n".join(text)

    wait_for(lambda: "assigned [" in consumer.stderr or not consumer.running(), 60,
             "the consumer's partition assignment", seed)
    assert consumer.running(), output()
    started = time.monotonic()

    def reconcile_round(listed, events, consumer_first):
        """
        One reconcile run of the catalog as it is, racing the consumer applying ``events``. With
        ``consumer_first``, reconcile is released once the consumer has created an academy of ``events``
        (inside its batch transaction, not committed yet), and lists that academy first: reconcile then
        creates it while the consumer's insert is pending. Otherwise reconcile is released first and the
        consumer creates rows reconcile is creating.
        """
        gate.close()
        gate.first = None
        run = cli_popen("reconcile_academies", "--enterprise-customer", CUSTOMER, "--json", env=catalog_env)
        runs.append(run)
        wait_for(lambda: gate.arrivals >= len(runs) or not run.running(), 60, "reconcile to ask for the catalog",
                 seed)
        assert run.running(), output()
        if not consumer_first:
            gate.release()
        creating = [e.uuid for e in events if e.action == "created"]
        if not (consumer_first and creating):
            if events:
                produce_events(events)
            gate.release()
            assert run.wait(timeout=120) == 0, output()
        else:
            # The consumer inserts the round's first new academy and is held there (its transaction open);
            # reconcile, released then, lists that academy first and must wait on the uncommitted row.
            with HeldInsert(creating[0]) as hold:
                produce_events(events)
                wait_for(lambda: hold.waiting() or not consumer.running(), 30,
                         "the consumer to insert the academy (held in its transaction)", seed, interval=0.005)
                assert consumer.running(), output()
                gate.first, waits = creating[0], lock_waits.count
                gate.release()
                wait_for(lambda: lock_waits.count > waits or not run.running(), 30,
                         "reconcile to wait on the consumer's uncommitted row", seed, interval=0.005)
                hold.release()
                assert run.wait(timeout=120) == 0, output()
        report = json.loads(run.stdout)
        assert report["errors"] == 0 and report["skipped"] == 0, output()
        assert report["created"] + report["updated"] + report["unchanged"] + report["stale"] == listed, output()
        return report

    reports = []
    total = len(produced)
    with LockWaits() as lock_waits:
        # Round k: the catalog gains cohort k; its first events (its `created` ones) and the previous
        # cohort's remaining events are produced while reconcile run k applies the catalog.
        for cohort in range(COHORTS + EXTRA_RUNS):
            members = range(cohort * COHORT_SIZE, (cohort + 1) * COHORT_SIZE) if cohort < COHORTS else range(0)
            for index in members:
                item = academies[index].item
                catalog_server.add_academy(item["title"], CUSTOMER, **{k: v for k, v in item.items() if k != "title"})
            events = [e for index in members for e in parts[index][0]]
            if cohort >= 1:
                events += [e for index in range((cohort - 1) * COHORT_SIZE, min(cohort, COHORTS) * COHORT_SIZE)
                           for e in parts[index][1]]
            listed = len(academies) if cohort >= COHORTS else (cohort + 1) * COHORT_SIZE
            reports.append(reconcile_round(listed, events, consumer_first=cohort % 2 == 0))

        # Every event applied (the group acknowledged the end of every partition), then a clean stop.
        wait_for(lambda: sum(max(c, 0) for c, _ in offsets(devstack, "reconcile-race").values()) >= total
                 or not consumer.running(), 120, "the consumer to acknowledge every event", seed, interval=0.2)
        assert consumer.running(), output()
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(timeout=60) == 0, output()
        elapsed = time.monotonic() - started

    positions = offsets(devstack, "reconcile-race")
    # Where every newer event is a delete, the snapshot lost the race to it or won it: both are right
    # (see concurrent_history); the row must be inactive either way, which expected_state() says.
    versions = dict(EnterpriseAcademy.objects.values_list("uuid", "display_order"))
    delete_first = 0
    for academy in academies:
        fallback = academy.fallback
        if fallback is not None and versions.get(uuid.UUID(fallback.uuid)) == fallback.version:
            expected[fallback.uuid] = {**expected[fallback.uuid], "data": fallback.academy}
            delete_first += 1
    check = check_table(expected)
    dead = devstack.read_dlq()
    read = check_all_read(devstack, [consumer], total)
    rows = EnterpriseAcademy.objects.count()
    races = consumer.stderr.count(RACE_LINE) + sum(run.stderr.count(RACE_LINE) for run in runs)
    transient = len(RETRY_LINE.findall(consumer.stderr)) + sum(run.stderr.count("transient database error")
                                                               for run in runs)
    outcome = {name: sum(report[name] for report in reports)
               for name in ("created", "updated", "unchanged", "stale")}
    print(f"{connection.vendor}: {total} events and {len(runs)} reconcile runs of up to {len(academies)} academies "
          f"in {elapsed:.1f} s; reconcile {outcome}; lock waits seen: {lock_waits.count}; uniqueness races lost "
          f"and retried: {races}; transient errors retried: {transient}; newer delete before the snapshot: "
          f"{delete_first} of {sum(1 for a in academies if a.fallback)}; rows {rows}; offsets {positions}; "
          f"{len(dead)} dead-lettered; {read.read} of {read.on_topic} offsets read, low watermarks "
          f"{read.low_watermarks}; {consumer.stdout.strip()}")
    guarantee("reconcile concurrent with consumer", events=total, faults=len(runs),
              fault_kinds=f"overlapping reconcile runs, {lock_waits.count} lock waits", bad_inputs=0,
              lost=check.lost + len(dead) + read.unread, duplicates=check.duplicates, stale=check.stale)
    assert not dead, f"events were dead-lettered (ACADEMY_FAULT_SEED={seed}): {[r.headers for r in dead[:3]]}"
    assert not read.problems, f"ACADEMY_FAULT_SEED={seed}: {read.problems}"
    assert all(committed == end for committed, end in positions.values()), f"offsets {positions} {output()}"
    assert rows == len(academies), f"{rows} rows for {len(academies)} academies (ACADEMY_FAULT_SEED={seed})"
    assert lock_waits.error is None, f"watching lock waits failed: {lock_waits.error!r}"
    assert lock_waits.count >= 1, f"reconcile and the consumer never collided (ACADEMY_FAULT_SEED={seed})"
    assert (check.lost, check.duplicates, check.stale) == (0, 0, 0), check.describe(seed)
