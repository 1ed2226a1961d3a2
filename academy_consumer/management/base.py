"""What every academy-consumer management command shares: one-line errors with documented exit codes."""

import sys

from django.core.management.base import BaseCommand, CommandError

EXIT_OK, EXIT_ROW_ERRORS, EXIT_USAGE = 0, 1, 2


def fail(message, code=EXIT_USAGE):
    """Stop the command with one readable line on stderr and exit status ``code``."""
    return CommandError(message, returncode=code)


class AcademyCommand(BaseCommand):
    """A BaseCommand whose argument errors are one line (``<command>: error: ...``) and exit 2."""

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)

        def error(message):
            if not parser.called_from_command_line:
                raise CommandError(f"Error: {message}")
            sys.stderr.write(f"{subcommand}: error: {message}\n")
            sys.exit(EXIT_USAGE)

        parser.error = error
        return parser
