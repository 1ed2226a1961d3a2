"""The apply rules, against the real database selected by DATABASE_URL."""

import threading
import uuid

import pytest
from django.db import DatabaseError, IntegrityError, connection, connections, transaction
from django.utils import timezone

from academy_consumer.apply import DELETE, UPSERT, Change, apply_change, apply_changes
from academy_consumer.models import EnterpriseAcademy
from academy_consumer.sync import sync_academies
from tests.factories import academy, at

pytestmark = pytest.mark.django_db

U1, U2, U3 = (str(uuid.UUID(int=n)) for n in (0xA1, 0xA2, 0xA3))
CQ = "3e5a6f2c-8d1b-4c4e-9f7a-2b6c0d9e1f10"


def row(uuid_=U1):
    return EnterpriseAcademy.objects.get(uuid=uuid_)


def apply_item(item, time=None):
    """One catalog item applied on its own (a batch of one)."""
    return apply_change(Change(UPSERT, item, time))


def deactivate(uuid_=None, title=None, time=None):
    """One delete applied on its own."""
    return apply_change(Change(DELETE, {"uuid": uuid_, "title": title}, time))


class TestCreate:
    """A new academy and the defaults it gets."""

    def test_create_applies_defaults(self):
        outcome = apply_item(academy(U1, short_description="Learn data"), at(0))
        assert outcome.outcome == "created"
        created = row()
        assert created.name == "Data Academy"
        assert created.slug == "data-academy"
        assert created.stripe_price_lookup_key == "essentials_data_academy_yearly"
        assert created.display_order == 0
        assert created.is_active is True
        assert created.stripe_product_id == ""
        assert created.catalog_query_uuid is None
        assert created.description == "Learn data"
        assert created.source_timestamp == at(0)

    def test_same_item_twice_is_unchanged_and_writes_nothing(self):
        apply_item(academy(U1, catalog_query_uuid=CQ), at(0))
        before = row().modified
        outcome = apply_item(academy(U1, catalog_query_uuid=CQ), at(0))
        assert outcome.outcome == "unchanged"
        assert row().modified == before
        assert EnterpriseAcademy.objects.count() == 1

    def test_newer_unchanged_records_time_but_not_modified(self):
        apply_item(academy(U1), at(0))
        before = row().modified
        assert apply_item(academy(U1), at(5)).outcome == "unchanged"
        assert row().modified == before
        assert row().source_timestamp == at(5)
        # ... so an event from between the two is now stale
        assert apply_item(academy(U1, title="Between"), at(3)).outcome == "stale"
        assert row().name == "Data Academy"


class TestIdentity:
    """Which row an item is: by uuid, else by name."""

    def test_rename_by_uuid_updates_in_place(self):
        apply_item(academy(U1), at(0))
        outcome = apply_item(academy(U1, title="Data Science Academy"), at(1))
        assert outcome.outcome == "updated"
        assert EnterpriseAcademy.objects.count() == 1
        assert row().name == "Data Science Academy"
        assert row().slug == "data-academy"  # defaults apply only on create

    def test_match_by_name_ignoring_case_keeps_casing_and_fills_uuid(self):
        EnterpriseAcademy.objects.create(name="DATA academy", slug="legacy", stripe_price_lookup_key="legacy_key")
        outcome = apply_item(academy(U1, display_order=4), at(0))
        assert outcome.outcome == "updated"
        legacy = EnterpriseAcademy.objects.get()
        assert legacy.name == "DATA academy"
        assert str(legacy.uuid) == U1
        assert legacy.display_order == 4
        assert legacy.slug == "legacy" and legacy.stripe_price_lookup_key == "legacy_key"

    def test_name_of_another_academy_is_skipped_with_reason(self):
        apply_item(academy(U1, "Data Academy"), at(0))
        outcome = apply_item(academy(U2, "data ACADEMY"), at(0))
        assert outcome.outcome == "skipped"
        assert U1 in outcome.reason
        assert EnterpriseAcademy.objects.count() == 1

    def test_name_uniqueness_is_enforced_by_the_database(self):
        EnterpriseAcademy.objects.create(name="Data Academy", slug="a", stripe_price_lookup_key="a")
        with pytest.raises(IntegrityError), transaction.atomic():
            EnterpriseAcademy.objects.create(name="DATA ACADEMY", slug="b", stripe_price_lookup_key="b")

    def test_accented_names_are_distinct_on_every_database(self):
        apply_item(academy(U1, "Cafe Academy"), at(0))
        # (the default lookup keys would collide: accents fold to ASCII there)
        assert apply_item(academy(U2, "Café Academy", stripe_price_lookup_key="cafe2"), at(0)).outcome == "created"


