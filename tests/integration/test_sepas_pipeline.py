"""SEPAS wired into the running adapter: a drug prescription goes intake -> store ->
dispatcher -> DITAS (validation, then save) and ends accepted with SEPAS's ids, next to the
Tamin submission of the same event; a lab prescription is not routed to SEPAS's medication
message. Both simulators over real HTTP; store on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import httpx
from sqlalchemy import select

from adapter.app import build
from adapter.sim.ditas_app import create_ditas_app
from adapter.sim.ditas_registry import DitasSimSettings
from adapter.sim.server import SimServer
from adapter.sim.tamin_app import create_tamin_app
from adapter.store.models import Submission
from adapter.store.states import OPEN_STATES
from tests.support.pipeline import adapter_config

REPO = Path(__file__).resolve().parents[2]
EVENT = json.loads((REPO / "tests/golden/sepas/medication_prescription.event.json").read_text("utf-8"))


def sepas_overrides(ditas: SimServer, tmp_path: Path) -> dict[str, str]:
    key_file = tmp_path / "moh-public.pem"
    key_file.write_bytes(ditas.app.state.registry.public_key_pem)
    prefix = "destinations__sepas__"
    return {f"{prefix}{k}": v for k, v in {
        "enabled": "true", "base_url": ditas.base_url, "auth__client_id": "adapter-sim",
        "auth__client_secret": "adapter-sim-secret", "auth__username": "hospital-user",
        "auth__password": "hospital-password", "pids__default": "5f0c0a0b0c0d0e0f10111213",
        "system_id": "4e794d6f-45a2-1186-817c-5e34e3fcf8ac",
        "default_location_id": "859773e8-5d81-46c6-9df1-5fb551b00495",
        "public_key_file": str(key_file), "terminology_dir": str(REPO / "mappings/sepas/terminology"),
        "max_rps": "null"}.items()}


def drain_sepas(app, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """Run the dispatcher until no SEPAS submission is open. (Other destinations' work may stay
    due: the Tamin provider-side routes are not what these tests are about.)"""
    deadline = time.monotonic() + timeout_s
    while True:
        app.dispatcher.run_once()
        with app.sessions() as session:
            open_rows = session.scalars(select(Submission.id).where(
                Submission.destination == "sepas", Submission.state.in_([s.value for s in OPEN_STATES]))).all()
        if not open_rows:
            return
        assert time.monotonic() < deadline, f"SEPAS submissions still open after {timeout_s}s: {open_rows}"
        time.sleep(0.02)


def test_drug_prescription_reaches_sepas_through_the_pipeline(db_url: str, tmp_path: Path) -> None:
    lab = copy.deepcopy(EVENT)
    lab.update(event_id="evt-sepas-lab")
    lab["payload"].update(kind="paraclinic", prescription_id="RX-LAB",
                          items=[{"code": "L-CBC", "quantity": 1}])
    with SimServer(create_tamin_app()) as tamin, \
            SimServer(create_ditas_app(DitasSimSettings(today_override="1403/05/15"))) as ditas:
        app = build(adapter_config(db_url, tamin.base_url, tmp_path, **sepas_overrides(ditas, tmp_path)))
        try:
            assert {"tamin", "sepas"} <= set(app.token_caches)
            app.intake.receive(json.dumps(EVENT, ensure_ascii=False).encode())
            app.intake.receive(json.dumps(lab, ensure_ascii=False).encode())
            drain_sepas(app)
            with app.sessions() as session:
                rows = session.scalars(select(Submission).order_by(Submission.id)).all()
                by_key = {(r.event_id, r.destination): r for r in rows}
        finally:
            app.close()
        stats = httpx.get(ditas.base_url + "/_sim/stats").json()
    sepas = by_key[(EVENT["event_id"], "sepas")]
    assert sepas.state == "accepted", sepas.last_error
    assert sepas.result["composition_uid"] and sepas.result["patient_uid"]
    assert (EVENT["event_id"], "tamin") in by_key  # the same event also owes Tamin a submission
    assert (lab["event_id"], "sepas") not in by_key  # not a drug prescription: not this SEPAS message
    assert stats["validations"] == 1 and stats["saves"] == 1 and stats["duplicates"] == 0


# ----- the provider-side messages: dispensing, lab and imaging orders, lab results ------------
GOLDEN = REPO / "tests/golden/sepas"
PROVIDER_CASES = {"dispensed_prescription": "DispensedPrescription", "lab_prescription": "LabPrescription",
                  "imaging_prescription": "ImagingPrescription", "lab_result": "LabResult"}


def golden_event(stem: str) -> dict:
    return json.loads((GOLDEN / f"{stem}.event.json").read_text("utf-8"))


def run_events(db_url: str, tmp_path: Path, events: list[dict]) -> tuple[dict, dict]:
    """Intake -> store -> dispatcher with both simulators over HTTP; (sepas submissions by event id, DITAS stats)."""
    with SimServer(create_tamin_app()) as tamin, \
            SimServer(create_ditas_app(DitasSimSettings(today_override="1403/05/15"))) as ditas:
        app = build(adapter_config(db_url, tamin.base_url, tmp_path, **sepas_overrides(ditas, tmp_path)))
        try:
            for event in events:
                app.intake.receive(json.dumps(event, ensure_ascii=False).encode())
            drain_sepas(app)
            with app.sessions() as session:
                rows = session.scalars(select(Submission).where(Submission.destination == "sepas")).all()
                by_event = {r.event_id: r for r in rows}
        finally:
            app.close()
        stats = httpx.get(ditas.base_url + "/_sim/stats").json()
    return by_event, stats


def test_each_provider_event_type_reaches_accepted_at_sepas(db_url: str, tmp_path: Path) -> None:
    events = {stem: golden_event(stem) for stem in PROVIDER_CASES}
    by_event, stats = run_events(db_url, tmp_path, list(events.values()))
    for stem, message in PROVIDER_CASES.items():
        row = by_event[events[stem]["event_id"]]
        assert row.params["message"] == message
        assert row.state == "accepted", (stem, row.last_error)
        assert row.result["composition_uid"].startswith("NodeSim.behdasht.gov.ir::") and row.result["patient_uid"]
    # one patient: SEPAS gave every message the same patientUID
    assert len({r.result["patient_uid"] for r in by_event.values()}) == 1
    assert stats["validations"] == 4 and stats["saves"] == 4 and stats["records"] == 4
    assert stats["validation_failures"] == 0 and stats["duplicates"] == 0


def test_a_loinc_code_outside_the_table_is_invalid_locally(db_url: str, tmp_path: Path) -> None:
    event = golden_event("lab_result")
    event["payload"]["observations"][1]["code"] = "L-NOT-LOINC"  # the HIS table maps it to 0000-0, not a LOINC code
    by_event, stats = run_events(db_url, tmp_path, [event])
    row = by_event[event["event_id"]]
    assert row.state == "invalid"
    assert "Composition.LabResult[0].LaboratoryResultRow[1].TestName" in row.last_error
    assert "CODE_NOT_IN_TERMINOLOGY" in row.last_error and "'0000-0' is not in LNC" in row.last_error
    assert row.result["validated_by"] == "local"
    assert stats["requests"] == {} and stats["saves"] == 0  # not even a token was asked for


def test_a_record_the_validator_rejects_is_never_saved_and_adapter_show_names_why(
        db_url: str, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from adapter.ops.cli import app as cli

    event = golden_event("lab_result")
    event["payload"]["observations"][0]["value"] = "positive"  # fine for the contract and locally; not a number
    by_event, stats = run_events(db_url, tmp_path, [event])
    row = by_event[event["event_id"]]
    assert row.state == "invalid" and row.result["validated_by"] == "sepas"
    field = "Composition.LabResult[0].LaboratoryResultRow[0].TestResult.Magnitude"
    assert {"field": field, "code": "NOT_A_NUMBER", "text": "DO_QUANTITY Magnitude is not a number"} \
        in row.result["validation"]
    assert stats["validations"] == 1 and stats["validation_failures"] == 1
    assert stats["saves"] == 0 and stats["records"] == 0  # the save service was never called

    monkeypatch.setenv("ADAPTER__DATABASE__URL", db_url)
    shown = CliRunner().invoke(cli, ["show", event["event_id"]], env={"COLUMNS": "400"})
    assert shown.exit_code == 0, shown.output
    for part in (field, "NOT_A_NUMBER", "DO_QUANTITY Magnitude is not a number", "state=invalid"):
        assert part in shown.output
    patient = event["payload"]["patient"]
    assert patient["identity"]["value"] not in shown.output and patient["mobile"] not in shown.output


def test_an_unanswered_save_is_found_even_after_the_visit_gained_a_patient_uid(db_url: str, tmp_path: Path) -> None:
    """A save whose answer was lost is looked up before it is sent again. Meanwhile another message
    of the visit was accepted, so the document prepared now carries the visit's PatientUID, which
    the unanswered one did not: the lookup must ask for the document as it was sent, or the
    record is saved twice (what a kill -9 during registrations showed on a loaded machine)."""
    first = copy.deepcopy(EVENT)
    second = copy.deepcopy(EVENT)
    second.update(event_id="evt-sepas-second")
    second["payload"].update(prescription_id="RX-SECOND")
    with SimServer(create_tamin_app()) as tamin, \
            SimServer(create_ditas_app(DitasSimSettings(today_override="1403/05/15"))) as ditas:
        registry = ditas.app.state.registry
        app = build(adapter_config(db_url, tamin.base_url, tmp_path, dispatch__ambiguous_grace_s="1",
                                   **sepas_overrides(ditas, tmp_path)))
        try:
            registry.update_settings({"drop_response_after_apply": 1})
            app.intake.receive(json.dumps(first, ensure_ascii=False).encode())
            app.dispatcher.run_once()  # saved, the answer lost: ambiguous, looked up after the grace
            app.intake.receive(json.dumps(second, ensure_ascii=False).encode())
            app.dispatcher.run_once()  # the second message is accepted: the visit now has a PatientUID
            with app.sessions() as session:
                [unanswered] = session.scalars(select(Submission).where(
                    Submission.destination == "sepas", Submission.event_id == first["event_id"]))
                assert unanswered.ambiguous and unanswered.state == "retry_wait", unanswered.state
            drain_sepas(app)
            with app.sessions() as session:
                rows = {r.event_id: r for r in session.scalars(select(Submission).where(Submission.destination == "sepas"))}
        finally:
            app.close()
        stats = httpx.get(ditas.base_url + "/_sim/stats").json()
    assert {e: r.state for e, r in rows.items()} == {first["event_id"]: "accepted", second["event_id"]: "accepted"}
    assert rows[first["event_id"]].result["patient_uid"] == rows[second["event_id"]].result["patient_uid"]
    assert stats["saves"] == 2 and stats["records"] == 2 and stats["duplicates"] == 0, stats
