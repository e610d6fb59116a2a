"""Simulator additions for the Airflow jobs (sim-defined, docs/tamin-wire.md "Claim status
and billing"): claim status with deductions, and admin endpoints that seed discrepancies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from adapter.sim.prices import unit_price
from adapter.sim.server import SimServer
from adapter.sim.settings import TaminSimSettings
from adapter.sim.tamin_app import create_tamin_app
from tests.unit.test_sim_tamin import DOC_ID, PATIENT, TODAY, body, create, drug_item, get_token


@pytest.fixture(scope="module")
def server() -> Iterator[SimServer]:
    with SimServer(create_tamin_app(TaminSimSettings())) as srv:
        yield srv


@pytest.fixture
def api(server: SimServer) -> Iterator[httpx.Client]:
    server.app.state.registry.reset()
    with httpx.Client(base_url=server.base_url, timeout=5.0, headers={"X-Sim-Today": TODAY}) as client:
        client.headers["Authorization"] = f"Bearer {get_token(client)}"
        yield client


def claim(api: httpx.Client, tracking: int, patient: str = PATIENT) -> Any:
    resp = api.get("/api/v2/ep/claim-status", params={"patient": patient, "trackingCode": tracking})
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]["claim"]


def test_claim_status_from_submitted_to_paid_with_a_deduction(api: httpx.Client) -> None:
    made = create(api, body(items=[drug_item("10001", 2), drug_item("10002", 1)]))
    head, tracking = made["head_EPRSC_ID"], made["trackingCode"]
    first = claim(api, tracking)
    claimed = 2 * unit_price("10001") + unit_price("10002")
    assert first == {"head_EPRSC_ID": head, "trackingCode": tracking, "prescDate": TODAY, "auditStatus": "submitted",
                     "billId": None, "claimedAmount": claimed, "approvedAmount": None, "paidAmount": 0,
                     "paidDate": None, "deductions": []}
    seeded = api.post(f"/_sim/claims/{head}", json={"auditStatus": "paid", "deductions": [
        {"srvCode": "10002", "amount": 50_000, "reasonCode": "K12", "reason": "over the tariff"}]})
    assert seeded.status_code == 200, seeded.text
    paid = claim(api, tracking)
    assert paid["auditStatus"] == "paid" and paid["billId"] == f"B-{TODAY}-{head}" and paid["paidDate"] == TODAY
    assert paid["approvedAmount"] == paid["paidAmount"] == claimed - 50_000
    assert paid["deductions"] == [{"deductionId": f"D{head}-1", "srvCode": "10002", "amount": 50_000,
                                   "reasonCode": "K12", "reason": "over the tariff"}]


def test_unknown_claim_and_bad_query(api: httpx.Client) -> None:
    assert claim(api, 123) is None
    assert api.get("/api/v2/ep/claim-status", params={"patient": PATIENT}).status_code == 400
    assert api.get("/api/v2/ep/claim-status", params={"patient": PATIENT, "trackingCode": 1},
                   headers={"Authorization": "Bearer nope"}).status_code == 401


def test_settle_all_and_faults_apply_to_claim_status(api: httpx.Client) -> None:
    made = create(api, body())
    assert api.post("/_sim/claims/settle", json={"auditStatus": "audited"}).json() == {"changed": 1}
    assert claim(api, made["trackingCode"])["auditStatus"] == "audited"
    api.post("/_sim/faults", json={"fail_next": 1, "fail_status": 503, "fail_endpoints": ["claim_status"]})
    assert api.get("/api/v2/ep/claim-status", params={"patient": PATIENT, "trackingCode": 1}).status_code == 503
    assert api.post("/_sim/claims/999", json={"auditStatus": "paid"}).status_code == 404
    assert api.post(f"/_sim/claims/{made['head_EPRSC_ID']}", json={"auditStatus": "lost"}).status_code == 400


def test_seed_discrepancies_alter_forget_inject(api: httpx.Client) -> None:
    first, second = create(api, body()), create(api, body(items=[drug_item("10003", 4)]))
    altered = api.post(f"/_sim/prescriptions/{first['head_EPRSC_ID']}",
                       json={"items": [{"srvCode": "10001", "srvQty": 9}]}).json()["head"]
    assert altered["items"] == [{"srvCode": "10001", "srvQty": 9}]
    assert api.delete(f"/_sim/prescriptions/{second['head_EPRSC_ID']}").json() == {"forgotten": True}
    lookup = api.get("/api/v2/ep/lookup", params={"patient": PATIENT, "trackingCode": second["trackingCode"]})
    assert lookup.json()["data"]["list"] == []
    injected = api.post("/_sim/prescriptions", json={"patient": PATIENT, "docId": DOC_ID, "prescDate": TODAY,
                                                     "prescTypeId": 1, "items": [{"srvCode": "10009", "srvQty": 1}]})
    assert injected.status_code == 200, injected.text
    day = api.get("/api/v2/ep/lookup", params={"patient": PATIENT, "docId": DOC_ID, "prescDate": TODAY}).json()
    assert {h["head_EPRSC_ID"] for h in day["data"]["list"]} == {first["head_EPRSC_ID"],
                                                                  injected.json()["head"]["head_EPRSC_ID"]}
    deleted = api.post(f"/_sim/prescriptions/{first['head_EPRSC_ID']}", json={"status": "deleted"}).json()["head"]
    assert deleted["status"] == "deleted"
    assert claim(api, first["trackingCode"])["auditStatus"] == "cancelled"
