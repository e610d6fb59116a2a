"""The simulator's dispensing and paraclinic APIs over real HTTP (docs/tamin-wire.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from adapter.events.identity import national_code_check_digit
from adapter.sim.server import SimServer
from adapter.sim.settings import TaminSimSettings
from adapter.sim.tamin_app import create_tamin_app

PATIENT = "001234567" + str(national_code_check_digit("001234567"))
PHARMACY = "/api/Pharmacy/DrugEpresc/GetActivePresc"
POST_PRESC = "/api/Pharmacy/DrugStore/PostPresc"
CONFIRM = "/api/Pharmacy/DrugStore/ConfirmPresc"
PARA_LIST = "/api/ParaClinic/ParaEPresc/RequestList"
PARA_REGISTER = "/api/ParaClinic/ParaEPresc/RequestParPresc"
PARA_CONFIRM = "/api/ParaClinic/ParaEPresc/ConfirmParPresc"
TTAC = "1234567890123456"


@pytest.fixture
def sim() -> Iterator[tuple[httpx.Client, Any]]:
    app = create_tamin_app(TaminSimSettings())
    with SimServer(app) as server, httpx.Client(base_url=server.base_url, timeout=10) as http:
        yield http, app.state.registry


def token(http: httpx.Client, username: str = "drugtest", **over: Any) -> str:
    body = {"username": username, "password": "123", "SoftwareClientID": "adapter-software",
            "SoftwareClientSecret": "adapter-software-secret", **over}
    answer = http.post("/api/acl/authenticate", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]["token"]


def prescription(http: httpx.Client, kind: int = 1, items: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    items = items or [{"srvCode": "10113590", "srvQty": 20}, {"srvCode": "10108065", "srvQty": 10}]
    answer = http.post("/_sim/prescriptions", json={"patient": PATIENT, "docId": "2000200092", "prescDate": "14030512",
                                                    "prescTypeId": kind, "items": items})
    return answer.json()["head"]


def fetch(http: httpx.Client, auth: str, tracking: Any, path: str = PHARMACY) -> dict[str, Any]:
    provider = "PhaId=7001" if path == PHARMACY else "parID=8001"
    answer = http.get(f"{path}?patientNationalCode={PATIENT}&trackingCode={tracking}&{provider}",
                      headers={"Authorization": f"Bearer {auth}"})
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def post(http: httpx.Client, path: str, auth: str, body: dict[str, Any], key: str = "k1",
         scheme: str = "Bearer ") -> dict[str, Any]:
    answer = http.post(path, json=body, headers={"Authorization": scheme + auth, "X-Idempotency-Key": key})
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def dispense_body(head: dict[str, Any], detail: int, count: int = 5, code: str = "10113590") -> dict[str, Any]:
    return {"userInformation": {"phaId": "7001"}, "electronicPrescHead": head["head_EPRSC_ID"], "patientNatCode": PATIENT,
            "hisRequestId": "DSP-1", "drugsList": [{"electronicPrescDetail": detail, "drugCode": code,
                                                    "requestedCount": count, "drugIrc": TTAC, "barcodesList": [TTAC]}]}


def test_acl_authenticate_refuses_wrong_credentials(sim) -> None:
    http, _ = sim
    body = {"username": "drugtest", "password": "nope", "SoftwareClientID": "adapter-software",
            "SoftwareClientSecret": "adapter-software-secret"}
    assert http.post("/api/acl/authenticate", json=body).status_code == 401
    assert http.post("/api/acl/authenticate", json={**body, "password": "123", "SoftwareClientSecret": "x"}).status_code == 401


def test_dispense_register_confirm_and_remaining(sim) -> None:
    http, registry = sim
    auth, head = token(http), prescription(http)
    got = fetch(http, auth, head["trackingCode"])
    [listed] = got["list"]
    assert got["hasError"] is False and listed["headeprscid"] == head["head_EPRSC_ID"]
    detail = listed["finalDetailsPresc"][0]
    assert (detail["drugCode"], detail["prescribedCount"], detail["remainingCount"]) == ("10113590", 20, 20)
    registered = post(http, POST_PRESC, auth, dispense_body(head, detail["detailId"], 5))
    request_id = registered["data"]["requestId"]
    assert registered["hasError"] is False and registered["data"]["requestPrice"] > 0
    again = fetch(http, auth, head["trackingCode"])["list"][0]
    assert again["finalDetailsPresc"][0]["remainingCount"] == 15
    assert again["registeredRequests"] == [{**again["registeredRequests"][0], "requestId": request_id,
                                            "hisRequestId": "DSP-1", "confirmed": False}]
    confirm = {"userInformation": {"phaId": "7001"}, "requestId": request_id}
    assert post(http, CONFIRM, auth, confirm)["data"]["confirmed"] is True
    assert post(http, CONFIRM, auth, confirm)["hasError"] is False  # harmless twice
    stats = registry.stats()["provider"]
    assert stats["registered"] == {"pharmacy": 1} and stats["confirmed"] == 1 and stats["duplicate_submit_keys"] == []


def test_business_rules_answer_problems(sim) -> None:
    http, _ = sim
    auth, head = token(http), prescription(http)
    detail = fetch(http, auth, head["trackingCode"])["list"][0]["finalDetailsPresc"][0]["detailId"]
    too_many = post(http, POST_PRESC, auth, dispense_body(head, detail, 21))
    assert too_many["hasError"] is True and too_many["problems"][0]["error_Msg"] == "تعداد درخواستی بیش از مانده نسخه است"
    wrong_code = post(http, POST_PRESC, auth, dispense_body(head, detail, 1, code="10109520"))
    assert wrong_code["hasError"] is True
    bad_ttac = dispense_body(head, detail, 1)
    bad_ttac["drugsList"][0]["barcodesList"] = ["123"]
    assert post(http, POST_PRESC, auth, bad_ttac)["hasError"] is True
    missing = fetch(http, auth, 1)
    assert missing["hasError"] is True and missing["problems"][0]["error_Code"] == 9900002


def test_a_refused_register_sent_again_is_a_resend_not_a_duplicate(sim) -> None:
    http, registry = sim
    auth, head = token(http), prescription(http)
    detail = fetch(http, auth, head["trackingCode"])["list"][0]["finalDetailsPresc"][0]["detailId"]
    for _ in range(2):
        assert post(http, POST_PRESC, auth, dispense_body(head, detail, 21), key="dsp-1")["hasError"] is True
    stats = registry.stats()["provider"]
    assert (stats["duplicate_submit_keys"], stats["resent_after_refusal"]) == ([], 1)
    assert post(http, POST_PRESC, auth, dispense_body(head, detail, 5), key="dsp-1")["hasError"] is False
    assert post(http, POST_PRESC, auth, dispense_body(head, detail, 5), key="dsp-1")["hasError"] is False
    stats = registry.stats()
    assert stats["provider"]["duplicate_submit_keys"] == ["dsp-1"] and stats["duplicates"] == 1


def test_a_pharmacy_serves_drugs_only_and_a_paraclinic_centre_paraclinic_only(sim) -> None:
    http, _ = sim
    pharmacy, para = token(http), token(http, "paratest")
    lab = prescription(http, 2, [{"srvCode": "801060", "srvQty": 1}])
    assert fetch(http, pharmacy, lab["trackingCode"])["hasError"] is True
    drug = prescription(http)
    assert fetch(http, para, drug["trackingCode"], PARA_LIST)["hasError"] is True
    # a pharmacy operator's token is refused at the paraclinic API
    answer = http.get(f"{PARA_LIST}?patientNationalCode={PATIENT}&trackingCode=1&parID=1",
                      headers={"Authorization": f"Bearer {pharmacy}"})
    assert answer.status_code == 403


def test_paraclinic_register_confirm_with_raw_token(sim) -> None:
    http, registry = sim
    auth = token(http, "paratest")
    head = prescription(http, 2, [{"srvCode": "801060", "srvQty": 1, "srvType": "02"}])
    listed = fetch(http, auth, head["trackingCode"], PARA_LIST)["list"][0]
    assert listed["details"][0]["partypecode"] == "02"
    body = {"userInformation": {"parID": "8001"}, "eprsC_ID": head["head_EPRSC_ID"], "partypecode": "02",
            "nationalcode": PATIENT, "hisRequestId": "LAB-1", "details": [{"paR_TAREF_CODE": "801060", "requesT_QTY": 1}]}
    registered = post(http, PARA_REGISTER, auth, body, scheme="")
    request_id = registered["data"]["requestID"]
    assert post(http, PARA_REGISTER, auth, body, key="k2")["hasError"] is True  # nothing remains
    done = {"userInformation": {"parID": "8001"}, "requestID": request_id,
            "details": [{"paR_TAREF_CODE": "801060", "performedQty": 2}]}
    assert post(http, PARA_CONFIRM, auth, done)["hasError"] is True  # more than requested
    done["details"][0]["performedQty"] = 1
    assert post(http, PARA_CONFIRM, auth, done)["data"]["confirmed"] is True
    assert registry.stats()["provider"]["registered"] == {"paraclinic": 1}


def test_expired_token_is_refused(sim) -> None:
    http, registry = sim
    auth = token(http)
    registry.revoke_access_tokens()
    answer = http.get(f"{PHARMACY}?patientNationalCode={PATIENT}&trackingCode=1&PhaId=1",
                      headers={"Authorization": f"Bearer {auth}"})
    assert answer.status_code == 401
