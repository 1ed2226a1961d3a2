"""
Bounded times: an event or snapshot time more than ACADEMY_CONSUMER_MAX_FUTURE_SECONDS ahead of the clock is
never applied, a stored time beyond that bound makes nothing stale, and ``repair_future_timestamps``
resets such stored times (end to end through the real commands).
"""

import datetime
import json
import uuid

import pytest
from django.utils import timezone
from openedx_events.data import EventsMetadata

from academy_consumer.apply import DELETE, UPSERT, Change, apply_change
from academy_consumer.models import EnterpriseAcademy
from academy_consumer.producer import encode
from academy_consumer.receivers import AcademyEventRejected, deactivate_academy_from_event, upsert_academy_from_event
from academy_consumer.sync import sync_academies
from tests.factories import academy

U1, U2 = (str(uuid.UUID(int=n)) for n in (0xF1, 0xF2))
FAR = datetime.datetime(9999, 12, 31, tzinfo=datetime.timezone.utc)


def apply_item(item, time):
    """One catalog item applied on its own (a batch of one)."""
    return apply_change(Change(UPSERT, item, time))


def deactivate(uuid_, title, time):
    """One delete applied on its own."""
    return apply_change(Change(DELETE, {"uuid": uuid_, "title": title}, time))


def row(uuid_=U1):
    return EnterpriseAcademy.objects.get(uuid=uuid_)


def freeze(uuid_=U1, when=FAR):
    """What an unbounded consumer left behind: a row holding a future source_timestamp."""
    EnterpriseAcademy.objects.filter(uuid=uuid_).update(source_timestamp=when)


@pytest.mark.django_db
class TestApplyLayer:
    """Event times too far ahead, at the apply layer."""

    def test_future_event_is_skipped_naming_time_and_bound(self):
        outcome = apply_item(academy(U1), FAR)
        assert outcome.outcome == "skipped"
        assert "9999-12-31" in outcome.reason and "300 s ahead" in outcome.reason
        assert "ACADEMY_CONSUMER_MAX_FUTURE_SECONDS" in outcome.reason
        assert not EnterpriseAcademy.objects.exists()

    def test_future_delete_is_skipped(self):
        apply_item(academy(U1), timezone.now())
        outcome = deactivate(U1, "Data Academy", FAR)
        assert outcome.outcome == "skipped" and "9999-12-31" in outcome.reason
        assert row().is_active

    def test_within_the_bound_applies(self, settings):
        settings.ACADEMY_CONSUMER_MAX_FUTURE_SECONDS = "120"
        soon = timezone.now() + datetime.timedelta(seconds=60)
        assert apply_item(academy(U1), soon).outcome == "created"
        assert row().source_timestamp == soon
        later = timezone.now() + datetime.timedelta(seconds=600)
        outcome = apply_item(academy(U1, title="Later"), later)
        assert outcome.outcome == "skipped" and "120 s ahead" in outcome.reason

    def test_stored_future_time_does_not_make_newer_events_stale(self):
        apply_item(academy(U1), timezone.now())
        freeze()
        now = timezone.now()
        assert apply_item(academy(U1, title="Data Science Academy"), now).outcome == "updated"
        assert row().name == "Data Science Academy" and row().source_timestamp == now  # overwritten
        # ... and the stale guard works again from the recorded time
        assert apply_item(academy(U1, title="Older"), now - datetime.timedelta(hours=1)).outcome == "stale"

    def test_stored_future_time_is_overwritten_even_when_unchanged(self):
        apply_item(academy(U1), timezone.now())
        freeze()
        now = timezone.now()
        assert apply_item(academy(U1), now).outcome == "unchanged"
        assert row().source_timestamp == now

    def test_stored_future_time_does_not_block_a_delete(self):
        apply_item(academy(U1), timezone.now())
        freeze()
        now = timezone.now()
        assert deactivate(U1, None, now).outcome == "deactivated"
        assert not row().is_active and row().source_timestamp == now

    def test_reconcile_and_deactivate_missing_are_not_blocked(self):
        apply_item(academy(U1), timezone.now())
        apply_item(academy(U2, "Gone Academy"), timezone.now())
        freeze(U1)
        freeze(U2)
        result = sync_academies([academy(U1, title="Renamed Academy")], deactivate_missing=True)
        assert (result.counts["updated"], result.counts["deactivated"], result.counts["stale"]) == (1, 1, 0)
        assert row(U1).name == "Renamed Academy" and not row(U2).is_active
        assert row(U1).source_timestamp < FAR and row(U2).source_timestamp < FAR

    def test_a_near_future_stored_time_still_wins(self, settings):
        """Within the bound, a stored time is believed: a newer event (by its time) is what wins."""
        apply_item(academy(U1), timezone.now() + datetime.timedelta(seconds=100))
        assert apply_item(academy(U1, title="Older"), timezone.now()).outcome == "stale"
        result = sync_academies([], deactivate_missing=True)
        assert result.counts["deactivated"] == 0