class TestAbsentMeansKeep:
    """A field an update leaves out keeps its stored value."""

    def test_update_without_catalog_query_keeps_it(self):
        apply_item(academy(U1, catalog_query_uuid=CQ, display_order=3, stripe_product_id="prod_1"), at(0))
        apply_item(academy(U1, short_description="new text"), at(1))
        kept = row()
        assert str(kept.catalog_query_uuid) == CQ
        assert kept.display_order == 3
        assert kept.stripe_product_id == "prod_1"
        assert kept.description == "new text"

    def test_legacy_integer_catalog_query_does_not_erase(self):
        apply_item(academy(U1, catalog_query_uuid=CQ), at(0))
        assert apply_item(academy(U1, catalog_query_uuid=17), at(1)).outcome == "unchanged"
        assert str(row().catalog_query_uuid) == CQ

    def test_is_active_absent_reactivates(self):
        apply_item(academy(U1, is_active=False), at(0))
        assert row().is_active is False
        assert apply_item(academy(U1), at(1)).outcome == "updated"
        assert row().is_active is True


class TestUniqueKeys:
    """Slug, lookup key and name: unique, with the collisions' outcomes."""

    def test_slug_collision_gets_deterministic_suffix(self):
        apply_item(academy(U1, "Data Academy"), at(0))
        apply_item(academy(U2, "Data: Academy!", stripe_price_lookup_key="k2"), at(0))
        apply_item(academy(U3, "Data - Academy", stripe_price_lookup_key="k3"), at(0))
        assert [row(u).slug for u in (U1, U2, U3)] == ["data-academy", "data-academy-2", "data-academy-3"]

    def test_lookup_key_collision_is_skipped_and_never_stolen(self):
        apply_item(academy(U1, "Data Academy"), at(0))
        outcome = apply_item(academy(U2, "Other", stripe_price_lookup_key="essentials_data_academy_yearly"), at(0))
        assert outcome.outcome == "skipped"
        assert "essentials_data_academy_yearly" in outcome.reason
        assert row(U1).stripe_price_lookup_key == "essentials_data_academy_yearly"
        assert not EnterpriseAcademy.objects.filter(uuid=U2).exists()

    def test_default_lookup_key_collision_is_skipped(self):
        apply_item(academy(U1, "Data Academy"), at(0))
        outcome = apply_item(academy(U2, "Other", product_key="Data Academy"), at(0))
        assert outcome.outcome == "skipped"
        assert "already used" in outcome.reason


class TestStaleGuardAndDelete:
    """Older events are stale; a delete deactivates."""

    def test_older_event_is_stale(self):
        apply_item(academy(U1, title="New name"), at(10))
        outcome = apply_item(academy(U1, title="Old name"), at(5))
        assert outcome.outcome == "stale"
        assert row().name == "New name"

    def test_delete_deactivates_and_newer_update_reactivates(self):
        apply_item(academy(U1), at(0))
        assert deactivate(U1, time=at(1)).outcome == "deactivated"
        assert row().is_active is False
        assert EnterpriseAcademy.objects.count() == 1  # never hard-deleted
        assert apply_item(academy(U1), at(0)).outcome == "stale"  # the create replayed does not revive it
        assert row().is_active is False
        assert apply_item(academy(U1), at(2)).outcome == "updated"
        assert row().is_active is True

    def test_stale_delete_is_ignored(self):
        apply_item(academy(U1), at(5))
        assert deactivate(U1, time=at(1)).outcome == "stale"
        assert row().is_active is True

    @pytest.mark.parametrize("batched", [False, True])
    def test_delete_with_a_nul_in_its_title_matches_by_uuid_only(self, batched):
        """PostgreSQL refuses NUL in a query: such a delete must not fail its batch (no stored name has one)."""
        apply_item(academy(U1), at(0))
        changes = [Change(DELETE, {"title": "Data\x00Academy"}, at(1)),
                   Change(DELETE, {"uuid": U1, "title": "Data Academy\x00"}, at(2))]
        outcomes = list(apply_changes(changes)) if batched else [apply_change(c) for c in changes]
        assert [o.outcome for o in outcomes] == ["unchanged", "deactivated"]
        assert row().is_active is False

    def test_delete_of_unknown_academy_changes_nothing(self):
        outcome = deactivate(U2, time=at(1))
        assert outcome.outcome == "unchanged"
        assert "no such academy" in outcome.reason
        assert EnterpriseAcademy.objects.count() == 0


