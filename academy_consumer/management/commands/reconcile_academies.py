"""
Full sync of the academy table from the Enterprise Catalog (or from a file).

    academy-consumer reconcile_academies --enterprise-customer UUID [--deactivate-missing] [--dry-run] [--json]
    academy-consumer reconcile_academies --from-file catalog.json      # or - for stdin
    academy-consumer reconcile_academies --academy-uuid UUID            # one academy; never deactivates
    academy-consumer reconcile_academies ... --chunk-size N             # items per transaction (default 500)

Exit status: 0 when every item applied or was legitimately skipped; 1 when some rows failed to
apply or the database connection was lost mid-run (the sync stops at the first such error: the
chunks before it stay applied, nothing is deactivated); 2 on bad arguments or a failed fetch or unreadable
input (then nothing was written).

``--from-file`` takes one JSON document in any envelope the normalizer accepts, or JSON lines (one
academy per line), of at most ``ACADEMY_MAX_INPUT_BYTES`` (see ``academy_consumer.inputs``). The whole
input is read and checked before anything is written.

Progress: for a list of more than ``PROGRESS_ITEMS`` (1,000) items, one line on stderr at most every
``PROGRESS_SECONDS`` (10 s) while pages are fetched (pages and academies so far) and while chunks are
applied (items applied of the total), and one line when each of the two is done. Shorter lists stay quiet.

Items are applied ``--chunk-size`` at a time, one transaction per chunk (default 500, at most 100,000):
a deadlock or lock timeout retries the chunk, and a lost connection stops the sync with the chunks
before it committed. Smaller chunks hold their row locks for less time; larger ones cost fewer round trips.
"""

import argparse
import json
import time

from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections, transaction
from django.utils import timezone

from academy_consumer import conf
from academy_consumer.apply import ERRORS, OUTCOMES, DatabaseUnavailable, sync_academies
from academy_consumer.catalog import CatalogClient, CatalogError
from academy_consumer.inputs import InputError, read_items
from academy_consumer.management.base import EXIT_NOT_READY, EXIT_ROW_ERRORS, AcademyCommand, fail
from academy_consumer.normalize import parse_uuid
from academy_consumer.redact import mask_url


def uuid_argument(value):
    """argparse type: a UUID in any accepted spelling."""
    parsed = parse_uuid(value)
    if parsed is None:
        raise ValueError(value)
    return parsed


uuid_argument.__name__ = "UUID"  # argparse says "invalid UUID value: 'x'"

DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE = 500, 100_000
PROGRESS_ITEMS = 1_000  # lists longer than this report progress on stderr
PROGRESS_SECONDS = 10.0


class Progress:
    """
    The progress lines of one run, each given to ``write`` (a line to stderr): nothing for lists of
    ``PROGRESS_ITEMS`` or fewer; else a line at most every ``PROGRESS_SECONDS`` and one at the end of the
    fetch and of the apply.
    """

    def __init__(self, write, clock=time.monotonic, dry_run=False):
        self.write, self.clock, self.dry_run = write, clock, dry_run
        self.started = self.last = clock()

    def _due(self, final):
        """Whether a progress line is due now (always at the end of a step)."""
        now = self.clock()
        if final or now - self.last >= PROGRESS_SECONDS:
            self.last = now
            return True
        return False

    def page(self, pages, items, announced, last):
        """``CatalogClient.fetch_academies``' ``on_page``."""
        if max(items, announced or 0) <= PROGRESS_ITEMS or not self._due(last):
            return
        of = f" of {announced:,} announced" if announced is not None else ""
        state = "done" if last else "so far"
        self.write(f"reconcile: fetched {pages:,} page(s), {items:,} academies{of} ({state})")

    def chunk(self, done, total):
        """``sync_academies``' ``on_chunk``."""
        if total <= PROGRESS_ITEMS or not self._due(done >= total):
            return
        verb = "checked (dry run)" if self.dry_run else "applied"
        rate = done / max(self.clock() - self.started, 1e-9)
        self.write(f"reconcile: {verb} {done:,} of {total:,} items ({rate:,.0f} items/s)")


def chunk_size_argument(text):
    """argparse type of ``--chunk-size``: a whole number from 1 to MAX_CHUNK_SIZE."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text[:40]!r}") from None
    if not 1 <= value <= MAX_CHUNK_SIZE:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_CHUNK_SIZE:,}, not {value}")
    return value


class Command(AcademyCommand):
    """``reconcile_academies``: a full sync from the catalog API or a file."""
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
        parser.add_argument("--chunk-size", type=chunk_size_argument, default=DEFAULT_CHUNK_SIZE, metavar="N",
                            help=f"Apply N items per transaction (1 to {MAX_CHUNK_SIZE:,}; default "
                                 f"{DEFAULT_CHUNK_SIZE}). A deadlock retries the whole chunk; a lost "
                                 f"connection keeps the chunks committed before it.")
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="Print the counts and per-item outcomes as one JSON object.")

    def handle(self, *args, **options):
        snapshot_time = timezone.now()  # taken before reading: events newer than this win
        progress = Progress(lambda line: self.stderr.write(line, style_func=str), dry_run=options["dry_run"])
        items, source = self._load(options, progress)
        # Fetching may have taken long; a kept connection the server closed meanwhile (MySQL's wait_timeout, see
        # academy_consumer.db_session) is replaced by Django's health check at its next use, not used dead.
        if not transaction.get_connection().in_atomic_block:
            close_old_connections()
        if options["academy_uuid"] and options["from_file"]:
            items = [item for item in items if _item_uuid(item) == options["academy_uuid"]]
        try:
            result = sync_academies(
                items,
                source_time=snapshot_time,
                deactivate_missing=options["deactivate_missing"],
                dry_run=options["dry_run"],
                limited=bool(options["academy_uuid"]),
                chunk_size=options["chunk_size"],
                on_chunk=progress.chunk,
            )
        except DatabaseUnavailable as exc:
            raise fail(str(exc), EXIT_NOT_READY) from exc
        if options["as_json"]:
            self.stdout.write(json.dumps({"source": source, **result.as_dict()}, default=str))
        else:
            self._print_summary(result, source, len(items))
        if result.counts[ERRORS]:
            raise fail(f"{result.counts[ERRORS]} row(s) failed to apply; see the errors above", EXIT_ROW_ERRORS)

    def _load(self, options, progress):
        """The items and where they came from: ``--from-file``, else the catalog API."""
        if options["from_file"]:
            try:
                return read_items(options["from_file"]), options["from_file"]
            except InputError as exc:
                raise fail(str(exc)) from exc
        customer = options["enterprise_customer"]
        if customer is None and not options["academy_uuid"]:
            customer = conf.enterprise_customer_uuid()
            if customer is None:
                raise fail("give --enterprise-customer UUID (or set ENTERPRISE_CUSTOMER_UUID), or --from-file PATH")
        try:
            client = CatalogClient()  # reads the catalog API's settings: a missing one is one line, exit 2
            items = client.fetch_academies(
                enterprise_customer=str(customer) if customer else None,
                academy_uuid=str(options["academy_uuid"]) if options["academy_uuid"] else None,
                on_page=progress.page,
            )
        except ImproperlyConfigured as exc:
            raise fail(f"bad setting: {exc} (or give --from-file PATH; nothing was written)") from exc
        except CatalogError as exc:
            raise fail(f"{exc} (nothing was written)") from exc
        return items, mask_url(client.catalog_url)

    def _print_summary(self, result, source, item_count):
        """Print the counts, then each item not simply applied, and the notes."""
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
