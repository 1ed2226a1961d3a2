"""
What every academy-consumer management command shares: one-line errors with documented exit codes, and
the start-up checks that turn a bad setting or a missing database into one line before any work.

Exit codes: 0 done; 1 a runtime failure (rows that failed, a fatal consumer error, a database that is
unreachable or not migrated); 2 bad arguments or bad settings. The same under any settings module: a
command run through a host's ``manage.py`` or ``django-admin`` raises ``CommandError`` for every failure it
expects, which Django prints as one line (``CommandError: ...``) with the exit code.

``--json``: every command's ``--json`` option is named ``as_json`` (``dest``); while such a command runs, its
stdout holds the JSON document only, whatever the host's logging writes (``json_output``).
"""

import sys

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from academy_consumer import conf
from academy_consumer.management.json_output import stdout_for_json_only
from academy_consumer.preflight import NotReady, check_database

EXIT_OK, EXIT_ROW_ERRORS, EXIT_USAGE = 0, 1, 2
EXIT_NOT_READY = 1


def fail(message, code=EXIT_USAGE):
    """Stop the command with one readable line on stderr and exit status ``code``."""
    return CommandError(message, returncode=code)


class AcademyCommand(BaseCommand):  # pylint: disable=abstract-method  # a base: each command defines handle
    """
    A BaseCommand whose argument errors are one line (``<command>: error: ...``) and exit 2, which checks
    academy-consumer's settings (exit 2) and, when ``needs_database``, that the database answers and is
    migrated (exit 1, "run `academy-consumer migrate`") before ``handle`` runs.
    """

    needs_database = True
    requires_system_checks = []  # Django's checks add nothing here and would touch the database first

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)

        def error(message):
            if not parser.called_from_command_line:
                raise CommandError(f"Error: {message}")
            sys.stderr.write(f"{subcommand}: error: {message}\n")
            sys.exit(EXIT_USAGE)

        parser.error = error
        return parser

    def execute(self, *args, **options):
        if not options.get("as_json"):
            return self._execute(*args, **options)
        with stdout_for_json_only(self, options.get("stdout")):
            return self._execute(*args, **options)

    def _execute(self, *args, **options):
        """The start-up checks, then Django's ``execute`` (which runs ``handle``)."""
        try:
            conf.check_all()
        except ImproperlyConfigured as exc:
            raise fail(f"bad setting: {exc}") from exc
        if self.needs_database:
            try:
                check_database()
            except NotReady as exc:
                raise fail(str(exc), EXIT_NOT_READY) from exc
        return super().execute(*args, **options)
