"""
The bench's command runs, each a subprocess on one database: ``consume_academy_events``, the stock
``consume_events``, and ``reconcile_academies`` (through ``bench/reconcile_count.py``); plus the
databases themselves (reachable?, create, migrate, empty the table, read it back).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from confluent_kafka import Consumer, TopicPartition

BENCH = Path(__file__).resolve().parent
WORK = BENCH / ".work"  # the commands' working directory: the SQLite file, logs (never the repo's .devstack.env)
TABLE = "academy_consumer_enterpriseacademy"
DATABASES = {
    "sqlite": f"sqlite:///{WORK / 'academy_bench.sqlite3'}",
    "postgres": "postgres://root@127.0.0.1:5432/academy_bench",
    "mysql": "mysql://root@127.0.0.1:3306/academy_bench",
}
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ [\w.]+: (assigned|batch) (.*)$")
BATCH_COUNTS = re.compile(r": ((?:[a-z_]+ \d+(?:, )?)+) \((\d+(?:\.\d+)?) s\)$")


def command(*args):
    return [sys.executable, "-m", "academy_consumer.cli", *args]


def run(args, env, log_name, timeout=900):
    """Run a command to its end: ``(exit status, wall seconds, peak RSS MB, stdout, stderr)``."""
    out, err = WORK / f"{log_name}.out", WORK / f"{log_name}.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        started = time.perf_counter()
        with subprocess.Popen(args, env=env, cwd=WORK, stdin=subprocess.DEVNULL, stdout=stdout,
                              stderr=stderr) as process:
            status, rss = wait(process, timeout)
        wall = time.perf_counter() - started
    return status, wall, rss, out.read_text(errors="replace"), err.read_text(errors="replace")


def wait(process, timeout):
    """
    ``(exit status, peak RSS in MB)`` of a child. The peak is its VmHWM (/proc/<pid>/status), read every
    50 ms while it runs: ``wait4``'s ``ru_maxrss`` would not do, as Linux carries the forking parent's RSS
    into it (the bench holds 20,000 messages).
    """
    deadline, peak = time.monotonic() + timeout, 0
    while True:
        peak = max(peak, _hwm_kib(process.pid))
        pid, status, _ = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, peak / 1024
        if time.monotonic() > deadline:
            process.kill()
        time.sleep(0.05)


def stop(process, grace=15):
    """SIGTERM a child still running, and kill it if it has not exited within ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(15)


