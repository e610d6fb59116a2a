"""Dispensing / paraclinic client pieces: the acl/authenticate token provider (per facility,
refresh, 401), the answer readers (problems[]), and the golden mapping cases."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapter.config import TaminPharmacyConfig
from adapter.destinations.auth import AclAuthenticateProvider, Operator, TokenCache, TokenError
from adapter.destinations.outcome import OutcomeClass
from adapter.destinations.http import Exchange
from adapter.destinations.tamin_provider.client import ProviderClient, endpoint
from adapter.destinations.tamin_provider.answers import Fetched, problems_message, read_fetch, read_submit
from adapter.events.parse import parse_event
from adapter.mapping import load_mappings

REPO = Path(__file__).resolve().parents[2]
OPERATORS = {"111": Operator("op-one", "pw-one-secret"), "222": Operator("op-two", "pw-two-secret")}


class FakeTamin:
    """acl/authenticate and one API call, with a counter per operator and scriptable 401s."""

    def __init__(self, answer: dict[str, Any] | None = None, ttl: float = 3600):
        self.logins: list[str] = []
        self.refuse_tokens: set[str] = set()
        self.seen_auth: list[str] = []
        self.answer, self.ttl = answer, ttl

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/acl/authenticate":
            body = json.loads(request.content)
            assert body["SoftwareClientID"] == "sw" and body["SoftwareClientSecret"] == "sw-secret"
            self.logins.append(body["username"])
            token = f"{body['username']}-{len(self.logins)}"
            return httpx.Response(200, json=self.answer or {"access_token": token, "expires_in": self.ttl})
        self.seen_auth.append(request.headers["authorization"])
        token = request.headers["authorization"].split()[-1]
        if token in self.refuse_tokens:
            return httpx.Response(401, json={"status": 401})
        return httpx.Response(200, json={"data": {"hasError": False, "problems": [], "list": []}})


def provider(fake: FakeTamin) -> tuple[AclAuthenticateProvider, httpx.Client]:
    http = httpx.Client(transport=httpx.MockTransport(fake), base_url="http://tamin")
    return AclAuthenticateProvider(http, "http://tamin/api/acl/authenticate", "sw", "sw-secret", OPERATORS), http


def test_one_token_per_facility_operator_reused_until_due() -> None:
    fake = FakeTamin()
    cache = TokenCache(provider(fake)[0], leeway_s=60)
    assert cache.token("111") == cache.token("111") == "op-one-1"
    assert cache.token("222") == "op-two-2"
    assert fake.logins == ["op-one", "op-two"]


def test_refreshed_before_expiry() -> None:
    fake = FakeTamin(ttl=0.2)
    cache = TokenCache(provider(fake)[0], leeway_s=60)
    first = cache.token("111")
    time.sleep(0.15)  # past half the lifetime: due
    assert cache.token("111") != first and fake.logins == ["op-one", "op-one"]


def test_answer_shape_is_read_tolerantly() -> None:
    fake = FakeTamin(answer={"status": 200, "data": {"token": "raw-token"}})
    issued = provider(fake)[0].fetch("111")
    assert issued.access_token == "raw-token"
    assert 3500 < issued.expires_at - time.monotonic() <= 3600  # expires_in absent: 3600


def test_unknown_facility_and_refused_credentials_are_auth_errors() -> None:
    with pytest.raises(TokenError) as missing:
        provider(FakeTamin())[0].fetch("999")
    assert missing.value.klass is OutcomeClass.auth and "999" not in str(missing.value)
    refusing = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(401, json={})))
    with pytest.raises(TokenError) as refused:
        AclAuthenticateProvider(refusing, "http://t/api/acl/authenticate", "sw", "sw-secret", OPERATORS).fetch("111")
    assert refused.value.klass is OutcomeClass.auth and "pw-one-secret" not in str(refused.value)


def config(scheme: str = "Bearer") -> TaminPharmacyConfig:
    return TaminPharmacyConfig.model_validate({
        "base_url": "http://tamin", "provider_ids": {"111": "7001"},
        "auth": {"software_client_id": "sw", "software_client_secret": "sw-secret", "header_scheme": scheme,
                 "operators": {"111": {"username": "op-one", "password": "pw-one-secret"}}}})


def test_a_401_refreshes_once_and_retries_with_the_configured_scheme() -> None:
    fake = FakeTamin()
    tokens, http = provider(fake)
    cfg = config(scheme="")
    client = ProviderClient(cfg, Exchange(http, endpoint(cfg), TokenCache(tokens)))
    values = {"patient": "x", "tracking_code": "1", "provider_id": "7001"}
    assert client.exchange("fetch", values, None, "111", "key").outcome.klass is OutcomeClass.accepted
    fake.refuse_tokens.add("op-one-1")
    outcome = client.exchange("fetch", values, None, "111", "key").outcome
    assert outcome.klass is OutcomeClass.accepted and outcome.request["token_refreshed"] is True
    assert fake.seen_auth == ["op-one-1", "op-one-1", "op-one-2"]  # raw token: header_scheme ""
    assert outcome.request["route"].startswith("/api/Pharmacy/DrugEpresc/GetActivePresc?")  # the template, no PHI


def test_problems_are_joined_with_the_complementary_message_and_masked() -> None:
    answer = {"data": {"hasError": True, "problems": [
        {"error_Code": 9900002, "error_Msg": "خطا در دریافت نسخه", "complemantary_Msg": "بیمار 0012345679 یافت نشد"},
        {"error_Code": 9900100, "error_Msg": "دوم", "complementary_Msg": "سوم"}]}}
    message = problems_message(answer)
    assert message == "9900002: خطا در دریافت نسخه | بیمار ********** یافت نشد; 9900100: دوم | سوم"
    rejected = read_submit(answer, "dispensing")
    assert rejected.klass is OutcomeClass.rejected and "9900002" in rejected.message


def test_fetch_reads_either_familys_spelling() -> None:
    pharmacy = read_fetch({"data": {"hasError": False, "problems": [], "list": [{
        "headeprscid": 5, "trackingCode": 77, "finalDetailsPresc": [{"detailId": 9, "drugCode": "10113590", "remainingCount": 3}],
        "registeredRequests": [{"requestId": 70, "hisRequestId": "DSP-1", "confirmed": True, "requestPrice": 10}]}]}})
    assert isinstance(pharmacy, Fetched) and pharmacy.head_id == "5" and pharmacy.details[0].remaining == 3
    assert pharmacy.ours("DSP-1").prices == {"request_price": 10} and pharmacy.ours("other") is None
    para = read_fetch({"data": {"list": [{"eprsC_ID": 6, "details": [{"detailId": 1, "paR_TAREF_CODE": "801060"}],
                                          "registeredRequests": [{"requestID": 71, "hisRequestId": "LAB-1"}]}]}})
    assert isinstance(para, Fetched) and para.ours("LAB-1").request_id == "71" and not para.ours("LAB-1").confirmed
    empty = read_fetch({"data": {"hasError": False, "list": []}})
    assert not isinstance(empty, Fetched) and empty.klass is OutcomeClass.rejected


GOLDEN = sorted((REPO / "tests" / "golden").glob("tamin_p*/*.event.json"))


def test_every_provider_mapping_has_a_golden_case() -> None:
    shipped = {(p.parent.name, p.stem) for d in ("tamin_pharmacy", "tamin_paraclinic")
               for p in (REPO / "mappings" / d).glob("*.yaml")}
    assert shipped == {(c.parent.name, c.name.split(".")[0]) for c in GOLDEN} == {
        ("tamin_pharmacy", "dispense"), ("tamin_paraclinic", "register"), ("tamin_paraclinic", "confirm")}


@pytest.mark.parametrize("case", GOLDEN, ids=lambda p: f"{p.parent.name}/{p.name.removesuffix('.event.json')}")
def test_golden(case: Path) -> None:
    destination = case.parent.name
    event = parse_event(case.read_bytes()).model_dump(mode="json")
    [mapping] = [m for m in load_mappings(REPO / "mappings", [destination]).for_event(event["event_type"], destination)
                 if m.source_file.stem == case.name.split(".")[0]]
    expected = json.loads(case.with_name(case.name.replace(".event.json", ".expected.json")).read_text("utf-8"))
    assert mapping.apply(event).as_dict() == expected
