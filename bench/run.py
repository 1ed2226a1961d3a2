"""
``make bench`` / ``python bench/run.py [--events N] [--academies M] [--databases sqlite,postgres,mysql]
[--batch-size B] [--stock-events K] [--reconcile-items R]``: throughput of the academy event paths, side by
side, on the embedded dev stack, in one run. See bench/README.md for what each line means.
"""

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from academy_devstack import envfile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench.*, when run as a script

from bench import commands, history  # noqa: E402  pylint: disable=wrong-import-position
from bench.commands import WORK  # noqa: E402  pylint: disable=wrong-import-position

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results.json"
BYTES_PER_EVENT = 1000  # stored size of one history event (value ~430 B, key, CloudEvents headers), rounded up
PARTITION_BUDGET = 4 * 1024 * 1024  # of the mock's 5 MiB per partition
IDLE = 2  # --until-idle of the consumer runs


def arguments():
    """The command line's options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000, help="events in the history (default 20,000)")
    parser.add_argument("--academies", type=int, default=500, help="academies it creates (default 500)")
    parser.add_argument("--databases", default="sqlite,postgres,mysql", help="of sqlite, postgres, mysql")
    parser.add_argument("--batch-size", type=int, help="ACADEMY_CONSUMER_BATCH_SIZE of the consumer runs")
    parser.add_argument("--stock-events", type=int, help="events the stock loop is timed on (default: all)")
    parser.add_argument("--reconcile-items", type=int, default=10000, help="catalog size (default 10,000)")
    parser.add_argument("--consumer-ref", metavar="REV", help="also run the consumer with the code of this git "
                        "revision (e.g. the one before a rewrite), side by side")
    parser.add_argument("--latency-events", type=int, default=20, help="sparse events timed to their row, per loop "
                        "(line 7; default 20, 0 leaves it out)")
    parser.add_argument("--latency-only", action="store_true", help="only line 7 (latency), on the first database")
    options = parser.parse_args()
    options.databases = [name.strip() for name in options.databases.split(",") if name.strip()]
    unknown = set(options.databases) - set(commands.DATABASES)
    if unknown:
        parser.error(f"unknown database(s) {sorted(unknown)}: use {', '.join(commands.DATABASES)}")
    if options.events < options.academies:
        parser.error("--events must be at least --academies")
    options.stock_events = min(options.stock_events or options.events, options.events)
    return options


def start_devstack(partitions):
    """The dev stack as a subprocess (env file in bench/.work, never the repo's), and the settings it wrote."""
    env_file = WORK / ".devstack.env"
    env_file.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    # The dev stack outlives this function (the caller stops it at the end of the bench): no ``with``.
    log = open(WORK / "devstack.log", "wb")  # pylint: disable=consider-using-with
    process = subprocess.Popen(  # pylint: disable=consider-using-with
        commands.command("devstack", "--partitions", str(partitions), "--env-file", str(env_file)),
        env=env, cwd=WORK, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    waited = subprocess.run(commands.command("devstack", "--wait", "--timeout", "30", "--env-file", str(env_file)),
                            env=env, cwd=WORK, capture_output=True, text=True, check=False)
    if waited.returncode != 0:
        process.kill()
        sys.exit(f"bench: the dev stack did not start: {waited.stderr.strip()} (see {WORK / 'devstack.log'})")
    values = envfile.read(env_file)  # values quoted for a POSIX shell
    return process, values


def export(rev):
    """The ``academy_consumer`` and ``signals`` packages of git revision ``rev``, in bench/.work: a PYTHONPATH."""
    root = Path(__file__).resolve().parent.parent
    commit = subprocess.run(["git", "rev-parse", "--short", f"{rev}^{{commit}}"], cwd=root, capture_output=True,
                            text=True, check=True).stdout.strip()
    target = WORK / f"ref-{commit}"
    if not target.exists():
        target.mkdir()
        archive = subprocess.run(["git", "archive", commit, "academy_consumer", "signals"], cwd=root,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    found = subprocess.run([sys.executable, "-c", "import academy_consumer; print(academy_consumer.__file__)"],
                           env={**os.environ, "PYTHONPATH": str(target)}, cwd=WORK, capture_output=True, text=True,
                           check=False)
    if not found.stdout.startswith(str(target)):
        sys.exit(f"bench: --consumer-ref {rev}: the exported code is not the one imported ({found.stdout.strip()})")
    return commit, str(target)


def check_log(bootstrap, topic, produced, devstack):
    """Every produced event still in the topic (low watermarks 0, highs summing to ``produced``)."""
    marks = events.watermarks(bootstrap, topic)
    lost = {p: low for p, (low, _) in marks.items() if low}
    total = sum(high for _, high in marks.values())
    if lost or total != produced or devstack.poll() is not None:
        sys.exit(f"bench: events lost or missing: watermarks {marks}, {total} of {produced} in the topic, dev stack "
                 f"{'exited ' + str(devstack.returncode) if devstack.poll() is not None else 'running'} "
                 f"(see {WORK / 'devstack.log'})")
    return marks


def rate(count, seconds):
    return round(count / seconds, 1) if seconds else None


def main():  # pylint: disable=too-many-locals,too-many-statements
    """Run every measurement, then write the results and print the report."""
    options = arguments()
    WORK.mkdir(exist_ok=True)
    started = time.monotonic()
    partitions = 3 if options.latency_only else max(3, math.ceil(options.events * BYTES_PER_EVENT / PARTITION_BUDGET))
    devstack, stack_env = start_devstack(partitions)
    try:
        os.environ.update(stack_env)
        os.environ["DATABASE_URL"] = commands.DATABASES["sqlite"]  # (the in-process part touches no database)
        os.environ.pop("EVENT_BUS_TOPIC_PREFIX", None)
        os.environ["DJANGO_SETTINGS_MODULE"] = "academy_consumer.settings"
        import django  # pylint: disable=import-outside-toplevel
        django.setup()
        global events  # pylint: disable=global-statement
        from edx_event_bus_kafka.internal.config import get_full_topic  # pylint: disable=import-outside-toplevel

        from academy_consumer import conf  # pylint: disable=import-outside-toplevel
        from bench import events  # pylint: disable=import-outside-toplevel

        base_topic = conf.topic()
        topic, bootstrap, registry = get_full_topic(base_topic), stack_env[
            "EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS"], stack_env["EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL"]
        if options.latency_only:
            latency_only(options, topic, bootstrap, base_topic)
            return
        print(f"== history: {options.events:,} events over {options.academies:,} academies, {partitions} partitions",
              flush=True)
        stream, expected = history.history(options.events, options.academies)
        catalog = WORK / "catalog.json"
        catalog.write_text(json.dumps(history.catalog(options.reconcile_items)))
        events.produce(bootstrap, topic, stream)
        marks = check_log(bootstrap, topic, options.events, devstack)
        ends = {p: high for p, (_, high) in marks.items()}
        results = {"machine": machine(), "options": dict(vars(options)),
                   "partitions": {str(p): high for p, high in ends.items()}, "kafka": {}, "databases": {}}

        print("== raw consume and decode (in process, by assignment)", flush=True)
        kafka = results["kafka"]
        messages, seconds = events.consume(bootstrap, topic, ends)
        kafka["raw"] = {"events": len(messages), "seconds": round(seconds, 3),
                        "events_per_s": rate(len(messages), seconds), "mean_value_bytes": round(events.sizes(messages))}
        confluent = events.confluent_decoder(registry)
        _, seconds = events.consume(bootstrap, topic, ends, confluent, "confluent")
        alone = events.time_decode(confluent, messages)
        kafka["confluent"] = {"events": len(messages), "seconds": round(seconds, 3),
                              "events_per_s": rate(len(messages), seconds), "decode_alone_seconds": round(alone, 3),
                              "decode_alone_per_s": rate(len(messages), alone)}
        ours = events.our_decoder(registry)
        if isinstance(ours, str):
            kafka["ours"] = {"na": ours}
        else:
            _, seconds = events.consume(bootstrap, topic, ends, ours, "ours")
            alone = events.time_decode(ours, messages)
            kafka["ours"] = {"events": len(messages), "seconds": round(seconds, 3),
                             "events_per_s": rate(len(messages), seconds), "decode_alone_seconds": round(alone, 3),
                             "decode_alone_per_s": rate(len(messages), alone)}
        del messages

        base_env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "LOG_LEVEL")}
        if options.batch_size:
            base_env["ACADEMY_CONSUMER_BATCH_SIZE"] = str(options.batch_size)
        chunked = commands.supports("reconcile_academies", "--chunk-size", base_env)
        ref = export(options.consumer_ref) if options.consumer_ref else None
        results["consumer_ref"] = ref and ref[0]
        stamp = time.strftime("%Y%m%d%H%M%S")
        for name in options.databases:
            url = commands.DATABASES[name]
            env = {**base_env, "DATABASE_URL": url}
            print(f"== {name}: {url}", flush=True)
            why = commands.prepare(url, env)
            if why:
                print(f"   skipped: {why}", flush=True)
                results["databases"][name] = {"skipped": why}
                continue
            db = results["databases"][name] = {"url": url}
            db["consumer"] = commands.consumer(env, f"bench-consumer-{name}-{stamp}", IDLE, name)
            db["consumer"]["table"] = commands.diff(expected, commands.table(url)) or "as expected"
            print(f"   consumer: {db['consumer']}", flush=True)
            commands.empty_table(url)
            db["consumer_host_receiver"] = commands.consumer(
                {**env, "DJANGO_SETTINGS_MODULE": "bench.host_receiver", "PYTHONPATH": str(ROOT)},
                f"bench-host-receiver-{name}-{stamp}", IDLE, f"{name}-host-receiver")
            db["consumer_host_receiver"]["table"] = commands.diff(expected, commands.table(url)) or "as expected"
            print(f"   consumer + 1 no-op host receiver: {db['consumer_host_receiver']}", flush=True)
            commands.empty_table(url)
            if ref:
                db["consumer_ref"] = commands.consumer({**env, "PYTHONPATH": ref[1]}, f"bench-ref-{name}-{stamp}",
                                                       IDLE, f"{name}-ref-{ref[0]}")
                db["consumer_ref"]["table"] = commands.diff(expected, commands.table(url)) or "as expected"
                print(f"   consumer @{ref[0]}: {db['consumer_ref']}", flush=True)
                commands.empty_table(url)
            group = f"bench-stock-{name}-{stamp}"
            events.commit_start(bootstrap, topic, group, ends)  # a new stock group would start at the end
            db["stock"] = commands.stock(env, bootstrap, topic, base_topic, group, partitions=ends,
                                         target=options.stock_events, label=name)
            if options.stock_events == options.events and "error" not in db["stock"]:
                db["stock"]["table"] = commands.diff(expected, commands.table(url)) or "as expected"
            print(f"   stock: {db['stock']}", flush=True)
            commands.empty_table(url)
            db["reconcile"] = {"fresh": commands.reconcile(env, catalog, f"{name}-fresh")}
            if chunked:
                commands.empty_table(url)
                db["reconcile"]["per_item"] = commands.reconcile(env, catalog, f"{name}-per-item", "--chunk-size", "1")
            print(f"   reconcile: {db['reconcile']}", flush=True)
        check_log(bootstrap, topic, options.events, devstack)  # (before line 7, which produces into the same topic)
        results["latency"] = sparse_latency(options, base_env, topic=topic, bootstrap=bootstrap, base_topic=base_topic,
                                            databases=results["databases"])
        results["reconcile_chunk_size_option"] = chunked
        results["bench_seconds"] = round(time.monotonic() - started, 1)
    finally:
        if devstack.poll() is None:
            devstack.send_signal(signal.SIGTERM)
            devstack.wait(30)
    ratios(results)
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(report(results))
    print(f"(results in {RESULTS})")


def sparse_latency(options, env, *, topic, bootstrap, base_topic, databases):
    """Line 7 on the first database the bench used: ``{"database": name, "consumer": ..., "stock": ...}`` or None."""
    from bench import latency  # pylint: disable=import-outside-toplevel  # (it imports the project: Django set up)

    usable = [name for name in options.databases if "skipped" not in databases.get(name, {})]
    if not options.latency_events or not usable:
        return None
    name = usable[0]
    print(f"== latency of sparse events ({options.latency_events} per loop), {name}", flush=True)
    url = commands.DATABASES[name]
    found = latency.run({**env, "DATABASE_URL": url}, url=url, bootstrap=bootstrap, topic=topic,
                        base_topic=base_topic, count=options.latency_events, stamp=time.strftime("%Y%m%d%H%M%S"))
    return {"database": name, **found}


def latency_only(options, topic, bootstrap, base_topic):
    """``--latency-only``: line 7 on the first database that can be prepared, printed and written."""
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "LOG_LEVEL")}
    databases = {}
    for name in options.databases:
        why = commands.prepare(commands.DATABASES[name], {**env, "DATABASE_URL": commands.DATABASES[name]})
        if not why:
            break
        print(f"   {name} skipped: {why}", flush=True)
        databases[name] = {"skipped": why}
    found = sparse_latency(options, env, topic=topic, bootstrap=bootstrap, base_topic=base_topic, databases=databases)
    results = {"machine": machine(), "options": dict(vars(options)), "latency": found}
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if found:
        print("\n".join(latency_lines(found)))
    print(f"(results in {RESULTS})")


