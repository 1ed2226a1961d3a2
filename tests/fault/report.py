"""Print the Guarantees table from the rows the fault suite recorded: ``python -m tests.fault.report FILE``."""

import json
import sys

from tests.fault.conftest import Figures, guarantees_table


def main(path):
    with open(path, encoding="utf-8") as handle:
        rows = [Figures(**json.loads(line)) for line in handle if line.strip()]
    print(guarantees_table(rows))
    return 0 if rows and all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
