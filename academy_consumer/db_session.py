"""
The session set-up of the standalone service's MySQL and MariaDB connections: a bound on how long a session
may sit idle holding a transaction (``DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS``, see
``academy_consumer/settings.py``).

Only ``academy_consumer.settings`` installs it (``install``); a host's database connections are the host's
own business. PostgreSQL takes its bound as a connection option (``idle_in_transaction_session_timeout``) in
the settings themselves; MySQL and MariaDB differ, and one URL scheme (``mysql://``) names both, so each new
connection asks the server what it is (the version string of the handshake, ``get_server_info()``: no round
trip) and sends what that server has:

- MariaDB: ``SET SESSION idle_transaction_timeout=N``: a session idle inside a transaction for N seconds is
  closed and its transaction rolled back (its row locks released). Sessions idle outside a transaction stay.
- MySQL (8.0 and later): it has no idle-in-transaction bound (``idle_transaction_timeout`` is MariaDB's; sent
  to MySQL 8.0 it fails every connection with "Unknown system variable"). The nearest that does the job is
  ``SET SESSION wait_timeout=N``: a session idle for N seconds, in a transaction or not, is closed and its
  transaction rolled back. Without it, a session the network cut off keeps its row locks until the server's
  own ``wait_timeout`` (8 hours by default) and the reconnected consumer's batches fail on the lock wait
  timeout all that time. The cost: a kept connection (``DATABASE_CONN_MAX_AGE_SECONDS``) idle for N seconds
  is closed by the server, and Django's health check (``CONN_HEALTH_CHECKS``, before the first use in each
  batch, request, or reconcile's apply) replaces it with a new connection.

N = 0 sends nothing (the server's defaults apply).
"""

from django.db.backends.signals import connection_created

DISPATCH_UID = "academy_consumer.db_session.idle_timeout"


def is_mariadb(server_info):
    """Whether a MySQL-protocol server's version string (``10.11.6-MariaDB-0+deb12u1``, ``8.0.33``) is MariaDB's."""
    return "mariadb" in str(server_info).lower()


def idle_timeout_statement(server_info, seconds):
    """The statement that bounds idle sessions on the server ``server_info`` names, or None for ``seconds`` 0."""
    if not seconds:
        return None
    variable = "idle_transaction_timeout" if is_mariadb(server_info) else "wait_timeout"
    return f"SET SESSION {variable}={int(seconds)}"


def install(seconds):
    """Send ``idle_timeout_statement`` on every new MySQL or MariaDB connection (once, however often called)."""

    def on_connection_created(sender, connection, **kwargs):  # pylint: disable=unused-argument
        apply_idle_timeout(connection, seconds)

    connection_created.connect(on_connection_created, weak=False, dispatch_uid=DISPATCH_UID)


def apply_idle_timeout(connection, seconds):
    """On a new ``connection`` (a Django ``DatabaseWrapper``) of a MySQL or MariaDB server, send the statement."""
    if connection.vendor != "mysql":
        return None
    statement = idle_timeout_statement(connection.connection.get_server_info(), seconds)
    if statement:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    return statement
