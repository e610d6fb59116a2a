"""The four provider-side SEPAS messages without a server: the visit's HID becomes Insurance,
LOINC codes outside the table stop locally, the simulator's row rules and its server-only
checks, and the xsi:type of LabResult survives the XML round trip."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from adapter.destinations.base import Job
from adapter.destinations.outcome import OutcomeClass
from adapter.destinations.sepas.messages import parse_xml
from adapter.destinations.sepas.terminology import load_terminology
from adapter.sim.ditas_registry import problems_of
from tests.unit.sepas_support import REPO, make_destination
from tests.unit.test_sepas_golden import GOLDEN, mapped_job

TODAY = dt.date(2024, 8, 5)


def prepared(tmp_path: Path, stem: str, hid: str | None = None, change=None) -> Job:  # type: ignore[no-untyped-def]
    destination, _ = make_destination(tmp_path, today=TODAY)
    job = mapped_job(GOLDEN / f"{stem}.event.json")
    if change:
        change(job.payload)
    ready = destination.prepare_offline(job, hid=hid)
    assert isinstance(ready, Job), ready
    return ready


def tree_of(job: Job) -> dict:
    return parse_xml(job.context["xml"].encode())[1]


def test_the_visits_hid_becomes_one_insurance_right_after_admission(tmp_path: Path) -> None:
    tree = tree_of(prepared(tmp_path, "dispensed_prescription", hid="19946YI6XR"))
    assert list(tree["Composition"])[:2] == ["Admission", "Insurance"]
    insurance = tree["Composition"]["Insurance"]
    assert insurance["Insurer"] == {"Value": "تأمین اجتماعی", "Terminology_id": "thritaEHR.insurer", "Coded_string": "1"}
    assert insurance["SHEBAD"] == {"Issuer": "TAMIN", "Assigner": "TAMIN", "ID": "19946YI6XR", "Type": "HID"}


def test_lab_result_insurance_is_a_list_and_without_hid_there_is_none(tmp_path: Path) -> None:
    with_hid = tree_of(prepared(tmp_path, "lab_result", hid="19946YI6XR"))
    assert [i["SHEBAD"]["ID"] for i in with_hid["Composition"]["Insurance"]] == ["19946YI6XR"]
    assert "Insurance" not in tree_of(prepared(tmp_path, "lab_result"))["Composition"]


def test_lab_result_keeps_its_concrete_types(tmp_path: Path) -> None:
    xml = prepared(tmp_path, "lab_result").context["xml"]
    assert '<LabTestResultVO xsi:type="GeneralLaboratoryResultVO">' in xml
    [result] = tree_of(prepared(tmp_path, "lab_result"))["Composition"]["LabResult"]
    assert result["xsi:type"] == "GeneralLaboratoryResultVO"
    assert {row["xsi:type"] for row in result["LaboratoryResultRow"]} == {"LaboratoryResultRowQuantityVO"}


def test_a_loinc_code_outside_the_table_is_invalid_before_any_call(tmp_path: Path) -> None:
    destination, _ = make_destination(tmp_path, today=TODAY)
    event_job = mapped_job(GOLDEN / "lab_prescription.event.json")
    event_job.payload["Composition"]["ServicePrescriptions"]["Orders"][1]["Service"]["Coded_string"] = "0000-0"
    outcome = destination.prepare_offline(event_job)
    assert not isinstance(outcome, Job) and outcome.klass is OutcomeClass.invalid
    [problem] = outcome.result["validation"]
    assert problem["field"] == "Composition.ServicePrescriptions.Orders[1].Service"
    assert problem["code"] == "CODE_NOT_IN_TERMINOLOGY" and "'0000-0' is not in LNC" in problem["text"]


def test_an_irc_outside_the_table_is_invalid(tmp_path: Path) -> None:
    destination, _ = make_destination(tmp_path, today=TODAY)
    job = mapped_job(GOLDEN / "dispensed_prescription.event.json")
    job.payload["Composition"]["DispensedPrescriptions"]["MedicationDispensed"][0]["ProductCode"]["Coded_string"] = "1111222233334444"
    outcome = destination.prepare_offline(job)
    assert outcome.klass is OutcomeClass.invalid
    assert outcome.result["validation"][0]["field"] == "Composition.DispensedPrescriptions.MedicationDispensed[0].ProductCode"


def test_simulator_row_rules_reach_nested_lab_rows_and_numbers(tmp_path: Path) -> None:
    def damage(payload: dict) -> None:
        rows = payload["Composition"]["LabResult"][0]["LaboratoryResultRow"]
        del rows[1]["TestName"]
        rows[2]["TestResult"]["Magnitude"] = "positive"

    tree = tree_of(prepared(tmp_path, "lab_result", change=damage))
    problems = problems_of("LabResult", tree, load_terminology(REPO / "mappings/sepas/terminology"), TODAY)
    found = {(p["ErrorCategorySource"], p["ErrorCategoryType"]) for p in problems}
    assert found == {("Composition.LabResult[0].LaboratoryResultRow[1].TestName", "MANDATORY"),
                     ("Composition.LabResult[0].LaboratoryResultRow[2].TestResult.Magnitude", "NOT_A_NUMBER")}


def test_every_golden_message_passes_the_simulators_validator(tmp_path: Path) -> None:
    terms = load_terminology(REPO / "mappings/sepas/terminology")
    for stem in ("dispensed_prescription", "lab_prescription", "imaging_prescription", "lab_result"):
        job = prepared(tmp_path, stem, hid="19946YI6XR")
        assert problems_of(job.context["message"], tree_of(job), terms, TODAY) == [], stem


def test_patient_uid_of_a_visit_survives_losing_the_insert_race(tmp_path: Path, sqlite_url: str) -> None:
    """Two messages of one visit settle at once: the one whose insert collides updates the row instead."""
    from adapter.destinations.outcome import Outcome
    from adapter.store.db import make_engine, make_sessionmaker, upgrade
    from adapter.store.lookups import DestinationStore
    from adapter.store.models import Visit

    upgrade(sqlite_url)
    sessions = make_sessionmaker(make_engine(sqlite_url))
    with sessions() as session:
        session.add(Visit(facility_siam_id="10012345", visit_id="V-1", destination="sepas", detail={"other": 1}))
        session.commit()
    destination, _ = make_destination(tmp_path, today=TODAY)
    job = Job(submission_id=1, event_id="e", destination="sepas", operation="create",
              params={"message": "LabResult", "facility": "10012345", "visit_id": "V-1"}, payload={},
              principal="ditas", idempotency_key="k", ambiguous=False, subject_key=None, after_key=None, attempts=0)
    with sessions() as session:
        real_get, calls = session.get, []

        def first_get_misses(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(args)
            return None if len(calls) == 1 else real_get(*args, **kwargs)  # the row appeared after our read

        session.get = first_get_misses  # type: ignore[method-assign]
        destination.on_result(DestinationStore(session), job, Outcome(OutcomeClass.accepted,
                                                                      result={"patient_uid": "P-1"}))
        session.commit()
    with sessions() as session:
        row = session.get(Visit, ("10012345", "V-1", "sepas"))
        assert row is not None and row.detail == {"other": 1, "patient_uid": "P-1"}
