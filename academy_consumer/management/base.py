"""
What every academy-consumer management command shares: one-line errors with documented exit codes, and
the start-up checks that turn a bad setting or a missing database into one line before any work.

Exit codes: 0 done; 1 a runtime failure (rows that failed, a fatal consumer error, a database that is
unreachable or not migrated); 2 bad arguments or bad settings.
"""

import sys

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from academy_consumer import conf
from academy_consumer.preflight import NotReady, check_database

EXIT_ROW_ERRORS, EXIT_USAGE = 1, 2
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
