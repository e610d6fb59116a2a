"""The Tamin simulator over real HTTP: the contract of docs/tamin-wire.md."""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
import zoneinfo
from collections.abc import Iterator
from typing import Any

import httpx
import jdatetime
import pytest

from adapter.events.identity import national_code_check_digit
from adapter.sim import tamin_rules as rules
from adapter.sim.server import SimServer
from adapter.sim.settings import TaminSimSettings
from adapter.sim.tamin_app import create_tamin_app

TODAY = "14030512"  # the simulator's "today" in most tests (X-Sim-Today header)
DOC_ID = "2000200092"
DOC_NC = "1234567891"
CREATE = "/api/v2/SendEpresc"


def national_code(first_nine: str) -> str:
    return first_nine + str(national_code_check_digit(first_nine))


PATIENT = national_code("001234567")
OTHER_PATIENT = national_code("123456789")


def drug_item(code: str = "10001", qty: int = 2) -> dict[str, Any]:
    return {
        "srvId": {"srvCode": code, "srvType": {"srvType": "01"}},
        "srvQty": qty,
        "timesAday": {"drugAmntId": 3},
        "drugInstruction": {"drugInstId": 4},
        "dose": "1 tab",
    }


def lab_item(code: str = "800001", group: str | None = "001") -> dict[str, Any]:
    srv: dict[str, Any] = {"srvCode": code, "srvType": {"srvType": "02"}}
    if group is not None:
        srv["parTarefGrp"] = {"parGrpCode": group}
    return {"srvId": srv, "srvQty": 1}


def body(presc_type: int = 1, items: list[dict[str, Any]] | None = None, **head: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "patient": PATIENT,
        "mobile": "09120000000",
        "prescDate": TODAY,
        "docId": DOC_ID,
        "docNationalCode": DOC_NC,
        "docMobileNo": "09991111111",
        "prescType": {"prescTypeId": presc_type},
        "comments": "",
        "noteDetailEprscs": [drug_item()] if items is None else items,
        "clientId": DOC_NC,
    }
    out.update(head)
    return out


@pytest.fixture(scope="module")
def server() -> Iterator[SimServer]:
    with SimServer(create_tamin_app(TaminSimSettings())) as srv:
        yield srv


@pytest.fixture
def http(server: SimServer) -> Iterator[httpx.Client]:
    """An unauthenticated client on a freshly reset simulator."""
    server.app.state.registry.reset()
    with httpx.Client(base_url=server.base_url, timeout=5.0, headers={"X-Sim-Today": TODAY}) as client:
        yield client


