"""The outbox table's rows: added in the caller's transaction (the one that writes the state change
a reply is about), and read, marked and resent by the outbox and the operators' commands."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from adapter.replies.make import ReplyRules, reply_row
from adapter.store.models import ReplyRow, table_of

log = logging.getLogger(__name__)
_REPLIES = table_of(ReplyRow)
PENDING, PUBLISHED, DEAD = "pending", "published", "dead"
STATES = (PENDING, PUBLISHED, DEAD)


def add_replies(session: Session, rules: ReplyRules, replies: Iterable[tuple[dict[str, Any] | None, int | None]],
                at: dt.datetime) -> int:
    """Insert the replies ``rules`` wants (body, submission id) in one statement; the number added."""
    rows = []
    for body, submission_id in replies:
        if body is None or not rules.wants(body["type"]):
            continue
        try:
            rows.append(reply_row(body, submission_id, at))
        except ValidationError:  # a bug in making it: never a reason to lose the state change it is about
            log.exception("reply %s for event %s does not fit the reply contract; not sent", body.get("type"),
                          body.get("event_id"))
    if rows:
        session.connection().execute(insert(_REPLIES), rows)
    return len(rows)


def due(session: Session, limit: int, now: dt.datetime) -> list[Any]:
    """Pending replies in the order they were written (the webhook's backoff: not before their time)."""
    return list(session.connection().execute(
        select(_REPLIES.c.id, _REPLIES.c.reply_id, _REPLIES.c.type, _REPLIES.c.facility_siam_id, _REPLIES.c.body,
               _REPLIES.c.attempts, _REPLIES.c.next_attempt_at)
        .where(_REPLIES.c.state == PENDING).order_by(_REPLIES.c.id).limit(limit)).all())


def mark_published(session: Session, ids: list[int], now: dt.datetime) -> None:
    if ids:
        session.connection().execute(update(_REPLIES).where(_REPLIES.c.id.in_(ids))
                                     .values(state=PUBLISHED, published_at=now, last_error=None))


def mark_failed(session: Session, row_id: int, *, attempts: int, error: str, next_at: dt.datetime | None) -> None:
    """A failed delivery: retried at ``next_at``, or ``dead`` (None) -- a person resends it."""
    values: dict[str, Any] = dict(attempts=attempts, last_error=error[:1000], next_attempt_at=next_at)
    if next_at is None:
        values["state"] = DEAD
    session.execute(update(ReplyRow).where(ReplyRow.id == row_id).values(**values))


def resend(session: Session, reply_ids: list[str]) -> list[str]:
    """Back to pending (same ``reply_id``: the HIS can drop it if it had it); the ids found."""
    found = list(session.scalars(select(ReplyRow.reply_id).where(ReplyRow.reply_id.in_(reply_ids))))
    if found:
        session.execute(update(ReplyRow).where(ReplyRow.reply_id.in_(found)).values(
            state=PENDING, attempts=0, next_attempt_at=None, last_error=None, published_at=None))
    return found