def latency_lines(found):
    """Line 7 of the report: its table and the targets' verdict."""
    from bench import latency  # pylint: disable=import-outside-toplevel

    rows, *verdict = latency.report(found["database"], found)
    return [_table(rows), *verdict]


def ratios(results):
    """Add the ratios of the report (ours against stock and against confluent) to ``results``."""
    kafka = results["kafka"]
    ours = kafka["ours"].get("decode_alone_per_s")
    results["ratios"] = {"ours_vs_confluent_decode": ours and round(ours / kafka["confluent"]["decode_alone_per_s"], 2)}
    for name, db in results["databases"].items():
        consumer = db.get("consumer", {}).get("events_per_s")
        stock = (db.get("stock") or {}).get("events_per_s")
        results["ratios"][name] = {
            "consumer_vs_stock": consumer and stock and round(consumer / stock, 2),
            "consumer_vs_confluent_decode_loop": consumer and round(consumer / kafka["confluent"]["events_per_s"], 3),
        }
        hosted = db.get("consumer_host_receiver", {}).get("events_per_s")
        results["ratios"][name]["host_receiver_vs_none"] = consumer and hosted and round(hosted / consumer, 3)
        before = db.get("consumer_ref", {}).get("events_per_s")
        if before:
            results["ratios"][name]["consumer_vs_ref"] = consumer and round(consumer / before, 2)