def _hwm_kib(pid):
    """Peak resident memory (VmHWM) of process ``pid`` in KiB, 0 when unknown."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            return next((int(line.split()[1]) for line in status if line.startswith("VmHWM:")), 0)
    except (OSError, ValueError):
        return 0


# --- databases ---------------------------------------------------------------------------------------------


def _connect(url, database=True):
    """A DB-API connection to the database of ``url`` (to its server only, without ``database``)."""
    parts = urlparse(url)
    name = parts.path.lstrip("/")
    if parts.scheme == "sqlite":
        import sqlite3  # pylint: disable=import-outside-toplevel
        return sqlite3.connect(parts.path)
    if parts.scheme == "postgres":
        import psycopg2  # pylint: disable=import-outside-toplevel
        connection = psycopg2.connect(host=parts.hostname, port=parts.port, user=parts.username,
                                      password=parts.password or "", dbname=name if database else "postgres",
                                      connect_timeout=3)
        connection.autocommit = True
        return connection
    import MySQLdb  # pylint: disable=import-outside-toplevel
    kwargs = {"db": name} if database else {}
    return MySQLdb.connect(host=parts.hostname, port=parts.port, user=parts.username, password=parts.password or "",
                           connect_timeout=3, autocommit=True, **kwargs)


def prepare(url, env):
    """Create the bench database afresh and migrate it; returns None, or why it cannot be used."""
    parts = urlparse(url)
    name = parts.path.lstrip("/")
    try:
        if parts.scheme == "sqlite":
            Path(parts.path).unlink(missing_ok=True)
        else:
            connection = _connect(url, database=False)
            cursor = connection.cursor()
            cursor.execute(f"DROP DATABASE IF EXISTS {name}")
            cursor.execute(f"CREATE DATABASE {name}" + (" CHARACTER SET utf8mb4" if parts.scheme == "mysql" else ""))
            connection.close()
    except Exception as exc:  # pylint: disable=broad-except  # unreachable, no driver, no rights: skip it
        return f"{parts.scheme} at {parts.hostname}:{parts.port} not usable: {type(exc).__name__}: " \
               f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    status, _, _, _, stderr = run(command("migrate", "--verbosity", "0"), env, "migrate")
    return None if status == 0 else f"migrate failed: {stderr.strip().splitlines()[-1:]}"


def empty_table(url):
    """Delete every row of the academy table of the database at ``url``."""
    connection = _connect(url)
    cursor = connection.cursor()
    cursor.execute(f"DELETE FROM {TABLE}")
    connection.commit()
    connection.close()


def table(url):
    """``{uuid: (name, is_active, display_order)}`` of the academy table."""
    connection = _connect(url)
    cursor = connection.cursor()
    cursor.execute(f"SELECT uuid, name, is_active, display_order FROM {TABLE}")
    rows = {str(_uuid(u)): (n, bool(a), d) for u, n, a, d in cursor.fetchall()}
    connection.close()
    return rows


def _uuid(value):
    import uuid  # pylint: disable=import-outside-toplevel
    return uuid.UUID(value) if isinstance(value, str) else value


def diff(expected, found):
    """'' when the table is the expected one, else a short description of how it differs."""
    if found == expected:
        return ""
    wrong = [u for u in expected if found.get(u) != expected[u]]
    extra = len(set(found) - set(expected))
    return f"{len(wrong)} of {len(expected)} academies differ (e.g. {wrong[:1]}), {extra} unexpected rows"


# --- consume_academy_events --------------------------------------------------------------------------------


def consumer(env, group, idle, label):
    """
    ``consume_academy_events --from-beginning --until-idle IDLE`` with a fresh group: a dict with the events,
    the seconds from the partition assignment to the last applied batch (its log lines), the peak RSS.
    """
    args = command("consume_academy_events", "--from-beginning", "--until-idle", str(idle), "--group-id", group)
    status, wall, rss, stdout, stderr = run(args, env, f"consumer-{label}")
    result = {"exit": status, "wall_seconds": round(wall, 3), "peak_rss_mb": round(rss, 1)}
    if status != 0:
        return {**result, "error": (stderr.strip().splitlines() or ["no output"])[-1][:300]}
    assigned, batches = None, []
    for line in stderr.splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        when = time.mktime(time.strptime(match[1][:19], "%Y-%m-%d %H:%M:%S")) + int(match[1][20:]) / 1000
        if match[2] == "assigned" and assigned is None and match[3].strip() not in ("[]", ""):
            assigned = when
        elif match[2] == "batch":
            counts = BATCH_COUNTS.search(match[3])
            if counts:
                events = sum(int(n) for n in re.findall(r" (\d+)", " " + counts[1]))
                batches.append((when, float(counts[2]), events))
    final = re.search(r"consumed (\d+) event", stdout)
    events = int(final[1]) if final else sum(b[2] for b in batches)
    host = re.search(r"^bench host receiver: (\d+) event", stderr, re.M)  # (line 5h: bench/host_receiver.py)
    if host:
        result["host_receiver_events"] = int(host[1])
    if batches:
        start = assigned if assigned is not None else batches[0][0] - batches[0][1]
        seconds = max(batches[-1][0] - start, 1e-3)
        how = "log lines: first partition assignment -> last batch line (ms timestamps)" if assigned is not None \
            else "log lines: first batch start -> last batch line"
    else:
        seconds, how = max(wall - idle, 1e-3), f"whole command minus the --until-idle {idle} s wait"
    return {**result, "events": events, "seconds": round(seconds, 3), "events_per_s": round(events / seconds, 1),
            "timed_by": how, "batches": len(batches)}


# --- the stock consume_events ------------------------------------------------------------------------------


def committed(monitor, topic, partitions):
    offsets = monitor.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
    return sum(max(tp.offset, 0) for tp in offsets)


def stock(env, bootstrap, topic, base_topic, group, *, partitions, target, label, stall=60):
    """
    openedx-events' ``consume_events`` (edx-event-bus-kafka) on ``topic`` with a group whose offsets were
    committed at 0 beforehand. It commits after every event: the bench reads the group's committed offsets
    every 0.2 s and times from the first commit to the one reaching ``target`` events (group join and
    rebalance excluded), then stops it with SIGTERM.
    """
    out, err = WORK / f"stock-{label}.out", WORK / f"stock-{label}.err"
    monitor = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        # Stopped in the ``finally`` below (SIGTERM, then kill), rather than by a ``with``, which would only wait.
        process = subprocess.Popen(  # pylint: disable=consider-using-with
            command("consume_events", "-t", base_topic, "-g", group), env=env, cwd=WORK,
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
        first = last = None
        progress_at, done, error = time.monotonic(), 0, None
        try:
            while done < target:
                time.sleep(0.2)
                if process.poll() is not None:
                    error = f"consume_events exited {process.returncode}: {err.read_text()[-300:]}"
                    break
                now, count = time.monotonic(), committed(monitor, topic, partitions)
                if count > done:
                    progress_at = now
                    if first is None:
                        first = (now, count)
                    last, done = (now, count), count
                elif now - progress_at > stall:
                    error = f"no progress in {stall} s at {done} of {target} events"
                    break
        finally:
            monitor.close()
            stop(process)
    if error or first is None or last[0] == first[0]:
        return {"error": error or "too few commits to time", "events": done}
    events, seconds = last[1] - first[1], last[0] - first[0]
    return {"events": events, "seconds": round(seconds, 3), "events_per_s": round(events / seconds, 1),
            "read": done, "timed_by": "the group's committed offsets, polled every 0.2 s: first commit -> target"}


# --- reconcile_academies -----------------------------------------------------------------------------------


def reconcile(env, path, label, *extra):
    """``reconcile_academies --from-file PATH --json`` in process, its SQL statements counted (reconcile_count.py)."""
    args = [sys.executable, str(BENCH / "reconcile_count.py"), str(path), *extra]
    status, _, rss, stdout, stderr = run(args, env, f"reconcile-{label}")
    try:
        result = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"exit": status, "error": (stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return {**result, "exit": status, "peak_rss_mb": round(rss, 1)}


def supports(name, option, env):
    """Whether command ``name`` has ``option`` (its --help says so)."""
    status, _, _, stdout, _ = run(command(name, "--help"), env, f"help-{name}")
    return status == 0 and option in stdout
