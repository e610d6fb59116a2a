"""The patients seed 002 s.7 names, through the real pipeline (intake -> store -> dispatcher)
and the Tamin simulator over HTTP, on SQLite and PostgreSQL: a foreign national by FIDA id,
an unidentified patient (not registered at Tamin unless the config allows it), a newborn by
the mother's national code."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from adapter.app import App, build
from adapter.destinations import registry
from adapter.destinations.tamin.coverage import UNIDENTIFIED_NOT_COVERED
from adapter.ops.replay import Replayer
from adapter.sim.registry import TaminRegistry
from adapter.sim.server import SimServer
from adapter.sim.settings import TaminSimSettings
from adapter.sim.tamin_app import create_tamin_app
from adapter.sim.tamin_rules import MSG_BAD_PATIENT
from adapter.store.models import ReplyRow, Submission
from tests.support.pipeline import adapter_config, drain

REPO = Path(__file__).resolve().parents[2]
FIDA = "123456789012"  # fake: 12 digits, not a national code
MOTHER = "1234567891"  # fake national code with a valid check digit
PLACEHOLDER_ID = "ER-UNK-0042"


def prescription(rx_id: str, identity: dict[str, str], age_years: int = 41) -> dict[str, Any]:
    event = json.loads((REPO / "docs" / "sample-prescription-created.json").read_text("utf-8"))
    now = dt.datetime.now(dt.timezone(dt.timedelta(hours=3, minutes=30))).replace(microsecond=0).isoformat()
    event.update(event_id=f"evt-{rx_id}", occurred_at=now)
    payload = event["payload"]
    payload.update(prescription_id=rx_id, prescribed_at=now)
    payload.pop("visit_id", None)
    patient = payload["patient"]
    patient["identity"] = identity
    patient.pop("birth_date", None)
    patient["age_years"] = age_years
    return event


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with SimServer(create_tamin_app(TaminSimSettings())) as server:
        yield server


@pytest.fixture
def make_app(db_url: str, sim: SimServer, tmp_path: Path) -> Iterator[Callable[..., App]]:
    apps: list[App] = []

    def make(**overrides: Any) -> App:
        app = build(adapter_config(db_url, sim.base_url, tmp_path, **overrides))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


def registry_of(sim: SimServer) -> TaminRegistry:
    return sim.app.state.registry


def send(app: App, event: dict[str, Any]) -> Submission:
    """Store the event, run the dispatcher until nothing is due; its one Tamin submission."""
    assert app.intake.receive(json.dumps(event, ensure_ascii=False)).outcome.value == "stored"
    drain(app)
    with app.sessions() as session:
        [row] = session.scalars(select(Submission).where(Submission.event_id == event["event_id"]))
        return row


def test_a_foreign_national_is_registered_by_fida_id(make_app, sim: SimServer) -> None:
    row = send(make_app(), prescription("RX-FIDA", {"kind": "fida", "value": FIDA}))
    assert row.state == "accepted", row.last_error
    [registered] = registry_of(sim).prescriptions()
    assert registered["patient"] == "FDA" + FIDA
    assert str(registered["trackingCode"]) == str(row.result["tracking_code"])


def test_a_fida_id_in_a_form_tamin_does_not_expect_is_refused(make_app, sim: SimServer) -> None:
    """The simulator refuses a FIDA id sent as a national code (what the adapter sent before)."""
    registry_of(sim).update_settings({"fida_patient_prefix": "FIDA-"})
    row = send(make_app(), prescription("RX-FIDA", {"kind": "fida", "value": FIDA}))
    assert row.state == "rejected"
    assert MSG_BAD_PATIENT in (row.last_error or "")
    assert registry_of(sim).prescriptions() == []


def test_an_unidentified_patient_is_not_registered_at_tamin(make_app, sim: SimServer) -> None:
    app = make_app()
    row = send(app, prescription("RX-UNK", {"kind": "unidentified", "value": PLACEHOLDER_ID}))
    assert (row.state, row.last_error_class, row.last_error) == ("invalid", "not_covered", UNIDENTIFIED_NOT_COVERED)
    assert PLACEHOLDER_ID not in row.last_error and row.payload is None
    stats = registry_of(sim).stats()
    assert stats["placeholder_patient_creates"] == 0 and stats["create_calls"] == 0
    assert registry_of(sim).prescriptions() == []
    # a patient with a national code is still sent by the same adapter
    other = send(app, prescription("RX-NC", {"kind": "national_code", "value": "0012345679"}))
    assert other.state == "accepted", other.last_error


def test_a_dispense_of_a_prescription_not_covered_is_told_so_not_to_replay(make_app, sim: SimServer) -> None:
    """The pharmacy's registration builds on a prescription Tamin never got: it is refused as not
    covered too (the free/paper path), not sent, and not left asking a person to replay the create."""
    app = make_app()
    send(app, prescription("RX-UNK", {"kind": "unidentified", "value": PLACEHOLDER_ID}))
    dispense = json.loads((REPO / "docs" / "samples" / "dispense-completed.json").read_text("utf-8"))
    dispense.update(event_id="evt-DSP-UNK", occurred_at=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat())
    dispense["payload"].update(prescription={"prescription_id": "RX-UNK"}, dispensed_at=dispense["occurred_at"])
    dispense["payload"].pop("visit_id", None)
    dispense["payload"]["patient"]["identity"] = {"kind": "unidentified", "value": PLACEHOLDER_ID}
    row = send(app, dispense)
    assert (row.state, row.last_error_class) == ("invalid", "not_covered"), row.last_error
    assert "replay" not in (row.last_error or "") and UNIDENTIFIED_NOT_COVERED in (row.last_error or "")
    assert PLACEHOLDER_ID not in (row.last_error or "")
    with app.sessions() as session:
        [reply] = session.scalars(select(ReplyRow).where(ReplyRow.event_id == "evt-DSP-UNK"))
    assert reply.type == "dispense.invalid" and reply.body["stage"] == "coverage", reply.body
    assert registry_of(sim).stats()["create_calls"] == 0


def test_replay_with_remap_keeps_a_not_covered_prescription_away_from_tamin(make_app, sim: SimServer) -> None:
    """Re-mapping runs the destination's screen as intake does: ``--remap`` is no way around it."""
    app = make_app()
    row = send(app, prescription("RX-UNK", {"kind": "unidentified", "value": PLACEHOLDER_ID}))
    plain = Replayer(app.sessions, actor="ops", reason="retry").replay_ids([row.id])
    [skipped] = plain.skipped
    assert "not covered" in skipped.reason and "--remap" in skipped.reason
    report = Replayer(app.sessions, actor="ops", reason="retry", mappings=app.mappings,
                      screens=registry.screens(app.config)).replay_ids([row.id])
    assert report.replayed == [] and "still refused (not_covered)" in report.skipped[0].reason
    drain(app)
    with app.sessions() as session:
        again = session.get(Submission, row.id)
        assert again is not None and (again.state, again.last_error_class) == ("invalid", "not_covered")
    assert registry_of(sim).stats()["create_calls"] == 0


def test_an_unidentified_patient_is_sent_as_unknown_when_the_config_allows_it(make_app, sim: SimServer) -> None:
    app = make_app(destinations__tamin__accepts_unidentified_patients="true")
    row = send(app, prescription("RX-UNK", {"kind": "unidentified", "value": PLACEHOLDER_ID}))
    assert row.state == "accepted", row.last_error
    assert registry_of(sim).stats()["placeholder_patient_creates"] == 1
    [registered] = registry_of(sim).prescriptions()
    assert registered["patient"] == "UNKNOWN"


def test_a_newborn_is_registered_under_the_mothers_national_code(make_app, sim: SimServer) -> None:
    row = send(make_app(), prescription("RX-NEWBORN", {"kind": "mother_national_code", "value": MOTHER}, age_years=0))
    assert row.state == "accepted", row.last_error
    [registered] = registry_of(sim).prescriptions()
    assert registered["patient"] == MOTHER