class TestSync:
    """``sync_academies``: the counts and the deactivation of missing academies."""

    def test_counts(self):
        apply_item(academy(U1, "Data Academy"), at(0))
        apply_item(academy(U2, "AI Academy"), at(0))
        result = sync_academies([
            academy(U1, "Data Academy"),           # unchanged
            academy(U2, "AI Academy", display_order=2),  # updated
            academy(U3, "Cloud Academy"),          # created
            {"title": ""},                        # skipped
        ], source_time=at(1))
        assert {k: result.counts[k] for k in ("created", "updated", "unchanged", "skipped", "errors")} == {
            "created": 1, "updated": 1, "unchanged": 1, "skipped": 1, "errors": 0}
        assert result.items[3]["reason"] == "missing name"

    def test_deactivate_missing(self):
        sync_academies([academy(U1, "Data Academy"), academy(U2, "AI Academy")], source_time=at(0))
        result = sync_academies([academy(U1, "Data Academy")], source_time=at(1), deactivate_missing=True)
        assert result.counts["deactivated"] == 1
        assert row(U2).is_active is False and row(U1).is_active is True
        # listed again: reactivated
        result = sync_academies([academy(U1, "Data Academy"), academy(U2, "AI Academy")], source_time=at(2),
                                deactivate_missing=True)
        assert result.counts["updated"] == 1 and row(U2).is_active is True

    def test_empty_list_never_deactivates(self):
        sync_academies([academy(U1), academy(U2, "AI Academy")], source_time=at(0))
        result = sync_academies([], source_time=at(1), deactivate_missing=True)
        assert result.counts["deactivated"] == 0
        assert EnterpriseAcademy.objects.filter(is_active=True).count() == 2
        assert result.notes

    def test_limited_sync_never_deactivates(self):
        sync_academies([academy(U1), academy(U2, "AI Academy")], source_time=at(0))
        result = sync_academies([academy(U1)], source_time=at(1), deactivate_missing=True, limited=True)
        assert result.counts["deactivated"] == 0
        assert row(U2).is_active is True

    def test_row_newer_than_snapshot_is_not_deactivated(self):
        sync_academies([academy(U1), academy(U2, "AI Academy")], source_time=at(0))
        apply_item(academy(U2, "AI Academy 2"), at(10))  # an event after the snapshot below
        result = sync_academies([academy(U1)], source_time=at(5), deactivate_missing=True)
        assert result.counts["deactivated"] == 0
        assert row(U2).is_active is True

    def test_dry_run_counts_and_writes_nothing(self):
        sync_academies([academy(U1), academy(U2, "AI Academy")], source_time=at(0))
        snapshot = list(EnterpriseAcademy.objects.order_by("pk").values())
        result = sync_academies([academy(U1, "Renamed"), academy(U3, "New")], source_time=at(1),
                                deactivate_missing=True, dry_run=True)
        assert (result.counts["updated"], result.counts["created"], result.counts["deactivated"]) == (1, 1, 1)
        assert list(EnterpriseAcademy.objects.order_by("pk").values()) == snapshot


# --- database-level failures and races: need real transactions ---------------------------------

@pytest.mark.parametrize("dry_run", [False, True])
def test_row_failing_in_the_database_does_not_abort_the_others(exploding_trigger, dry_run):
    result = sync_academies([academy(U1, "Data Academy"), academy(U2, "Explode Academy"),
                             academy(U3, "Cloud Academy")], source_time=at(0), dry_run=dry_run)
    assert (result.counts["created"], result.counts["errors"]) == (2, 1)
    assert "explode trigger" in result.items[1]["reason"]
    expected = set() if dry_run else {"Data Academy", "Cloud Academy"}
    assert set(EnterpriseAcademy.objects.values_list("name", flat=True)) == expected


@pytest.mark.parametrize("errors_as_outcomes", [True, False])
def test_a_row_the_database_refuses_in_a_batch_is_that_change_alone(exploding_trigger, errors_as_outcomes):
    """
    One fold's INSERT is refused by the trigger: the batch is folded again, fewer changes at a time, and only the
    refused change is ``errors``, with the database's reason (reconcile); the consumer gets the error (no
    errors_as_outcomes) unless it is an IntegrityError, as SQLite's RAISE(ABORT) is: that is ``errors`` too.
    """
    changes = [Change(UPSERT, academy(u, name), at(0)) for u, name in (
        (U1, "Data Academy"), (U2, "Explode Academy"), (U3, "Cloud Academy"))]
    refused_as_integrity_error = connection.vendor == "sqlite"
    if errors_as_outcomes or refused_as_integrity_error:
        with transaction.atomic():
            outcomes = apply_changes(changes, errors_as_outcomes=errors_as_outcomes)
        assert [o.outcome for o in outcomes] == ["created", "errors", "created"]
        assert "explode trigger" in outcomes[1].reason and outcomes[1].uuid == U2
        assert set(EnterpriseAcademy.objects.values_list("name", flat=True)) == {"Data Academy", "Cloud Academy"}
    else:
        with pytest.raises(DatabaseError, match="explode trigger"), transaction.atomic():
            apply_changes(changes)
        assert not EnterpriseAcademy.objects.exists()


@pytest.mark.skipif("connection.vendor == 'sqlite'", reason="SQLite serializes writers; no race to lose")
def test_two_writers_creating_the_same_academy_end_in_one_row(transactional_db):
    barrier = threading.Barrier(4)
    outcomes = []

    def writer(n):
        try:
            barrier.wait()
            outcomes.append(apply_item(academy(U1, "Data Academy", display_order=n), timezone.now()).outcome)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert EnterpriseAcademy.objects.count() == 1
    assert "errors" not in outcomes and "skipped" not in outcomes
    assert outcomes.count("created") == 1
