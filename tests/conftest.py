"""
Shared test set-up.

The database is chosen by ``DATABASE_URL`` (see ``academy_consumer/settings.py``); the default is SQLite.
``.ci/run`` runs the suite once per database. A database that is configured but unreachable makes
the run fail: pytest-django's test-database creation raises, it is never turned into a skip.
"""

import pytest
from edx_django_utils.cache import TieredCache

from tests.catalog_server import CatalogServer


@pytest.fixture(autouse=True)
def _clear_caches():
    """Empty the request cache and Django's cache around every test, so a cached OAuth token never leaks."""
    TieredCache.dangerous_clear_all_tiers()
    yield
    TieredCache.dangerous_clear_all_tiers()


@pytest.fixture
def catalog_server(settings):
    """
    A running ``tests.catalog_server.CatalogServer`` (stopped at teardown), with the catalog and OAuth2
    settings (``ENTERPRISE_CATALOG_URL``, ``BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL`` / ``_KEY`` /
    ``_SECRET``) pointing at it for the duration of the test.
    """
    server = CatalogServer().start()
    settings.ENTERPRISE_CATALOG_URL = server.url
    settings.BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL = server.oauth_url
    settings.BACKEND_SERVICE_EDX_OAUTH2_KEY = server.client_id
    settings.BACKEND_SERVICE_EDX_OAUTH2_SECRET = server.client_secret
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(tmp_path_factory):
    """
    On SQLite, put the test database in a file instead of memory, so that ``academy-consumer``
    commands run as subprocesses (the way users run them) see the same database as the test.
    """
    from django.conf import settings  # pylint: disable=import-outside-toplevel

    default = settings.DATABASES["default"]
    if default["ENGINE"] == "django.db.backends.sqlite3":
        default.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("db") / "test.sqlite3")


def subprocess_database_url():
    """A DATABASE_URL naming the database the tests run on (for commands run as subprocesses)."""
    from django.db import connection  # pylint: disable=import-outside-toplevel

    conf = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{conf['NAME']}"
    scheme = {"postgresql": "postgres", "mysql": "mysql"}[connection.vendor]
    auth = conf["USER"] + (f":{conf['PASSWORD']}" if conf["PASSWORD"] else "")
    return f"{scheme}://{auth}@{conf['HOST']}:{conf['PORT']}/{conf['NAME']}"


@pytest.fixture
def cli(transactional_db, tmp_path):
    """
    Run ``academy-consumer ARGS...`` as a separate process on the test database, the way a user does.

    Returns the ``subprocess.CompletedProcess`` (text mode). ``env`` adds environment variables;
    ``input`` is sent to stdin.
    """
    import os  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

    def run(*args, env=None, input=None, timeout=120):  # pylint: disable=redefined-builtin
        full_env = {**os.environ, "DATABASE_URL": subprocess_database_url(), **(env or {})}
        full_env.pop("DJANGO_SETTINGS_MODULE", None)
        command = [sys.executable, "-m", "academy_consumer.cli", *args]
        return subprocess.run(command, env=full_env, input=input, capture_output=True, text=True,
                              cwd=tmp_path, timeout=timeout, check=False)

    return run
