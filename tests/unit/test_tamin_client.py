"""Reading Tamin's answers, Retry-After, and TaminClient against the simulator over HTTP.

Create bodies come from the real mapping applied to the sample events, so the client is
exercised with exactly what the pipeline would send.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapter.config import AuthConfig, TaminConfig
from adapter.destinations.tamin import answers as tamin_answers
from adapter.destinations.auth import ClientCredentialsProvider, TokenCache
from adapter.destinations.classify import class_of_status, retry_after_seconds
from adapter.destinations.outcome import OutcomeClass
from adapter.destinations.http import Exchange
from adapter.destinations.tamin.client import TaminCall, TaminClient, endpoint
from adapter.events.parse import parse_event
from adapter.mapping import load_mappings
from adapter.samples.generate import generate
from adapter.sim import tamin_rules as rules
from adapter.sim.server import SimServer
from adapter.sim.settings import TaminSimSettings
from adapter.sim.tamin_app import create_tamin_app

REPO = Path(__file__).resolve().parents[2]
FACILITY = "1234567"


# ===== tamin_answers: pure readers =========================================================
def envelope(result: dict[str, Any]) -> dict[str, Any]:
    return {"status": 200, "family": "SUCCESSFUL", "reason": "OK", "data": {"result": result}}


def create_result(**fields: Any) -> dict[str, Any]:
    base = {"head_EPRSC_ID": None, "trackingCode": None, "error_Code": "", "error_Msg": "", "complemantary_Msg": ""}
    return {**base, **fields}


def test_read_create_success() -> None:
    outcome = tamin_answers.read_create(envelope(create_result(head_EPRSC_ID=50000001, trackingCode=456789)))
    assert outcome.klass is OutcomeClass.accepted
    assert outcome.result == {"head_id": "50000001", "tracking_code": "456789"}


def test_read_create_success_flat_result() -> None:
    outcome = tamin_answers.read_create({"result": create_result(head_EPRSC_ID=7, trackingCode=8)})
    assert (outcome.klass, outcome.result) == (OutcomeClass.accepted, {"head_id": "7", "tracking_code": "8"})


@pytest.mark.parametrize("message, ids", [
    ("نسخه تکراری است. شناسه 50000001 کد رهگیری 456789", ("50000001", "456789")),
    ("نسخه تکراری است. شناسه ۵۰۰۰۰۰۰۲ کد رهگیری ۱۲۳۴۵۶", ("50000002", "123456")),  # Persian digits
    ("نسخه تکراری است. شناسه ٥٠٠٠٠٠٠٣ کد رهگیری ٦٥٤٣٢١", ("50000003", "654321")),  # Arabic-Indic digits
    ("نسخه تکراری است. شناسه نسخه: ۴۲ کد\u200cرهگیری: ۹۹۹۹۹۹", ("42", "999999")),  # label variant, ZWNJ
    (rules.msg_duplicate(50000004, 777777), ("50000004", "777777")),  # the simulator's own text
])
def test_read_create_304_takes_the_existing_ids(message: str, ids: tuple[str, str]) -> None:
    outcome = tamin_answers.read_create(envelope(create_result(error_Code="304", error_Msg=message)))
    assert outcome.klass is OutcomeClass.accepted
    assert (outcome.result["head_id"], outcome.result["tracking_code"]) == ids
    assert outcome.result["duplicate_answer"] is True


@pytest.mark.parametrize("message", ["نسخه تکراری است", "نسخه تکراری است. شناسه ۱۲۳", "نسخه تکراری است. کد رهگیری ۴۵۶"])
def test_read_create_304_without_ids_is_rejected(message: str) -> None:
    outcome = tamin_answers.read_create(envelope(create_result(error_Code="304", error_Msg=message)))
    assert outcome.klass is OutcomeClass.rejected
    assert "304" in outcome.message
    assert "head_id" not in outcome.result


def test_read_create_304_as_a_number() -> None:
    outcome = tamin_answers.read_create(envelope(create_result(error_Code=304, error_Msg=rules.msg_duplicate(5, 6))))
    assert (outcome.klass, outcome.result["head_id"], outcome.result["tracking_code"]) == (OutcomeClass.accepted, "5", "6")


def test_read_create_business_error_is_rejected_with_code_and_redacted_message() -> None:
    message = "کد ملی بیمار 0012345679 معتبر نمی باشد"
    outcome = tamin_answers.read_create(envelope(create_result(error_Code="400", error_Msg=message,
                                                               complemantary_Msg="با ۰۹۱۲۱۲۳۴۵۶۷ تماس بگیرید")))
    assert outcome.klass is OutcomeClass.rejected
    assert outcome.result["error_code"] == "400"
    assert "0012345679" not in outcome.result["error_message"] and "معتبر نمی باشد" in outcome.result["error_message"]
    assert "کد ملی بیمار" in outcome.message and "400" in outcome.message
    assert "0012345679" not in outcome.message
    assert "09121234567" not in outcome.message and "۰۹۱۲۱۲۳۴۵۶۷" not in outcome.message


def test_read_create_without_ids_or_code_is_rejected() -> None:
    assert tamin_answers.read_create(envelope(create_result())).klass is OutcomeClass.rejected
    assert tamin_answers.read_create({"status": 200, "data": None}).klass is OutcomeClass.rejected
    half = tamin_answers.read_create(envelope(create_result(head_EPRSC_ID=1)))  # no tracking code
    assert half.klass is OutcomeClass.rejected


def test_read_create_problems_list_is_shown() -> None:
    answer = {"status": 200, "data": {"problems": [{"error_Msg": "تاریخ به درستی وارد نشده است"}]}}
    outcome = tamin_answers.read_create(answer)
    assert outcome.klass is OutcomeClass.rejected
    assert "تاریخ به درستی" in outcome.message


def test_read_change() -> None:
    ok = tamin_answers.read_change({"status": 200, "data": {"statusCode": "200", "error_Code": "", "error_Msg": ""}}, "edit")
    assert (ok.klass, ok.result) == (OutcomeClass.accepted, {"status_code": "200"})
    assert tamin_answers.read_change({"status": 200, "data": {"statusCode": 200}}, "delete").klass is OutcomeClass.accepted
    refused = tamin_answers.read_change(
        {"status": 200, "data": {"statusCode": "400", "error_Code": "410", "error_Msg": rules.MSG_DELETE_DAY}}, "delete")
    assert refused.klass is OutcomeClass.rejected
    assert refused.result == {"error_code": "410", "error_message": rules.MSG_DELETE_DAY}
    assert "delete" in refused.message and rules.MSG_DELETE_DAY in refused.message
    no_code = tamin_answers.read_change({"status": 200, "data": {"statusCode": "400"}}, "edit")
    assert (no_code.klass, no_code.result) == (OutcomeClass.rejected, {"error_code": "400", "error_message": ""})


def test_read_eligibility() -> None:
    ok = tamin_answers.read_eligibility({"status": 200, "data": {"hasDeserve": True, "hid": "HID-1",
                                                                 "insuranceType": "تامین اجتماعی", "errMsg": ""}})
    assert ok.klass is OutcomeClass.accepted
    assert ok.result == {"eligible": True, "hid": "HID-1", "insurance_type": "تامین اجتماعی"}
    no = tamin_answers.read_eligibility({"status": 200, "data": {"hasDeserve": False, "hid": None,
                                                                 "errMsg": rules.MSG_NOT_INSURED}})
    assert (no.klass, no.result) == (OutcomeClass.rejected, {"eligible": False, "error_message": rules.MSG_NOT_INSURED})
    assert rules.MSG_NOT_INSURED in no.message
    assert tamin_answers.read_eligibility({"status": 200, "data": {}}).klass is OutcomeClass.rejected


# ===== classify ===========================================================================
def test_retry_after_seconds_delta() -> None:
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds(" 7 ") == 7.0
    assert retry_after_seconds("0") == 0.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("") is None
    assert retry_after_seconds("soon") is None


def test_retry_after_seconds_http_date() -> None:
    future = email.utils.format_datetime(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=90), usegmt=True)
    assert 85 <= retry_after_seconds(future) <= 91  # type: ignore[operator]
    past = email.utils.formatdate(time.time() - 3600, usegmt=True)
    assert retry_after_seconds(past) == 0.0


@pytest.mark.parametrize("status, klass", [
    (401, OutcomeClass.auth), (429, OutcomeClass.transient), (503, OutcomeClass.transient),
    (500, OutcomeClass.transient), (408, OutcomeClass.transient), (404, OutcomeClass.rejected),
    (400, OutcomeClass.rejected), (200, None),
])
def test_class_of_status(status: int, klass: OutcomeClass | None) -> None:
    assert class_of_status(status) is klass


# ===== TaminClient against the simulator ====================================================
@pytest.fixture(scope="module")
def sample_events() -> list[dict[str, Any]]:
    sample = generate(dt.datetime.now(dt.timezone.utc), patients=12)
    events = []
    for line in sample.lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if str(event.get("event_id", "")).startswith("evt-"):
            events.append(parse_event(line).model_dump(mode="json"))
    return events


@pytest.fixture(scope="module")
def mappings() -> Any:
    return load_mappings(REPO / "mappings", ["tamin"])


def mapped(mappings: Any, event: dict[str, Any]) -> Any:
    [mapping] = mappings.for_event(event["event_type"], "tamin")
    return mapping.apply(event)


def creates(sample_events: list[dict[str, Any]], kind: str | None = None) -> list[dict[str, Any]]:
    return [e for e in sample_events if e["event_type"] == "prescription.created"
            and (kind is None or e["payload"]["kind"] == kind)]


def create_call(mappings: Any, event: dict[str, Any]) -> TaminCall:
    m = mapped(mappings, event)
    return TaminCall("create", m.params, m.body, FACILITY, str(uuid.uuid4()))


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(create_tamin_app(TaminSimSettings())) as server:
        yield server


@pytest.fixture
def registry(sim: SimServer) -> Any:
    sim.app.state.registry.reset()
    return sim.app.state.registry


@pytest.fixture
def client(sim: SimServer, registry: Any) -> Iterator[TaminClient]:
    config = TaminConfig(base_url=sim.base_url, auth=AuthConfig(client_id="adapter-test",
                                                                client_secret="adapter-test-secret"))
    with httpx.Client(timeout=httpx.Timeout(5.0)) as http:
        provider = ClientCredentialsProvider(http, sim.base_url + config.auth.token_path, "adapter-test",
                                             "adapter-test-secret")
        yield TaminClient(config, Exchange(http, endpoint(config), TokenCache(provider, leeway_s=60)))


def creates_at_sim(registry: Any) -> int:
    return registry.stats()["requests"].get("create", 0)


def test_create_accepted_with_head_id_and_tracking_code(client: TaminClient, registry: Any, sample_events, mappings) -> None:
    event = creates(sample_events, "drug")[0]
    call = create_call(mappings, event)
    outcome = client.call(call)
    assert outcome.klass is OutcomeClass.accepted, outcome.message
    [registered] = registry.prescriptions()
    assert outcome.result == {"head_id": str(registered["head_EPRSC_ID"]),
                              "tracking_code": str(registered["trackingCode"])}
    assert registered["patient"] == call.body["patient"]
    assert outcome.request["operation"] == "create" and outcome.request["method"] == "POST"
    assert outcome.request["token_refreshed"] is False
    assert outcome.response["head_id"] == outcome.result["head_id"]
    dumped = json.dumps([outcome.request, outcome.response, outcome.message], ensure_ascii=False)
    assert call.body["patient"] not in dumped and call.body["mobile"] not in dumped  # PHI-free attempt log
    assert registry.stats()["received_submissions"] == 1


def test_every_kind_of_sample_prescription_is_accepted(client: TaminClient, registry: Any, sample_events, mappings) -> None:
    kinds = {}
    for event in creates(sample_events):
        outcome = client.call(create_call(mappings, event))
        assert outcome.klass is OutcomeClass.accepted, (event["payload"]["kind"], outcome.message)
        kinds[event["payload"]["kind"]] = outcome.result["head_id"]
    assert set(kinds) == {"drug", "paraclinic", "visit", "service"}
    assert registry.stats()["rejections"] == 0


def test_same_create_twice_gets_the_304_ids(client: TaminClient, registry: Any, sample_events, mappings) -> None:
    call = create_call(mappings, creates(sample_events, "paraclinic")[0])
    first = client.call(call)
    again = client.call(TaminCall("create", call.params, call.body, FACILITY, str(uuid.uuid4())))
    assert again.klass is OutcomeClass.accepted
    assert again.result["duplicate_answer"] is True
    assert (again.result["head_id"], again.result["tracking_code"]) == (first.result["head_id"], first.result["tracking_code"])
    assert registry.stats()["prescriptions"] == 1


def test_business_rejection_carries_the_persian_message_without_the_national_code(
        client: TaminClient, registry: Any, sample_events, mappings) -> None:
    event = creates(sample_events, "drug")[0]
    patient = event["payload"]["patient"]["identity"]["value"]
    registry.update_settings({"unknown_patients": {patient}})
    outcome = client.call(create_call(mappings, event))
    assert outcome.klass is OutcomeClass.rejected
    assert rules.MSG_NOT_INSURED in outcome.message
    assert outcome.result.get("error_code")
    dumped = json.dumps([outcome.message, outcome.request, outcome.response, outcome.result], ensure_ascii=False)
    assert patient not in dumped
    assert registry.stats()["prescriptions"] == 0


def test_401_once_refreshes_the_token_and_succeeds_in_one_call(
        client: TaminClient, registry: Any, sample_events, mappings) -> None:
    warm = client.call(create_call(mappings, creates(sample_events, "drug")[0]))
    assert warm.klass is OutcomeClass.accepted
    registry.revoke_access_tokens()  # as the `revoke_tokens: true` fault does
    outcome = client.call(create_call(mappings, creates(sample_events, "drug")[1]))
    assert outcome.klass is OutcomeClass.accepted, outcome.message
    assert outcome.request["token_refreshed"] is True
    stats = registry.stats()
    assert stats["tokens_issued"] == 2
    assert stats["responses"].get("create 401") == 1 and stats["responses"].get("create 200") == 2
    assert stats["prescriptions"] == 2 and stats["duplicates"] == 0


def test_401_even_with_a_fresh_token_is_auth(client: TaminClient, registry: Any, sample_events, mappings) -> None:
    """Tokens the API refuses at once (here: issued already expired): auth, after exactly one refresh."""
    registry.update_settings({"token_ttl_s": 0})
    outcome = client.call(create_call(mappings, creates(sample_events)[0]))
    assert outcome.klass is OutcomeClass.auth
    assert outcome.request["token_refreshed"] is True
    stats = registry.stats()
    assert stats["tokens_issued"] == 2
    assert stats["responses"].get("create 401") == 2
    assert stats["prescriptions"] == 0


# Status classes, Retry-After and gateway pages: once, for every client, in test_http_exchange.py.


def test_unreadable_200_answer_to_a_post_is_ambiguous_not_a_blind_retry(
        client: TaminClient, registry: Any, sample_events, mappings) -> None:
    call = create_call(mappings, creates(sample_events)[0])
    registry.update_settings({"fail_next": 1, "fail_status": 200, "fail_body": "html"})
    outcome = client.call(call)
    assert outcome.klass is OutcomeClass.ambiguous, outcome.message
    assert client.lookup(call, {}).klass is OutcomeClass.not_found  # this page was a proxy's: nothing applied


def test_dropped_answer_after_apply_is_ambiguous_then_lookup_finds_it(
        client: TaminClient, registry: Any, sample_events, mappings) -> None:
    call = create_call(mappings, creates(sample_events, "drug")[0])
    registry.update_settings({"drop_response_after_apply": 1})
    outcome = client.call(call)
    assert outcome.klass is OutcomeClass.ambiguous, outcome.message
    [registered] = registry.prescriptions()

    found = client.lookup(call, {})
    assert found.klass is OutcomeClass.accepted, found.message
    assert found.result["head_id"] == str(registered["head_EPRSC_ID"])
    assert found.result["tracking_code"] == str(registered["trackingCode"])
    assert found.result["found_by_lookup"] is True
    assert creates_at_sim(registry) == 1
    assert registry.stats()["duplicates"] == 0


def test_lookup_tells_apart_two_prescriptions_of_one_patient_and_day(
        client: TaminClient, registry: Any, sample_events, mappings) -> None:
    event = creates(sample_events, "drug")[0]
    other = json.loads(json.dumps(event))
    other["payload"]["items"] = [{"code": "D-PARA-500", "quantity": 3, "dose": "TID", "instruction": "AFTER_MEAL"}]
    if [i["code"] for i in event["payload"]["items"]] == ["D-PARA-500"]:
        other["payload"]["items"][0]["quantity"] = event["payload"]["items"][0]["quantity"] + 1
    sent_other = client.call(create_call(mappings, other))
    assert sent_other.klass is OutcomeClass.accepted
    call = create_call(mappings, event)
    registry.update_settings({"drop_response_after_apply": 1})
    assert client.call(call).klass is OutcomeClass.ambiguous
    found = client.lookup(call, {})
    assert found.klass is OutcomeClass.accepted
    assert found.result["head_id"] != sent_other.result["head_id"]
    assert int(found.result["head_id"]) in {p["head_EPRSC_ID"] for p in registry.prescriptions()}


def test_lookup_of_something_never_sent_is_not_found(client: TaminClient, registry: Any, sample_events, mappings) -> None:
    found = client.lookup(create_call(mappings, creates(sample_events, "drug")[0]), {})
    assert found.klass is OutcomeClass.not_found
    assert creates_at_sim(registry) == 0


def test_lookup_of_a_rejected_create_is_not_found(client: TaminClient, registry: Any, sample_events, mappings) -> None:
    event = creates(sample_events, "drug")[0]
    registry.update_settings({"expired_patients": {event["payload"]["patient"]["identity"]["value"]}})
    call = create_call(mappings, event)
    assert client.call(call).klass is OutcomeClass.rejected
    assert client.lookup(call, {}).klass is OutcomeClass.not_found


def _update_event(sample_events: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    update = next(e for e in sample_events if e["event_type"] == "prescription.updated")
    rx = update["payload"]["prescription_id"]
    create = next(e for e in creates(sample_events) if e["payload"]["prescription_id"] == rx)
    return create, update


def test_edit_with_dropped_answer_is_found_by_lookup(client: TaminClient, registry: Any, sample_events, mappings) -> None:
    create_event, update_event = _update_event(sample_events)
    created = client.call(create_call(mappings, create_event))
    assert created.klass is OutcomeClass.accepted
    m = mapped(mappings, update_event)
    edit = TaminCall("update", {**m.params, "head_id": created.result["head_id"]}, m.body, FACILITY, str(uuid.uuid4()))
    known = {**created.result, "patient": create_event["payload"]["patient"]["identity"]["value"]}

    assert client.lookup(edit, known).klass is OutcomeClass.not_found  # not edited yet
    registry.update_settings({"drop_response_after_apply": 1, "drop_endpoints": {"edit"}})
    assert client.call(edit).klass is OutcomeClass.ambiguous
    found = client.lookup(edit, known)
    assert found.klass is OutcomeClass.accepted, found.message
    assert found.result["head_id"] == created.result["head_id"]
    assert registry.stats()["edits"] == 1
    again = client.call(edit)  # what a blind resend would have got: refused, second edit
    assert again.klass is OutcomeClass.rejected and "409" in again.message


def test_edit_and_delete_accepted(client: TaminClient, registry: Any, sample_events, mappings) -> None:
    create_event, update_event = _update_event(sample_events)
    created = client.call(create_call(mappings, create_event))
    m = mapped(mappings, update_event)
    params = {**m.params, "head_id": created.result["head_id"]}
    edited = client.call(TaminCall("update", params, m.body, FACILITY, str(uuid.uuid4())))
    assert (edited.klass, edited.result) == (OutcomeClass.accepted, {"status_code": "200"})
    deleted = client.call(TaminCall("cancel", params, None, FACILITY, str(uuid.uuid4())))
    assert deleted.klass is OutcomeClass.accepted
    assert registry.prescriptions()[0]["status"] == "deleted"


def test_eligibility(client: TaminClient, registry: Any, sample_events, mappings) -> None:
    visit = next(e for e in sample_events if e["event_type"] == "visit.admitted")
    m = mapped(mappings, visit)
    ok = client.call(TaminCall("eligibility", m.params, None, FACILITY, str(uuid.uuid4())))
    assert ok.klass is OutcomeClass.accepted and ok.result["eligible"] is True and ok.result["hid"]
    registry.update_settings({"unknown_patients": {visit["payload"]["patient"]["identity"]["value"]}})
    no = client.call(TaminCall("eligibility", m.params, None, FACILITY, str(uuid.uuid4())))
    assert no.klass is OutcomeClass.rejected and no.result["eligible"] is False
    assert visit["payload"]["patient"]["identity"]["value"] not in no.result["error_message"]
    assert visit["payload"]["patient"]["identity"]["value"] not in no.message


def test_connection_refused_is_transient(sim: SimServer, registry: Any, sample_events, mappings) -> None:
    config = TaminConfig(base_url="http://127.0.0.1:9", auth=AuthConfig(client_id="adapter-test"))
    with httpx.Client(timeout=2.0) as http:
        provider = ClientCredentialsProvider(http, sim.base_url + "/auth/server/token", "adapter-test",
                                             "adapter-test-secret")
        outcome = TaminClient(config, Exchange(http, endpoint(config), TokenCache(provider))).call(create_call(mappings, creates(sample_events)[0]))
    assert outcome.klass is OutcomeClass.transient
    assert registry.stats()["tokens_issued"] == 1
