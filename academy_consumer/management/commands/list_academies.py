"""Print the academy table: ``academy-consumer list_academies [--json] [--active-only]``."""

import json

from academy_consumer.management.base import AcademyCommand
from academy_consumer.models import EnterpriseAcademy

COLUMNS = ("uuid", "name", "slug", "stripe_price_lookup_key", "display_order", "is_active", "catalog_query_uuid")


class Command(AcademyCommand):
    """``list_academies``: print the table."""
    help = "Print the EnterpriseAcademy table."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", dest="as_json", help="One JSON array of rows.")
        parser.add_argument("--active-only", action="store_true", help="Only active academies.")

    def handle(self, *args, **options):
        rows = EnterpriseAcademy.objects.all()
        if options["active_only"]:
            rows = rows.filter(is_active=True)
        if options["as_json"]:
            fields = [f.name for f in EnterpriseAcademy._meta.concrete_fields if f.name not in ("id", "name_key")]
            data = [{name: getattr(row, name) for name in fields} for row in rows]
            self.stdout.write(json.dumps(data, default=str, indent=2))
            return
        table = [[str(getattr(row, column) if getattr(row, column) is not None else "") for column in COLUMNS]
                 for row in rows]
        widths = [max([len(column)] + [len(line[i]) for line in table]) for i, column in enumerate(COLUMNS)]
        self.stdout.write("  ".join(column.ljust(width) for column, width in zip(COLUMNS, widths)))
        for line in table:
            self.stdout.write("  ".join(value.ljust(width) for value, width in zip(line, widths)))
        self.stdout.write(f"({len(table)} academies)")
