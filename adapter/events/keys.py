"""Keys that tie events together: what a prescription or visit is, and whose it is."""

from __future__ import annotations

import uuid
from typing import Any

_NAMESPACE = uuid.UUID("6f1c3a52-1d0e-4b8e-9f7a-3c2d1e0f9a8b")


def subject_key(event: dict[str, Any]) -> str | None:
    """The record an event is about: one prescription, or one visit, within a facility."""
    payload, facility = event["payload"], event["facility_siam_id"]
    if event["event_type"].startswith("prescription."):
        return f"rx:{facility}:{payload['prescription_id']}"
    if event["event_type"] == "visit.admitted":
        return f"visit:{facility}:{payload['visit_id']}"
    if event["event_type"] == "bill.closed":  # a corrected bill updates the same SEPAS record
        return f"bill:{facility}:{payload['visit_id']}"
    if event["event_type"] == "dispense.completed":
        return f"dispense:{facility}:{payload['dispense_id']}"
    if event["event_type"].startswith("paraclinic."):  # requested, then completed: one order, in that order
        return f"para:{facility}:{payload['order_id']}"
    if event["event_type"] == "lab.result":  # a corrected result updates the same SEPAS record
        return f"lab:{facility}:{payload['result_id']}"
    return None


def served_prescription_key(event: dict[str, Any]) -> str | None:
    """The HIS prescription a provider-side event serves, when it is one this adapter sent
    (the subject key of its ``prescription.*`` events); None for a tracking code from elsewhere."""
    reference = event["payload"].get("prescription") or {}
    prescription_id = reference.get("prescription_id") if isinstance(reference, dict) else None
    return f"rx:{event['facility_siam_id']}:{prescription_id}" if prescription_id else None


def after_key(event: dict[str, Any]) -> str | None:
    """A record whose open submissions must settle first (a prescription waits for its visit's eligibility)."""
    visit_id = event["payload"].get("visit_id")
    if event["event_type"].startswith("prescription.") and visit_id:
        return f"visit:{event['facility_siam_id']}:{visit_id}"
    return None


def prescriber_national_code(event: dict[str, Any]) -> str | None:
    payload = event["payload"]
    person = payload.get("prescriber") or payload.get("attending") or {}
    return person.get("national_code")


def patient_identifier(event: dict[str, Any]) -> str | None:
    identity = (event["payload"].get("patient") or {}).get("identity") or {}
    return f"{identity.get('kind')}:{identity.get('value')}" if identity else None


def idempotency_key(event_id: str, destination: str, operation: str) -> str:
    """Stable per submission: the same event, destination and operation always give the same key."""
    return str(uuid.uuid5(_NAMESPACE, f"{event_id}\x1f{destination}\x1f{operation}"))
