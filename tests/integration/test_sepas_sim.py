"""The SEPAS destination against the DITAS simulator over real HTTP."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapter.destinations.base import Job
from adapter.destinations.outcome import OutcomeClass
from adapter.sim.ditas_app import create_ditas_app
from adapter.sim.ditas_registry import DitasSimSettings
from adapter.sim.server import SimServer
from tests.unit.sepas_support import make_destination
from tests.unit.test_sepas_golden import CASES, mapped_job


@pytest.fixture()
def sim() -> Iterator[SimServer]:
    app = create_ditas_app(DitasSimSettings(today_override="1403/05/15"))
    with SimServer(app) as server:
        yield server


def stats(server: SimServer) -> dict:
    return httpx.get(server.base_url + "/_sim/stats").json()


def destination_for(server: SimServer, tmp_path: Path):  # type: ignore[no-untyped-def]
    pem = server.app.state.registry.public_key_pem
    return make_destination(tmp_path, server.base_url, public_pem=pem)


def send(destination, job: Job):  # type: ignore[no-untyped-def]
    prepared = destination.prepare_offline(job)
    assert isinstance(prepared, Job), prepared
    return destination.send(prepared)


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name.removesuffix(".event.json"))
def test_each_message_reaches_accepted(case: Path, sim: SimServer, tmp_path: Path) -> None:
    destination, parts = destination_for(sim, tmp_path)
    outcome = send(destination, mapped_job(case))
    assert outcome.klass is OutcomeClass.accepted, outcome.message
    assert outcome.result["composition_uid"].startswith("NodeSim.behdasht.gov.ir::")
    assert outcome.result["patient_uid"] and outcome.result["message_uid"]
    s = stats(sim)
    assert s["validations"] == 1 and s["saves"] == 1 and s["records"] == 1 and s["duplicates"] == 0
    assert s["password_grants"] == 1
    requests = sim.app.state.registry.request_log()
    assert [r["endpoint"] for r in requests] == ["token", "validate", "save"]


def test_update_carries_the_composition_uid_back(sim: SimServer, tmp_path: Path) -> None:
    destination, _ = destination_for(sim, tmp_path)
    case = next(c for c in CASES if c.name.startswith("medication"))
    first = send(destination, mapped_job(case))
    job = mapped_job(case)
    job = dataclasses.replace(job, idempotency_key="key-edit")
    job.payload["Composition"]["MedicationPrescriptions"]["Orders"].pop()
    prepared = destination.prepare_offline(job, known={"composition_uid": first.result["composition_uid"],
                                                       "patient_uid": first.result["patient_uid"]})
    second = destination.send(prepared)
    assert second.klass is OutcomeClass.accepted
    assert second.result["composition_uid"] == first.result["composition_uid"]
    [record] = httpx.get(sim.base_url + "/_sim/records").json()["list"]
    assert record["versions"] == 2


def test_validation_error_is_invalid_and_never_sent(sim: SimServer, tmp_path: Path) -> None:
    destination, _ = destination_for(sim, tmp_path)
    job = mapped_job(next(c for c in CASES if c.name.startswith("medication")))
    # a Frequency code is not checked locally, and a missing Prescriber only the server catches
    del job.payload["Composition"]["MedicationPrescriptions"]["Prescriber"]
    outcome = send(destination, job)
    assert outcome.klass is OutcomeClass.invalid
    assert {"field": "Composition.MedicationPrescriptions.Prescriber", "code": "MANDATORY",
            "text": "mandatory field is missing"} in outcome.result["validation"]
    assert outcome.result["validated_by"] == "sepas"
    s = stats(sim)
    assert s["validations"] == 1 and s["validation_failures"] == 1 and s["saves"] == 0 and s["submits"] == 0


def test_server_side_terminology_and_date_errors(sim: SimServer, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    destination, _ = destination_for(sim, tmp_path)
    job = mapped_job(next(c for c in CASES if c.name.startswith("patient_bill")))
    monkeypatch.setattr(destination._terminology, "rules", [])  # let the bad codes reach the server
    job.payload["Composition"]["BillServices"][0]["Service"]["Coded_string"] = "123456"
    job.payload["Composition"]["Admission"]["AdmissionDate"] = "2030-01-01"
    outcome = send(destination, job)
    assert outcome.klass is OutcomeClass.invalid
    codes = {(v["field"], v["code"]) for v in outcome.result["validation"]}
    assert ("Composition.BillServices[0].Service", "TERMINOLOGY") in codes
    assert ("Composition.Admission.AdmissionDate", "DATE") in codes
    assert stats(sim)["saves"] == 0


def test_token_refresh_on_401(sim: SimServer, tmp_path: Path) -> None:
    destination, parts = destination_for(sim, tmp_path)
    case = next(c for c in CASES if c.name.startswith("medication"))
    assert send(destination, mapped_job(case)).klass is OutcomeClass.accepted
    httpx.post(sim.base_url + "/_sim/faults", json={"revoke_tokens": True})
    job = dataclasses.replace(mapped_job(case), idempotency_key="key-2")
    outcome = send(destination, job)
    assert outcome.klass is OutcomeClass.accepted
    s = stats(sim)
    assert s["tokens_issued"] == 2 and s["refresh_grants"] == 1 and s["duplicates"] == 0
    assert parts["cache"].fetches == 2


def test_pid_header_is_required(sim: SimServer, tmp_path: Path) -> None:
    sim.app.state.registry.update_settings({"pids": ["not-ours"]})
    destination, _ = destination_for(sim, tmp_path)
    outcome = send(destination, mapped_job(CASES[0]))
    assert outcome.klass is OutcomeClass.rejected and "403" in outcome.message


def test_lost_answer_then_lookup_finds_it(sim: SimServer, tmp_path: Path) -> None:
    destination, _ = destination_for(sim, tmp_path)
    sim.app.state.registry.update_settings({"drop_response_after_apply": 1})
    job = mapped_job(CASES[0])
    prepared = destination.prepare_offline(job)
    first = destination.send(prepared)
    assert first.klass is OutcomeClass.ambiguous  # 502 after the record was applied: it may have
    found = destination.lookup(dataclasses.replace(prepared, ambiguous=True))
    assert found.klass is OutcomeClass.accepted and found.result["found_by_lookup"]
    assert stats(sim)["saves"] == 1 and stats(sim)["duplicates"] == 0
