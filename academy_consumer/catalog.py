"""
Client for the Enterprise Catalog REST API (academies).

It authenticates the edX way (OAuth2 client credentials, JWT, token cached in ``TieredCache``) through
``edx_rest_api_client.client.OAuthAPIClient``, retries GETs on connection errors and HTTP 5xx with
backoff, follows ``next`` links until the last page, and either returns the complete list or raises
:class:`CatalogError`: a caller never gets a partial list.

No redirect is ever followed, neither for the token request nor for the catalog GETs: a 3xx answer aborts
the fetch (before anything is written) with one line saying where it pointed. Following one could send
the client secret (``requests`` re-POSTs the form on 307/308) or the JWT to another host, or apply another
host's list (and, with ``--deactivate-missing``, deactivate every real academy). Configure the final URLs.
Every URL in a message or a log line goes through ``redact.mask_url`` (``user:password@`` -> ``***@``).

Settings read (through ``academy_consumer.conf.catalog_api``, when a :class:`CatalogClient` is built, not at
import), the host's own names: ``ENTERPRISE_CATALOG_URL``, ``BACKEND_SERVICE_EDX_OAUTH2_KEY`` /
``_SECRET``, and the OAuth2 provider as the host's API clients give it to ``OAuthAPIClient``:
``SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT`` (the LMS root), unless ``BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL`` is
set (it wins). The token is requested where ``OAuthAPIClient`` would request it: ``<LMS root>/oauth2/access_token``.
A setting missing or unusable is ``ImproperlyConfigured`` (one line, raised by the constructor).
"""

import datetime
import json
import logging
import uuid
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import requests
from edx_django_utils.cache import TieredCache
from edx_rest_api_client.client import USER_AGENT, OAuthAPIClient
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from academy_consumer import conf
from academy_consumer.normalize import extract_items
from academy_consumer.redact import mask_url, mask_urls

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = (3.05, 30)
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_FACTOR = 0.5
DEFAULT_MAX_PAGES = 10_000
RETRY_AFTER_MAX = 60  # seconds; a longer Retry-After header is cut down to this
RETRY_STATUSES = (429, 500, 502, 503, 504)
ACADEMIES_PATH = "/api/v1/academies/"
LIST_KEYS = ("results", "items", "academies", "catalogs")  # a list page holds its academies under one of these


class CatalogError(Exception):
    """The catalog could not be read completely; the message is one readable line."""


class _RedirectRefused(requests.RequestException):
    """The token endpoint answered a redirect, which is not followed (the secret stays here)."""


def _redirect_target(response):
    """Where a 3xx response points, as ``scheme://host:port`` (masked), for a message that names no secret."""
    location = response.headers.get("Location") or ""
    target = urlsplit(urljoin(response.url or "", location))
    if not target.netloc:
        return "an unnamed location"
    return mask_url(urlunsplit((target.scheme, target.netloc, "", "", "")))


class _OAuthClient(OAuthAPIClient):
    """
    ``OAuthAPIClient`` whose token request never follows a redirect. The stock one posts with
    ``requests.post``, which follows redirects and re-POSTs the client id and secret on 307/308. The token
    is cached in ``TieredCache`` as the stock client does, until shortly before it expires.
    """

    EXPIRY_MARGIN = datetime.timedelta(seconds=30)

    def __init__(self, token_url, client_id, client_secret, timeout):
        super().__init__(token_url, client_id, client_secret, timeout=timeout)
        self._token_url = token_url

    def _ensure_authentication(self):
        key = f"academy_consumer.catalog.jwt.{self._client_id}.{self._token_url}"
        cached = TieredCache.get_cached_response(key)
        if cached.is_found and datetime.datetime.now(datetime.timezone.utc) < cached.value[1] - self.EXPIRY_MARGIN:
            self.auth.token = cached.value[0]
            return
        response = requests.post(
            self._token_url,
            data={"grant_type": "client_credentials", "client_id": self._client_id,
                  "client_secret": self._client_secret, "token_type": "jwt"},
            headers={"User-Agent": USER_AGENT}, timeout=self._timeout, allow_redirects=False,
        )
        if response.is_redirect or 300 <= response.status_code < 400:
            raise _RedirectRefused(response=response)
        response.raise_for_status()
        try:
            data = response.json()
            token, expires_in = data["access_token"], float(data["expires_in"])
        except (KeyError, TypeError, ValueError) as exc:
            raise requests.RequestException(response=response) from exc
        expires_at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=expires_in)
        timeout = int(expires_in - self.EXPIRY_MARGIN.total_seconds())
        if timeout > 0:
            TieredCache.set_all_tiers(key, (token, expires_at), timeout)
        self.auth.token = token


