"""The not-covered decision for Tamin (seed 002 s.7 note 1): an unidentified patient's unique id
implies no insurance, so their events are refused at intake unless the config allows them."""

from __future__ import annotations

from typing import Any

import pytest

from adapter.config import TaminConfig
from adapter.destinations.plugin import Refusal
from adapter.destinations.tamin.coverage import NOT_COVERED, UNIDENTIFIED_NOT_COVERED, coverage_screen


def event(event_type: str, kind: str | None, value: str = "ER-UNK-0042") -> dict[str, Any]:
    payload: dict[str, Any] = {"prescription_id": "RX-1"}
    if kind is not None:
        payload["patient"] = {"identity": {"kind": kind, "value": value}, "first_name": "x"}
    return {"event_id": "evt-1", "event_type": event_type, "payload": payload}


@pytest.mark.parametrize("event_type", ["prescription.created", "prescription.updated", "prescription.cancelled",
                                        "visit.admitted"])
def test_an_unidentified_patient_is_not_covered(event_type: str) -> None:
    screen = coverage_screen(accepts_unidentified_patients=False)
    assert screen is not None
    refusal = screen(event(event_type, "unidentified"))
    assert refusal == Refusal(NOT_COVERED, UNIDENTIFIED_NOT_COVERED)
    assert "ER-UNK-0042" not in refusal.reason


@pytest.mark.parametrize("kind, value", [("national_code", "0087654326"), ("fida", "123456789012"),
                                         ("mother_national_code", "1234567891"), (None, "")])
def test_identified_patients_and_events_without_a_patient_pass(kind: str | None, value: str) -> None:
    screen = coverage_screen(accepts_unidentified_patients=False)
    assert screen is not None and screen(event("prescription.created", kind, value)) is None


def test_the_config_switch_lets_unidentified_patients_through() -> None:
    assert coverage_screen(accepts_unidentified_patients=True) is None


def test_the_switch_is_off_unless_configured() -> None:
    fields = {"base_url": "https://ep-test.tamin.ir", "auth": {"client_id": "c", "client_secret_env": "X"}}
    assert TaminConfig.model_validate(fields).accepts_unidentified_patients is False
    assert TaminConfig.model_validate({**fields, "accepts_unidentified_patients": True}).accepts_unidentified_patients
