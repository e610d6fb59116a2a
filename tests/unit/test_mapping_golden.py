"""Golden files: each shipped Tamin mapping applied to a sample event gives exactly the expected payload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapter.events.parse import parse_event
from adapter.mapping import load_mappings

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "tamin"
CASES = sorted(GOLDEN.glob("*.event.json"))


def test_every_shipped_mapping_has_a_golden_case() -> None:
    shipped = {p.stem for p in (REPO / "mappings" / "tamin").glob("*.yaml")}
    covered = {case.name.split(".")[0] for case in CASES}
    assert shipped == covered == {"eligibility", "send_epresc", "edit_epresc", "delete_epresc"}


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name.removesuffix(".event.json"))
def test_golden(case: Path) -> None:
    mapping_name = case.name.split(".")[0]
    event = parse_event(case.read_bytes()).model_dump(mode="json")  # as the pipeline hands it over
    mappings = load_mappings(REPO / "mappings", ["tamin"])
    chosen = [m for m in mappings.for_event(event["event_type"], "tamin") if m.source_file.stem == mapping_name]
    assert len(chosen) == 1
    expected = json.loads(case.with_name(case.name.replace(".event.json", ".expected.json")).read_text("utf-8"))
    assert chosen[0].apply(event).as_dict() == expected


def test_each_event_type_has_exactly_one_tamin_mapping() -> None:
    mappings = load_mappings(REPO / "mappings", ["tamin"])
    for event_type, operation in [("visit.admitted", "eligibility"), ("prescription.created", "create"),
                                  ("prescription.updated", "update"), ("prescription.cancelled", "cancel")]:
        [mapping] = mappings.for_event(event_type, "tamin")
        assert mapping.operation == operation
    assert mappings.destinations == {"tamin"}
