"""Golden files: each shipped SEPAS mapping + the destination's offline preparation gives exactly the expected XML."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from adapter.destinations.base import Job
from adapter.destinations.sepas.events import BillClosedEvent
from adapter.events.parse import parse_event
from adapter.mapping import load_mappings
from tests.unit.sepas_support import make_destination

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "sepas"
CASES = sorted(GOLDEN.glob("*.event.json"))


def load_event(path: Path) -> dict:
    raw = path.read_bytes()
    if json.loads(raw)["event_type"] == "bill.closed":
        return BillClosedEvent.model_validate_json(raw).model_dump(mode="json")
    return parse_event(raw).model_dump(mode="json")


def mapped_job(case: Path) -> Job:
    event = load_event(case)
    mapping_name = case.name.split(".")[0]
    [mapping] = [m for m in load_mappings(REPO / "mappings", ["sepas"]).for_event(event["event_type"], "sepas")
                 if m.source_file.stem == mapping_name]
    mapped = mapping.apply(event)
    return Job(submission_id=1, event_id=event["event_id"], destination="sepas", operation=mapped.operation,
               params=mapped.params, payload=mapped.body, principal="ditas", idempotency_key=f"key-{event['event_id']}",
               ambiguous=False, subject_key=None, after_key=None, attempts=0)


def test_every_shipped_mapping_has_a_golden_case() -> None:
    folder = REPO / "mappings" / "sepas"
    shipped = {p.stem for p in folder.glob("*.yaml")}
    assert shipped == {case.name.split(".")[0] for case in CASES} == {
        "medication_prescription", "patient_bill", "dispensed_prescription", "lab_prescription", "imaging_prescription",
        "lab_result"}


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name.removesuffix(".event.json"))
def test_golden(case: Path, tmp_path: Path) -> None:
    destination, _ = make_destination(tmp_path, today=dt.date(2024, 8, 5))
    job = mapped_job(case)
    prepared = destination.prepare_offline(job)
    assert isinstance(prepared, Job), prepared
    stem = case.name.removesuffix(".event.json")
    assert job.params == json.loads((GOLDEN / f"{stem}.params.json").read_text("utf-8"))
    assert prepared.context["xml"] == (GOLDEN / f"{stem}.expected.xml").read_text("utf-8").strip()
