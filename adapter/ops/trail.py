"""One event's whole trail: the event (identifiers masked), its submissions, every attempt
and every state change.

The event body and the submissions' payloads are shown through ``redact_shown``: only values
under its positive list of keys (ids, codes, states, quantities, dates of care) are printed, every
other value is masked. What the adapter wrote itself (problems, errors, results, attempt
summaries, reasons) is shown with identifiers and secrets masked (``redact_text``/``redact_tree``)."""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from adapter.redact import redact_shown, redact_text, redact_tree
from adapter.store import versions
from adapter.store.models import Attempt, EventVersion, InboxEvent, StateChange, Submission


def _event_body(row: InboxEvent | EventVersion) -> Any:
    try:
        return redact_shown(json.loads(row.body))
    except (ValueError, RecursionError):
        return {"unreadable_body_bytes": len(row.body)}


# problems stored before values were keyed carry an unkeyed digest, which brute force reverses
_UNKEYED_DIGEST = re.compile(r" sha256:[0-9a-f]{8}>")


def _problems(problems: Any) -> Any:
    if not isinstance(problems, list):
        return problems
    return [{k: _UNKEYED_DIGEST.sub(">", redact_text(v)) if isinstance(v, str) else v for k, v in p.items()}
            if isinstance(p, dict) else p for p in problems]


def _text(value: str | None) -> str | None:
    return redact_text(value) if value else value


def event_trail(session: Session, event_id: str) -> dict[str, Any] | None:
    row = session.get(InboxEvent, event_id)
    if row is None:
        return None
    changes = session.scalars(select(StateChange).where(StateChange.event_id == event_id).order_by(StateChange.id)).all()
    submissions = session.scalars(select(Submission).where(Submission.event_id == event_id).order_by(Submission.id)).all()
    return {
        "event": {"event_id": row.event_id, "event_type": row.event_type, "status": row.status,
                  "received_at": row.received_at.isoformat(), "occurred_at": row.occurred_at.isoformat() if row.occurred_at else None,
                  "facility_siam_id": row.facility_siam_id, "duplicate_receipts": row.duplicate_receipts,
                  "problems": _problems(row.problems), "body": _event_body(row),
                  "versions": [_version(v, row) for v in versions.versions_of(session, event_id)]},
        "submissions": [_submission(session, s, changes) for s in submissions],
        "event_state_changes": [_change(c) for c in changes if c.submission_id is None],
        "replies": _replies(session, event_id),
    }


def _replies(session: Session, event_id: str) -> list[dict[str, Any]]:
    """What the HIS was told about the event (reply contract v1), with each reply's delivery state."""
    from adapter.store.models import ReplyRow

    return [{"reply_id": r.reply_id, "type": r.type, "state": r.state, "created_at": r.created_at.isoformat(),
             "published_at": r.published_at.isoformat() if r.published_at else None,
             "last_error": _text(r.last_error), "reply": redact_tree(r.body)}
            for r in session.scalars(select(ReplyRow).where(ReplyRow.event_id == event_id).order_by(ReplyRow.id))]


def _version(version: EventVersion, current: InboxEvent) -> dict[str, Any]:
    """A body kept beside the event's (a conflict, or one it replaced), masked like the event's,
    with the paths where it differs from the event's body (no values)."""
    body = _event_body(version)
    return {**versions.version_dict(version), "body": body, "differs_at": _differences(version.body, current.body)}


def _differences(one: str, other: str) -> list[str] | None:
    try:
        a, b = json.loads(one), json.loads(other)
    except (ValueError, RecursionError):
        return None
    found: list[str] = []
    _diff(a, b, "", found)
    return [redact_text(path) for path in found[:50]]


def _diff(a: Any, b: Any, path: str, found: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            _diff(a.get(key, _MISSING), b.get(key, _MISSING), f"{path}.{key}" if path else str(key), found)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for index, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{path}.{index}" if path else str(index), found)
    elif a != b or type(a) is not type(b):
        found.append(path or "$")


_MISSING = object()


def _submission(session: Session, sub: Submission, changes: Any) -> dict[str, Any]:
    attempts = session.scalars(select(Attempt).where(Attempt.submission_id == sub.id).order_by(Attempt.id)).all()
    return {
        "id": sub.id, "destination": sub.destination, "operation": sub.operation, "mapping": sub.mapping,
        "state": sub.state, "attempts": sub.attempts, "next_attempt_at": sub.next_attempt_at.isoformat() if sub.next_attempt_at else None,
        "last_error": _text(sub.last_error), "result": redact_tree(sub.result), "idempotency_key": sub.idempotency_key,
        "payload": redact_shown(sub.payload),
        "attempt_log": [{"number": a.number, "started_at": a.started_at.isoformat(), "duration_ms": a.duration_ms,
                         "outcome": a.outcome, "request": redact_tree(a.request), "response": redact_tree(a.response)} for a in attempts],
        "state_changes": [_change(c) for c in changes if c.submission_id == sub.id],
    }


def _change(c: StateChange) -> dict[str, Any]:
    return {"at": c.at.isoformat(), "from": c.from_state, "to": c.to_state, "actor": c.actor, "reason": _text(c.reason)}
