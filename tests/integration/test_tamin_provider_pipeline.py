"""Dispensing and paraclinic through the real pipeline (intake -> store -> dispatcher) and the
Tamin simulator over HTTP, on SQLite and PostgreSQL: prescribed at ``tamin``, then served at
``tamin_pharmacy`` / ``tamin_paraclinic``; never registered twice (the simulator counts)."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from adapter.app import App, build
from adapter.sim.server import SimServer
from adapter.sim.settings import TaminSimSettings
from adapter.sim.tamin_app import create_tamin_app
from adapter.store.models import Attempt, Submission
from tests.support.pipeline import RecordingApp, adapter_config, drain

REPO = Path(__file__).resolve().parents[2]
PATIENT = "0012345679"
TOO_MANY = "تعداد درخواستی بیش از مانده نسخه است"


def _now() -> str:
    return dt.datetime.now(dt.timezone(dt.timedelta(hours=3, minutes=30))).replace(microsecond=0).isoformat()


def _sample(name: str) -> dict[str, Any]:
    return json.loads((REPO / "docs" / "samples" / name).read_text("utf-8"))


def prescription(rx_id: str, kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    event = json.loads((REPO / "docs" / "sample-prescription-created.json").read_text("utf-8"))
    event["event_id"] = f"evt-{rx_id}"
    event["occurred_at"] = _now()
    payload = event["payload"]
    payload.update(prescription_id=rx_id, kind=kind, items=items, prescribed_at=_now())
    payload.pop("visit_id", None)
    return event


def drug_rx(rx_id: str = "RX-1", quantity: int = 20) -> dict[str, Any]:
    return prescription(rx_id, "drug", [{"code": "D-AMOX-500", "quantity": quantity, "dose": "TID",
                                         "instruction": "AFTER_MEAL"}])


def lab_rx(rx_id: str = "RX-2") -> dict[str, Any]:
    return prescription(rx_id, "paraclinic", [{"code": "L-CBC", "quantity": 1}, {"code": "L-FBS", "quantity": 1}])


def dispense(dispense_id: str, reference: dict[str, str], quantity: int = 20) -> dict[str, Any]:
    event = copy.deepcopy(_sample("dispense-completed.json"))
    event["event_id"] = f"evt-{dispense_id}"
    payload = event["payload"]
    payload.update(dispense_id=dispense_id, prescription=reference)
    payload.pop("visit_id", None)
    payload["items"][0]["quantity"] = quantity
    return event


def paraclinic(kind: str, rx_id: str = "RX-2", order_id: str = "LAB-ORD-1") -> dict[str, Any]:
    event = copy.deepcopy(_sample(f"paraclinic-{kind}.json"))
    event["event_id"] = f"evt-{order_id}-{kind}"
    event["payload"].update(order_id=order_id, prescription={"prescription_id": rx_id})
    event["payload"].pop("visit_id", None)
    return event


@pytest.fixture
def sim() -> Iterator[RecordingApp]:
    recorder = RecordingApp(create_tamin_app(TaminSimSettings()))
    with SimServer(recorder) as server:
        recorder.base_url = server.base_url  # type: ignore[attr-defined]
        yield recorder


@pytest.fixture
def make_app(db_url: str, sim: RecordingApp, tmp_path: Path) -> Iterator[Callable[..., App]]:
    apps: list[App] = []

    def make(**overrides: Any) -> App:
        url = sim.base_url  # type: ignore[attr-defined]
        provider = {}
        for name in ("tamin_pharmacy", "tamin_paraclinic"):
            provider.update({f"destinations__{name}__base_url": url, f"destinations__{name}__max_rps": "null",
                             f"destinations__{name}__retry__base_delay_s": "0.02",
                             f"destinations__{name}__retry__jitter": "0"})
        app = build(adapter_config(db_url, url, tmp_path, **{**provider, **overrides}))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


def receive(app: App, *events: dict[str, Any]) -> None:
    for event in events:
        assert app.intake.receive(json.dumps(event, ensure_ascii=False)).outcome.value == "stored"


def rows(app: App) -> dict[tuple[str, str], Submission]:
    with app.sessions() as session:
        return {(s.destination, s.event_id): s for s in session.scalars(select(Submission))}


def attempts(app: App, submission_id: int) -> list[Attempt]:
    with app.sessions() as session:
        return list(session.scalars(select(Attempt).where(Attempt.submission_id == submission_id).order_by(Attempt.id)))


def provider_stats(sim: RecordingApp) -> dict[str, Any]:
    return sim.registry.stats()["provider"]


def test_dispense_by_prescription_id_is_registered_and_confirmed(make_app, sim: RecordingApp) -> None:
    app = make_app()
    receive(app, dispense("DSP-1", {"prescription_id": "RX-1"}), drug_rx())  # the dispense stored first: it waits
    drain(app)
    found = rows(app)
    rx, dispensed = found[("tamin", "evt-RX-1")], found[("tamin_pharmacy", "evt-DSP-1")]
    assert (rx.state, dispensed.state) == ("accepted", "accepted"), dispensed.last_error
    assert dispensed.result["tracking_code"] == rx.result["tracking_code"]
    assert dispensed.result["head_id"] == rx.result["head_id"]
    assert dispensed.result["confirmed"] is True and dispensed.result["request_id"]
    assert dispensed.result["request_price"] > 0
    [request] = sim.registry.provider_requests()
    assert (request["his_request_id"], request["confirmed"], request["lines"][0]["count"]) == ("DSP-1", True, 20)
    stats = provider_stats(sim)
    assert stats["registered"] == {"pharmacy": 1} and stats["duplicate_submit_keys"] == []
    assert sim.registry.stats()["duplicates"] == 0


def test_a_dispense_serves_the_prescription_as_last_edited(make_app, sim: RecordingApp) -> None:
    """The dispense waits for the edit too (Tamin refuses an edit once a pharmacy registered)."""
    app = make_app()
    edit = drug_rx(quantity=10)
    edit.update(event_id="evt-RX-1-edit", event_type="prescription.updated")
    receive(app, drug_rx(quantity=20), dispense("DSP-1", {"prescription_id": "RX-1"}, quantity=10), edit)
    drain(app)
    found = rows(app)
    states = {key: row.state for key, row in found.items()}
    assert states == {("tamin", "evt-RX-1"): "accepted", ("tamin", "evt-RX-1-edit"): "accepted",
                      ("tamin_pharmacy", "evt-DSP-1"): "accepted"}, {k: r.last_error for k, r in found.items()}
    edit_done = max(a.started_at + dt.timedelta(milliseconds=a.duration_ms)
                    for a in attempts(app, found[("tamin", "evt-RX-1-edit")].id))
    sent = [a for a in attempts(app, found[("tamin_pharmacy", "evt-DSP-1")].id) if a.request]
    assert sent and min(a.started_at for a in sent) >= edit_done
    assert sim.registry.stats()["duplicates"] == 0


def test_dispense_by_tracking_code(make_app, sim: RecordingApp) -> None:
    app = make_app()
    receive(app, drug_rx("RX-9"))
    drain(app)
    tracking = rows(app)[("tamin", "evt-RX-9")].result["tracking_code"]
    receive(app, dispense("DSP-9", {"tracking_code": str(tracking)}, quantity=5))
    drain(app)
    dispensed = rows(app)[("tamin_pharmacy", "evt-DSP-9")]
    assert dispensed.state == "accepted", dispensed.last_error
    assert str(dispensed.result["tracking_code"]) == str(tracking) and dispensed.result["confirmed"] is True


def test_paraclinic_requested_then_completed_even_when_completed_is_stored_first(make_app, sim: RecordingApp) -> None:
    app = make_app()
    receive(app, paraclinic("completed"), lab_rx(), paraclinic("requested"))
    drain(app)
    found = rows(app)
    registered = found[("tamin_paraclinic", "evt-LAB-ORD-1-requested")]
    confirmed = found[("tamin_paraclinic", "evt-LAB-ORD-1-completed")]
    assert (registered.state, confirmed.state) == ("accepted", "accepted"), confirmed.last_error
    assert registered.operation == "create" and confirmed.operation == "confirm"
    assert confirmed.result["request_id"] == registered.result["request_id"]
    [request] = sim.registry.provider_requests()
    assert request["family"] == "paraclinic" and request["confirmed"] is True
    assert [line["code"] for line in request["lines"]] == ["801060", "801185"]
    assert request["performed"] == [{"code": "801060", "count": 1}, {"code": "801185", "count": 1}]
    # the confirm reached the simulator only after the registration was answered
    ends = [e for e in sim.entries("end") if "ParaEPresc" in e["path"] and "RequestList" not in e["path"]]
    assert [e["path"].rsplit("/", 1)[-1] for e in ends] == ["RequestParPresc", "ConfirmParPresc"]


def test_an_answer_dropped_after_the_register_is_looked_up_and_never_registered_twice(make_app, sim: RecordingApp) -> None:
    app = make_app()
    receive(app, drug_rx())
    drain(app)
    sim.registry.update_settings({"drop_response_after_apply": 1, "drop_endpoints": {"pharmacy_submit"}})
    receive(app, dispense("DSP-1", {"prescription_id": "RX-1"}))
    drain(app)
    dispensed = rows(app)[("tamin_pharmacy", "evt-DSP-1")]
    assert dispensed.state == "accepted" and dispensed.result["confirmed"] is True, dispensed.last_error
    outcomes = [a.outcome for a in attempts(app, dispensed.id)]
    assert outcomes[0] == "ambiguous" and outcomes[-1] == "accepted"
    stats = provider_stats(sim)
    assert stats["submit_receipts"] == 1 and stats["registered"] == {"pharmacy": 1}
    assert stats["duplicate_submit_keys"] == [] and stats["confirmed"] == 1


def test_a_token_that_expires_mid_batch_is_refreshed_once(make_app, sim: RecordingApp) -> None:
    app = make_app()
    receive(app, drug_rx("RX-1"), drug_rx("RX-2", quantity=10))
    drain(app)
    receive(app, dispense("DSP-1", {"prescription_id": "RX-1"}))
    drain(app)
    issued = provider_stats(sim)["tokens_issued"]
    sim.registry.revoke_access_tokens()  # Tamin purged its sessions: the cached token is refused
    receive(app, dispense("DSP-2", {"prescription_id": "RX-2"}, quantity=10))
    drain(app)
    second = rows(app)[("tamin_pharmacy", "evt-DSP-2")]
    assert second.state == "accepted", second.last_error
    assert provider_stats(sim)["tokens_issued"] == issued + 1
    [attempt] = attempts(app, second.id)
    assert attempt.request["steps"][0]["token_refreshed"] is True
    assert provider_stats(sim)["registered"] == {"pharmacy": 2}


def test_dispensing_more_than_prescribed_is_rejected_with_the_insurers_message(make_app, sim: RecordingApp) -> None:
    app = make_app()
    receive(app, drug_rx(quantity=20), dispense("DSP-1", {"prescription_id": "RX-1"}, quantity=25))
    drain(app)
    dispensed = rows(app)[("tamin_pharmacy", "evt-DSP-1")]
    assert dispensed.state == "rejected"
    assert TOO_MANY in dispensed.last_error and PATIENT not in dispensed.last_error
    assert provider_stats(sim)["registered"] == {}


def test_a_dispense_for_a_refused_prescription_is_invalid(make_app, sim: RecordingApp) -> None:
    sim.registry.update_settings({"unknown_patients": {PATIENT}})
    app = make_app()
    receive(app, drug_rx(), dispense("DSP-1", {"prescription_id": "RX-1"}))
    drain(app)
    found = rows(app)
    assert found[("tamin", "evt-RX-1")].state == "rejected"
    dispensed = found[("tamin_pharmacy", "evt-DSP-1")]
    assert dispensed.state == "invalid" and "replay it first" in dispensed.last_error
