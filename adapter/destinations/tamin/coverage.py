"""Which events Tamin must not be sent at all: the not-covered decision made at intake.

Seed 002 s.7 note 1: an unidentified person (no national code, or a blocked one) gets a
unique id, and that id "does not mean basic insurance cover". Registering such a patient's
prescription at Tamin under the anonymous placeholder ``UNKNOWN`` would imply cover the
patient may not have, so unless the config says Tamin accepts such registrations
(``destinations.tamin.accepts_unidentified_patients``) the event's Tamin submission is
refused as ``not_covered`` and the HIS is told to use the free / paper path.
"""

from __future__ import annotations

from typing import Any

from adapter.destinations.outcome import Outcome, OutcomeClass
from adapter.destinations.plugin import NOT_COVERED, Refusal, Screen
from adapter.store.lookups import CreateRecord

UNIDENTIFIED_NOT_COVERED = ("unidentified patient: not registered at Tamin (no insurance can be implied); "
                            "use the free/paper path")


def patient_kind(event: dict[str, Any]) -> str | None:
    """``payload.patient.identity.kind`` of a validated event, or None when it has no patient."""
    patient = (event.get("payload") or {}).get("patient")
    identity = patient.get("identity") if isinstance(patient, dict) else None
    kind = identity.get("kind") if isinstance(identity, dict) else None
    return kind if isinstance(kind, str) else None


def coverage_screen(accepts_unidentified_patients: bool) -> Screen | None:
    """The screen intake runs before mapping an event for Tamin (None: nothing is refused)."""
    if accepts_unidentified_patients:
        return None

    def screen(event: dict[str, Any]) -> Refusal | None:
        if patient_kind(event) == "unidentified":
            return Refusal(NOT_COVERED, UNIDENTIFIED_NOT_COVERED)
        return None

    return screen


def refused_predecessor(create: CreateRecord, what: str) -> Outcome:
    """What a submission that builds on a refused Tamin create (an edit, a dispense, a paraclinic
    registration) comes to: a prescription never registered because the patient is not covered
    stays so (the HIS is told to use the free/paper path, no replay would change it); any other
    refusal waits for a person to replay the create."""
    if create.error_class == NOT_COVERED:
        return Outcome(OutcomeClass.invalid, f"{what} was not registered at Tamin ({UNIDENTIFIED_NOT_COVERED})",
                       error_class=NOT_COVERED)
    return Outcome(OutcomeClass.invalid, f"{what} (submission {create.id}) is {create.state}: replay it first, "
                                         "then this one")