def machine():
    versions = {name: metadata.version(name) for name in ("confluent-kafka", "Django", "openedx-events",
                                                          "edx-event-bus-kafka", "fastavro")}
    from confluent_kafka import libversion  # pylint: disable=import-outside-toplevel
    return {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "librdkafka": libversion()[0], **versions}


def number(value, digits=0):
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def report(results):  # pylint: disable=too-many-locals,too-many-statements
    """The report's table of ``results``, as text."""
    kafka, ratio = results["kafka"], results["ratios"]
    rows = [("measurement", "database", "events", "seconds", "events/s", "peak RSS MB", "notes")]

    def row(what, db, entry, rss=None, notes=""):
        if "na" in entry or "error" in entry or "skipped" in entry:
            rows.append((what, db, "", "", entry.get("na") or "failed", "",
                         entry.get("error") or entry.get("skipped", "")))
            return
        rows.append((what, db, number(entry["events"]), number(entry["seconds"], 2), number(entry["events_per_s"]),
                     number(rss, 1) if rss is not None else "", notes))

    row("1 raw consume (confluent Consumer)", "-", kafka["raw"],
        notes=f"mean value {kafka['raw']['mean_value_bytes']} B")
    row("2 confluent decode-only: consume + AvroDeserializer", "-", kafka["confluent"])
    alone = {"events": kafka["raw"]["events"]}
    row("  2b AvroDeserializer alone (messages in memory)", "-",
        {**alone, "seconds": kafka["confluent"]["decode_alone_seconds"],
         "events_per_s": kafka["confluent"]["decode_alone_per_s"]})
    if "na" in kafka["ours"]:
        row("3 our decode: consume + Decoder", "-", kafka["ours"])
    else:
        row("3 our decode: consume + Decoder", "-", kafka["ours"])
        row("  3b Decoder alone (messages in memory)", "-",
            {**alone, "seconds": kafka["ours"]["decode_alone_seconds"],
             "events_per_s": kafka["ours"]["decode_alone_per_s"]})
    for name, db in results["databases"].items():
        if "skipped" in db:
            row("4/5 stock loop, consumer", name, db)
            continue
        stock = db["stock"]
        sub = results["options"]["stock_events"] < results["options"]["events"]
        row("4 stock consume_events", name, stock,
            notes=f"subsampled: first {results['options']['stock_events']:,} events; table not checked" if sub
            else f"timed after its first commit; table {stock.get('table')}")
        consumer = db["consumer"]
        row("5 consume_academy_events", name, consumer, consumer.get("peak_rss_mb"),
            notes=f"table {consumer.get('table')}; {consumer.get('batches', '?')} batches")
        hosted = db.get("consumer_host_receiver")
        if hosted:
            row("  5h consume_academy_events + 1 no-op host receiver", name, hosted, hosted.get("peak_rss_mb"),
                notes=f"table {hosted.get('table')}; the receiver got {number(hosted.get('host_receiver_events'))} "
                      f"events of {number(hosted.get('events'))}")
        if "consumer_ref" in db:
            before = db["consumer_ref"]
            row(f"  5' consume_academy_events @{results['consumer_ref']}", name, before, before.get("peak_rss_mb"),
                notes=f"table {before.get('table')}; {before.get('batches', '?')} batches")
    lines = [_table(rows), "", "ratios (6)"]
    lines.append("  our decode / confluent AvroDeserializer (decode alone): "
                 f"{number(ratio['ours_vs_confluent_decode'], 2)}")
    for name, entry in ratio.items():
        if isinstance(entry, dict):
            lines.append(f"  {name}: consumer / stock loop {number(entry['consumer_vs_stock'], 1)}x; consumer / "
                         f"confluent decode-only {number(entry['consumer_vs_confluent_decode_loop'], 3)}x"
                         + (f"; consumer / consumer @{results['consumer_ref']} {number(entry['consumer_vs_ref'], 2)}x"
                            if entry.get("consumer_vs_ref") else ""))
            if entry.get("host_receiver_vs_none"):
                lines.append(f"  {name}: consumer with 1 no-op host receiver / with none (5h / 5): "
                             f"{number(entry['host_receiver_vs_none'], 3)}x")
    rec = [("reconcile (8)", "database", "pass", "items", "seconds", "items/s", "statements", "outcomes")]
    for name, db in results["databases"].items():
        for run, entry in (db.get("reconcile") or {}).items():
            if "error" in entry:
                rec.append(("reconcile_academies --from-file", name, run, "", "", "failed", "", entry["error"]))
                continue
            counts = {k: v for k, v in entry["counts"].items() if isinstance(v, int) and not isinstance(v, bool) and v}
            items = sum(counts.values())
            rec.append(("reconcile_academies --from-file", name, run, number(items), number(entry["seconds"], 2),
                        number(rate(items, entry["seconds"])), number(entry["statements"]),
                        ", ".join(f"{k} {v}" for k, v in counts.items())))
    lines += ["", _table(rec)]
    if results.get("latency"):
        lines += ["", *latency_lines(results["latency"])]
    note = "" if results["reconcile_chunk_size_option"] else \
        " (no --chunk-size option yet: these runs ARE the per-item baseline)"
    lines.append(f"  statements: counted in process with connection.execute_wrapper (every SQL statement through "
                 f"Django's cursor, savepoints included, COMMIT/ROLLBACK not){note}")
    consumer_how = {db["consumer"].get("timed_by") for db in results["databases"].values() if "consumer" in db}
    lines += ["", "timing: " + "; ".join(sorted(filter(None, consumer_how))) + " (consumer, group join excluded); "
              "stock: the group's committed offsets, first commit -> last (group join excluded); "
              "1-3: by assignment (no group), from assign() to the last message"]
    m = results["machine"]
    lines.append(f"machine: {m['cores']} cores, Python {m['python']}, {m['platform']}; confluent-kafka "
                 f"{m['confluent-kafka']} (librdkafka {m['librdkafka']}), Django {m['Django']}, openedx-events "
                 f"{m['openedx-events']}, edx-event-bus-kafka {m['edx-event-bus-kafka']}, fastavro {m['fastavro']}")
    o = results["options"]
    lines.append(f"run: --events {o['events']} --academies {o['academies']} "
                 f"--batch-size {o['batch_size'] or 'default'} --stock-events {o['stock_events']}; "
                 f"{len(results['partitions'])} partitions {results['partitions']}; "
                 f"bench took {results['bench_seconds']} s")
    return "\n".join(lines)


def _table(rows):
    """``rows`` as aligned text columns."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    right = {2, 3, 4, 5, 6} if rows[0][0] == "measurement" else {3, 4, 5, 6}
    right.discard(len(rows[0]) - 1)
    out = []
    for number_, r in enumerate(rows):
        cells = (str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
        out.append("  ".join(cells).rstrip())
        if number_ == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


events = None  # bench.events, imported once Django is set up (it imports the project)

if __name__ == "__main__":
    main()
