"""SEPAS wired into the running adapter: a drug prescription goes intake -> store ->
dispatcher -> DITAS (validation, then save) and ends accepted with SEPAS's ids, next to the
Tamin submission of the same event; a lab prescription is not routed to SEPAS's medication
message. Both simulators over real HTTP; store on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import httpx
from sqlalchemy import select

from adapter.app import build
from adapter.sim.ditas_app import create_ditas_app
from adapter.sim.ditas_registry import DitasSimSettings
from adapter.sim.server import SimServer
from adapter.sim.tamin_app import create_tamin_app
from adapter.store.models import Submission
from tests.support.pipeline import adapter_config, drain

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


def test_drug_prescription_reaches_sepas_through_the_pipeline(db_url: str, tmp_path: Path) -> None:
    lab = copy.deepcopy(EVENT)
    lab.update(event_id="evt-sepas-lab")
    lab["payload"].update(kind="paraclinic", prescription_id="RX-LAB",
                          items=[{"code": "L-CBC", "quantity": 1}])
    with SimServer(create_tamin_app()) as tamin, \
            SimServer(create_ditas_app(DitasSimSettings(today_override="1403/05/15"))) as ditas:
        app = build(adapter_config(db_url, tamin.base_url, tmp_path, **sepas_overrides(ditas, tmp_path)))
        try:
            assert set(app.token_caches) == {"tamin", "sepas"}
            app.intake.receive(json.dumps(EVENT, ensure_ascii=False).encode())
            app.intake.receive(json.dumps(lab, ensure_ascii=False).encode())
            drain(app)
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
