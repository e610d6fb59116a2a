"""Contract v1: identifiers, calendars and the reasons given for bad events."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from adapter.events.dates import DateProblem, parse_date, to_jalali_compact
from adapter.events.identity import national_code_check_digit, national_code_problem
from adapter.events.parse import EventRejected, parse_event

SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "sample-prescription-created.json"


def sample() -> dict:
    return json.loads(SAMPLE.read_text(encoding="utf-8"))


@pytest.mark.parametrize("code", ["1234567891", "0012345679", "۱۲۳۴۵۶۷۸۹۱"])
def test_valid_national_codes(code: str) -> None:
    assert national_code_problem(code) is None


@pytest.mark.parametrize("code, reason", [
    ("1234567890", "check digit"), ("123456789", "10 digits"), ("1111111111", "repeated"), ("12345a7891", "10 digits")])
def test_invalid_national_codes(code: str, reason: str) -> None:
    assert reason in (national_code_problem(code) or "")


def test_check_digit_completes_every_prefix() -> None:
    for prefix in ("001234567", "123456789", "987654321", "000000001"):
        assert national_code_problem(prefix + str(national_code_check_digit(prefix))) is None


@pytest.mark.parametrize("raw, expected", [
    ("1403/05/12", dt.date(2024, 8, 2)), ("14030512", dt.date(2024, 8, 2)), ("۱۴۰۳/۰۵/۱۲", dt.date(2024, 8, 2)),
    ("2024-08-02", dt.date(2024, 8, 2)), ("1399/12/30", dt.date(2021, 3, 20))])
def test_dates_in_either_calendar(raw: str, expected: dt.date) -> None:
    assert parse_date(raw) == expected


@pytest.mark.parametrize("raw", ["1402/12/30", "1403-05-12", "2024/08/02", "02/08/2024", "2024-02-30", "14031301"])
def test_dates_never_guessed(raw: str) -> None:
    with pytest.raises(DateProblem):
        parse_date(raw)


def test_jalali_compact_round_trip() -> None:
    assert to_jalali_compact(dt.date(2024, 8, 2)) == "14030512"
    assert parse_date(to_jalali_compact(dt.date(2026, 3, 21))) == dt.date(2026, 3, 21)


def test_sample_event_parses_and_normalises_persian_digits() -> None:
    event = sample()
    event["payload"]["patient"]["identity"]["value"] = "۰۰۱۲۳۴۵۶۷۹"
    parsed = parse_event(json.dumps(event, ensure_ascii=False).encode())
    assert parsed.payload.patient.identity.value == "0012345679"
    assert parsed.payload.patient.birth_date == dt.date(1991, 4, 4)


def _problem(event: dict) -> EventRejected:
    with pytest.raises(EventRejected) as caught:
        parse_event(json.dumps(event).encode())
    return caught.value


def test_bad_national_code_names_field_and_masks_value() -> None:
    event = sample()
    event["payload"]["patient"]["identity"]["value"] = "0012345678"
    rejected = _problem(event)
    assert rejected.event_id == "evt-1"
    assert rejected.problems[0].field == "payload.patient.identity"
    assert "check digit" in rejected.problems[0].rule
    assert "0012345678" not in str(rejected)


def test_unknown_event_type_and_version() -> None:
    event = sample()
    event["event_type"] = "prescription.teleported"
    assert "unknown event type" in str(_problem(event))
    event = sample()
    event["schema_version"] = "2"
    assert _problem(event).problems[0].field == "schema_version"


def test_visit_prescription_must_be_empty_and_offsets_required() -> None:
    event = sample()
    event["payload"]["kind"] = "visit"
    assert "no items" in str(_problem(event))
    event = sample()
    event["occurred_at"] = "2026-11-20T09:15:00"
    assert "UTC offset" in str(_problem(event))


@pytest.mark.parametrize("body, rule", [
    (b"{not json", "malformed JSON"), (b"\xff\xfe", "not UTF-8"), (b"[1,2]", "JSON object"),
    (b"[" * 100_000 + b"]" * 100_000, "JSON")])
def test_unreadable_bodies(body: bytes, rule: str) -> None:
    with pytest.raises(EventRejected) as caught:
        parse_event(body)
    assert rule in str(caught.value)


def test_a_repeated_json_key_is_refused_with_its_path_wherever_it_is() -> None:
    import pytest as _pytest

    from adapter.events.parse import EventRejected, parse_event

    body = ('{"event_id": "e-1", "event_type": "prescription.created", "schema_version": "1", '
            '"payload": {"items": [{"code": "A"}, {"code": "B", "code": "C"}], "patient": {"x": 1, "x": 2}}}')
    with _pytest.raises(EventRejected) as caught:
        parse_event(body)
    assert [p.field for p in caught.value.problems] == ["payload.items.1.code", "payload.patient.x"]
    assert caught.value.event_id == "e-1" and "duplicate key" in caught.value.problems[0].rule
    with _pytest.raises(EventRejected) as top:
        parse_event('{"event_id": "a", "event_id": "b"}')
    assert top.value.event_id is None and [p.field for p in top.value.problems] == ["event_id"]
