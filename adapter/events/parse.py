"""Raw broker message body -> typed event, or a specific, PHI-safe reason why not."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from adapter.events.contract import EVENT_TYPES, SCHEMA_VERSION, Event
from adapter.limits import MAX_NESTING_DEPTH, MESSAGE_MAX_BYTES, json_depth_problem
from adapter.redact import keyed_digest, redact_text

_EVENT = TypeAdapter(Event)
MAX_BODY_BYTES = MESSAGE_MAX_BYTES
TOO_DEEP = f"JSON nested too deeply: more than {MAX_NESTING_DEPTH} levels of objects and arrays"


@dataclass(frozen=True)
class Problem:
    """One reason an event is invalid: where, which rule, and the offending value masked."""

    field: str
    rule: str
    value: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "rule": self.rule, "value": self.value}

    def __str__(self) -> str:
        suffix = f" (value {self.value})" if self.value else ""
        return f"{self.field}: {self.rule}{suffix}"


class EventRejected(Exception):
    """The body is not a valid event. ``event_id`` is the HIS's id when it could be read;
    ``document`` the JSON value read from the body (None when it was not JSON, or had a
    repeated key: then only the bytes say what was sent)."""

    def __init__(self, problems: list[Problem], event_id: str | None, event_type: str | None,
                 document: Any = None):
        self.problems = problems
        self.event_id = event_id
        self.event_type = event_type
        self.document = document
        super().__init__("; ".join(str(p) for p in problems))


VALUE_DIGEST_PURPOSE = "adapter.events.problem-value"


def mask_value(value: Any, key: bytes | None = None) -> str:
    """Show the shape of a value, never its content: its type and length and, given a key (intake
    passes the patient HMAC key), a short keyed digest, so operators can tell two values apart
    (the same wrong code in many events, a corrected value) while nobody without the key can test
    a guess. Without a key, no digest: an unkeyed hash of a birth date or a national code is
    reversed by trying every candidate."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    kind = type(value).__name__
    if key is None:
        return f"<{kind} len={len(text)}>"
    return f"<{kind} len={len(text)} hmac:{keyed_digest(text, key, VALUE_DIGEST_PURPOSE)}>"


def body_fingerprint(body: bytes) -> str:
    """Stable id for a body that has no readable event id, so redelivery dedupes."""
    return "unreadable-" + hashlib.sha256(body).hexdigest()[:32]


class _RepeatedKeys(dict[str, Any]):
    """A JSON object in which the sender wrote some key more than once (``repeated``)."""

    repeated: list[str]