def get_token(http: httpx.Client) -> str:
    resp = http.post(
        "/auth/server/token",
        data={"grant_type": "client_credentials", "client_id": "adapter-test", "client_secret": "adapter-test-secret"},
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["access_token"]


@pytest.fixture
def api(http: httpx.Client) -> httpx.Client:
    http.headers["Authorization"] = f"Bearer {get_token(http)}"
    return http


def create(api: httpx.Client, payload: Any, path: str = CREATE, **kw: Any) -> dict[str, Any]:
    resp = api.post(path, json=payload, **kw)
    assert resp.status_code == 200, resp.text
    envelope = resp.json()
    assert envelope["status"] == 200
    return envelope["data"]["result"]


def stats(http: httpx.Client) -> dict[str, Any]:
    return http.get("/_sim/stats").json()


def faults(http: httpx.Client, **patch: Any) -> None:
    resp = http.post("/_sim/faults", json=patch)
    assert resp.status_code == 200, resp.text


# ----- tokens ----------------------------------------------------------------------------
def test_client_credentials_token(http: httpx.Client) -> None:
    ok = http.post(
        "/auth/server/token",
        data={"grant_type": "client_credentials", "client_id": "adapter-test", "client_secret": "adapter-test-secret"},
    )
    assert ok.status_code == 200
    assert ok.json()["expires_in"] == 3600 and ok.json()["token_type"] == "Bearer"
    bad = http.post(
        "/auth/server/token",
        data={"grant_type": "client_credentials", "client_id": "adapter-test", "client_secret": "wrong"},
    )
    assert (bad.status_code, bad.json()) == (401, {"error": "invalid_client"})
    assert get_token(http) != ok.json()["access_token"]
    assert stats(http)["tokens_issued"] == 2


def test_api_call_without_or_with_unknown_token_is_401(http: httpx.Client) -> None:
    expected = {"status": 401, "family": "CLIENT_ERROR", "reason": "Unauthorized"}
    resp = http.post(CREATE, json=body())
    assert (resp.status_code, resp.json()) == (401, expected)
    resp = http.post(CREATE, json=body(), headers={"Authorization": "Bearer nope"})
    assert (resp.status_code, resp.json()) == (401, expected)
    assert stats(http)["prescriptions"] == 0


def test_access_token_expires(http: httpx.Client) -> None:
    faults(http, token_ttl_s=0.3)
    token = get_token(http)
    auth = {"Authorization": f"Bearer {token}"}
    assert http.get(f"/api/v2/ep/1/{DOC_NC}/{DOC_ID}/detail", headers=auth).status_code == 200
    time.sleep(0.4)
    assert http.get(f"/api/v2/ep/1/{DOC_NC}/{DOC_ID}/detail", headers=auth).status_code == 401


def test_refresh_token_rotation(http: httpx.Client) -> None:
    first = http.post("/_sim/refresh-tokens", json={"audience": DOC_NC}).json()["refresh_token"]
    form = {"grant_type": "refresh_token", "client_id": "adapter-test", "audience": DOC_NC}
    resp = http.post("/auth/server/v2/token", data={**form, "refresh_token": first})
    assert resp.status_code == 200
    second = resp.json()["refresh_token"]
    assert second != first and resp.json()["expires_in"] == 3600
    access = resp.json()["access_token"]
    detail = http.get(f"/api/v2/ep/1/{DOC_NC}/{DOC_ID}/detail", headers={"Authorization": f"Bearer {access}"})
    assert detail.status_code == 200
    reused = http.post("/auth/server/v2/token", data={**form, "refresh_token": first})
    assert (reused.status_code, reused.json()) == (400, {"error": "invalid_grant"})
    wrong_audience = http.post("/auth/server/v2/token", data={**form, "refresh_token": second, "audience": "0"})
    assert wrong_audience.status_code == 400
    assert http.post("/auth/server/v2/token", data={**form, "refresh_token": second}).status_code == 200


def test_refresh_token_without_rotation_is_reusable(http: httpx.Client) -> None:
    faults(http, rotate_refresh_tokens=False)
    rt = http.post("/_sim/refresh-tokens", json={"audience": DOC_NC}).json()["refresh_token"]
    form = {"grant_type": "refresh_token", "client_id": "adapter-test", "audience": DOC_NC, "refresh_token": rt}
    for _ in range(2):
        resp = http.post("/auth/server/v2/token", data=form)
        assert resp.status_code == 200 and resp.json()["refresh_token"] == rt


# ----- create ----------------------------------------------------------------------------
def test_create_success_and_detail(api: httpx.Client) -> None:
    first = create(api, body())
    assert first["error_Code"] == "" and first["error_Msg"] == ""
    assert isinstance(first["head_EPRSC_ID"], int) and isinstance(first["trackingCode"], int)
    assert first["trackingCode"] >= 100_000
    second = create(api, body(items=[drug_item("10002")]))
    assert second["head_EPRSC_ID"] != first["head_EPRSC_ID"]
    assert second["trackingCode"] != first["trackingCode"]
    detail = api.get(f"/api/v2/ep/{first['head_EPRSC_ID']}/{DOC_NC}/{DOC_ID}/detail").json()
    assert [row["srvId"]["srvCode"] for row in detail["data"]] == ["10001"]
    assert detail["data"][0]["isOk"] == "0" and detail["data"][0]["srvQty"] == 2
    s = stats(api)
    assert (s["prescriptions"], s["received_submissions"], s["duplicates"], s["rejections"]) == (2, 2, 0, 0)


def test_anonymous_patient_and_empty_visit_are_accepted(api: httpx.Client) -> None:
    assert create(api, body(patient="UNKNOWN"))["error_Code"] == ""
    assert create(api, body(presc_type=3, items=[]))["error_Code"] == ""


FIDA = "123456789012"  # fake FIDA id: 12 digits, not a national code


def test_a_fida_patient_is_accepted_in_fida_form_and_refused_as_a_national_code(api: httpx.Client) -> None:
    """Seed 002 s.7: a foreign national is identified by the FIDA id, not a national code."""
    assert create(api, body(patient="FDA" + FIDA))["error_Code"] == ""
    assert create(api, body(patient=FIDA))["error_Msg"] == rules.MSG_BAD_PATIENT
    assert create(api, body(patient="FDA123"))["error_Msg"] == rules.MSG_BAD_PATIENT  # too few digits
    eligible = api.get(f"/api/v2/patients/deserve-info/{DOC_NC}/{DOC_ID}/{DOC_ID}/FDA{FIDA}").json()["data"]
    assert eligible["hasDeserve"] is True
    api.post("/_sim/faults", json={"fida_patient_prefix": ""})
    assert create(api, body(patient=FIDA))["error_Code"] == ""  # configured: the bare id


def test_placeholder_patient_creates_are_counted(api: httpx.Client) -> None:
    assert stats(api)["placeholder_patient_creates"] == 0
    create(api, body())
    create(api, body(patient="FDA" + FIDA))
    assert stats(api)["placeholder_patient_creates"] == 0
    create(api, body(patient="UNKNOWN"))
    create(api, body(patient="UNKNOWN", mobile="0912"))  # refused, but it arrived
    assert stats(api)["placeholder_patient_creates"] == 2


def _set(key: str, value: Any) -> Any:
    return lambda b: {**b, key: value}


def _drop(key: str) -> Any:
    return lambda b: {k: v for k, v in b.items() if k != key}


def _strip_item_key(key: str) -> Any:
    return lambda b: {**b, "noteDetailEprscs": [{k: v for k, v in drug_item().items() if k != key}]}


REJECTIONS = [
    ("empty body", lambda b: {}, rules.MSG_DATA_NULL),
    ("bad check digit", _set("patient", PATIENT[:9] + str((int(PATIENT[9]) + 1) % 10)), rules.MSG_BAD_PATIENT),
    ("repeated digit", _set("patient", "1111111111"), rules.MSG_BAD_PATIENT),
    ("mobile missing", _drop("mobile"), rules.MSG_MOBILE_MISSING),
    ("mobile bad", _set("mobile", "0912"), rules.MSG_MOBILE_BAD),
    ("date not a date", _set("prescDate", "14031340"), rules.MSG_DATE_BAD),
    ("date wrong shape", _set("prescDate", "1403-05-12"), rules.MSG_DATE_BAD),
    ("date in future", _set("prescDate", "14030513"), rules.MSG_DATE_FUTURE),
    ("type missing", _drop("prescType"), rules.MSG_TYPE_MISSING),
    ("type unknown", _set("prescType", {"prescTypeId": 99}), rules.MSG_TYPE_BAD),
    ("visit with items", _set("prescType", {"prescTypeId": 3}), rules.MSG_VISIT_WITH_ITEMS),
    ("drug with lab item", _set("noteDetailEprscs", [lab_item()]), rules.MSG_ONLY_DRUGS),
    ("qty zero", _set("noteDetailEprscs", [drug_item(qty=0)]), rules.MSG_QTY),
    ("no timesAday", _strip_item_key("timesAday"), rules.MSG_DRUG_AMOUNT),
    ("no drugInstruction", _strip_item_key("drugInstruction"), rules.MSG_DRUG_INSTRUCTION),
    (
        "lab without group",
        lambda b: {**b, "prescType": {"prescTypeId": 2}, "noteDetailEprscs": [lab_item(group=None)]},
        rules.MSG_LAB_GROUP,
    ),
    (
        "paraclinic with drug",
        lambda b: {**b, "prescType": {"prescTypeId": 2}, "noteDetailEprscs": [drug_item()]},
        rules.MSG_ONLY_PARACLINIC,
    ),
    ("services with drug", _set("prescType", {"prescTypeId": 4}), rules.MSG_ONLY_SERVICES),
]


@pytest.mark.parametrize(("case", "mutate", "message"), REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_business_rejections(api: httpx.Client, case: str, mutate: Any, message: str) -> None:
    result = create(api, mutate(body()))
    assert result["error_Msg"] == message
    assert result["error_Code"] not in ("", "304")
    assert result["head_EPRSC_ID"] is None and result["trackingCode"] is None
    s = stats(api)
    assert (s["prescriptions"], s["rejections"]) == (0, 1)


def test_rejections_from_settings(api: httpx.Client) -> None:
    faults(
        api,
        unknown_patients=[PATIENT],
        expired_patients=[OTHER_PATIENT],
        known_service_codes=["10001"],
    )
    assert create(api, body())["error_Msg"] == rules.MSG_NOT_INSURED
    assert create(api, body(patient=OTHER_PATIENT))["error_Msg"] == rules.MSG_COVERAGE_EXPIRED
    third = national_code("987654321")
    assert create(api, body(patient=third, items=[drug_item("55555")]))["error_Msg"] == "کد خدمت 55555 تعریف نشده است"
    assert create(api, body(patient=third))["error_Code"] == ""


def test_doctor_registry_when_configured(api: httpx.Client) -> None:
    faults(api, doctors={DOC_ID: {"national_code": DOC_NC, "mobile": "09991111111"}})
    assert create(api, body(docId="999"))["error_Msg"] == rules.MSG_DOCTOR_UNKNOWN
    assert create(api, body(docMobileNo="09990000000"))["error_Msg"] == rules.MSG_DOCTOR_MISMATCH
    assert create(api, body())["error_Code"] == ""


def test_future_date_uses_the_tehran_calendar_by_default(api: httpx.Client) -> None:
    del api.headers["X-Sim-Today"]
    now = dt.datetime.now(zoneinfo.ZoneInfo("Asia/Tehran")).date()
    today = jdatetime.date.fromgregorian(date=now).strftime("%Y%m%d")
    tomorrow = jdatetime.date.fromgregorian(date=now + dt.timedelta(days=1)).strftime("%Y%m%d")
    assert create(api, body(prescDate=tomorrow))["error_Msg"] == rules.MSG_DATE_FUTURE
    assert create(api, body(prescDate=today))["error_Code"] == ""


def test_today_override_setting(api: httpx.Client) -> None:
    del api.headers["X-Sim-Today"]
    faults(api, today_override="14020101")
    assert create(api, body())["error_Msg"] == rules.MSG_DATE_FUTURE
    assert create(api, body(prescDate="14020101"))["error_Code"] == ""


# ----- duplicates ------------------------------------------------------------------------
def test_duplicate_answer_304_with_ids_and_stats(api: httpx.Client) -> None:
    first = create(api, body())
    again = create(api, body())
    assert again["error_Code"] == "304"
    assert again["head_EPRSC_ID"] is None
    match = re.fullmatch(r"نسخه تکراری است\. شناسه (\d+) کد رهگیری (\d+)", again["error_Msg"])
    assert match is not None, again["error_Msg"]
    assert (int(match[1]), int(match[2])) == (first["head_EPRSC_ID"], first["trackingCode"])
    # items in another order are the same prescription
    two = [drug_item("1", 1), drug_item("2", 2)]
    create(api, body(items=two))
    assert create(api, body(items=list(reversed(two))))["error_Code"] == "304"
    s = stats(api)
    assert s["prescriptions"] == 2
    assert s["received_submissions"] == 2
    assert s["duplicates"] == 2 and len(s["duplicate_keys"]) == 2
    assert s["duplicate_answers"] == 2 and s["create_calls"] == 4


def test_idempotency_key_counts_resends_exactly(api: httpx.Client) -> None:
    create(api, body(), headers={"X-Idempotency-Key": "sub-1"})
    assert stats(api)["duplicates"] == 0
    assert create(api, body(), headers={"X-Idempotency-Key": "sub-1"})["error_Code"] == "304"
    # a different submission with the same content: Tamin says 304, but it is not a resend
    assert create(api, body(), headers={"X-Idempotency-Key": "sub-2"})["error_Code"] == "304"
    s = stats(api)
    assert (s["duplicates"], s["duplicate_keys"], s["received_submissions"]) == (1, ["sub-1"], 2)


def test_a_resend_of_a_refused_create_is_counted_apart_from_duplicates(api: httpx.Client) -> None:
    """Refused (nothing registered), then sent again with the same key -- what a lookup then a resend
    after a lost answer does: not a duplicate. Once a receipt of the key was not refused, the
    next one is."""
    faults(api, unknown_patients=[PATIENT])
    for _ in range(2):
        assert create(api, body(), headers={"X-Idempotency-Key": "sub-1"})["error_Code"] != ""
    s = stats(api)
    assert (s["duplicates"], s["resent_after_refusal"], s["prescriptions"]) == (0, 1, 0)
    faults(api, unknown_patients=[])
    assert create(api, body(), headers={"X-Idempotency-Key": "sub-1"})["error_Code"] == ""  # registered now
    assert (stats(api)["duplicates"], stats(api)["resent_after_refusal"]) == (0, 2)
    assert create(api, body(), headers={"X-Idempotency-Key": "sub-1"})["error_Code"] == "304"
    s = stats(api)
    assert (s["duplicates"], s["duplicate_keys"], s["resent_after_refusal"]) == (1, ["sub-1"], 2)


# ----- edit / delete / lookup --------------------------------------------------------------
def test_edit_once_then_refused(api: httpx.Client) -> None:
    head = create(api, body())["head_EPRSC_ID"]
    url = f"/api/v2/ep/update/{head}/{DOC_NC}/{DOC_ID}"
    ok = api.post(url, json=[drug_item("20002", 5)]).json()
    assert ok["status"] == 200 and ok["data"]["statusCode"] == "200"
    detail = api.get(f"/api/v2/ep/{head}/{DOC_NC}/{DOC_ID}/detail").json()["data"]
    assert [(r["srvId"]["srvCode"], r["srvQty"]) for r in detail] == [("20002", 5)]
    again = api.post(url, json=[drug_item("20003")]).json()["data"]
    assert (again["statusCode"], again["error_Code"], again["error_Msg"]) == ("400", "409", rules.MSG_EDIT_TWICE)
    assert stats(api)["edits"] == 1


def test_edit_refused_after_dispensing_for_visits_and_bad_items(api: httpx.Client) -> None:
    head = create(api, body())["head_EPRSC_ID"]
    bad = api.post(f"/api/v2/ep/update/{head}/{DOC_NC}/{DOC_ID}", json=[lab_item()]).json()["data"]
    assert (bad["statusCode"], bad["error_Msg"]) == ("400", rules.MSG_ONLY_DRUGS)
    assert api.post(f"/_sim/dispense/{head}").status_code == 200
    detail = api.get(f"/api/v2/ep/{head}/{DOC_NC}/{DOC_ID}/detail").json()["data"]
    assert detail[0]["isOk"] == "1"
    refused = api.post(f"/api/v2/ep/update/{head}/{DOC_NC}/{DOC_ID}", json=[drug_item()]).json()["data"]
    assert (refused["error_Code"], refused["error_Msg"]) == ("409", rules.MSG_EDIT_DISPENSED)
    visit = create(api, body(presc_type=3, items=[]))["head_EPRSC_ID"]
    refused = api.post(f"/api/v2/ep/update/{visit}/{DOC_NC}/{DOC_ID}", json=[]).json()["data"]
    assert (refused["error_Code"], refused["error_Msg"]) == ("409", rules.MSG_EDIT_TYPE)


def test_delete_same_day_then_gone(api: httpx.Client) -> None:
    first = create(api, body())
    head = first["head_EPRSC_ID"]
    resp = api.post(f"/api/v2/ep/{head}/{DOC_NC}/{DOC_ID}")
    assert resp.json()["status"] == 200 and resp.json()["data"]["statusCode"] == "200"
    detail = api.get(f"/api/v2/ep/{head}/{DOC_NC}/{DOC_ID}/detail").json()
    assert detail["data"] == {"error_Msg": "نسخه یافت نشد"}
    found = api.get("/api/v2/ep/lookup", params={"patient": PATIENT, "trackingCode": first["trackingCode"]})
    assert [h["status"] for h in found.json()["data"]["list"]] == ["deleted"]
    # a deleted prescription is no longer a duplicate
    assert create(api, body())["error_Code"] == ""
    assert stats(api)["deletes"] == 1


def test_delete_on_another_day_is_refused(api: httpx.Client) -> None:
    head = create(api, body())["head_EPRSC_ID"]
    resp = api.post(f"/api/v2/ep/{head}/{DOC_NC}/{DOC_ID}", headers={"X-Sim-Today": "14030513"})
    data = resp.json()["data"]
    assert (data["statusCode"], data["error_Code"], data["error_Msg"]) == ("400", "410", rules.MSG_DELETE_DAY)
    assert stats(api)["active_prescriptions"] == 1


def test_other_doctor_cannot_see_or_delete(api: httpx.Client) -> None:
    head = create(api, body())["head_EPRSC_ID"]
    assert api.get(f"/api/v2/ep/{head}/{DOC_NC}/111/detail").json()["data"] == {"error_Msg": rules.MSG_NOT_FOUND}
    data = api.post(f"/api/v2/ep/{head}/{DOC_NC}/111").json()["data"]
    assert (data["statusCode"], data["error_Code"]) == ("400", "404")


def test_lookup_by_tracking_code_and_by_day(api: httpx.Client) -> None:
    a = create(api, body())
    b = create(api, body(presc_type=2, items=[lab_item()]))
    create(api, body(patient=OTHER_PATIENT))
    by_code = api.get("/api/v2/ep/lookup", params={"patient": PATIENT, "trackingCode": b["trackingCode"]}).json()
    [head] = by_code["data"]["list"]
    assert head == {
        "head_EPRSC_ID": b["head_EPRSC_ID"],
        "trackingCode": b["trackingCode"],
        "prescDate": TODAY,
        "prescTypeId": 2,
        "docId": DOC_ID,
        "items": [{"srvCode": "800001", "srvQty": 1}],
        "status": "active",
        "edited": False,
    }
    wrong_patient = {"patient": OTHER_PATIENT, "trackingCode": b["trackingCode"]}
    assert api.get("/api/v2/ep/lookup", params=wrong_patient).json()["data"]["list"] == []
    day = api.get("/api/v2/ep/lookup", params={"patient": PATIENT, "docId": DOC_ID, "prescDate": TODAY}).json()
    assert sorted(h["head_EPRSC_ID"] for h in day["data"]["list"]) == sorted([a["head_EPRSC_ID"], b["head_EPRSC_ID"]])
    assert api.get("/api/v2/ep/lookup", params={"patient": PATIENT}).status_code == 400


# ----- eligibility -------------------------------------------------------------------------
def test_eligibility_known_unknown_expired(api: httpx.Client) -> None:
    faults(api, unknown_patients=[OTHER_PATIENT], expired_patients=["0000000000"])
    known = api.get(f"/api/v2/patients/deserve-info/{DOC_NC}/{DOC_ID}/{DOC_ID}/{PATIENT}").json()
    assert known["status"] == 200 and known["data"]["hasDeserve"] is True and known["data"]["hid"]
    unknown = api.get(f"/api/v2/patients/deserve-info/{DOC_NC}/{DOC_ID}/{DOC_ID}/{OTHER_PATIENT}").json()
    assert unknown["data"]["hasDeserve"] is False and unknown["data"]["hid"] is None
    assert unknown["data"]["errMsg"] == "کد ملی در پایگاه هویتی بیمه شدگان سازمان تامین وجود ندارد"
    invalid = api.get(f"/api/v2/patients/deserve-info/{DOC_NC}/{DOC_ID}/{DOC_ID}/123").json()
    assert invalid["data"]["hasDeserve"] is False
    assert stats(api)["eligibility_checks"] == 3


# ----- production spellings ----------------------------------------------------------------
def test_production_paths(api: httpx.Client) -> None:
    base = "/interface/epresc"
    created = create(api, body(), path=f"{base}/SendEpresc/v2")
    head = created["head_EPRSC_ID"]
    assert create(api, body(), path=f"{base}/SendEpresc/v2")["error_Code"] == "304"
    detail = api.get(f"{base}/SendEpresc/v2/{head}/{DOC_ID}").json()
    assert detail["data"][0]["srvId"]["srvCode"] == "10001"
    edited = api.post(f"{base}/SendEpresc/v2/edit/{head}/{DOC_ID}", json=[drug_item("3", 1)]).json()
    assert edited["data"]["statusCode"] == "200"
    found = api.get(f"{base}/lookup", params={"patient": PATIENT, "trackingCode": created["trackingCode"]}).json()
    assert found["data"]["list"][0]["edited"] is True
    removed = api.post(f"{base}/SendEpresc/v2/remove/{head}/{DOC_ID}").json()
    assert removed["data"]["statusCode"] == "200"
    eligible = api.get(f"{base}/patient/v2/deserve-info/{DOC_ID}/{DOC_ID}/{PATIENT}").json()
    assert eligible["data"]["hasDeserve"] is True
    assert stats(api)["requests"] == {"token": 1, "create": 2, "detail": 1, "edit": 1, "lookup": 1, "delete": 1,
                                      "eligibility": 1}


# ----- faults ------------------------------------------------------------------------------
def test_fail_next_is_not_applied_and_carries_retry_after(api: httpx.Client) -> None:
    faults(api, fail_next=2, fail_status=503, retry_after_s=7)
    for _ in range(2):
        resp = api.post(CREATE, json=body())
        assert resp.status_code == 503 and resp.headers["Retry-After"] == "7"
        assert resp.json()["status"] == 503
    assert stats(api)["prescriptions"] == 0
    assert create(api, body())["error_Code"] == ""
    assert stats(api)["responses"] == {"token 200": 1, "create 503": 2, "create 200": 1}


def test_429_and_html_gateway_page(api: httpx.Client) -> None:
    faults(api, fail_next=1, fail_status=429, retry_after_s=2, fail_body="html")
    resp = api.post(CREATE, json=body())
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "2"
    assert resp.headers["content-type"].startswith("text/html")


def test_fail_next_can_target_the_token_endpoint(http: httpx.Client) -> None:
    faults(http, fail_next=1, fail_status=500, fail_endpoints=["token"])
    form = {"grant_type": "client_credentials", "client_id": "adapter-test", "client_secret": "adapter-test-secret"}
    assert http.post("/auth/server/token", data=form).status_code == 500
    assert http.post("/auth/server/token", data=form).status_code == 200


def test_drop_response_after_apply(api: httpx.Client) -> None:
    faults(api, drop_response_after_apply=1)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.post(CREATE, json=body(), headers={"X-Idempotency-Key": "k1"})
    # it was applied: found by lookup, and the resend is answered 304 and counted
    day = api.get("/api/v2/ep/lookup", params={"patient": PATIENT, "docId": DOC_ID, "prescDate": TODAY}).json()
    [head] = day["data"]["list"]
    again = create(api, body(), headers={"X-Idempotency-Key": "k1"})
    assert again["error_Code"] == "304" and str(head["head_EPRSC_ID"]) in again["error_Msg"]
    s = stats(api)
    assert (s["prescriptions"], s["duplicates"], s["duplicate_keys"]) == (1, 1, ["k1"])
    assert s["responses"]["create 0"] == 1


def test_close_without_answer_is_not_applied(api: httpx.Client) -> None:
    faults(api, fail_next=1, fail_status=0)
    # a closed connection reads as "server disconnected" or, on a busy machine, "connection reset"
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.post(CREATE, json=body())
    assert stats(api)["prescriptions"] == 0


def test_latency_and_hang(api: httpx.Client) -> None:
    faults(api, latency_ms=150)
    started = time.monotonic()
    create(api, body())
    assert time.monotonic() - started >= 0.15
    faults(api, latency_ms=0, hang_next=1, hang_s=0.5)
    with pytest.raises(httpx.ReadTimeout):
        api.post(CREATE, json=body(patient=OTHER_PATIENT), timeout=0.2)
    deadline = time.monotonic() + 3
    while stats(api)["prescriptions"] < 2 and time.monotonic() < deadline:  # applied after the hang
        time.sleep(0.05)
    assert stats(api)["prescriptions"] == 2


def test_downtime_window_and_token_revocation(api: httpx.Client) -> None:
    faults(api, down_for_s=0.3)
    resp = api.post(CREATE, json=body())
    assert resp.status_code == 503 and "Retry-After" in resp.headers
    time.sleep(0.35)
    assert create(api, body())["error_Code"] == ""
    faults(api, revoke_tokens=True)
    assert api.post(CREATE, json=body()).status_code == 401


def test_faults_endpoint_validates_and_reset_restores(http: httpx.Client) -> None:
    assert http.post("/_sim/faults", json={"no_such_knob": 1}).status_code == 400
    assert http.post("/_sim/faults", json={"fail_next": "many"}).status_code == 400
    faults(http, latency_ms=5)
    assert http.get("/_sim/faults").json()["latency_ms"] == 5
    assert http.post("/_sim/reset").status_code == 200
    assert http.get("/_sim/faults").json()["latency_ms"] == 0


def test_unknown_path_is_json_404_and_recorded(api: httpx.Client) -> None:
    resp = api.post("/api/v2/NoSuch")
    assert resp.status_code == 404 and resp.json()["status"] == 404
    assert stats(api)["requests"]["unknown"] == 1


def test_concurrent_creates_get_unique_ids(server: SimServer, api: httpx.Client) -> None:
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def send(i: int) -> None:
        with httpx.Client(base_url=server.base_url, headers=dict(api.headers), timeout=5) as client:
            result = create(client, body(items=[drug_item(str(1000 + i))]))
            with lock:
                results.append(result)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r["head_EPRSC_ID"] for r in results}) == 16
    assert len({r["trackingCode"] for r in results}) == 16
    assert server.app.state.registry.stats()["prescriptions"] == 16


def test_sim_server_picks_a_free_port_and_stops() -> None:
    srv = SimServer(create_tamin_app()).start()
    try:
        assert srv.port > 0 and srv.base_url == f"http://127.0.0.1:{srv.port}"
        assert httpx.get(f"{srv.base_url}/_sim/stats").status_code == 200
    finally:
        srv.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{srv.base_url}/_sim/stats", timeout=1)
