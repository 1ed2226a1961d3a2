"""
The standalone settings' session set-up on MySQL-protocol servers (``academy_consumer.db_session``): each new
connection asks the server what it is and bounds idle sessions with what that server has.

MariaDB is tested for real (run the suite with ``DATABASE_URL=mysql://...`` on the MariaDB server). No MySQL 8
server can run here (no Docker; none in Debian's or PyPI's registries), so the MySQL branch's decision is tested
with a stand-in connection that reports MySQL 8's version string and records what is sent to it: the one part
of this module not proven against a real server.
"""

import pytest
from django.db import connection

from academy_consumer import db_session

MARIADB_VERSION = "10.11.6-MariaDB-0+deb12u1"
MYSQL8_VERSION = "8.0.33"


class StandInConnection:
    """
    A stand-in for a Django ``DatabaseWrapper`` of a MySQL-protocol server (no MySQL 8 server can run here):
    its ``vendor``, a driver connection whose ``get_server_info()`` says ``version``, and the statements sent.
    """

    def __init__(self, version, vendor="mysql"):
        self.vendor = vendor
        self.sent = []
        self.connection = type("Driver", (), {"get_server_info": lambda _self: version})()

    def cursor(self):
        """A cursor recording what it executes in ``sent``."""
        stand_in = self

        class Cursor:
            """Records each statement executed."""

            def __enter__(self):
                return self

            def __exit__(self, *exc_info):
                return False

            def execute(self, sql):
                stand_in.sent.append(sql)

        return Cursor()


@pytest.mark.parametrize("version, sent", [
    (MARIADB_VERSION, ["SET SESSION idle_transaction_timeout=120"]),
    ("11.4.2-MariaDB", ["SET SESSION idle_transaction_timeout=120"]),
    (MYSQL8_VERSION, ["SET SESSION wait_timeout=120"]),  # MySQL has no idle_transaction_timeout
    ("8.4.0", ["SET SESSION wait_timeout=120"]),
])
def test_each_server_gets_what_it_has(version, sent):
    stand_in = StandInConnection(version)
    db_session.apply_idle_timeout(stand_in, 120)
    assert stand_in.sent == sent


def test_nothing_is_sent_when_turned_off_or_to_another_vendor():
    for stand_in, seconds in ((StandInConnection(MYSQL8_VERSION), 0), (StandInConnection(MARIADB_VERSION), 0),
                              (StandInConnection("16.2", vendor="postgresql"), 120)):
        db_session.apply_idle_timeout(stand_in, seconds)
        assert stand_in.sent == []


@pytest.mark.django_db(transaction=True)  # no test transaction around it: the test closes the connection
@pytest.mark.skipif(connection.vendor != "mysql", reason="needs DATABASE_URL=mysql://... (the MariaDB server)")
def test_every_new_mariadb_connection_gets_idle_transaction_timeout():
    """On the real MariaDB, through the standalone settings' receiver: set on the first and on a new connection."""
    connection.ensure_connection()
    assert db_session.is_mariadb(connection.connection.get_server_info())
    for _ in range(2):
        with connection.cursor() as cursor:
            cursor.execute("SELECT @@SESSION.idle_transaction_timeout, @@SESSION.wait_timeout")
            idle, wait = cursor.fetchone()
        assert idle == 120  # DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS' default
        assert wait != 120  # MariaDB keeps its own wait_timeout: only idle transactions are bounded
        connection.close()  # the next round opens a new connection