@pytest.mark.django_db
def test_receivers_reject_a_future_event_so_the_consumer_dead_letters_it():
    apply_item(academy(U1), timezone.now())
    for action, receiver in (("updated", upsert_academy_from_event), ("deleted", deactivate_academy_from_event)):
        signal, data = encode(action, academy(U1, title="Future Academy"))
        metadata = EventsMetadata(event_type=signal.event_type, time=FAR)
        with pytest.raises(AcademyEventRejected, match="9999-12-31.*ahead"):
            receiver(sender=None, signal=signal, metadata=metadata, **data)
    assert row().name == "Data Academy" and row().is_active


def test_repair_future_timestamps_end_to_end(cli, tmp_path):
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps([academy(U1), academy(U2, "Cloud Academy")]))
    assert cli("reconcile_academies", "--from-file", str(catalog)).returncode == 0
    freeze(U1)
    kept = row(U2).source_timestamp

    dry = cli("repair_future_timestamps", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["dry_run"] is True and report["repaired"] == 1
    assert report["rows"] == [{"uuid": U1, "name": "Data Academy", "source_timestamp": FAR.isoformat()}]
    assert row(U1).source_timestamp == FAR

    modified = row(U1).modified
    done = cli("repair_future_timestamps")
    assert done.returncode == 0, done.stderr
    assert "reset 1 source_timestamp(s)" in done.stdout and U1 in done.stdout and "9999-12-31" in done.stdout
    assert row(U1).source_timestamp is None and row(U1).modified == modified
    assert row(U2).source_timestamp == kept

    again = json.loads(cli("repair_future_timestamps", "--json").stdout)
    assert again["repaired"] == 0 and again["rows"] == []
    # the row takes events again, and reconcile records its snapshot time
    catalog.write_text(json.dumps([academy(U1, title="Data Science Academy"), academy(U2, "Cloud Academy")]))
    synced = json.loads(cli("reconcile_academies", "--from-file", str(catalog), "--json").stdout)
    assert (synced["updated"], synced["stale"]) == (1, 0)
    assert row(U1).name == "Data Science Academy" and row(U1).source_timestamp is not None


def test_reconcile_repairs_what_it_meets_without_the_command(cli, tmp_path):
    """A stored future time never makes reconcile stale, and --deactivate-missing acts on such rows."""
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps([academy(U1), academy(U2, "Gone Academy")]))
    assert cli("reconcile_academies", "--from-file", str(catalog)).returncode == 0
    freeze(U1)
    freeze(U2)
    catalog.write_text(json.dumps([academy(U1, title="Renamed Academy")]))
    done = cli("reconcile_academies", "--from-file", str(catalog), "--deactivate-missing", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["updated"], report["deactivated"], report["stale"]) == (1, 1, 0)
    assert row(U1).name == "Renamed Academy" and not row(U2).is_active
    assert json.loads(cli("repair_future_timestamps", "--json").stdout)["repaired"] == 0


@pytest.mark.parametrize("args", [["--no-such-option"], ["--dry-run", "extra"]])
def test_repair_bad_arguments_exit_2(cli, args):
    done = cli("repair_future_timestamps", *args)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
