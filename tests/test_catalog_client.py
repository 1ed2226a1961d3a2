"""CatalogClient against a real local HTTP server (tests/catalog_server.py)."""

import logging
import socket
import uuid

import pytest
from django.core.exceptions import ImproperlyConfigured
from edx_django_utils.cache import TieredCache
from edx_rest_api_client.client import OAuthAPIClient

from academy_consumer import conf
from academy_consumer.catalog import CatalogClient, CatalogError
from tests.catalog_server import CatalogServer

CUSTOMER = str(uuid.uuid4())


def client(**kwargs):
    """A client reading the (fixture-overridden) settings, with fast retries."""
    kwargs.setdefault("retries", 1)
    kwargs.setdefault("backoff_factor", 0)
    return CatalogClient(**kwargs)


def titles(items):
    return [item["title"] for item in items]


def unused_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_token_fetched_once_and_sent_as_jwt(catalog_server):
    catalog_server.add_academies(25)

    client().fetch_academies()
    client().fetch_academies()  # a second client reuses the cached token

    assert len(catalog_server.token_requests) == 1
    form = catalog_server.token_requests[0].form
    assert form["grant_type"] == "client_credentials"
    assert form["token_type"] == "jwt"
    assert form["client_id"] == catalog_server.client_id
    auth_headers = {r.headers["authorization"] for r in catalog_server.list_requests}
    assert len(auth_headers) == 1
    assert auth_headers.pop().startswith("JWT test-jwt-")


def test_all_pages_returned_in_order(catalog_server, caplog):
    expected = catalog_server.add_academies(25)

    with caplog.at_level(logging.DEBUG, logger="academy_consumer.catalog"):
        items = client().fetch_academies()

    assert items == expected
    assert titles(items)[0] == "Academy 01" and titles(items)[-1] == "Academy 25"
    assert catalog_server.pages_fetched == [1, 2, 3]
    assert len([r for r in caplog.records if r.name == "academy_consumer.catalog" and "page" in r.message]) == 3


def test_enterprise_customer_filter_sent_and_honoured(catalog_server):
    mine = catalog_server.add_academies(12, enterprise_customer=CUSTOMER, prefix="Mine")
    catalog_server.add_academies(5, enterprise_customer=str(uuid.uuid4()), prefix="Other")

    items = client().fetch_academies(enterprise_customer=CUSTOMER)

    assert items == mine
    assert [r.query.get("enterprise_customer") for r in catalog_server.list_requests] == [CUSTOMER, CUSTOMER]


def test_empty_catalog_gives_empty_list(catalog_server):
    assert client().fetch_academies(enterprise_customer=CUSTOMER) == []


def test_page_failing_persistently_raises_and_names_the_page(catalog_server):
    catalog_server.add_academies(25)
    catalog_server.fail_page(2, 500)

    with pytest.raises(CatalogError) as excinfo:
        client(retries=2).fetch_academies()

    message = str(excinfo.value)
    assert "page 2" in message and "page=2" in message and "HTTP 500" in message
    assert "\n" not in message
    assert catalog_server.pages_fetched == [1, 2, 2, 2]  # first try + 2 retries, then gives up


def test_transient_503_is_retried(catalog_server):
    expected = catalog_server.add_academies(25)
    catalog_server.fail_page(2, 503, times=1)

    assert client().fetch_academies() == expected
    assert catalog_server.pages_fetched == [1, 2, 2, 3]


def test_invalid_json_raises(catalog_server):
    catalog_server.add_academies(25)
    catalog_server.invalid_json_on_page(3)

    with pytest.raises(CatalogError, match=r"invalid JSON at .*page=3"):
        client().fetch_academies()


def test_api_401_raises_mentioning_credentials(catalog_server):
    catalog_server.add_academies(3)
    catalog_server.fail_api(401)

    with pytest.raises(CatalogError, match=r"refused the credentials \(HTTP 401\)"):
        client().fetch_academies()


def test_bad_client_secret_raises(catalog_server):
    catalog_server.add_academies(3)

    with pytest.raises(CatalogError, match=r"OAuth2 provider refused the client credentials \(HTTP 401\)"):
        client(client_secret="wrong").fetch_academies()
    assert catalog_server.list_requests == []  # no API call without a token


def test_token_endpoint_error_raises(catalog_server):
    catalog_server.fail_token(500)

    with pytest.raises(CatalogError, match=r"could not get an access token: .*access_token answered HTTP 500"):
        client().fetch_academies()