class _Retry(Retry):
    """A urllib3 ``Retry`` that never waits more than ``RETRY_AFTER_MAX`` seconds on a Retry-After header."""

    def parse_retry_after(self, retry_after):
        return min(super().parse_retry_after(retry_after), RETRY_AFTER_MAX)


def _token_url(provider_url):
    """
    Where ``OAuthAPIClient(provider_url, ...)`` posts for a token (edx-rest-api-client's own rule, which it keeps
    private): the URL itself when it ends in ``/access_token``, else ``/access_token`` added after ``/oauth2``,
    else ``/oauth2/access_token`` added (an LMS root such as ``SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT``).
    """
    url = provider_url.rstrip("/")
    if url.endswith("/access_token"):
        return url
    return url + ("/access_token" if url.endswith("/oauth2") else "/oauth2/access_token")


def _reason(exc):
    """The most telling one-line reason of a ``requests`` exception."""
    reason = exc.args[0] if exc.args and isinstance(exc.args[0], Exception) else exc
    while getattr(reason, "reason", None) is not None:  # MaxRetryError -> NewConnectionError, ...
        reason = reason.reason
    return mask_urls(" ".join(str(reason).split()))


class CatalogClient:
    """
    Reads academies from the Enterprise Catalog service.

    Every argument defaults to the matching Django setting (read when the client is built, through
    ``conf.catalog_api``; ``ImproperlyConfigured`` when one is missing or unusable): ``catalog_url``
    (``ENTERPRISE_CATALOG_URL``), ``provider_url`` (the OAuth2 provider: ``BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL``,
    else ``SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT``), ``client_id`` / ``client_secret``
    (``BACKEND_SERVICE_EDX_OAUTH2_KEY`` / ``_SECRET``). ``timeout`` is ``(connect, read)`` seconds;
    ``retries`` is how many times a GET is retried after a connection error or an HTTP 429/5xx, with
    exponential backoff (``backoff_factor``) and honouring Retry-After. TLS certificates are always verified.
    """

    def __init__(self, catalog_url=None, *, provider_url=None, client_id=None, client_secret=None,
                 timeout=DEFAULT_TIMEOUT, retries=DEFAULT_RETRIES, backoff_factor=DEFAULT_BACKOFF_FACTOR,
                 max_pages=DEFAULT_MAX_PAGES):
        api = conf.catalog_api(catalog_url=catalog_url, oauth2_url=provider_url, key=client_id, secret=client_secret)
        self.catalog_url = api.catalog_url.rstrip("/")
        self.token_url = _token_url(api.oauth2_url)
        self.timeout = timeout
        self.max_pages = max_pages
        self.session = _OAuthClient(self.token_url, api.key, api.secret, timeout=timeout)
        retry = _Retry(
            total=retries, connect=retries, read=retries, status=retries,
            backoff_factor=backoff_factor, status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET"}), respect_retry_after_header=True, raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def fetch_academies(self, enterprise_customer=None, academy_uuid=None, on_page=None):
        """
        Return every academy the catalog lists, as a list of raw item dicts, in catalog order.

        ``enterprise_customer`` limits the list to that customer's academies. ``academy_uuid`` fetches
        that one academy only (a one-item list). Raises :class:`CatalogError` on any failure.
        ``on_page(pages, items, announced, last)`` is called after each page is read: pages and items so
        far, the ``count`` the first page announced (or None), and whether it was the last page.
        """
        params = {"enterprise_customer": str(enterprise_customer)} if enterprise_customer else {}
        self._authenticate()
        if academy_uuid:
            return [self._fetch_one(academy_uuid, params)]

        url = self.catalog_url + ACADEMIES_PATH + ("?" + urlencode(params) if params else "")
        items, seen, count = [], set(), None
        while url:
            if url in seen:
                raise CatalogError(f"catalog pagination loops: page {len(seen)} links back to {mask_url(url)}")
            if len(seen) >= self.max_pages:
                raise CatalogError(f"catalog has more than {self.max_pages} pages; stopped at {mask_url(url)}")
            seen.add(url)
            payload = self._get_json(url, f"page {len(seen)}")
            if isinstance(payload, dict) and not any(isinstance(payload.get(key), list) for key in LIST_KEYS):
                # e.g. {"detail": "Request was throttled."} with a 200: taking it for an empty page would make
                # the list silently partial (and deactivate_missing deactivate the academies of later pages)
                raise CatalogError(f"catalog answered no list of academies at {mask_url(url)} (page {len(seen)})")
            page_items = extract_items(payload)
            log.debug("catalog page %d (%s): %d academies", len(seen), mask_url(url), len(page_items))
            items.extend(page_items)
            if isinstance(payload, dict):
                if count is None:
                    count = payload.get("count")
                url = self._next_url(url, payload.get("next"))
            else:
                url = None
            if on_page is not None:
                on_page(len(seen), len(items), count if isinstance(count, int) else None, url is None)
        if isinstance(count, int) and count != len(items):
            log.warning("catalog announced %d academies but listed %d", count, len(items))
        return items

    def _authenticate(self):
        """Get (or reuse the cached) JWT, turning token endpoint failures into a CatalogError."""
        token_url = mask_url(self.token_url)
        try:
            self.session.get_jwt_access_token()
        except _RedirectRefused as exc:
            raise CatalogError(
                f"could not get an access token: {token_url} answered HTTP {exc.response.status_code}, a redirect to "
                f"{_redirect_target(exc.response)}; redirects are not followed (the credentials were not sent "
                f"there): set SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT (or BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL) to the "
                f"final URL"
            ) from exc
        except requests.HTTPError as exc:
            status = exc.response.status_code
            if status in (400, 401, 403):
                raise CatalogError(
                    f"the OAuth2 provider refused the client credentials (HTTP {status}) at {token_url}"
                ) from exc
            raise CatalogError(f"could not get an access token: {token_url} answered HTTP {status}") from exc
        except requests.RequestException as exc:
            if exc.response is not None:  # 2xx without a usable token
                raise CatalogError(f"the OAuth2 provider answered no usable token at {token_url}") from exc
            raise CatalogError(f"could not reach the OAuth2 provider at {token_url}: {_reason(exc)}") from exc

    def _fetch_one(self, academy_uuid, params):
        """The one academy ``academy_uuid`` (an item dict)."""
        try:
            academy_uuid = uuid.UUID(str(academy_uuid))
        except ValueError as exc:
            raise CatalogError(f"{academy_uuid!r} is not an academy UUID") from exc
        url = f"{self.catalog_url}{ACADEMIES_PATH}{academy_uuid}/" + ("?" + urlencode(params) if params else "")
        not_found = f"academy {academy_uuid} not found in the catalog"
        payload = self._get_json(url, f"academy {academy_uuid}", not_found=not_found)
        items = extract_items(payload)
        if len(items) != 1:
            raise CatalogError(f"catalog answered no academy object at {mask_url(url)}")
        return items[0]

    def _get_json(self, url, what, not_found=None):
        """
        GET ``url`` and return its decoded JSON; ``what`` names the request in error messages. A redirect
        is not followed: it fails the fetch.
        """
        shown = mask_url(url)
        try:
            response = self.session.get(url, timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise CatalogError(f"catalog fetch failed: {what} ({shown}) unreachable: {_reason(exc)}") from exc
        if 300 <= response.status_code < 400:
            raise CatalogError(f"catalog fetch failed: {what} ({shown}) answered HTTP {response.status_code}, a "
                               f"redirect to {_redirect_target(response)}; redirects are not followed: set "
                               f"ENTERPRISE_CATALOG_URL to the final URL")
        if response.status_code in (401, 403):
            raise CatalogError(f"catalog refused the credentials (HTTP {response.status_code}) at {shown}")
        if response.status_code == 404 and not_found:
            raise CatalogError(not_found)
        if not 200 <= response.status_code < 300:
            raise CatalogError(f"catalog fetch failed: {what} ({shown}) answered HTTP {response.status_code}")
        try:
            # json.loads of the bytes, not response.json(): that decodes invalid UTF-8 to U+FFFD (names would
            # be silently corrupted) and lets a RecursionError (JSON nested too deeply) through.
            payload = json.loads(response.content)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits
            raise CatalogError(f"catalog answered invalid JSON at {shown} ({what})") from exc
        if not isinstance(payload, (dict, list)):
            raise CatalogError(f"catalog answered unexpected JSON ({type(payload).__name__}) at {shown} ({what})")
        return payload

    def _next_url(self, current, next_url):
        """
        The absolute URL of the next page, or None on the last page.

        A ``next`` link is followed only on the catalog's own host (the JWT is never sent elsewhere), and
        always with the configured scheme and port: behind a TLS-terminating proxy the catalog may build
        ``http://`` links.
        """
        if not next_url:
            return None
        link = urlsplit(urljoin(current, next_url))
        base = urlsplit(self.catalog_url)
        if link.hostname != base.hostname:
            raise CatalogError(f"catalog's next link points at another host ({mask_url(next_url)}); not following it")
        return urlunsplit((base.scheme, base.netloc, link.path, link.query, ""))
