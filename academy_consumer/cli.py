"""
The ``academy-consumer`` console script: ``manage.py`` with the package's default settings.

``academy-consumer migrate``, ``academy-consumer reconcile_academies ...`` and every other Django
management command work as they would through a project's ``manage.py``. ``DJANGO_SETTINGS_MODULE``
still wins when set, so a host service can point the script at its own settings.
"""

import os
import sys


def main(argv=None):
    """Run a Django management command with ``academy_consumer.settings`` as the default settings."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "academy_consumer.settings")
    from django.core.management import execute_from_command_line  # pylint: disable=import-outside-toplevel

    execute_from_command_line(["academy-consumer", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
