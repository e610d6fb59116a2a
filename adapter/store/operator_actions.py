"""The operator audit's rows (``operator_actions``): begin one before a command changes anything,
finish it with the result, list them for ``adapter audit list``.

Each write commits in its own short transaction, apart from the command's own work: the row
that says a command started is in the store before the command touches anything, and stays
there whatever the command then does. Everything stored is masked here, whatever the caller
passed: arguments through ``redact_tree``, reason, actor and detail through ``redact_text``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from adapter.redact import redact_text, redact_tree
from adapter.store.models import OperatorAction
from adapter.store.types import utcnow

STARTED, OK, FAILED = "started", "ok", "failed"
RESULTS = (STARTED, OK, FAILED)

_SHORT = 64  # the width of the who columns


@dataclass(frozen=True)
class Who:
    """Who runs a command: the OS account, the sudo caller, the ``--actor`` claimed, the host."""

    os_user: str
    sudo_user: str | None
    claimed_actor: str | None
    host: str


def begin(sessions: sessionmaker[Session], who: Who, command: str, arguments: dict[str, Any],
          reason: str | None) -> int:
    """Commit a ``started`` row and return its id."""
    row = OperatorAction(os_user=who.os_user[:_SHORT], sudo_user=_short(who.sudo_user),
                         claimed_actor=_short(_masked(who.claimed_actor)), host=who.host[:255],
                         command=command, arguments=redact_tree(arguments), reason=_masked(reason),
                         result=STARTED)
    with sessions() as session:
        session.add(row)
        session.commit()
        return row.id


def finish(sessions: sessionmaker[Session], action_id: int, result: str, detail: str | None = None) -> None:
    """Set the row's result (``ok`` or ``failed``), the finishing time and what happened (masked)."""
    if result not in (OK, FAILED):
        raise ValueError(f"an operator action finishes ok or failed, not {result!r}")
    with sessions() as session:
        row = session.get(OperatorAction, action_id)
        if row is None:
            raise LookupError(f"no operator action {action_id}")
        row.result, row.detail, row.finished_at = result, _masked(detail), utcnow()
        session.commit()


def record(sessions: sessionmaker[Session], who: Who, command: str, arguments: dict[str, Any],
           reason: str | None, detail: str | None = None) -> int:
    """One finished ``ok`` row, for a command that can only be recorded after it ran (``db-upgrade``
    creates the table this goes into)."""
    action_id = begin(sessions, who, command, arguments, reason)
    finish(sessions, action_id, OK, detail)
    return action_id


def list_actions(session: Session, *, command: str | None = None, since: dt.datetime | None = None,
                 limit: int = 50) -> list[dict[str, Any]]:
    """The newest ``limit`` rows (newest first), optionally of one command (``outage end``) or its
    group (``outage``), or since a time."""
    query = select(OperatorAction).order_by(OperatorAction.id.desc()).limit(limit)
    if command:
        query = query.where((OperatorAction.command == command) | OperatorAction.command.startswith(command + " "))
    if since is not None:
        query = query.where(OperatorAction.started_at >= since)
    return [action_dict(row) for row in session.scalars(query)]


def action_dict(row: OperatorAction) -> dict[str, Any]:
    return {
        "id": row.id,
        "started_at": _iso(row.started_at),
        "finished_at": _iso(row.finished_at),
        "os_user": row.os_user,
        "sudo_user": row.sudo_user,
        "claimed_actor": row.claimed_actor,
        "host": row.host,
        "command": row.command,
        "arguments": row.arguments,
        "reason": row.reason,
        "result": row.result,
        "detail": row.detail,
    }


def _masked(text: str | None) -> str | None:
    return redact_text(text) if text is not None else None


def _short(text: str | None) -> str | None:
    return text[:_SHORT] if text is not None else None


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
