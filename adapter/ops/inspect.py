"""Which submissions match an operator's filter: the query behind ``adapter list`` and
``adapter replay --filter``.

Filters combine with AND; ``states`` is an OR over its values. The time range is on
``updated_at`` (when the submission last changed state), because "what failed in the last
two hours" is the usual question. Rows come out with ``last_error`` redacted: nothing here
shows a national code, a name or a mobile number.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from adapter.redact import redact_text
from adapter.store.models import InboxEvent, Submission
from adapter.store.states import State
from adapter.store.types import utcnow

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class FilterError(ValueError):
    """A filter option the operator gave cannot be used (bad state name, bad time)."""


@dataclass(frozen=True)
class Filters:
    states: tuple[str, ...] = ()
    destination: str | None = None
    event_type: str | None = None
    operation: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    error: str | None = None


def parse_when(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``2h``, ``30m``, ``3d``, ``1w`` (that long before now) or an ISO date/datetime (UTC unless it has an offset)."""
    match = _RELATIVE.match(text)
    if match:
        amount, unit = float(match.group(1)), match.group(2).lower()
        return (now or utcnow()) - dt.timedelta(**{_UNITS[unit]: amount})
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise FilterError(f"{text!r} is neither an ISO datetime (2024-05-01T08:00:00+03:30) "
                          "nor a relative time (45m, 2h, 3d, 1w)") from None
    return when.replace(tzinfo=dt.timezone.utc) if when.tzinfo is None else when.astimezone(dt.timezone.utc)


def make_filters(*, states: Iterable[str] | None = None, destination: str | None = None,
                 event_type: str | None = None, operation: str | None = None, since: str | None = None,
                 until: str | None = None, error: str | None = None, now: dt.datetime | None = None) -> Filters:
    """Filters from command-line text; ``FilterError`` names the option that is wrong."""
    known = {s.value for s in State}
    wanted: list[str] = []
    for state in states or ():
        for part in state.split(","):  # --state dead,rejected works too
            part = part.strip().lower()
            if not part:
                continue
            if part not in known:
                raise FilterError(f"--state {part!r}: not a submission state (one of {', '.join(sorted(known))})")
            if part not in wanted:
                wanted.append(part)
    now = now or utcnow()
    try:
        since_at = parse_when(since, now) if since else None
    except FilterError as exc:
        raise FilterError(f"--since: {exc}") from None
    try:
        until_at = parse_when(until, now) if until else None
    except FilterError as exc:
        raise FilterError(f"--until: {exc}") from None
    if since_at and until_at and since_at > until_at:
        raise FilterError(f"--since ({since_at.isoformat()}) is after --until ({until_at.isoformat()})")
    return Filters(states=tuple(wanted), destination=destination or None, event_type=event_type or None,
                   operation=operation or None, since=since_at, until=until_at, error=error or None)


def conditions(filters: Filters) -> list[ColumnElement[bool]]:
    """WHERE clauses over ``Submission`` joined with its ``InboxEvent``."""
    where: list[ColumnElement[bool]] = []
    if filters.states:
        where.append(Submission.state.in_(filters.states))
    if filters.destination:
        where.append(Submission.destination == filters.destination)
    if filters.event_type:
        where.append(InboxEvent.event_type == filters.event_type)
    if filters.operation:
        where.append(Submission.operation == filters.operation)
    if filters.since:
        where.append(Submission.updated_at >= filters.since)
    if filters.until:
        where.append(Submission.updated_at <= filters.until)
    if filters.error:
        where.append(func.lower(Submission.last_error).contains(filters.error.lower(), autoescape=True))
    return where


def matching(filters: Filters, *columns: Any) -> Select[Any]:
    """``SELECT columns FROM submissions JOIN inbox_events WHERE filters`` (no order, no limit)."""
    return select(*columns).join(InboxEvent, InboxEvent.event_id == Submission.event_id).where(*conditions(filters))


def list_submissions(session: Session, filters: Filters, limit: int | None = 50) -> list[dict[str, Any]]:
    """Matching submissions, most recently changed first, as redacted dicts."""
    query = matching(filters, Submission, InboxEvent.event_type) \
        .order_by(Submission.updated_at.desc(), Submission.id.desc())
    if limit:
        query = query.limit(limit)
    return [row_dict(sub, event_type) for sub, event_type in session.execute(query)]


def row_dict(sub: Submission, event_type: str | None) -> dict[str, Any]:
    return {
        "id": sub.id, "event_id": sub.event_id, "event_type": event_type, "destination": sub.destination,
        "operation": sub.operation, "state": sub.state, "attempts": sub.attempts,
        "updated_at": sub.updated_at.isoformat(),  # NOT NULL
        "next_attempt_at": sub.next_attempt_at.isoformat() if sub.next_attempt_at else None,
        "last_error_class": sub.last_error_class,
        "last_error": redact_text(sub.last_error) if sub.last_error else None,
    }
