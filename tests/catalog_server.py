"""
A real local HTTP server standing in for the LMS OAuth2 provider and the Enterprise Catalog API.

It listens on ``127.0.0.1`` (a free port) in a background thread and serves:

- ``POST /oauth2/access_token``: client-credentials grant; answers ``{"access_token", "expires_in",
  "token_type": "JWT"}``, 401 on wrong credentials, 400 on another grant type;
- ``GET /api/v1/academies/[?enterprise_customer=<uuid>][&page=N]``: DRF-style pages of ``page_size``
  (``count``, absolute ``next`` / ``previous``, ``results``);
- ``GET /api/v1/academies/<uuid>/``: one academy.

The API requires ``Authorization: JWT <a token this server issued>``. Faults can be injected (see the
``fail_*`` / ``invalid_json_on_page`` / ``loop_next_on_page`` / ``redirect_*`` methods) and every request is recorded in
``requests`` so tests can assert what the client did.

Usage::

    with CatalogServer() as server:
        server.add_academies(25, enterprise_customer=customer_uuid)
        ...  # point the client at server.url and server.oauth_url
"""

import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

ACADEMIES_PATH = "/api/v1/academies/"


@dataclass
class Redirect:
    """An answer ``status`` with ``Location: location`` (see ``redirect_page`` / ``redirect_token``)."""

    status: int
    location: str


@dataclass
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str
    query: dict
    headers: dict
    form: dict = field(default_factory=dict)

    @property
    def page(self):
        """The page number of an academy list request (1 when absent)."""
        return int(self.query.get("page", "1"))