def _repeated_key_paths(node: Any, path: str = "$") -> list[str]:
    """Where ``_RepeatedKeys`` objects are in a document: ``payload.items.0.code``-style paths."""
    found: list[str] = []
    if isinstance(node, dict):
        if isinstance(node, _RepeatedKeys):
            found += [_join(path, key) for key in node.repeated]
        for key, value in node.items():
            found += _repeated_key_paths(value, _join(path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _repeated_key_paths(value, _join(path, str(index)))
    return found


def _join(path: str, key: str) -> str:
    key = _safe_text(key)
    return key if path == "$" else f"{path}.{key}"


def _repeated_keys_problem(document: Any) -> EventRejected:
    """A body with a key written twice is refused: which value the HIS meant is a guess, and the
    two readers (this one, a later replay) could guess differently."""
    try:
        paths = _repeated_key_paths(document)
    except RecursionError:
        paths = ["$"]
    problems = [Problem(path, "duplicate key in a JSON object: the body gives it more than once, "
                              "which value is meant cannot be told") for path in paths[:20]]
    top = document if isinstance(document, dict) else {}
    repeated_top = set(getattr(top, "repeated", ()))
    event_id = None if "event_id" in repeated_top else event_id_or_none(top.get("event_id"))
    event_type = None if "event_type" in repeated_top else _event_type_or_none(top.get("event_type"))
    return EventRejected(problems, event_id, event_type)


def _read_json(body: bytes | str) -> Any:
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    if len(body) > MAX_BODY_BYTES:
        raise EventRejected([Problem("$", f"body larger than {MAX_BODY_BYTES} bytes")], None, None)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventRejected([Problem("$", f"not UTF-8 (byte {exc.start})")], None, None) from None
    repeats: list[bool] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(items)
        if len(obj) == len(items):
            return obj
        repeated = _RepeatedKeys(obj)
        counts: dict[str, int] = {}
        for key, _ in items:
            counts[key] = counts.get(key, 0) + 1
        repeated.repeated = [key for key, count in counts.items() if count > 1]
        repeats.append(True)
        return repeated

    try:
        document = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise EventRejected([Problem("$", f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")],
                            None, None) from None
    except RecursionError:
        raise EventRejected([Problem("$", TOO_DEEP)], None, None) from None
    except ValueError:  # e.g. an integer literal longer than Python's int-conversion limit
        raise EventRejected([Problem("$", "malformed JSON: a number too long to read")], None, None) from None
    _refuse_deep(document)
    if repeats:
        raise _repeated_keys_problem(document)
    return document


def _refuse_deep(document: Any) -> None:
    """Refuse a body nested beyond ``MAX_NESTING_DEPTH``, naming where (its first levels only):
    no event of the contract comes near it, and every later walk of the document (validation,
    digests, masking) is then bounded too."""
    where = json_depth_problem(document)
    if where is None:
        return
    parts = where.split(".") if where != "$" else []
    shown = ".".join(_safe_text(part) for part in parts[:12]) + (".…" if len(parts) > 12 else "")
    top = document if isinstance(document, dict) else {}
    raise EventRejected([Problem(shown or "$", TOO_DEEP)], event_id_or_none(top.get("event_id")),
                        _event_type_or_none(top.get("event_type")))


_EVENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


def event_id_or_none(value: Any) -> str | None:
    """The HIS's event id when it is a well-formed one; otherwise None (the body's fingerprint is used)."""
    return value if isinstance(value, str) and _EVENT_ID.match(value) else None


def _event_type_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value in EVENT_TYPES else None


def _safe_text(text: str, limit: int = 60) -> str:
    """Field names taken from the input: no identifiers, no NUL or lone surrogates, bounded."""
    clean = text.encode("utf-8", "replace").decode("utf-8")
    clean = "".join(ch if ch.isprintable() else "?" for ch in clean)
    return redact_text(clean)[:limit]


def _problems_from(error: ValidationError, value_key: bytes | None) -> list[Problem]:
    problems: list[Problem] = []
    for item in error.errors(include_url=False):
        loc = [_safe_text(str(part)) for part in item["loc"]]
        # the discriminated union puts the tag into the location: drop it
        if len(loc) > 0 and loc[0] in EVENT_TYPES:
            loc = loc[1:]
        field = ".".join(loc) or "$"
        rule = _safe_text(item["msg"].removeprefix("Value error, "), 300)
        value = "" if item["type"] == "missing" else mask_value(item.get("input"), value_key)
        problems.append(Problem(field, rule, value))
    return problems


def parse_event(body: bytes | str, *, value_key: bytes | None = None) -> Event:
    """Validate a message body against contract v1. ``value_key``: the key of ``mask_value``'s
    digests in the problems of a rejected body (none without it)."""
    return read_event(body, value_key=value_key)[0]


def read_event(body: bytes | str, *, value_key: bytes | None = None) -> tuple[Event, Any]:
    """``parse_event``, and the JSON document as read from the body (what intake compares a
    repeat of the event id by: ``adapter.events.content``)."""
    raw = _read_json(body)
    try:
        return _validate(raw, value_key), raw
    except EventRejected as rejected:
        rejected.document = raw
        raise


def _validate(raw: Any, value_key: bytes | None) -> Event:
    if not isinstance(raw, dict):
        raise EventRejected([Problem("$", f"expected a JSON object, got {type(raw).__name__}")], None, None)
    event_id = event_id_or_none(raw.get("event_id"))
    raw_type = raw.get("event_type")
    event_type = _event_type_or_none(raw_type)
    if event_type is None:
        known = ", ".join(EVENT_TYPES)
        problem = Problem("event_type", f"unknown event type; known: {known}", mask_value(raw_type, value_key)) if raw_type \
            else Problem("event_type", "missing")
        raise EventRejected([problem], event_id, None)
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise EventRejected([Problem("schema_version", f"this adapter reads schema version {SCHEMA_VERSION}")], event_id, event_type)
    try:
        return _EVENT.validate_python(raw)
    except ValidationError as exc:
        raise EventRejected(_problems_from(exc, value_key), event_id, event_type) from None
    except RecursionError:
        raise EventRejected([Problem("$", TOO_DEEP)], event_id, event_type) from None
