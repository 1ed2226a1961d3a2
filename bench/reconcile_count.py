"""
``python bench/reconcile_count.py CATALOG.json [OPTIONS...]``: run ``reconcile_academies --from-file
CATALOG.json --json OPTIONS`` in this process (DATABASE_URL selects the database) and print one JSON line:
seconds, SQL statements and the outcome counts.

Statements are counted with ``connection.execute_wrapper``: every SQL statement the command sends through
Django's cursor (queries, writes, savepoints, its start-up check; an ``executemany`` counts once), not the
transaction COMMITs/ROLLBACKs, which Django issues on the connection itself.
"""

import io
import json
import os
import sys
import time


def main(path, *extra):
    """Reconcile the file at ``path`` and print the time and the number of SQL statements."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "academy_consumer.settings")
    import django  # pylint: disable=import-outside-toplevel
    django.setup()
    from django.core.management import call_command  # pylint: disable=import-outside-toplevel
    from django.db import connection  # pylint: disable=import-outside-toplevel

    statements = 0

    def count(execute, sql, params, many, context):
        nonlocal statements
        statements += 1
        return execute(sql, params, many, context)

    out = io.StringIO()
    with connection.execute_wrapper(count):
        started = time.perf_counter()
        call_command("reconcile_academies", "--from-file", path, "--json", *extra, stdout=out)
        seconds = time.perf_counter() - started
    result = json.loads(out.getvalue())
    counts = result.get("counts") or {k: v for k, v in result.items() if isinstance(v, int)}
    print(json.dumps({"seconds": round(seconds, 3), "statements": statements, "counts": counts}))


if __name__ == "__main__":
    main(*sys.argv[1:])
