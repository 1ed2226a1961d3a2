"""
The ``academy-consumer`` console script: ``manage.py`` with the package's default settings.

``academy-consumer migrate``, ``academy-consumer reconcile_academies ...`` and every other Django
management command work as they would through a project's ``manage.py``. ``DJANGO_SETTINGS_MODULE``
still wins when set, so a host service can point the script at its own settings.

Exit status, for every command, Django's own included:

- 0: done;
- 1: a runtime failure, among them a database that is unreachable or not migrated;
- 2: bad arguments or bad settings.

A failure is one line on stderr, ``academy-consumer: <what went wrong>``, with database passwords and the
credentials of any URL masked, never a traceback (``--traceback`` shows it, for debugging). Two rules keep
a bad set-up from doing harm:

- a setting that ``academy_consumer.settings`` could not use (a garbage ``DATABASE_URL``, a non-numeric
  ``DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS``, an unknown ``LOG_LEVEL``), or a bad value of one of the
  app's own settings (``academy_consumer.conf.problems()``: ``ACADEMY_CONSUMER_BATCH_SIZE=0``...), stops every
  command with exit 2, Django's own included (``migrate`` would otherwise print the system check's report);
  help still works (and warns), and ``check`` prints Django's report (``academy_consumer.E0NN`` per setting);
- no command but ``migrate`` creates a SQLite database file: run elsewhere, it says "database ... does not
  exist: run `academy-consumer migrate`" (exit 1) instead of leaving an empty file behind.

``academy-consumer devstack ...`` (the embedded Kafka and schema registry for development and tests) is
not a management command of the app, so no host lists it: this script hands it to the development-only
package ``academy_devstack`` (the repository's ``devstack/`` folder, installed by ``make requirements``)
after the settings checks above. Where that package is not installed (any production install), it says
so in one line and exits 2.
"""

import os
import re
import sys
from urllib.parse import quote

PROG = "academy-consumer"
EXIT_FAILURE, EXIT_USAGE = 1, 2
HELP_COMMANDS = {"help", "--help", "-h", "version", "--version"}
DEVSTACK = "devstack"  # handed to the development-only package academy_devstack, not a management command
CREATES_DATABASE = {"migrate"}
REPORTS_SETTINGS = {"check"}  # Django's system check report lists the bad settings itself
_MISSING_TABLE = re.compile(r"no such table|doesn't exist|does not exist", re.I)


def main(argv=None):
    """Run a Django management command with ``academy_consumer.settings`` as the default settings."""
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "academy_consumer.settings")
    # pylint: disable=import-outside-toplevel
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line
    from django.db import DatabaseError

    _handle_settings_options(argv)
    subcommand = argv[0] if argv else "help"
    helping = subcommand in HELP_COMMANDS or bool({"-h", "--help"} & set(argv))
    try:
        errors = list(getattr(settings, "ACADEMY_CONSUMER_SETTINGS_ERRORS", ()))
        databases = settings.DATABASES
    except ImportError as exc:  # DJANGO_SETTINGS_MODULE names a module that cannot be imported
        errors, databases = [f"DJANGO_SETTINGS_MODULE {os.environ['DJANGO_SETTINGS_MODULE']!r}: {exc}"], {}
    except ImproperlyConfigured:
        errors, databases = [], {}  # Django reports these itself
    if databases and not helping and subcommand not in REPORTS_SETTINGS:
        from academy_consumer.conf import problems

        errors += [message for _, message in problems()]
    if errors and not helping:
        _fail(f"bad setting: {'; '.join(errors)}", EXIT_USAGE)
    if errors and databases:  # help still works; Django notes an unimportable settings module itself
        sys.stderr.write(f"{PROG}: warning: bad setting: {'; '.join(errors)}\n")
    if subcommand == DEVSTACK or argv[:2] == ["help", DEVSTACK]:
        sys.exit(_devstack(argv[1:] if subcommand == DEVSTACK else ["--help"]))
    missing = {} if subcommand in CREATES_DATABASE else _open_sqlite_without_creating(databases)
    if not subcommand.startswith("-") and subcommand not in HELP_COMMANDS and databases:
        import django
        from django.core.management import get_commands

        django.setup()
        if subcommand not in get_commands():  # Django would say so in two lines, with exit 1
            _fail(f"unknown command {subcommand[:80]!r} (`{PROG} help` lists the commands)", EXIT_USAGE)
    try:
        execute_from_command_line([PROG, *argv])
    except ImproperlyConfigured as exc:
        if "--traceback" in argv:
            raise
        _fail(f"bad setting: {_one_line(exc)}", EXIT_USAGE, databases)
    except DatabaseError as exc:
        if "--traceback" in argv:
            raise
        _fail(_database_failure(exc, missing), EXIT_FAILURE, databases)