def test_catalog_unreachable_raises(catalog_server):
    with pytest.raises(CatalogError, match=r"unreachable: .*[Cc]onnection refused"):
        client(catalog_url=f"http://127.0.0.1:{unused_port()}").fetch_academies()


def test_server_stopped_raises(catalog_server):
    catalog_server.stop()

    with pytest.raises(CatalogError, match=r"could not reach the OAuth2 provider"):
        client().fetch_academies()


def test_single_academy(catalog_server):
    academies = catalog_server.add_academies(15, enterprise_customer=CUSTOMER)

    items = client().fetch_academies(enterprise_customer=CUSTOMER, academy_uuid=academies[11]["uuid"])

    assert items == [academies[11]]
    assert catalog_server.list_requests == []


def test_single_academy_not_found(catalog_server):
    catalog_server.add_academies(2)
    missing = uuid.uuid4()

    with pytest.raises(CatalogError, match=f"academy {missing} not found in the catalog"):
        client().fetch_academies(academy_uuid=missing)


def test_next_loop_is_detected(catalog_server):
    catalog_server.add_academies(25)
    catalog_server.loop_next_on_page(2)

    with pytest.raises(CatalogError, match="pagination loops"):
        client().fetch_academies()
    assert catalog_server.pages_fetched == [1, 2]


def test_page_limit(catalog_server):
    catalog_server.add_academies(25)

    with pytest.raises(CatalogError, match="more than 2 pages"):
        client(max_pages=2).fetch_academies()


# -- redirects are never followed; URLs in messages never show credentials -----------------------------

@pytest.fixture
def other_host():
    """A second catalog server standing in for another host; its ``requests`` say whether it was hit."""
    with CatalogServer(client_id="academy-consumer-test-key", client_secret="academy-consumer-test-secret") as server:
        server.add_academies(3, prefix="Impostor")
        yield server


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_page_redirect_to_another_host_fails_the_fetch(catalog_server, other_host, status):
    catalog_server.add_academies(25)
    catalog_server.redirect_page(2, f"{other_host.url}/api/v1/academies/?page=1", status=status)

    with pytest.raises(CatalogError) as excinfo:
        client().fetch_academies()

    message = str(excinfo.value)
    assert "page 2" in message and f"HTTP {status}" in message and "redirects are not followed" in message
    assert other_host.url in message and "\n" not in message
    assert other_host.requests == []  # neither the JWT nor a GET went there
    assert catalog_server.pages_fetched == [1, 2]


def test_same_origin_redirect_is_not_followed_either(catalog_server):
    catalog_server.add_academies(25)
    catalog_server.redirect_page(1, f"{catalog_server.url}/api/v1/academies/?page=2")

    with pytest.raises(CatalogError, match="HTTP 302, a redirect to"):
        client().fetch_academies()
    assert catalog_server.pages_fetched == [1]


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_token_redirect_never_sends_the_secret_elsewhere(catalog_server, other_host, status):
    catalog_server.add_academies(3)
    catalog_server.redirect_token(f"{other_host.oauth_url}/access_token", status=status)

    with pytest.raises(CatalogError) as excinfo:
        client().fetch_academies()

    message = str(excinfo.value)
    assert f"HTTP {status}, a redirect to {other_host.url}" in message and "not followed" in message
    assert catalog_server.client_secret not in message and "\n" not in message
    assert other_host.requests == []  # the client id and secret were not POSTed there
    assert len(catalog_server.token_requests) == 1 and catalog_server.list_requests == []


def test_redirect_location_credentials_and_path_are_not_printed(catalog_server, other_host):
    catalog_server.redirect_token(f"http://thief:hunter2@127.0.0.1:{other_host.url.rsplit(':', 1)[1]}/steal?token=abc")

    with pytest.raises(CatalogError) as excinfo:
        client().fetch_academies()

    message = str(excinfo.value)
    assert "hunter2" not in message and "thief" not in message and "steal" not in message
    assert "http://***@127.0.0.1:" in message


def test_credentials_in_configured_urls_are_masked(catalog_server):
    port = unused_port()
    with pytest.raises(CatalogError) as unreachable:
        client(catalog_url=f"http://admin:s3cret@127.0.0.1:{port}").fetch_academies()
    assert "s3cret" not in str(unreachable.value) and f"http://***@127.0.0.1:{port}" in str(unreachable.value)

    with pytest.raises(CatalogError) as token:
        client(provider_url=f"http://admin:s3cret@127.0.0.1:{port}/oauth2").fetch_academies()
    assert "s3cret" not in str(token.value) and "***@" in str(token.value)


