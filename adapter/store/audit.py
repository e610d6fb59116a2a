"""State changes: the only way a submission's state moves, so every move is checked against
the table of allowed moves (``adapter.store.states.TRANSITIONS``: an illegal one raises
``IllegalTransition`` before anything is written) and audited.

``transition`` works on a loaded ORM row. ``move`` is the same on the dispatcher's hot path as
one conditional Core ``UPDATE`` (the row must still be in the state the caller saw, and still
be leased by ``owner`` when given), so no row is loaded; ``audit_rows`` writes the audit rows of
many moves in one statement. Both run on the session's connection, outside the ORM.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import bindparam, insert, update
from sqlalchemy.orm import Session

from adapter.store.models import StateChange, Submission, table_of
from adapter.store.states import State, check_transition
from adapter.store.types import utcnow

_SUBMISSIONS = table_of(Submission)
_STATE_CHANGES = table_of(StateChange)


def transition(session: Session, submission: Submission, to_state: State, *, actor: str, reason: str | None = None,
               **fields: Any) -> None:
    """Move ``submission`` to ``to_state`` (plus column updates) and write the audit row.
    Raises ``IllegalTransition`` (nothing changed) when the table does not allow the move."""
    previous = submission.state
    check_transition(previous, to_state)
    submission.state = to_state.value
    submission.updated_at = utcnow()
    for name, value in fields.items():
        setattr(submission, name, value)
    session.add(StateChange(event_id=submission.event_id, submission_id=submission.id, from_state=previous,
                            to_state=to_state.value, actor=actor, reason=reason))


@functools.lru_cache(maxsize=64)
def _move_statement(columns: tuple[str, ...], owned: bool) -> Any:
    """UPDATE ... SET state, updated_at and ``columns`` WHERE id, state (and lease_owner): built once per shape."""
    t = _SUBMISSIONS
    where = [t.c.id == bindparam("w_id"), t.c.state == bindparam("w_state")]
    if owned:
        where.append(t.c.lease_owner == bindparam("w_owner"))
    return update(t).where(*where).values({name: bindparam(f"v_{name}", type_=t.c[name].type)
                                           for name in ("state", "updated_at", *columns)})


def move(session: Session, submission_id: int, event_id: str, from_state: str, to_state: State, *, actor: str,
         reason: str | None, owner: str | None = None, **fields: Any) -> bool:
    """Move one submission from ``from_state`` (and only while ``owner`` holds its lease, when
    given) to ``to_state``, with plain column values and the audit row; False, and nothing
    written, when the row no longer matches. ``IllegalTransition`` when the table does not allow it."""
    change = move_unaudited(session, submission_id, event_id, from_state, to_state, actor=actor, reason=reason,
                            owner=owner, **fields)
    if change is None:
        return False
    audit_rows(session, [change])
    return True


def move_unaudited(session: Session, submission_id: int, event_id: str, from_state: str, to_state: State, *,
                   actor: str, reason: str | None, owner: str | None = None, **fields: Any) -> dict[str, Any] | None:
    """``move`` without writing the audit row: the row to write (with the other moves of a batch,
    by ``audit_rows``, in the same transaction), or None when nothing moved. Raises
    ``IllegalTransition`` (no statement run) when the table does not allow the move."""
    check_transition(from_state, to_state)
    names = tuple(sorted(fields))
    params = {f"v_{name}": value for name, value in fields.items()}
    params.update(w_id=submission_id, w_state=from_state, v_state=to_state.value, v_updated_at=utcnow())
    if owner is not None:
        params["w_owner"] = owner
    moved = session.connection().execute(_move_statement(names, owner is not None), params)
    if moved.rowcount != 1:
        return None
    return _audit_row(event_id, submission_id, from_state, to_state.value, actor, reason)  # checked above


def state_change(event_id: str, submission_id: int | None, from_state: str | None, to_state: str, actor: str,
                 reason: str | None) -> dict[str, Any]:
    """An audit row for ``audit_rows``. A submission's (``submission_id`` set; ``from_state`` None
    when the row is new) is checked against the table first: ``IllegalTransition`` if not allowed.
    An event's (``submission_id`` None) records its ``EventStatus`` and is not a submission state."""
    if submission_id is not None:
        check_transition(from_state, to_state)
    return _audit_row(event_id, submission_id, from_state, to_state, actor, reason)


def _audit_row(event_id: str, submission_id: int | None, from_state: str | None, to_state: str, actor: str,
               reason: str | None) -> dict[str, Any]:
    return {"event_id": event_id, "submission_id": submission_id, "from_state": from_state, "to_state": to_state,
            "actor": actor, "reason": reason, "at": utcnow()}


def audit_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert audit rows made by ``state_change`` (one executemany)."""
    if rows:
        session.connection().execute(_INSERT_STATE_CHANGES, rows)


_INSERT_STATE_CHANGES = insert(_STATE_CHANGES)


def record_event_state(session: Session, event_id: str, status: str, *, actor: str, reason: str | None) -> None:
    session.add(StateChange(event_id=event_id, submission_id=None, from_state=None, to_state=status,
                            actor=actor, reason=reason))