class CatalogServer:
    """A fake LMS token endpoint plus Enterprise Catalog academies API; see the module docstring."""

    def __init__(self, client_id="academy-consumer-test-key", client_secret="academy-consumer-test-secret",
                 page_size=10):
        self.client_id = client_id
        self.client_secret = client_secret
        self.page_size = page_size
        self.requests = []
        self._academies = []  # (enterprise customer uuid or None, academy dict), in catalog order
        self._tokens = set()
        self._page_faults = {}  # page -> [status, remaining times or None for always]
        self._invalid_json_pages = set()
        self._loop_pages = set()
        self._raw_pages = {}  # page -> (body bytes, declared Content-Length or None)
        self._api_status = None
        self._token_status = None
        self._page_redirects = {}  # page -> Redirect
        self._token_redirect = None
        self._lock = threading.Lock()
        self._httpd = None
        self._thread = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self):
        """Start serving in a background thread; returns self."""
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.catalog = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="catalog-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self):
        """Stop serving and free the port (idempotent)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    @property
    def url(self):
        """Root URL, e.g. ``http://127.0.0.1:43567`` (what ``ENTERPRISE_CATALOG_URL`` points at)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def oauth_url(self):
        """
        The OAuth2 provider URL (what ``BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL`` would point at; a host gives the
        LMS root, ``url``, as ``SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT`` instead: the token endpoint is the same).
        """
        return self.url + "/oauth2"

    # -- data ------------------------------------------------------------------------------------------

    def add_academy(self, title, enterprise_customer=None, **fields):
        """Register one academy (optionally for one enterprise customer); returns its item dict."""
        academy = {
            "uuid": str(uuid.uuid4()),
            "title": title,
            "short_description": f"{title} in short.",
            "long_description": f"<p>All about {title}.</p>",
            "image": f"https://example.com/{uuid.uuid4().hex}.png",
            "tags": [{"id": 1, "title": "Data", "description": "Data skills"}],
            **fields,
        }
        with self._lock:
            self._academies.append((str(enterprise_customer) if enterprise_customer else None, academy))
        return academy

    def add_academies(self, count, enterprise_customer=None, prefix="Academy"):
        """Register ``count`` academies titled ``<prefix> 01``, ``<prefix> 02``, ...; returns them in order."""
        return [self.add_academy(f"{prefix} {n:02d}", enterprise_customer) for n in range(1, count + 1)]

    # -- fault injection -----------------------------------------------------------------------------

    def fail_page(self, page, status, times=None):
        """Make list page ``page`` answer ``status`` (only the first ``times`` requests when given)."""
        self._page_faults[page] = [status, times]

    def invalid_json_on_page(self, page):
        """Make list page ``page`` answer 200 with a body that is not JSON."""
        self._invalid_json_pages.add(page)

    def raw_body_on_page(self, page, body, declared_length=None):
        """
        Make list page ``page`` answer 200 with exactly the bytes ``body`` (a hostile page: garbage, invalid
        UTF-8, deep or huge JSON...); ``declared_length`` announces that Content-Length instead of the real
        one (more than ``len(body)``: a truncated body). ``body=None`` removes the fault.
        """
        if body is None:
            self._raw_pages.pop(page, None)
        else:
            self._raw_pages[page] = (bytes(body), declared_length)

    def loop_next_on_page(self, page):
        """Make list page ``page`` give its own URL as ``next`` (a pagination loop)."""
        self._loop_pages.add(page)

    def redirect_page(self, page, location, status=302):
        """Make list page ``page`` answer ``status`` with ``Location: location`` (e.g. another host's URL)."""
        self._page_redirects[page] = Redirect(status, location)

    def redirect_token(self, location, status=307):
        """Make the token endpoint answer ``status`` with ``Location: location`` (307/308 re-POST the form)."""
        self._token_redirect = Redirect(status, location)

    def clear_redirects(self):
        """Remove every redirect fault."""
        self._page_redirects.clear()
        self._token_redirect = None

    def fail_api(self, status=401):
        """Make every API request answer ``status`` (e.g. 401 for a rejected token)."""
        self._api_status = status

    def fail_token(self, status=500):
        """Make the token endpoint answer ``status``."""
        self._token_status = status

    # -- what happened ---------------------------------------------------------------------------------

    @property
    def token_requests(self):
        """Recorded ``POST /oauth2/access_token`` requests."""
        return [r for r in self.requests if r.method == "POST" and r.path == "/oauth2/access_token"]

    @property
    def list_requests(self):
        """Recorded ``GET /api/v1/academies/`` (list page) requests."""
        return [r for r in self.requests if r.method == "GET" and r.path == ACADEMIES_PATH]

    @property
    def pages_fetched(self):
        """Page numbers of the list requests, in order (a retried page appears twice)."""
        return [r.page for r in self.list_requests]

    # -- request handling (called by _Handler) --------------------------------------------------------

    def record(self, request):
        """Note one request (``requests``)."""
        with self._lock:
            self.requests.append(request)

    def token_answer(self, form):
        """``(status, payload)`` of a token request: the client-credentials grant, or an injected fault."""
        if self._token_redirect:
            return self._token_redirect.status, self._token_redirect
        if self._token_status:
            return self._token_status, {"error": "server_error"}
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return 401, {"error": "invalid_client"}
        token = f"test-jwt-{uuid.uuid4().hex}"
        with self._lock:
            self._tokens.add(token)
        return 200, {"access_token": token, "expires_in": 3600, "token_type": "JWT", "scope": "read write"}

    def api_answer(self, path, query, headers):
        """``(status, payload)`` of an academies request: a page, one academy, 401 without a token, or a fault."""
        if self._api_status:
            return self._api_status, {"detail": "Injected failure."}
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme != "JWT" or token not in self._tokens:
            return 401, {"detail": "Authentication credentials were not provided."}
        customer = query.get("enterprise_customer")
        academies = [a for c, a in self._academies if customer is None or c == customer]
        if path == ACADEMIES_PATH:
            return self._page(academies, query)
        wanted = path[len(ACADEMIES_PATH):].strip("/")
        for academy in academies:
            if academy["uuid"] == wanted:
                return 200, academy
        return 404, {"detail": "Not found."}

    def _page(self, academies, query):
        """``(status, payload)`` of one list page, with the page faults and redirects set up for it."""
        try:
            page = int(query.get("page", "1"))
        except ValueError:
            return 404, {"detail": "Invalid page."}
        if page in self._page_redirects:
            return self._page_redirects[page].status, self._page_redirects[page]
        fault = self._page_faults.get(page)
        if fault and fault[1] != 0:
            if fault[1] is not None:
                fault[1] -= 1
            return fault[0], {"detail": "Injected failure."}
        if page in self._invalid_json_pages:
            return 200, "<html>Bad gateway</html>"
        if page in self._raw_pages:
            return 200, self._raw_pages[page]
        last = max(1, -(-len(academies) // self.page_size))
        if not 1 <= page <= last:
            return 404, {"detail": "Invalid page."}

        def link(number):
            params = {k: v for k, v in query.items() if k != "page"}
            return f"{self.url}{ACADEMIES_PATH}?{urlencode({**params, 'page': number})}"

        start = (page - 1) * self.page_size
        return 200, {
            "count": len(academies),
            "next": link(page) if page in self._loop_pages else (link(page + 1) if page < last else None),
            "previous": link(page - 1) if page > 1 else None,
            "results": academies[start:start + self.page_size],
        }


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the ``CatalogServer`` attached to the HTTP server."""

    def do_GET(self):  # noqa: N802 (stdlib naming)
        """The academies API."""
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        catalog = self.server.catalog
        catalog.record(RecordedRequest("GET", url.path, query, headers))
        if url.path.startswith(ACADEMIES_PATH):
            self._answer(*catalog.api_answer(url.path, query, headers))
        else:
            self._answer(404, {"detail": "Not found."})

    def do_POST(self):  # noqa: N802 (stdlib naming)
        """The OAuth2 token endpoint."""
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        form = {k: v[-1] for k, v in parse_qs(body).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        catalog = self.server.catalog
        catalog.record(RecordedRequest("POST", url.path, {}, headers, form))
        if url.path.rstrip("/") == "/oauth2/access_token":
            self._answer(*catalog.token_answer(form))
        else:
            self._answer(404, {"detail": "Not found."})

    def _answer(self, status, payload):
        """Send ``payload``: a redirect, raw bytes (with a declared length) or JSON."""
        if isinstance(payload, Redirect):
            self.send_response(status)
            self.send_header("Location", payload.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if isinstance(payload, tuple):  # raw_body_on_page: (bytes, declared Content-Length or None)
            body, length = payload
        else:
            body, length = (payload if isinstance(payload, str) else json.dumps(payload)).encode(), None
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up on a hostile body
            pass

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass
