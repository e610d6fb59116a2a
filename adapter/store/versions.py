"""Bodies received under a known event id that differ from the stored one (``EventVersion``).

Intake asks ``other_digests`` only for an event id whose stored digest differs from the
repeat's (rare: the hot path reads the inbox digests once per batch and nothing here), and
records a ``conflict`` with ``add_conflict``. ``adapter.pipeline.supersede`` resolves one.
"""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from adapter.store.models import EventVersion, InboxEvent, table_of
from adapter.store.types import utcnow

_VERSIONS = table_of(EventVersion)
_INBOX = table_of(InboxEvent)


class VersionState(str, Enum):
    conflict = "conflict"  # a different body under a known id: waits for an operator
    replayed = "replayed"  # an operator made it the event's body
    superseded = "superseded"  # the event's body before a replayed version replaced it


def stored_digests(session: Session, event_ids: list[str]) -> dict[str, tuple[str | None, str]]:
    """event id -> (content digest, status) of the inbox rows among ``event_ids`` (one indexed read)."""
    rows = session.connection().execute(
        select(_INBOX.c.event_id, _INBOX.c.content_digest, _INBOX.c.status).where(_INBOX.c.event_id.in_(event_ids)))
    return {event_id: (digest, status) for event_id, digest, status in rows}


def stored_body(session: Session, event_id: str) -> tuple[str, bool]:
    """The inbox body of ``event_id`` and whether it was pruned (a marker, not the body)."""
    row = session.execute(select(InboxEvent.body, InboxEvent.pruned_at).where(InboxEvent.event_id == event_id)).one()
    return row.body, row.pruned_at is not None


def other_digests(session: Session, event_id: str) -> set[str]:
    """Digests of every version kept for ``event_id`` (conflicts, replayed and superseded bodies)."""
    return set(session.connection().execute(
        select(_VERSIONS.c.content_digest).where(_VERSIONS.c.event_id == event_id)).scalars())


def add_conflict(session: Session, event_id: str, digest: str, body: str, now: dt.datetime | None = None) -> int:
    """Keep ``body`` as a conflicting version of ``event_id``; its id."""
    row = dict(event_id=event_id, content_digest=digest, body=body, state=VersionState.conflict.value,
               received_at=now or utcnow())
    result = session.connection().execute(insert(_VERSIONS).returning(_VERSIONS.c.id), [row])
    return int(result.scalar_one())


def count_repeats(session: Session, repeats: dict[str, int]) -> None:
    """Add each event's identical repeats to its ``duplicate_receipts``."""
    for event_id, count in repeats.items():
        session.connection().execute(update(_INBOX).where(_INBOX.c.event_id == event_id)
                                     .values(duplicate_receipts=_INBOX.c.duplicate_receipts + count))


def open_conflicts(session: Session) -> int:
    """How many conflicting versions wait for an operator."""
    return int(session.scalar(select(func.count()).select_from(EventVersion)
                              .where(EventVersion.state == VersionState.conflict.value)) or 0)


def versions_of(session: Session, event_id: str) -> list[EventVersion]:
    return list(session.scalars(select(EventVersion).where(EventVersion.event_id == event_id).order_by(EventVersion.id)))


def newest_conflict(session: Session, event_id: str, *, lock: bool = False) -> EventVersion | None:
    query = (select(EventVersion).where(EventVersion.event_id == event_id,
                                        EventVersion.state == VersionState.conflict.value)
             .order_by(EventVersion.id.desc()).limit(1))
    return session.scalars(query.with_for_update() if lock else query).first()


def mark_replayed(session: Session, version_id: int, *, actor: str, reason: str, now: dt.datetime) -> bool:
    """``conflict`` -> ``replayed``, only while it is still a conflict (two operators: one wins)."""
    moved = session.connection().execute(
        update(_VERSIONS).where(_VERSIONS.c.id == version_id, _VERSIONS.c.state == VersionState.conflict.value)
        .values(state=VersionState.replayed.value, resolved_at=now, resolved_by=actor, resolve_reason=reason))
    return moved.rowcount == 1


def keep_superseded(session: Session, event_id: str, digest: str, body: str, *, actor: str, reason: str,
                    now: dt.datetime) -> None:
    """Keep the body a replayed version replaces: its version row becomes (or is made) ``superseded``."""
    moved = session.connection().execute(
        update(_VERSIONS).where(_VERSIONS.c.event_id == event_id, _VERSIONS.c.content_digest == digest)
        .values(state=VersionState.superseded.value, resolved_at=now, resolved_by=actor, resolve_reason=reason))
    if moved.rowcount == 0:
        session.connection().execute(insert(_VERSIONS), [dict(
            event_id=event_id, content_digest=digest, body=body, state=VersionState.superseded.value,
            received_at=now, resolved_at=now, resolved_by=actor, resolve_reason=reason)])


def version_dict(version: EventVersion) -> dict[str, Any]:
    return {"id": version.id, "state": version.state, "received_at": version.received_at.isoformat(),
            "resolved_at": version.resolved_at.isoformat() if version.resolved_at else None,
            "resolved_by": version.resolved_by, "resolve_reason": version.resolve_reason}
