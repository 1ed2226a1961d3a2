"""
Full sync of the academy table from the Enterprise Catalog (or from a file).

    academy-consumer reconcile_academies --enterprise-customer UUID [--deactivate-missing] [--dry-run] [--json]
    academy-consumer reconcile_academies --from-file catalog.json      # or - for stdin
    academy-consumer reconcile_academies --academy-uuid UUID            # one academy; never deactivates

Exit status: 0 when every item applied or was legitimately skipped; 1 when some rows failed to
apply; 2 on bad arguments or a failed fetch or unreadable input (then nothing was written).
"""

import json
import sys

from django.conf import settings
from django.utils import timezone

from academy_consumer.apply import ERRORS, OUTCOMES, sync_academies
from academy_consumer.catalog import CatalogClient, CatalogError
from academy_consumer.management.base import EXIT_ROW_ERRORS, AcademyCommand, fail
from academy_consumer.normalize import extract_items, parse_uuid


def uuid_argument(value):
    """argparse type: a UUID in any accepted spelling."""
    parsed = parse_uuid(value)
    if parsed is None:
        raise ValueError(value)
    return parsed


uuid_argument.__name__ = "UUID"  # argparse says "invalid UUID value: 'x'"


def read_items(path):
    """The academy items of a JSON file (``-`` for stdin), in any envelope the normalizer accepts."""
    name = "stdin" if path == "-" else path
    try:
        if path == "-":  # bytes, decoded strictly: the locale's stdin errors handler would mask invalid UTF-8
            stream = getattr(sys.stdin, "buffer", None)
            text = stream.read().decode("utf-8") if stream is not None else sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read {name}: {exc.strerror if isinstance(exc, OSError) else exc}") from exc
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"{name} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:
        raise fail(f"{name} is nested too deeply to read") from exc
    except ValueError as exc:  # e.g. an integer of more digits than int() converts
        raise fail(f"{name} cannot be read as JSON: {' '.join(str(exc).split())}") from exc
    return extract_items(payload)


class Command(AcademyCommand):
    help = "Sync the EnterpriseAcademy table with the Enterprise Catalog's list of academies."

    def add_arguments(self, parser):
        parser.add_argument("--enterprise-customer", type=uuid_argument, metavar="UUID",
                            help="Enterprise customer whose academies to read (default: ENTERPRISE_CUSTOMER_UUID).")
        parser.add_argument("--academy-uuid", type=uuid_argument, metavar="UUID",
                            help="Sync this one academy only (never deactivates anything).")
        parser.add_argument("--deactivate-missing", action="store_true",
                            help="Deactivate active rows the catalog no longer lists (not when the list is empty).")
        parser.add_argument("--dry-run", action="store_true", help="Report what would change; write nothing.")
        parser.add_argument("--from-file", metavar="PATH",
                            help="Read academies from a JSON file instead of the catalog API ('-' for stdin).")
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="Print the counts and per-item outcomes as one JSON object.")

    def handle(self, *args, **options):
        snapshot_time = timezone.now()  # taken before reading: events newer than this win
        items, source = self._load(options)
        if options["academy_uuid"] and options["from_file"]:
            items = [item for item in items if _item_uuid(item) == options["academy_uuid"]]
        result = sync_academies(
            items,
            source_time=snapshot_time,
            deactivate_missing=options["deactivate_missing"],
            dry_run=options["dry_run"],
            limited=bool(options["academy_uuid"]),
        )
        if options["as_json"]:
            self.stdout.write(json.dumps({"source": source, **result.as_dict()}, default=str))
        else:
            self._print_summary(result, source, len(items))
        if result.counts[ERRORS]:
            raise fail(f"{result.counts[ERRORS]} row(s) failed to apply; see the errors above", EXIT_ROW_ERRORS)

    def _load(self, options):
        if options["from_file"]:
            return read_items(options["from_file"]), options["from_file"]
        customer = options["enterprise_customer"]
        if customer is None and not options["academy_uuid"]:
            configured = getattr(settings, "ENTERPRISE_CUSTOMER_UUID", None)
            customer = parse_uuid(configured) if configured else None
            if customer is None:
                raise fail("give --enterprise-customer UUID (or set ENTERPRISE_CUSTOMER_UUID), or --from-file PATH")
        client = CatalogClient()
        try:
            items = client.fetch_academies(
                enterprise_customer=str(customer) if customer else None,
                academy_uuid=str(options["academy_uuid"]) if options["academy_uuid"] else None,
            )
        except CatalogError as exc:
            raise fail(f"{exc} (nothing was written)") from exc
        return items, client.catalog_url

    def _print_summary(self, result, source, item_count):
        counts = ", ".join(f"{name} {result.counts[name]}" for name in OUTCOMES)
        prefix = "dry run, nothing written: " if result.dry_run else ""
        self.stdout.write(f"{prefix}{item_count} item(s) from {source}: {counts}")
        for entry in result.items:
            if entry["outcome"] in ("skipped", "errors", "stale", "deactivated"):
                who = entry["uuid"] or entry["name"] or "item"
                self.stdout.write(f"  {entry['outcome']}: {who}: {entry.get('reason', '')}")
        for note in result.notes:
            self.stdout.write(f"  note: {note}")


def _item_uuid(item):
    if not isinstance(item, dict):
        return None
    return parse_uuid(item.get("uuid")) or parse_uuid(item.get("academy_uuid"))

