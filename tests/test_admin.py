"""The admin is read-only: requests through Django's test client, logged in as a superuser."""

import uuid

import pytest

from academy_consumer.models import EnterpriseAcademy

CHANGELIST = "/admin/academy_consumer/enterpriseacademy/"


@pytest.fixture
def rows(db):
    """Two academies: a live one with a uuid and a catalog query, an inactive legacy one without either."""
    live = EnterpriseAcademy.objects.create(
        uuid=uuid.UUID("aaaaaaaa-1111-2222-3333-444444444444"), name="Live Academy", slug="live",
        stripe_price_lookup_key="live_key", display_order=5, catalog_query_uuid=uuid.uuid4())
    legacy = EnterpriseAcademy.objects.create(
        name="Legacy Academy", slug="legacy", stripe_price_lookup_key="legacy_key", display_order=120,
        is_active=False)
    return live, legacy


def snapshot():
    return sorted(EnterpriseAcademy.objects.values_list("id", "name", "slug", "is_active", "display_order"))


def listed(response):
    content = response.content.decode()
    return sorted(name for name in ("Live Academy", "Legacy Academy") if name in content)


def test_changelist_lists_filters_and_searches(admin_client, rows):
    page = admin_client.get(CHANGELIST)
    assert page.status_code == 200
    assert listed(page) == ["Legacy Academy", "Live Academy"]
    content = page.content.decode()
    for choice in ("?is_active__exact=1", "?has_uuid=no", "?has_catalog_query=yes", "?display_order_range=100%2B",
                   "modified__gte", "created__gte"):
        assert choice in content, choice
    assert listed(admin_client.get(CHANGELIST, {"has_uuid": "no"})) == ["Legacy Academy"]
    assert listed(admin_client.get(CHANGELIST, {"has_catalog_query": "yes"})) == ["Live Academy"]
    assert listed(admin_client.get(CHANGELIST, {"is_active__exact": "0"})) == ["Legacy Academy"]
    assert listed(admin_client.get(CHANGELIST, {"display_order_range": "1-9"})) == ["Live Academy"]
    assert listed(admin_client.get(CHANGELIST, {"q": "aaaaaaaa-1111"})) == ["Live Academy"]
    assert listed(admin_client.get(CHANGELIST, {"q": "legacy_key"})) == ["Legacy Academy"]


def test_no_add_link_no_actions_and_bulk_delete_refused(admin_client, rows):
    page = admin_client.get(CHANGELIST)
    content = page.content.decode()
    assert "delete_selected" not in content and 'name="action"' not in content
    assert f"{CHANGELIST}add/" not in content
    before = snapshot()
    response = admin_client.post(CHANGELIST, {"action": "delete_selected", "select_across": "0", "index": "0",
                                              "_selected_action": [row.pk for row in rows], "post": "yes"})
    assert response.status_code in (200, 302)
    assert snapshot() == before


def test_change_page_is_read_only_and_post_is_refused(admin_client, rows):
    live = rows[0]
    url = f"{CHANGELIST}{live.pk}/change/"
    page = admin_client.get(url)
    assert page.status_code == 200
    content = page.content.decode()
    assert 'name="_save"' not in content and 'name="_continue"' not in content
    assert 'name="name"' not in content and 'name="is_active"' not in content  # no input fields
    assert "Live Academy" in content
    before = snapshot()
    response = admin_client.post(url, {"name": "Renamed", "slug": "renamed", "stripe_price_lookup_key": "live_key",
                                       "display_order": "1", "_save": "Save"})
    assert response.status_code == 403
    assert snapshot() == before


def test_add_and_delete_pages_are_forbidden(admin_client, rows):
    before = snapshot()
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403
    assert admin_client.post(f"{CHANGELIST}add/", {"name": "New", "slug": "new",
                                                   "stripe_price_lookup_key": "new_key"}).status_code == 403
    delete_url = f"{CHANGELIST}{rows[0].pk}/delete/"
    assert admin_client.get(delete_url).status_code == 403
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert snapshot() == before
