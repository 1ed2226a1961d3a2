"""
Print the Guarantees table from the rows the fault suite recorded: ``python -m tests.fault.report FILE``.

Rows of one scenario on several databases (and the parts of one scenario, ``"name: part"``) are added up
into one line, with the databases listed. Exit status 1 when anything was lost, duplicated or
overwritten by a stale event, or when nothing was recorded.
"""

import json
import sys

from tests.fault.conftest import Figures, guarantees_table


def combine(rows):
    """One Figures per scenario family, summed over databases and parts."""
    combined = {}
    for row in rows:
        family = row.scenario.split(":")[0] if row.scenario.startswith("hostile") else row.scenario
        total = combined.setdefault(family, Figures(family, ""))
        databases = [db for db in total.database.split(", ") if db]
        if row.database not in databases:
            databases.append(row.database)
        total.database = ", ".join(databases)
        for name in ("events", "faults", "bad_inputs", "lost", "duplicates", "stale"):
            setattr(total, name, getattr(total, name) + getattr(row, name))
        total.fault_kinds = total.fault_kinds or row.fault_kinds
    return list(combined.values())


def main(path):
    with open(path, encoding="utf-8") as handle:
        rows = [Figures(**json.loads(line)) for line in handle if line.strip()]
    print(guarantees_table(combine(rows)))
    return 0 if rows and all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
