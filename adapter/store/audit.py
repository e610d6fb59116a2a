"""State changes: the only way a submission's state moves, so every move is audited.

``transition`` works on a loaded ORM row. ``move`` is the same on the dispatcher's hot path as
one conditional Core ``UPDATE`` (the row must still be in the state the caller saw, plus any
guard), so no row is loaded; ``audit_rows`` writes the audit rows of many moves in one statement.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from adapter.store.models import StateChange, Submission
from adapter.store.states import State
from adapter.store.types import utcnow


def transition(session: Session, submission: Submission, to_state: State, *, actor: str, reason: str | None = None,
               **fields: Any) -> None:
    """Move ``submission`` to ``to_state`` (plus column updates) and write the audit row."""
    previous = submission.state
    submission.state = to_state.value
    submission.updated_at = utcnow()
    for name, value in fields.items():
        setattr(submission, name, value)
    session.add(StateChange(event_id=submission.event_id, submission_id=submission.id, from_state=previous,
                            to_state=to_state.value, actor=actor, reason=reason))


def move(session: Session, submission_id: int, event_id: str, from_state: str, to_state: State, *, actor: str,
         reason: str | None, guard: Iterable[Any] = (), **fields: Any) -> bool:
    """Move one submission from ``from_state`` (and only if ``guard`` holds) to ``to_state``, with
    column updates and the audit row; False, and nothing written, when the row no longer matches."""
    moved = session.execute(
        update(Submission.__table__).where(Submission.id == submission_id, Submission.state == from_state, *guard)
        .values(state=to_state.value, updated_at=utcnow(), **fields))
    if moved.rowcount != 1:
        return False
    audit_rows(session, [state_change(event_id, submission_id, from_state, to_state.value, actor, reason)])
    return True


def state_change(event_id: str, submission_id: int | None, from_state: str | None, to_state: str, actor: str,
                 reason: str | None) -> dict[str, Any]:
    return {"event_id": event_id, "submission_id": submission_id, "from_state": from_state, "to_state": to_state,
            "actor": actor, "reason": reason, "at": utcnow()}


def audit_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert audit rows made by ``state_change`` (one executemany)."""
    if rows:
        session.execute(insert(StateChange.__table__), rows)


def record_event_state(session: Session, event_id: str, status: str, *, actor: str, reason: str | None) -> None:
    session.add(StateChange(event_id=event_id, submission_id=None, from_state=None, to_state=status,
                            actor=actor, reason=reason))
