"""Contract v1, provider side: dispensing, paraclinic orders and lab results (docs/samples/)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from adapter.events.parse import EventRejected, parse_event
from adapter.events import keys

SAMPLES = Path(__file__).resolve().parents[2] / "docs" / "samples"


def sample(name: str) -> dict:
    return json.loads((SAMPLES / f"{name}.json").read_text(encoding="utf-8"))


def rejected(event: dict) -> EventRejected:
    with pytest.raises(EventRejected) as caught:
        parse_event(json.dumps(event, ensure_ascii=False).encode())
    return caught.value


@pytest.mark.parametrize("name, event_type", [
    ("dispense-completed", "dispense.completed"), ("paraclinic-requested", "paraclinic.requested"),
    ("paraclinic-completed", "paraclinic.completed"), ("lab-result", "lab.result")])
def test_documented_samples_parse(name: str, event_type: str) -> None:
    assert parse_event((SAMPLES / f"{name}.json").read_bytes()).event_type == event_type


def test_a_provider_event_names_the_prescription_it_serves() -> None:
    event = sample("dispense-completed")
    event["payload"]["prescription"] = {}
    assert "prescription_id" in str(rejected(event)) and "tracking_code" in str(rejected(event))
    event["payload"]["prescription"] = {"tracking_code": "۱۲۳۴۵۶۷۸"}  # Persian digits, as a patient may give it
    parsed = parse_event(json.dumps(event, ensure_ascii=False).encode())
    assert parsed.payload.prescription.tracking_code == "12345678"


@pytest.mark.parametrize("field, value, reason", [
    ("ttac_codes", ["12345"], "payload.items.0.ttac_codes.0"),
    ("ttac_codes", [], "payload.items.0.ttac_codes"),
    ("irc", "30687575154921", "payload.items.0.irc"),
    ("quantity", 0, "payload.items.0.quantity"),
])
def test_dispensed_items_carry_valid_irc_and_ttac_codes(field: str, value: object, reason: str) -> None:
    event = sample("dispense-completed")
    event["payload"]["items"][0][field] = value
    assert any(p.field == reason for p in rejected(event).problems), rejected(event).problems


def test_pharmacist_contact_is_optional_but_prescriber_contact_is_not() -> None:
    event = sample("dispense-completed")
    assert "mobile" not in event["payload"]["pharmacist"]
    parse_event(json.dumps(event).encode())
    request = sample("paraclinic-requested")
    del request["payload"]["ordering"]["mobile"]
    assert any(p.field == "payload.ordering.mobile" for p in rejected(request).problems)


def test_paraclinic_category_and_lab_observations_are_checked() -> None:
    event = sample("paraclinic-requested")
    event["payload"]["category"] = "pathology"
    assert any(p.field == "payload.category" for p in rejected(event).problems)
    result = sample("lab-result")
    result["payload"]["observations"] = []
    assert any(p.field == "payload.observations" for p in rejected(result).problems)
    result = sample("lab-result")
    result["payload"]["observations"][0]["interpretation"] = "fine"
    assert any("interpretation" in p.field for p in rejected(result).problems)


def test_subject_keys_tie_an_order_and_a_result_to_their_records() -> None:
    requested = parse_event(json.dumps(sample("paraclinic-requested")).encode()).model_dump(mode="json")
    completed = parse_event(json.dumps(sample("paraclinic-completed")).encode()).model_dump(mode="json")
    assert keys.subject_key(requested) == keys.subject_key(completed) == "para:1234567:LAB-ORD-1"
    dispense = parse_event(json.dumps(sample("dispense-completed")).encode()).model_dump(mode="json")
    assert keys.subject_key(dispense) == "dispense:1234567:DSP-1"
    assert keys.served_prescription_key(dispense) == "rx:1234567:RX-1"
    by_tracking = copy.deepcopy(dispense)
    by_tracking["payload"]["prescription"] = {"prescription_id": None, "tracking_code": "12345678"}
    assert keys.served_prescription_key(by_tracking) is None
    result = parse_event(json.dumps(sample("lab-result")).encode()).model_dump(mode="json")
    assert keys.subject_key(result) == "lab:1234567:LAB-RES-1"
    assert keys.patient_identifier(result) == "national_code:0012345679"
