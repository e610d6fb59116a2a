"""Issue 16, items 4, 5 and 11: what the store, ``adapter show`` and the logs keep of a patient's
identifiers and of the process's secrets.

* Item 4: a problem stored for an invalid event shows a value's shape only (type, length and, at
  intake, an HMAC under the patient key), never an unkeyed digest that brute force reverses.
* Item 5: ``adapter show`` masks payloads and event bodies by a positive list of keys whose
  values may be shown; every leaf of every shipped mapping's golden payload is checked against it.
* Item 11: every registered secret is masked in text, whatever its length; secrets shorter than
  ``redact.SHORT_SECRET`` characters only as whole tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from adapter import redact
from adapter.app import build
from adapter.destinations.sepas.events import BillClosedEvent
from adapter.events.digits import to_ascii_digits
from adapter.events.parse import EventRejected, parse_event
from adapter.mapping import load_mappings
from adapter.ops.cli import app as cli
from adapter.pipeline.intake import Received
from adapter.redact import MASKED, redact_shown, redact_text, register_secret, shown_key
from adapter.store.models import InboxEvent, StateChange, Submission
from tests.support.pipeline import adapter_config
from tests.support.store import migrated_sessions

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"


# -- helpers -------------------------------------------------------------------------------------

def nodes(value: Any) -> Iterator[Any]:
    """Every node of a JSON tree: containers and leaves."""
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from nodes(item)
    elif isinstance(value, list):
        for item in value:
            yield from nodes(item)


def leaves(value: Any, key: str | None = None, path: str = "$") -> Iterator[tuple[str, str | None, Any]]:
    """(path, key, value) of every leaf; a list's items have the list's key."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, k, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaves(v, key, f"{path}[{i}]")
    else:
        yield path, key, value


def at(tree: Any, path: str) -> Any:
    """The node at a path made by ``leaves``."""
    node = tree
    for part in path[2:].replace("]", "").replace("[", ".").split(".") if path != "$" else []:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def unkeyed_digests(tree: Any) -> set[str]:
    """``sha256(text)[:8]`` of every node as the old ``mask_value`` spelled it (leaf text or JSON)."""
    found = set()
    for node in nodes(tree):
        text = node if isinstance(node, str) else json.dumps(node, ensure_ascii=False, default=str)
        found.add(hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:8])
    return found


_PERSON_KEYS = {"national_code", "first_name", "last_name", "birth_date", "mobile"}
_PAYLOAD_PERSON_KEYS = {"FirstName", "LastName", "NationalCode", "BirthDate", "MobileNumber", "patient", "patientNatCode",
                        "nationalcode", "mobile", "patientMobileNo", "patienT_MOBILE", "docNationalCode", "docMobileNo",
                        "doc_national_code", "request_by", "clientId", "InsuredNumber", "MedicalRecordNumber"}


def identifiers(event: dict[str, Any], *payloads: Any) -> set[str]:
    """National codes, names, birth dates and mobile numbers of the event (patient and clinicians),
    in the spellings the event and the payloads use."""
    found: set[str] = set()
    for node in nodes(event):
        if isinstance(node, dict):
            if node.get("kind") in ("national_code", "mother_national_code", "fida") and isinstance(node.get("value"), str):
                found.add(node["value"])
            found |= {v for k, v in node.items() if k in _PERSON_KEYS | {"insured_number", "medical_record_number"}
                      and isinstance(v, str)}
    for payload in payloads:
        found |= {v for _, k, v in leaves(payload) if k in _PAYLOAD_PERSON_KEYS and isinstance(v, str) and v != "UNKNOWN"}
    found = {to_ascii_digits(v) for v in found if len(v) >= 3}
    mobiles = {"0" + v[-10:] for v in found if v.lstrip("+0").startswith("98") or v.startswith("09")}
    return found | mobiles | {v[-10:] for v in mobiles}


def load_event(raw: bytes) -> dict[str, Any]:
    if json.loads(raw)["event_type"] == "bill.closed":
        return BillClosedEvent.model_validate_json(raw).model_dump(mode="json")
    return parse_event(raw).model_dump(mode="json")


def golden_cases() -> list[tuple[str, Path]]:
    return [(folder.name, case) for folder in sorted(GOLDEN.iterdir()) if (REPO / "mappings" / folder.name).is_dir()
            for case in sorted(folder.glob("*.event.json"))]


CASES = golden_cases()


def show_json(db_url: str, event_id: str, monkeypatch: pytest.MonkeyPatch, *, as_json: bool = True) -> Any:
    monkeypatch.setenv("ADAPTER__DATABASE__URL", db_url)
    shown = CliRunner().invoke(cli, ["show", event_id, *(["--json"] if as_json else [])], env={"COLUMNS": "400"})
    assert shown.exit_code == 0, shown.output
    return json.loads(shown.output) if as_json else shown.output


# -- item 4: problems of an invalid event ----------------------------------------------------------