def test_token_still_cached_across_clients(catalog_server):
    """The no-redirect token request keeps the stock client's caching (one token request per process)."""
    catalog_server.add_academies(3)
    client().fetch_academies()
    client().fetch_academies()
    assert len(catalog_server.token_requests) == 1


# -- the host's setting names: the token goes where the host's own API clients send theirs -------------------

ROOT_SPELLINGS = ["{url}", "{url}/", "{url}/oauth2", "{url}/oauth2/", "{url}/oauth2/access_token"]


@pytest.mark.parametrize("spelling", ROOT_SPELLINGS)
def test_token_requested_where_the_hosts_own_client_requests_it(catalog_server, settings, spelling):
    """
    A host gives its LMS root as ``SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT`` (no provider URL) and builds its clients as
    ``OAuthAPIClient(SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT.strip('/'), KEY, SECRET)``: the stock client, run here
    against the same stand-in, posts its token request to the very URL the app's client does.
    """
    settings.SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT = spelling.format(url=catalog_server.url)
    catalog_server.add_academies(2)

    assert len(client().fetch_academies()) == 2
    TieredCache.dangerous_clear_all_tiers()  # the stock client must ask too, not reuse a cached token
    OAuthAPIClient(settings.SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT.strip("/"), settings.BACKEND_SERVICE_EDX_OAUTH2_KEY,
                   settings.BACKEND_SERVICE_EDX_OAUTH2_SECRET).get_jwt_access_token()

    app, host = catalog_server.token_requests
    assert app.path == host.path == "/oauth2/access_token"
    assert app.form == host.form  # the same client-credentials grant, as the same client


def test_app_specific_provider_url_wins_over_the_lms_root(catalog_server, settings):
    settings.BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL = catalog_server.oauth_url
    settings.SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT = f"http://127.0.0.1:{unused_port()}"  # nothing listens there
    catalog_server.add_academies(2)

    assert len(client().fetch_academies()) == 2
    assert [request.path for request in catalog_server.token_requests] == ["/oauth2/access_token"]


HOST_CATALOG_SETTINGS = {
    "ENTERPRISE_CATALOG_URL": "http://catalog.example.com", "SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT": "http://lms.example.com",
    "BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL": None, "BACKEND_SERVICE_EDX_OAUTH2_KEY": "key",
    "BACKEND_SERVICE_EDX_OAUTH2_SECRET": "the-secret",
}


@pytest.mark.parametrize("changes, words", [
    ({"ENTERPRISE_CATALOG_URL": ""}, ["not configured", "set ENTERPRISE_CATALOG_URL"]),
    ({"SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT": None}, ["set SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT (or BACKEND_SERVICE_EDX_OAUTH2"]),
    ({"BACKEND_SERVICE_EDX_OAUTH2_KEY": "", "BACKEND_SERVICE_EDX_OAUTH2_SECRET": None},
     ["set BACKEND_SERVICE_EDX_OAUTH2_KEY, BACKEND_SERVICE_EDX_OAUTH2_SECRET"]),
    ({"SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT": "replace-me"},  # enterprise-access's base settings
     ["SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT must be an http:// or https:// URL, not 'replace-me'"]),
    ({"ENTERPRISE_CATALOG_URL": "ftp://user:the-secret@catalog"}, ["ENTERPRISE_CATALOG_URL", "'ftp://***@catalog'"]),
    ({"BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL": "http://lms:99999/oauth2"},  # not a port
     ["BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL must be an http:// or https:// URL"]),
    ({"BACKEND_SERVICE_EDX_OAUTH2_SECRET": ["the-secret"]}, ["BACKEND_SERVICE_EDX_OAUTH2_SECRET must be a string"]),
])
def test_missing_or_unusable_catalog_setting_is_one_line_naming_it(settings, changes, words):
    for name, value in {**HOST_CATALOG_SETTINGS, **changes}.items():
        setattr(settings, name, value)

    with pytest.raises(ImproperlyConfigured) as excinfo:
        CatalogClient()

    message = str(excinfo.value)
    assert "\n" not in message and "the-secret" not in message
    for word in words:
        assert word in message


def test_the_hosts_catalog_settings_are_no_error_of_the_apps_own(settings):
    """Placeholders in a host's settings (enterprise-access's base: '' and 'replace-me') stop no other command."""
    settings.ENTERPRISE_CATALOG_URL, settings.SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT = "", "replace-me"
    conf.check_all()
    assert conf.problems() == []
    assert [name for name, _ in conf.problems(conf.HOST_OWNED_SETTING_NAMES)] == ["SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT"]
