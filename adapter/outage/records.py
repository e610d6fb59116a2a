"""Store side of outage mode: outage rows, the circuit state per destination, paper-fallback
records (numbering, linking) -- plain functions on a session; the caller commits."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

import jdatetime
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from adapter.store.models import CircuitStatus, FallbackRecord, Outage
from adapter.store.types import utcnow

CIRCUIT = "circuit"
MANUAL = "manual"

ISSUED = "issued"
LINKED = "linked"
PAPER_CLAIM = "paper_claim"
FALLBACK_STATES = (ISSUED, LINKED, PAPER_CLAIM)


class OutageError(Exception):
    """An outage command cannot be done as asked (message says why and what to do)."""


# -- outages -----------------------------------------------------------------------------------
def open_outages(session: Session, destination: str | None = None) -> list[Outage]:
    query = select(Outage).where(Outage.ended_at.is_(None)).order_by(Outage.id)
    if destination is not None:
        query = query.where(Outage.destination == destination)
    return list(session.scalars(query))


def current_outage(session: Session, destination: str) -> Outage | None:
    """The open outage new work is filed under: a declared one before an automatic one."""
    rows = open_outages(session, destination)
    manual = [o for o in rows if o.detected == MANUAL]
    return (manual or rows)[0] if rows else None


def any_outages(session: Session) -> bool:
    """Whether any outage was ever recorded (almost always cheap: the table is tiny)."""
    return session.scalar(select(Outage.id).limit(1)) is not None


def outage_at(session: Session, destination: str, when: dt.datetime) -> Outage | None:
    """The outage of ``destination`` that covered the moment ``when`` (a declared one first)."""
    rows = list(session.scalars(select(Outage).where(
        Outage.destination == destination, Outage.started_at <= when,
        (Outage.ended_at.is_(None)) | (Outage.ended_at >= when)).order_by(Outage.id)))
    manual = [o for o in rows if o.detected == MANUAL]
    return (manual or rows)[0] if rows else None


def start_outage(session: Session, destination: str, *, reason: str, actor: str, detected: str,
                 now: dt.datetime | None = None) -> Outage:
    existing = [o for o in open_outages(session, destination) if o.detected == detected]
    if existing:
        o = existing[0]
        raise OutageError(f"a {detected} outage of {destination} is already open (id {o.id}, since "
                          f"{o.started_at.isoformat()}, by {o.started_by}: {o.reason})")
    row = Outage(destination=destination, detected=detected, reason=reason, started_by=actor,
                 started_at=now or utcnow())
    session.add(row)
    session.flush()
    return row


def end_outages(session: Session, destination: str, *, actor: str, reason: str | None,
                detected: str | None = None, now: dt.datetime | None = None) -> list[Outage]:
    rows = [o for o in open_outages(session, destination) if detected is None or o.detected == detected]
    for row in rows:
        row.ended_at = now or utcnow()
        row.ended_by = actor
        row.end_reason = reason
    session.flush()
    return rows


def outage_dict(row: Outage, now: dt.datetime | None = None) -> dict[str, Any]:
    end = row.ended_at or (now or utcnow())
    return {"id": row.id, "destination": row.destination, "detected": row.detected,
            "start": row.started_at.isoformat(), "end": row.ended_at.isoformat() if row.ended_at else None,
            "reason": row.reason, "started_by": row.started_by, "ended_by": row.ended_by,
            "end_reason": row.end_reason, "open": row.ended_at is None,
            "duration_s": round((end - row.started_at).total_seconds(), 1)}


def list_outages(session: Session, destination: str | None = None) -> list[dict[str, Any]]:
    query = select(Outage).order_by(Outage.id)
    if destination is not None:
        query = query.where(Outage.destination == destination)
    now = utcnow()
    return [outage_dict(row, now) for row in session.scalars(query)]


# -- circuit state -------------------------------------------------------------------------------
def save_circuit_state(session: Session, destination: str, state: str, reason: str, owner: str | None,
                       now: dt.datetime | None = None) -> None:
    row = session.get(CircuitStatus, destination)
    if row is None:
        row = CircuitStatus(destination=destination)
        session.add(row)
    row.state, row.reason, row.owner, row.since = state, reason, owner, now or utcnow()


def circuit_state(session: Session, destination: str) -> CircuitStatus | None:
    return session.get(CircuitStatus, destination)


# -- fallback records ------------------------------------------------------------------------------
def fallback_day(now: dt.datetime, timezone: str) -> str:
    """yyMMdd of the Solar Hijri calendar day in ``timezone`` (the date printed on Iranian paper)."""
    try:
        zone: dt.tzinfo = zoneinfo.ZoneInfo(timezone)
    except zoneinfo.ZoneInfoNotFoundError:  # no tz database: Iran has used +03:30 since 2022
        zone = dt.timezone(dt.timedelta(hours=3, minutes=30))
    day = jdatetime.date.fromgregorian(date=now.astimezone(zone).date())
    return f"{day.year % 100:02d}{day.month:02d}{day.day:02d}"


def next_fallback_no(session: Session, prefix: str, facility: str, day: str) -> str:
    """``<prefix>-<facility>-<yyMMdd>-<seq>``: seq counts per facility and day, from 0001.

    This runs for each prescription that arrives during an outage, so the day's highest number
    is read from the unique index: its last entry in the day's range, while the day has only
    four-digit numbers below 9999 (one index step). Past that, text order no longer follows
    number order (10000 sorts before 9999), and the day's numbers are sorted by length, then
    text -- a cost that grows with the day's count, met only on a day of 10,000 paper
    prescriptions in one facility. Two writers may pick the same number; the unique index
    refuses the second, which retries."""
    stem = f"{prefix}-{facility}-{day}-"
    number = FallbackRecord.fallback_no
    in_day = (number > stem, number < stem + "~")
    last = session.scalar(select(number).where(*in_day).order_by(number.desc()).limit(1))
    if last is None:
        return f"{stem}0001"
    sequence = last[len(stem):]
    if len(sequence) != 4 or not sequence.isdigit() or sequence == "9999":
        highest = session.scalar(select(number).where(*in_day)
                                 .order_by(func.length(number).desc(), number.desc()).limit(1)) or stem
        sequence = highest[len(stem):]
    return f"{stem}{int(sequence) + 1 if sequence.isdigit() else 1:04d}"


def new_paper_record(session: Session, prefix: str, timezone: str, *, event_id: str, facility: str,
                     prescription_id: str, submission_id: int, destination: str, outage_id: int | None,
                     reason: str | None, now: dt.datetime, refused: str | None = None) -> FallbackRecord:
    """Number and add a paper-fallback record (``issued``; ``paper_claim`` at once when the
    submission was ``refused`` already: the reason). Flushed, so a clash on the number surfaces here."""
    number = next_fallback_no(session, prefix, facility, fallback_day(now, timezone))
    record = FallbackRecord(
        fallback_no=number, event_id=event_id, submission_id=submission_id, destination=destination,
        outage_id=outage_id, facility_siam_id=facility, prescription_id=prescription_id, reason=reason,
        created_at=now, state=PAPER_CLAIM if refused else ISSUED, claimed_at=now if refused else None,
        claim_reason=refused)
    session.add(record)
    session.flush()
    return record


def settle_fallback(session: Session, submission_id: int, *, accepted: bool, result: dict[str, Any] | None = None,
                    why: str | None = None, now: dt.datetime | None = None) -> FallbackRecord | None:
    """Link the paper to the electronic prescription (accepted) or leave it for a paper claim."""
    record = session.scalar(select(FallbackRecord).where(FallbackRecord.submission_id == submission_id))
    if record is None:
        return None
    now = now or utcnow()
    if accepted:
        result = result or {}
        record.state, record.linked_at = LINKED, now
        record.tracking_code = _text(result.get("tracking_code"))
        record.head_id = _text(result.get("head_id"))
        record.claimed_at = record.claim_reason = None
    elif record.state != LINKED:
        record.state, record.claimed_at, record.claim_reason = PAPER_CLAIM, now, why
    return record


def fallback_counts(session: Session) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for destination, state, count in session.execute(
            select(FallbackRecord.destination, FallbackRecord.state, func.count())
            .group_by(FallbackRecord.destination, FallbackRecord.state)):
        counts.setdefault(destination, {s: 0 for s in FALLBACK_STATES})[state] = count
    return counts


def fallback_dict(record: FallbackRecord) -> dict[str, Any]:
    def iso(value: dt.datetime | None) -> str | None:
        return value.isoformat() if value else None
    return {"fallback_no": record.fallback_no, "event_id": record.event_id, "submission_id": record.submission_id,
            "destination": record.destination, "outage_id": record.outage_id, "prescription_id": record.prescription_id,
            "state": record.state, "reason": record.reason, "created_at": iso(record.created_at),
            "linked_at": iso(record.linked_at), "tracking_code": record.tracking_code, "head_id": record.head_id,
            "claimed_at": iso(record.claimed_at), "claim_reason": record.claim_reason,
            "reply_published_at": iso(record.reply_published_at)}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