def _handle_settings_options(argv):
    """Apply ``--settings`` and ``--pythonpath`` now, as Django would, since settings are read before it runs."""
    # pylint: disable=import-outside-toplevel
    from django.core.management.base import CommandError, CommandParser, handle_default_options

    parser = CommandParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--settings")
    parser.add_argument("--pythonpath")
    try:
        options, _ = parser.parse_known_args(argv[1:])
    except CommandError:
        return  # Django reports it
    handle_default_options(options)


def _devstack(args):
    """Run ``devstack ARGS`` from the development-only package; its exit status (2 where it is not installed)."""
    try:
        from academy_devstack.command import main as devstack  # pylint: disable=import-outside-toplevel
    except ModuleNotFoundError as exc:
        if exc.name not in {"academy_devstack", "academy_devstack.command"}:
            raise  # installed, but something it imports is missing: that traceback is the useful report
        _fail(f"{DEVSTACK} is a development tool, installed from the repository (`make requirements`, or "
              f"`pip install -e ./devstack`), not with the academy-consumer package", EXIT_USAGE)
    return devstack(args, prog=f"{PROG} {DEVSTACK}")


def _open_sqlite_without_creating(databases):
    """
    Point each SQLite database whose file does not exist at ``file:<path>?mode=rw``: SQLite then refuses
    to open it instead of creating an empty file. Returns ``{alias: path}`` of those files.
    """
    missing = {}
    for alias, database in databases.items():
        name = str(database.get("NAME") or "")
        if (database.get("ENGINE") == "django.db.backends.sqlite3" and name and name != ":memory:"
                and not name.startswith("file:") and not os.path.exists(name)):
            missing[alias] = name
            database["NAME"] = f"file:{quote(os.path.abspath(name))}?mode=rw"
    return missing


def _database_failure(exc, missing):
    """The line for a database error: what to do when the database is missing or not migrated."""
    # pylint: disable=import-outside-toplevel
    from academy_consumer.preflight import MIGRATE_HINT, describe_database

    reason = _one_line(exc) or type(exc).__name__
    if missing:
        return f"database {next(iter(missing.values()))} does not exist: {MIGRATE_HINT}"
    hint = f": {MIGRATE_HINT}" if _MISSING_TABLE.search(reason) else ""
    try:
        where = describe_database()
    except Exception:  # pylint: disable=broad-except  # the line must still be written
        where = "default"
    return f"database {where}: {reason}{hint}"


def _one_line(exc):
    return " ".join(str(exc).split())


def _fail(message, code, databases=None):
    """Write ``academy-consumer: message`` (secrets masked) on stderr and exit with ``code``."""
    from academy_consumer.redact import mask_urls  # pylint: disable=import-outside-toplevel

    message = mask_urls(message)
    for database in (databases or {}).values():
        if database.get("PASSWORD"):
            message = message.replace(str(database["PASSWORD"]), "***")
    sys.stderr.write(f"{PROG}: {message[:2000]}\n")
    sys.exit(code)


if __name__ == "__main__":
    main()
