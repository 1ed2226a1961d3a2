"""``reconcile_academies`` as users run it: a subprocess, a real catalog over HTTP, a real database."""

import json
import uuid

import pytest

from academy_consumer.management.commands.reconcile_academies import Progress
from academy_consumer.models import EnterpriseAcademy

CUSTOMER = "11111111-2222-3333-4444-555555555555"
SAMPLE = str(__import__("pathlib").Path(__file__).parent.parent / "academy_consumer" / "samples" / "catalog.json")


def names(active=None):
    rows = EnterpriseAcademy.objects.all()
    if active is not None:
        rows = rows.filter(is_active=active)
    return sorted(rows.values_list("name", flat=True))


def test_sync_from_catalog_over_http_with_pages(cli, catalog_server, catalog_env):
    catalog_server.add_academies(25, enterprise_customer=CUSTOMER, prefix="Academy")
    catalog_server.add_academies(3, enterprise_customer=str(uuid.uuid4()), prefix="Other")
    done = cli("reconcile_academies", "--enterprise-customer", CUSTOMER, "--json", env=catalog_env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["created"] == 25 and report["errors"] == 0
    assert EnterpriseAcademy.objects.count() == 25
    assert catalog_server.pages_fetched == [1, 2, 3]
    # a second run changes nothing
    again = json.loads(cli("reconcile_academies", "--enterprise-customer", CUSTOMER, "--json", env=catalog_env).stdout)
    assert (again["unchanged"], again["created"], again["updated"]) == (25, 0, 0)


def test_failing_page_leaves_table_untouched(cli, catalog_server, catalog_env):
    EnterpriseAcademy.objects.create(name="Existing", slug="existing", stripe_price_lookup_key="existing")
    catalog_server.add_academies(25, enterprise_customer=CUSTOMER)
    catalog_server.fail_page(3, 500)
    done = cli("reconcile_academies", "--enterprise-customer", CUSTOMER, "--deactivate-missing", env=catalog_env)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "page 3" in done.stderr
    assert names() == ["Existing"] and names(active=True) == ["Existing"]


@pytest.mark.parametrize("fault", ["invalid_json", "unauthorized"])
def test_bad_json_or_401_exits_2_and_writes_nothing(cli, catalog_server, catalog_env, fault):
    catalog_server.add_academies(5, enterprise_customer=CUSTOMER)
    if fault == "invalid_json":
        catalog_server.invalid_json_on_page(1)
    else:
        catalog_server.fail_api(401)
    done = cli("reconcile_academies", "--enterprise-customer", CUSTOMER, env=catalog_env)
    assert done.returncode == 2
    assert "nothing was written" in done.stderr
    assert EnterpriseAcademy.objects.count() == 0


def test_empty_catalog_with_deactivate_missing_deactivates_nothing(cli, catalog_server, catalog_env):
    EnterpriseAcademy.objects.create(name="Existing", slug="existing", stripe_price_lookup_key="existing")
    done = cli("reconcile_academies", "--enterprise-customer", CUSTOMER, "--deactivate-missing", env=catalog_env)
    assert done.returncode == 0, done.stderr
    assert names(active=True) == ["Existing"]
    assert "catalog list is empty" in done.stdout


def test_deactivate_missing_and_single_academy(cli, catalog_server, catalog_env):
    kept = catalog_server.add_academy("Kept Academy", enterprise_customer=CUSTOMER)
    EnterpriseAcademy.objects.create(name="Gone Academy", slug="gone", stripe_price_lookup_key="gone")
    one = cli("reconcile_academies", "--academy-uuid", kept["uuid"], "--deactivate-missing", env=catalog_env)
    assert one.returncode == 0, one.stderr
    assert names(active=True) == ["Gone Academy", "Kept Academy"]  # limited to one academy: no deactivation
    full = cli("reconcile_academies", "--enterprise-customer", CUSTOMER, "--deactivate-missing", env=catalog_env)
    assert full.returncode == 0, full.stderr
    assert names(active=True) == ["Kept Academy"] and names(active=False) == ["Gone Academy"]


def test_dry_run_writes_nothing(cli):
    done = cli("reconcile_academies", "--from-file", SAMPLE, "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["dry_run"] is True and report["created"] == 4 and report["skipped"] == 1
    assert EnterpriseAcademy.objects.count() == 0


def test_from_file_and_stdin_in_any_envelope(cli):
    items = [{"name": {"rendered": "Data  Academy"}, "uuid": str(uuid.uuid4())}]
    for envelope in ({"academies": items}, {"items": items}, items, items[0]):
        done = cli("reconcile_academies", "--from-file", "-", "--json", input=json.dumps(envelope))
        assert done.returncode == 0, done.stderr
    assert names() == ["Data Academy"]
    assert EnterpriseAcademy.objects.get().stripe_price_lookup_key == "essentials_data_academy_yearly"


def test_human_summary_lists_reasons(cli):
    done = cli("reconcile_academies", "--from-file", SAMPLE)
    assert done.returncode == 0, done.stderr
    assert "created 4" in done.stdout and "skipped 1" in done.stdout
    assert "invalid uuid" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["--enterprise-customer", "not-a-uuid"], "invalid UUID value"),
    (["--from-file", "/nonexistent/catalog.json"], "cannot read"),
    (["--no-such-option"], "unrecognized arguments"),
    ([], "--enterprise-customer"),
])
def test_bad_arguments_exit_2_with_one_line(cli, args, message):
    done = cli("reconcile_academies", *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("text", ["{", "[" * 100_000 + "]" * 100_000, "not json at all"])
def test_unreadable_input_exits_2(cli, text):
    done = cli("reconcile_academies", "--from-file", "-", "--deactivate-missing", input=text)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert EnterpriseAcademy.objects.count() == 0


def test_row_errors_exit_1(cli):
    from django.db import connection  # pylint: disable=import-outside-toplevel

    from tests.test_apply import DROP_SQL, TRIGGER_SQL  # pylint: disable=import-outside-toplevel

    with connection.cursor() as cursor:
        for sql in TRIGGER_SQL[connection.vendor]:
            cursor.execute(sql)
    try:
        payload = [{"title": "Data Academy"}, {"title": "Explode Academy"}]
        done = cli("reconcile_academies", "--from-file", "-", "--json", input=json.dumps(payload))
    finally:
        with connection.cursor() as cursor:
            for sql in DROP_SQL[connection.vendor]:
                cursor.execute(sql)
    assert done.returncode == 1
    assert json.loads(done.stdout)["errors"] == 1
    assert names() == ["Data Academy"]


def test_a_long_list_reports_progress_on_stderr_and_a_short_one_stays_quiet(cli, catalog_server, catalog_env):
    catalog_server.page_size = 100
    catalog_server.add_academies(1_200, enterprise_customer=CUSTOMER, prefix="Academy")
    done = cli("reconcile_academies", "--enterprise-customer", CUSTOMER, "--chunk-size", "500", "--json",
               env=catalog_env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["created"] == 1_200  # stdout stays one JSON object
    lines = done.stderr.splitlines()
    assert "reconcile: fetched 12 page(s), 1,200 academies of 1,200 announced (done)" in lines, done.stderr
    assert any(line.startswith("reconcile: applied 1,200 of 1,200 items (") for line in lines), done.stderr
    assert all(line.startswith("reconcile: ") for line in lines), done.stderr

    quiet = cli("reconcile_academies", "--from-file", SAMPLE)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_progress_lines_are_spaced_by_the_interval_with_one_at_each_end():
    now = [0.0]
    lines = []
    progress = Progress(lines.append, clock=lambda: now[0])
    for page in range(1, 31):  # 30 pages of 100, 3 s apart, no count announced
        now[0] = 3.0 * page
        progress.page(page, page * 100, None, page == 30)
    # quiet up to 1,000 academies; then a line at most every 10 s; and the last page
    fetched = [line.split(" page(s)")[0] for line in lines]
    assert fetched == [f"reconcile: fetched {n}" for n in (11, 15, 19, 23, 27, 30)]
    assert lines[0] == "reconcile: fetched 11 page(s), 1,100 academies (so far)"
    assert lines[-1] == "reconcile: fetched 30 page(s), 3,000 academies (done)"

    lines.clear()
    progress.chunk(500, 3_000)  # at 90 s, just after the last line: not due
    now[0] = 100.0
    progress.chunk(1_000, 3_000)
    progress.chunk(3_000, 3_000)  # the end: always
    assert lines == ["reconcile: applied 1,000 of 3,000 items (10 items/s)",
                     "reconcile: applied 3,000 of 3,000 items (30 items/s)"]
    lines.clear()
    Progress(lines.append).chunk(1_000, 1_000)  # 1,000 items or fewer: nothing
    assert lines == []


def test_standalone_settings_take_both_oauth2_names_from_the_environment(cli, catalog_server, catalog_env):
    """The LMS root (catalog_env's) or the app-specific provider URL, which wins when both are set."""
    catalog_server.add_academies(2, enterprise_customer=CUSTOMER)
    provider_wins = {**catalog_env, "SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT": "http://127.0.0.1:9",  # nothing answers there
                     "BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL": catalog_server.oauth_url}
    for env in (catalog_env, provider_wins):
        done = cli("reconcile_academies", "--enterprise-customer", CUSTOMER, "--json", env=env)
        assert done.returncode == 0, done.stderr
    assert [request.path for request in catalog_server.token_requests] == ["/oauth2/access_token"] * 2


@pytest.mark.parametrize("name, value, words", [
    ("ENTERPRISE_CATALOG_URL", "ftp://catalog", "ENTERPRISE_CATALOG_URL must be an http:// or https:// URL"),
    ("SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT", "replace-me", "SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT must be an http"),
])
def test_unusable_catalog_setting_is_one_line_exit_2(cli, name, value, words):
    done = cli("reconcile_academies", "--enterprise-customer", CUSTOMER, env={name: value})
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert words in done.stderr and "nothing was written" in done.stderr
