"""
A TCP proxy between the consumer and its database, to take the database away mid-stream.

``cut(seconds)`` kills every open connection and refuses new ones for that long: what the consumer
sees is exactly a database server that crashed and came back (connection reset, then connection
refused). The real database server is never touched, so other tests' connections are unaffected.
"""

import socket
import threading
import time

from tests.helpers import subprocess_database_url


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port``; see the module docstring."""

    def __init__(self, target_host, target_port):
        self.target = (target_host, int(target_port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs = []
        self._down_until = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    def _accept_loop(self):
        """Accept clients until closed: refused while down, else each piped to the target both ways."""
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if time.monotonic() < self._down_until:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.close()  # RST: connection refused/reset, as from a dead server
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._pairs.append((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        """Copy what ``src`` sends to ``dst`` until either side closes."""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self, seconds):
        """Reset every open connection and refuse new ones for ``seconds``."""
        self._down_until = time.monotonic() + seconds
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    # close() alone does not end a connection whose pump thread is blocked in recv() on
                    # it (the kernel keeps the socket until recv returns): the server would keep the
                    # session, its open transaction and its row locks. SHUT_RD wakes that recv; the
                    # close then resets the connection (SO_LINGER 0).
                    sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass
                try:
                    sock.close()
                except OSError:
                    pass

    def restore(self):
        """End a cut now: accept connections again."""
        self._down_until = 0.0

    def close(self):
        self._closed = True
        self._listener.close()
        self.cut(0)


def database_proxy():
    """A ``TcpProxy`` in front of the test database's server (PostgreSQL or MariaDB); close it after use."""
    from django.db import connection  # pylint: disable=import-outside-toplevel

    db = connection.settings_dict
    return TcpProxy(db["HOST"] or "127.0.0.1", db["PORT"] or (5432 if connection.vendor == "postgresql" else 3306))


def proxied_database_url(proxy):
    """``subprocess_database_url()`` with the proxy in place of the server."""
    from django.db import connection  # pylint: disable=import-outside-toplevel

    settings = connection.settings_dict
    return subprocess_database_url().replace(f"@{settings['HOST']}:{settings['PORT']}/", f"@127.0.0.1:{proxy.port}/")
