"""What is where: counts per destination and state, and the oldest open submission."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from adapter.store.models import InboxEvent, Submission
from adapter.store.states import OPEN_STATES, State
from adapter.store.types import utcnow


def status_report(session: Session) -> dict[str, Any]:
    destinations: dict[str, dict[str, int]] = {}
    for destination, state, count in session.execute(
            select(Submission.destination, Submission.state, func.count()).group_by(Submission.destination, Submission.state)):
        destinations.setdefault(destination, {})[state] = count
    events = {status: count for status, count in session.execute(
        select(InboxEvent.status, func.count()).group_by(InboxEvent.status))}
    duplicate_receipts = session.scalar(select(func.coalesce(func.sum(InboxEvent.duplicate_receipts), 0))) or 0
    oldest = session.execute(
        select(Submission.id, Submission.destination, Submission.created_at, Submission.state)
        .where(Submission.state.in_([s.value for s in OPEN_STATES])).order_by(Submission.created_at).limit(1)).first()
    oldest_pending = None
    if oldest is not None:
        oldest_pending = {"submission_id": oldest.id, "destination": oldest.destination, "state": oldest.state,
                          "since": oldest.created_at.isoformat(),
                          "age_seconds": round((utcnow() - oldest.created_at).total_seconds(), 1)}
    return {"events": {**events, "duplicate_receipts": int(duplicate_receipts), "total": sum(events.values())},
            "destinations": destinations, "oldest_pending": oldest_pending}


def summary_counts(report: dict[str, Any]) -> dict[str, int]:
    """The flat numbers of ``adapter demo --json``: submissions by state across destinations,
    with invalid events counted as invalid."""
    totals: dict[str, int] = {}
    for states in report["destinations"].values():
        for state, count in states.items():
            totals[state] = totals.get(state, 0) + count
    open_count = sum(totals.get(s.value, 0) for s in OPEN_STATES)
    return {
        "accepted": totals.get(State.accepted.value, 0),
        "invalid": totals.get(State.invalid.value, 0) + report["events"].get("invalid", 0),
        "rejected": totals.get(State.rejected.value, 0),
        "dead": totals.get(State.dead.value, 0),
        "pending": open_count,
    }
