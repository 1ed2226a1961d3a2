"""
Reset stored ``source_timestamp`` s that lie in the future: ``repair_future_timestamps [--dry-run] [--json]``.

A row whose stored time is more than ``ACADEMY_CONSUMER_MAX_FUTURE_SECONDS`` ahead of this clock (say an
event dated 9999-12-31, applied before times were bounded) would otherwise make every later event,
reconcile and ``--deactivate-missing`` ``stale``. The apply layer already treats such a time as absent;
this command removes it from the table, and reports each row repaired.

Such a time is reset to NULL ("time unknown"), not to now: the row's data came from an event whose real
time is unknown, and now would make events produced before now but not yet consumed (consumer lag)
``stale``, silently losing them. With NULL the next event or reconcile of the row applies and records its
own time. Only ``source_timestamp`` changes (``modified`` stays: the academy's data did not change).
Run ``reconcile_academies`` afterwards to give the repaired rows a snapshot time again.

Exit status: 0 (also when there was nothing to repair); 1 database not ready; 2 bad arguments or settings.
"""

import json

from django.db import transaction

from academy_consumer.apply import future_bound
from academy_consumer.management.base import AcademyCommand
from academy_consumer.models import EnterpriseAcademy


class Command(AcademyCommand):
    """``repair_future_timestamps``: clear stored times too far ahead of now."""
    help = "Reset source_timestamps more than ACADEMY_CONSUMER_MAX_FUTURE_SECONDS ahead of now to NULL."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Report the rows; write nothing.")
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="Print the bound and the rows as one JSON object.")

    def handle(self, *args, **options):
        bound = future_bound()
        with transaction.atomic():
            future = EnterpriseAcademy.objects.select_for_update().filter(source_timestamp__gt=bound).order_by("pk")
            rows = [{"uuid": str(row.uuid) if row.uuid else None, "name": row.name,
                     "source_timestamp": row.source_timestamp.isoformat()} for row in future]
            if not options["dry_run"]:
                EnterpriseAcademy.objects.filter(pk__in=[row.pk for row in future]).update(source_timestamp=None)
        if options["as_json"]:
            self.stdout.write(json.dumps({"repaired": len(rows), "dry_run": options["dry_run"],
                                          "bound": bound.isoformat(), "rows": rows}))
            return
        verb = "would reset" if options["dry_run"] else "reset"
        prefix = "dry run, nothing written: " if options["dry_run"] else ""
        self.stdout.write(f"{prefix}{verb} {len(rows)} source_timestamp(s) later than {bound.isoformat()} to NULL")
        for row in rows:
            self.stdout.write(f"  {row['uuid'] or row['name']}: {row['name']}: was {row['source_timestamp']}")
