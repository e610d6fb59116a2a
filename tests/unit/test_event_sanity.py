"""Sanity rules of contract v1 (issue 16, items 13 and 15).

* Item 13: the dates of clinical events (prescription, visit, dispense, paraclinic order and
  result, bill) lie in a window: not before ``CLINICAL_DATE_FLOOR`` and not later than a set
  number of days after the event's own ``occurred_at`` (``occurred_at`` itself: after now).
  Birth dates have no window. An event outside it is ``invalid`` naming the field and the window.
* Item 15: no control character in any id or code, no bidi embedding / override / isolate in
  any name; ZWNJ (Persian) stays; LRM / RLM / ALM marks are dropped from names.

Every case starts from a valid event: the sample generator's (provider side included), the
documented samples and the golden events, so every field of every event type is covered.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from adapter.events.contract import event_json_schema
from adapter.events.dates import (
    CLINICAL_DATE_FLOOR,
    MOMENT_MAX_DAYS_AHEAD,
    OCCURRED_AT_MAX_DAYS_AHEAD,
    PLANNED_MAX_DAYS_AHEAD,
)
from adapter.events.parse import EventRejected, parse_event
from adapter.samples.generate import generate
from tests.support.tree import Path_, get, leaves, put

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime.now(dt.timezone.utc)



def _events() -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for line in generate(NOW, patients=12, provider_side=True).lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict) or not str(event.get("event_id", "")).startswith("evt-"):
            continue
        if event["event_type"] in seen:  # one generated event of each type is enough
            continue
        seen.add(event["event_type"])
        out.append((f"generated:{event['event_type']}", event))
    files = [REPO / "docs" / "sample-prescription-created.json", *sorted((REPO / "docs" / "samples").glob("*.json")),
             *sorted((REPO / "tests" / "golden").glob("*/*.event.json"))]
    out.extend((str(path.relative_to(REPO)), json.loads(path.read_text(encoding="utf-8"))) for path in files)
    return out


EVENTS = _events()


def dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path)


def dumps(event: Any) -> bytes:
    return json.dumps(event, ensure_ascii=False).encode("utf-8")


def rejected(event: dict[str, Any]) -> EventRejected:
    with pytest.raises(EventRejected) as caught:
        parse_event(dumps(event))
    return caught.value


def problem_at(event: dict[str, Any], path: Path_) -> str:
    """The rule of the problem naming ``path`` (the event must be refused for that field)."""
    problems = rejected(event).problems
    rules = [p.rule for p in problems if p.field == dotted(path)]
    assert rules, f"no problem names {dotted(path)}: {problems}"
    return rules[0]


def cases(keys: set[str], *, under: str | None = None) -> list[Any]:
    """(label, event, path) for every leaf named in ``keys`` of every starting event."""
    out = []
    for label, event in EVENTS:
        for path in leaves(event):
            if path[-1] in keys and isinstance(get(event, path), str) and (under is None or under in path):
                out.append(pytest.param(event, path, id=f"{label}:{dotted(path)}"))
    return out


def test_every_starting_event_is_valid() -> None:
    types = set()
    for _label, event in EVENTS:
        types.add(parse_event(dumps(event)).event_type)
    assert len(types) == 9  # every event type is covered


# -- item 13: the date window -----------------------------------------------------------------

MOMENTS = {"admitted_at", "prescribed_at", "cancelled_at", "closed_at", "discharged_at", "started_at", "ended_at",
           "diagnosed_at", "dispensed_at", "requested_at", "completed_at", "reported_at", "specimen_collected_at",
           "observed_at"}
PLANNED = {"expires_on", "start_on"}


def test_the_window_covers_every_date_field_of_the_contract_but_birth_dates() -> None:
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.get("properties", {}).items():
                text = json.dumps(value)
                if '"date-time"' in text or '"date"' in text:
                    names.add(key)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(event_json_schema())
    assert names == MOMENTS | PLANNED | {"occurred_at", "birth_date"}, names


@pytest.mark.parametrize("event, path", cases(MOMENTS))
@pytest.mark.parametrize("value", ["2090-03-20T10:00:00+03:30", "1950-03-21T10:00:00+03:30"], ids=["2090", "1950"])
def test_a_clinical_moment_outside_the_window_is_refused_by_name(event: dict[str, Any], path: Path_,
                                                                 value: str) -> None:
    event = copy.deepcopy(event)
    put(event, path, value)
    rule = problem_at(event, path)
    assert "window" in rule and str(CLINICAL_DATE_FLOOR) in rule, rule
    assert f"{MOMENT_MAX_DAYS_AHEAD} day" in rule and "occurred_at" in rule, rule


@pytest.mark.parametrize("event, path", cases(PLANNED))
@pytest.mark.parametrize("value", ["2090-03-20", "1469/01/01", "1950-03-21", "1329/01/01"],
                         ids=["2090", "jalali-2090", "1950", "jalali-1950"])
def test_a_planned_date_outside_the_window_is_refused_by_name(event: dict[str, Any], path: Path_, value: str) -> None:
    event = copy.deepcopy(event)
    put(event, path, value)
    rule = problem_at(event, path)
    assert "window" in rule and str(CLINICAL_DATE_FLOOR) in rule, rule
    assert f"{PLANNED_MAX_DAYS_AHEAD} days" in rule, rule


def _sample() -> dict[str, Any]:
    return json.loads((REPO / "docs" / "sample-prescription-created.json").read_text(encoding="utf-8"))


def test_the_issue_examples_a_prescription_of_1950_and_one_of_2090() -> None:
    for value in ("1950-01-01T10:00:00+03:30", "2090-01-01T10:00:00+03:30"):
        event = _sample()
        event["payload"]["prescribed_at"] = value
        problems = rejected(event).problems
        assert [p.field for p in problems] == ["payload.prescribed_at"], problems
        assert "prescribed_at" in problems[0].rule


def test_the_window_runs_from_occurred_at_or_now_whichever_is_later() -> None:
    event = _sample()
    occurred = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    event["occurred_at"] = occurred.isoformat()
    event["payload"]["prescribed_at"] = (occurred + dt.timedelta(days=MOMENT_MAX_DAYS_AHEAD, minutes=-5)).isoformat()
    parse_event(dumps(event))  # clock skew between HIS units: within the window
    event["payload"]["prescribed_at"] = (occurred + dt.timedelta(days=MOMENT_MAX_DAYS_AHEAD, minutes=5)).isoformat()
    assert "after the event's occurred_at or now" in problem_at(event, ("payload", "prescribed_at"))
    # stamped early (a bill closed weeks after the visit it carries): judged against now
    event["occurred_at"] = (occurred - dt.timedelta(days=40)).isoformat()
    event["payload"]["prescribed_at"] = (occurred - dt.timedelta(days=2)).isoformat()
    parse_event(dumps(event))
    # old events stay valid (a replay months later reads them again): no bound relative to now
    event["occurred_at"] = "2019-05-01T09:00:00+04:30"
    event["payload"]["prescribed_at"] = "2019-04-30T09:00:00+04:30"
    event["payload"]["items"][0]["start_on"] = (dt.date(2019, 5, 1) + dt.timedelta(days=PLANNED_MAX_DAYS_AHEAD)).isoformat()
    parse_event(dumps(event))
    far = occurred.date() + dt.timedelta(days=PLANNED_MAX_DAYS_AHEAD + 2)
    event["payload"]["items"][0]["start_on"] = far.isoformat()
    assert "after the event's occurred_at or now" in problem_at(event, ("payload", "items", 0, "start_on"))


def test_the_floor_is_inclusive() -> None:
    event = _sample()
    event["occurred_at"] = f"{CLINICAL_DATE_FLOOR}T09:15:00+03:30"
    event["payload"]["prescribed_at"] = f"{CLINICAL_DATE_FLOOR}T09:10:00+03:30"
    parse_event(dumps(event))
    event["payload"]["prescribed_at"] = f"{CLINICAL_DATE_FLOOR - dt.timedelta(days=1)}T23:59:00+03:30"
    assert "before" in problem_at(event, ("payload", "prescribed_at"))


@pytest.mark.parametrize("days, valid", [(OCCURRED_AT_MAX_DAYS_AHEAD - 0.01, True),
                                         (OCCURRED_AT_MAX_DAYS_AHEAD + 0.01, False), (365 * 64, False)])
def test_occurred_at_is_not_in_the_future(days: float, valid: bool) -> None:
    event = _sample()
    at = (dt.datetime.now(dt.timezone(dt.timedelta(hours=3, minutes=30))) + dt.timedelta(days=days)).replace(microsecond=0)
    event["occurred_at"] = at.isoformat()
    if valid:
        parse_event(dumps(event))
        return
    problems = rejected(event).problems
    # the payload's dates (2026-11-20) are then judged against now: only occurred_at is wrong
    assert [p.field for p in problems] == ["occurred_at"], problems
    assert "now" in problems[0].rule and "window" in problems[0].rule, problems


def test_occurred_at_before_the_floor_is_refused() -> None:
    event = _sample()
    event["occurred_at"] = "1950-01-01T10:00:00+03:30"
    assert str(CLINICAL_DATE_FLOOR) in problem_at(event, ("occurred_at",))


@pytest.mark.parametrize("birth", ["1300/01/01", "1921-03-21", "1310/05/12"])
def test_birth_dates_have_no_window(birth: str) -> None:
    event = _sample()
    event["payload"]["patient"]["birth_date"] = birth
    parse_event(dumps(event))


def test_generated_samples_are_inside_the_window_at_any_time_of_day() -> None:
    for hour in (0, 1, 3, 12, 23):
        now = NOW.replace(hour=hour, minute=59)
        if now > NOW:
            now -= dt.timedelta(days=1)
        for line in generate(now, patients=30, provider_side=True).lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and str(event.get("event_id", "")).startswith("evt-"):
                parse_event(line)


# -- item 15: control characters in ids, bidi controls in names -------------------------------

ID_KEYS = {"prescription_id", "visit_id", "bill_id", "order_id", "dispense_id", "result_id", "medical_record_number",
           "correlation_id", "source_system", "facility_siam_id", "code", "dose", "instruction", "insurer", "box",
           "ward", "insured_number"}
NAME_KEYS = {"first_name", "last_name", "specialty", "facility_name"}
BIDI = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]


ID_CHARS = [("\r\n", "U+000D"), ("\n", "U+000A"), ("\t", "U+0009"), ("\x00", "U+0000"), ("\x85", "U+0085"),
            ("\u2028", "U+2028"), ("\u202e", "U+202E"), ("\u200b", "U+200B"), ("\x1b[2J", "U+001B")]
NAME_CHARS = [(c, f"U+{ord(c):04X}") for c in BIDI] + [
    ("\r\n", "U+000D"), ("\n", "U+000A"), ("\t", "U+0009"), ("\x1b", "U+001B"), ("\x85", "U+0085"),
    ("\u2029", "U+2029"), ("\u206a", "U+206A")]


def _inside(original: str, inserted: str) -> str:
    return original[:1] + inserted + original[1:] if len(original) > 1 else original + inserted + "x"


def _cycled(params: list[Any], chars: list[tuple[str, str]]) -> list[Any]:
    """Every field once, the characters in turn (every character on every field would be ~5000 cases)."""
    return [pytest.param(*param.values, *chars[i % len(chars)], id=f"{chars[i % len(chars)][1]}-{param.id}")
            for i, param in enumerate(params)]


ID_CASES = cases(ID_KEYS) + cases({"value"}, under="identity")
NAME_CASES = cases(NAME_KEYS)


@pytest.mark.parametrize("event, path, inserted, code", _cycled(ID_CASES, ID_CHARS))
def test_a_control_character_in_an_id_is_refused_by_name(event: dict[str, Any], path: Path_, inserted: str,
                                                         code: str) -> None:
    event = copy.deepcopy(event)
    put(event, path, _inside(get(event, path), inserted))
    rule = problem_at(event, path)
    assert code in rule and "id" in rule, rule


@pytest.mark.parametrize("inserted, code", ID_CHARS, ids=[code for _, code in ID_CHARS])
def test_every_control_character_is_refused_in_a_prescription_id(inserted: str, code: str) -> None:
    event = _sample()
    event["payload"]["prescription_id"] = f"RX{inserted}1"
    rule = problem_at(event, ("payload", "prescription_id"))
    assert code in rule and "id" in rule, rule


@pytest.mark.parametrize("event, path, inserted, code", _cycled(NAME_CASES, NAME_CHARS))
def test_a_bidi_or_control_character_in_a_name_is_refused_by_name(event: dict[str, Any], path: Path_, inserted: str,
                                                                  code: str) -> None:
    event = copy.deepcopy(event)
    put(event, path, _inside(get(event, path), inserted + "evil"))
    rule = problem_at(event, path)
    assert code in rule and "name" in rule, rule
    if inserted in BIDI:
        assert "bidi" in rule, rule


@pytest.mark.parametrize("inserted, code", NAME_CHARS, ids=[code for _, code in NAME_CHARS])
def test_every_bidi_or_control_character_is_refused_in_a_patient_name(inserted: str, code: str) -> None:
    event = _sample()
    event["payload"]["patient"]["last_name"] = f"Ahmadi{inserted}idamhA"
    rule = problem_at(event, ("payload", "patient", "last_name"))
    assert code in rule and "name" in rule, rule


def test_persian_names_keep_zwnj_and_lose_invisible_marks() -> None:
    event = _sample()
    event["payload"]["patient"]["first_name"] = "محمد\u200cرضا"  # ZWNJ: part of Persian spelling
    event["payload"]["patient"]["last_name"] = "\u200fنیک\u200cخواه\u200e"  # RLM / LRM left by copy-paste
    event["payload"]["prescriber"]["first_name"] = "سارا\u061c"  # ALM
    event["payload"]["prescriber"]["last_name"] = "\ufeffکریمی\u200b\u00ad\u2060"  # BOM, ZWSP, soft hyphen, WJ
    parsed = parse_event(dumps(event)).payload
    assert parsed.prescriber.last_name == "کریمی"
    assert parsed.patient.first_name == "محمد\u200cرضا"
    assert parsed.patient.last_name == "نیک\u200cخواه"
    assert parsed.prescriber.first_name == "سارا"


def test_a_name_of_only_directional_marks_is_empty() -> None:
    event = _sample()
    event["payload"]["patient"]["first_name"] = "\u200f\u200e"
    assert problem_at(event, ("payload", "patient", "first_name"))


def test_free_text_keeps_line_breaks_and_bidi_marks() -> None:
    event = _sample()
    event["payload"]["comments"] = "خط اول\nline two\u200f\r\nسوم \u202bembedded\u202c"
    assert parse_event(dumps(event)).payload.comments == event["payload"]["comments"]


def test_ids_keep_ordinary_characters() -> None:
    event = _sample()
    event["payload"]["prescription_id"] = "RX/1403-05 #12 نسخه"
    event["payload"]["items"][0]["code"] = "D-AMOX_500.v2"
    parsed = parse_event(dumps(event)).payload
    assert parsed.prescription_id == "RX/1403-05 #12 نسخه"


# -- the JSON Schema in docs is the contract's ---------------------------------------------------

def test_the_checked_in_event_schema_is_current() -> None:
    """``adapter schema --out docs/event-schema.json`` after changing the contract."""
    checked_in = json.loads((REPO / "docs" / "event-schema.json").read_text(encoding="utf-8"))
    assert checked_in == event_json_schema()
