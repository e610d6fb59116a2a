"""What is where: counts per destination and state, and the oldest open submission; per
destination its circuit (closed|open|half_open), open outage and paper-fallback counts
(key ``health``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from adapter.store import versions
from adapter.store.models import CircuitStatus, InboxEvent, Submission
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
    conflicts = versions.open_conflicts(session)  # different bodies under known event ids, for an operator
    return {"events": {**events, "duplicate_receipts": int(duplicate_receipts), "conflicts": conflicts,
                       "total": sum(events.values())},
            "destinations": destinations, "oldest_pending": oldest_pending,
            "health": destination_health(session, set(destinations))}


def destination_health(session: Session, known: set[str]) -> dict[str, dict[str, Any]]:
    """Per destination: ``circuit`` (last state the dispatcher wrote; closed when never written),
    ``circuit_since``, ``outage`` (the open outage, a declared one first, or null) and
    ``fallback`` counts (issued / linked / paper_claim)."""
    from adapter.outage import records

    fallback = records.fallback_counts(session)
    circuits = {row.destination: row for row in session.scalars(select(CircuitStatus))}
    outages: dict[str, Any] = {}
    for row in records.open_outages(session):
        if row.destination not in outages or row.detected == records.MANUAL:
            outages[row.destination] = row
    health: dict[str, dict[str, Any]] = {}
    for destination in sorted(known | set(fallback) | set(circuits) | set(outages)):
        circuit = circuits.get(destination)
        outage = outages.get(destination)
        health[destination] = {
            "circuit": circuit.state if circuit is not None else "closed",
            "circuit_since": circuit.since.isoformat() if circuit is not None else None,
            "outage": records.outage_dict(outage) if outage is not None else None,
            "fallback": fallback.get(destination, {s: 0 for s in records.FALLBACK_STATES}),
        }
    return health


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
