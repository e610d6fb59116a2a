"""State changes: the only way a submission's state moves, so every move is audited."""

from __future__ import annotations

from typing import Any

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


def record_event_state(session: Session, event_id: str, status: str, *, actor: str, reason: str | None) -> None:
    session.add(StateChange(event_id=event_id, submission_id=None, from_state=None, to_state=status,
                            actor=actor, reason=reason))