def _bad_event() -> dict[str, Any]:
    event = json.loads((GOLDEN / "tamin" / "send_epresc.event.json").read_text("utf-8"))
    event["event_id"] = "evt-bad-identifiers"
    patient = event["payload"]["patient"]
    patient["identity"]["value"] = "0087654327"  # wrong check digit
    patient["birth_date"] = "1364/13/40"  # no such month
    patient["mobile"] = "0912123456"  # one digit short
    event["payload"]["prescriber"]["national_code"] = "1234567892"  # wrong check digit
    return event


def test_problems_of_an_invalid_event_hold_no_unkeyed_digest_and_no_value(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    event = _bad_event()
    body = json.dumps(event, ensure_ascii=False).encode()
    db_url = f"sqlite:///{tmp_path / 'adapter.db'}"
    app = build(adapter_config(db_url, "http://127.0.0.1:9/unused", tmp_path))
    try:
        result = app.intake.receive(body)
        assert result.outcome is Received.invalid
        with app.sessions() as session:
            row = session.get(InboxEvent, event["event_id"])
            assert row is not None and row.problems
            problems = json.dumps(row.problems, ensure_ascii=False)
            reasons = " ".join(c.reason or "" for c in session.scalars(
                select(StateChange).where(StateChange.event_id == event["event_id"])))
    finally:
        app.close()
    fields = {p["field"] for p in json.loads(problems)}
    assert {"payload.patient.identity", "payload.patient.birth_date", "payload.patient.mobile",
            "payload.prescriber.national_code"} <= fields, fields
    assert result.reason and reasons
    shown = json.dumps(show_json(db_url, event["event_id"], monkeypatch), ensure_ascii=False)
    digests = unkeyed_digests(event)
    for text in (problems, reasons, result.reason, shown):
        assert "sha256" not in text
        assert not {d for d in digests if d in text}, text
        for value in ("0087654327", "1364/13/40", "0912123456", "1234567892", "Reza", "Moradi"):
            assert value not in text, (value, text)
    assert "hmac:" in problems  # intake has the patient key: equal values can still be told apart


def test_a_problem_value_is_keyed_without_a_key_it_has_no_digest() -> None:
    def values(body: dict[str, Any], key: bytes | None) -> dict[str, str]:
        with pytest.raises(EventRejected) as caught:
            parse_event(json.dumps(body).encode(), value_key=key)
        return {p.field: p.value for p in caught.value.problems}

    event = _bad_event()
    plain = values(event, None)
    assert plain["payload.prescriber.national_code"] == "<str len=10>"  # shape only
    key, other = b"k" * 32, b"o" * 32
    keyed = values(event, key)
    digest = keyed["payload.prescriber.national_code"]
    expected = hmac.new(key, b"1234567892", hashlib.sha256).hexdigest()
    assert digest.startswith("<str len=10 hmac:") and expected[:8] not in digest  # purpose-bound, not a pseudonym
    assert values(event, key)["payload.prescriber.national_code"] == digest  # stable: repeats are recognisable
    assert values(event, other)["payload.prescriber.national_code"] != digest  # keyed
    event["payload"]["prescriber"]["national_code"] = "1234567893"
    assert values(event, key)["payload.prescriber.national_code"] != digest  # another value, another digest


def test_show_drops_the_unkeyed_digest_of_problems_stored_before(sqlite_url: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for session_factory in migrated_sessions(sqlite_url):
        with session_factory() as session:
            session.add(InboxEvent(event_id="evt-old-invalid", event_type="prescription.created", status="invalid",
                                   body='{"event_id": "evt-old-invalid"}',
                                   problems=[{"field": "payload.patient.birth_date", "rule": "no such date",
                                              "value": "<str len=10 sha256:3030e4a8>"}]))
            session.commit()
    [problem] = show_json(sqlite_url, "evt-old-invalid", monkeypatch)["event"]["problems"]
    assert problem == {"field": "payload.patient.birth_date", "rule": "no such date", "value": "<str len=10>"}


# -- item 5: adapter show ---------------------------------------------------------------------------

def test_every_shipped_mapping_has_a_golden_case_here() -> None:
    shipped = {(p.parent.name, p.stem) for p in (REPO / "mappings").glob("*/*.yaml")}
    assert shipped == {(destination, case.name.split(".")[0]) for destination, case in CASES}


@pytest.mark.parametrize("destination, case", CASES, ids=[f"{d}/{c.name.removesuffix('.event.json')}" for d, c in CASES])
def test_show_masks_every_payload_leaf_not_on_the_positive_list(destination: str, case: Path, sqlite_url: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    raw = case.read_bytes()
    event = load_event(raw)
    [mapping] = [m for m in load_mappings(REPO / "mappings", [destination]).for_event(event["event_type"], destination)
                 if m.source_file.stem == case.name.split(".")[0]]
    payload = mapping.apply(event).body
    for session_factory in migrated_sessions(sqlite_url):
        with session_factory() as session:
            session.add(InboxEvent(event_id=event["event_id"], event_type=event["event_type"], status="accepted",
                                   facility_siam_id=event["facility_siam_id"], body=raw.decode("utf-8")))
            session.add(Submission(event_id=event["event_id"], destination=destination, operation=mapping.operation,
                                   mapping=mapping.name, state="pending", idempotency_key="k-1", payload=payload))
            session.commit()
    trail = show_json(sqlite_url, event["event_id"], monkeypatch)
    [shown] = trail["submissions"]
    checked = 0
    for tree, shown_tree in ((payload, shown["payload"]), (json.loads(raw), trail["event"]["body"])):
        for path, key, value in leaves(tree):
            if value in (None, "") or (key is not None and shown_key(key)):
                continue
            assert at(shown_tree, path) == MASKED, f"{path} ({key}) is shown: {at(shown_tree, path)!r}"
            checked += 1
    assert checked
    text = json.dumps(trail, ensure_ascii=False)
    people = identifiers(json.loads(raw), event, payload)
    assert not {v for v in people if v in text}, text
    printed = show_json(sqlite_url, event["event_id"], monkeypatch, as_json=False)  # the table form too
    assert not {v for v in people if v in printed}, printed
    assert event["event_id"] in printed and destination in printed  # what operators need stays


def test_show_keeps_ids_codes_dates_and_quantities() -> None:
    payload = {"Person": {"FirstName": "مریم", "BirthDate": "1985-08-03", "NationalCode": "0084575948"},
               "ePrescriptionID": "RX-2024-000123", "IssueDate": "2024-08-02T10:10:05+03:30",
               "Orders": [{"ProductCode": {"Coded_string": "60000", "Terminology_id": "eRx", "Value": "ASA"},
                           "TotalNumber": {"Magnitude": 20, "Unit": "Each"}}],
               "srvCode": "10108065", "srvQty": 2, "unknown_new_field": "something", "birthDateNew": "1985-08-03"}
    shown = redact_shown(payload)
    assert shown["Person"] == {"FirstName": MASKED, "BirthDate": MASKED, "NationalCode": MASKED}
    assert shown["ePrescriptionID"] == "RX-2024-000123" and shown["IssueDate"] == payload["IssueDate"]
    assert shown["Orders"][0] == {"ProductCode": {"Coded_string": "60000", "Terminology_id": "eRx", "Value": MASKED},
                                  "TotalNumber": {"Magnitude": 20, "Unit": "Each"}}
    assert shown["srvCode"] == "10108065" and shown["srvQty"] == 2
    assert shown["unknown_new_field"] == MASKED and shown["birthDateNew"] == MASKED  # not listed: masked
    assert redact_shown({"event_id": "e 0084575948"}) == {"event_id": "e **********"}  # shown text still redacted


def test_logs_mask_sepas_person_keys_too() -> None:
    tree = redact.redact_tree({"FirstName": "Maryam", "LastName": "Ahmadi", "BirthDate": "1985-08-03"})
    assert "Maryam" not in str(tree) and "Ahmadi" not in str(tree) and "1985-08-03" not in str(tree)


# -- item 11: short secrets ------------------------------------------------------------------------

@pytest.fixture
def fresh_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets registered by a test are forgotten after it (they would mask other tests' text)."""
    for name in ("_secrets", "_short_secrets"):
        monkeypatch.setattr(redact, name, set(getattr(redact, name)))
    monkeypatch.setattr(redact, "_short_pattern", getattr(redact, "_short_pattern"))


def test_a_short_secret_is_masked_as_a_whole_token(fresh_secrets: None) -> None:
    register_secret("Zq7")
    assert redact_text("password=Zq7") == "password=***"
    assert redact_text("login ops:Zq7 refused") == "login ops:*** refused"
    assert redact_text("https://ops:Zq7@host/x?k=Zq7&y=1 (was Zq7).") == "https://ops:***@host/x?k=***&y=1 (was ***)."
    assert redact_text('{"pw": "Zq7"}') == '{"pw": "***"}'
    assert redact_text("Zq7") == "***"
    assert redact_text("xZq7 Zq7y Zq70") == "xZq7 Zq7y Zq70"  # inside a longer word: not this secret


def test_a_one_character_secret_does_not_mask_every_such_character(fresh_secrets: None) -> None:
    register_secret("ǂ")
    assert redact_text("aǂb cǂ ǂd") == "aǂb cǂ ǂd"
    assert redact_text("token ǂ used") == "token *** used"
    register_secret("%")  # a word character touching it, whatever the secret's own edges, keeps it
    assert redact_text("100% of 5%") == "100% of 5%"
    assert redact_text("key % here, ops:%@host") == "key *** here, ops:***@host"


def test_long_secrets_are_still_masked_anywhere(fresh_secrets: None) -> None:
    register_secret("s3cr3t-value")
    assert redact_text("xs3cr3t-valuey") == "x***y"
    register_secret("")
    register_secret("   ")
    register_secret(None)
    assert redact_text("a b  c") == "a b  c"  # empty and blank values register nothing
