"""
The bundled samples agree: reconciling ``samples/catalog.json`` (``make reconcile-demo``) after the demo's
events (``samples/academies.jsonl`` created, ``changes.jsonl`` updated, ``deleted.json`` deleted, as
``make demo`` produces them) changes nothing, and on an empty table it builds the demo's end state.

So the sample catalog lists the renamed academy under its new name with the slug and lookup key it got
when it was created (defaults apply only on create, and a Stripe lookup key must not change on a rename),
and the deleted academy as ``is_active: false``.
"""

import json
from pathlib import Path

import pytest
from django.utils import timezone

from academy_consumer.apply import DELETE, EVENT, UPSERT, Change, apply_change
from academy_consumer.inputs import read_items
from academy_consumer.models import EnterpriseAcademy
from academy_consumer.producer import encode
from academy_consumer.sync import sync_academies
from academy_consumer_signals import academy_data_to_dict

pytestmark = pytest.mark.django_db

SAMPLES = Path(__file__).parent.parent / "academy_consumer" / "samples"
COLUMNS = [f.attname for f in EnterpriseAcademy._meta.concrete_fields
           if f.attname not in ("id", "created", "modified", "source_timestamp")]


def table():
    return sorted(EnterpriseAcademy.objects.values_list(*COLUMNS), key=str)


def apply_demo_events():
    """The demo's events, through the event contract (encoded as the producer does) and the receivers' calls."""
    for action, name in (("created", "academies.jsonl"), ("updated", "changes.jsonl"), ("deleted", "deleted.json")):
        for item in read_items(str(SAMPLES / name), envelopes=False):
            signal, data = encode(action, item)
            record = academy_data_to_dict(data["academy"])
            outcome = apply_change(Change(DELETE if action == "deleted" else UPSERT, record, timezone.now(), EVENT))
            assert outcome.outcome in ("created", "updated", "unchanged", "deactivated"), (signal, outcome)


def test_reconcile_of_the_sample_after_the_demo_changes_nothing():
    apply_demo_events()
    after_demo = table()
    assert {row.name: row.is_active for row in EnterpriseAcademy.objects.all()} == {
        "Data Academy": True, "AI & Machine Learning Academy": True, "Leadership Académie": False,
        "Legacy Cloud Academy": False}

    result = sync_academies(read_items(str(SAMPLES / "catalog.json")), deactivate_missing=True)

    changed = [entry for entry in result.items if entry["outcome"] not in ("unchanged", "skipped")]
    assert changed == [], json.dumps(changed)
    assert result.counts["unchanged"] == 4 and result.counts["skipped"] == 1  # the sample's invalid uuid
    assert table() == after_demo


def test_reconcile_of_the_sample_alone_builds_the_demo_end_state():
    result = sync_academies(read_items(str(SAMPLES / "catalog.json")))
    assert result.counts["created"] == 4 and result.counts["skipped"] == 1
    reconciled = table()
    EnterpriseAcademy.objects.all().delete()
    apply_demo_events()
    assert table() == reconciled
