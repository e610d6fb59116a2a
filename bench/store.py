"""Figures from the adapter's store: its own timestamps (inbox ``received_at``, ``attempts``,
``state_changes``) are the clock of every adapter measurement."""

from __future__ import annotations

import datetime as dt
import statistics
from typing import Any

from sqlalchemy import func, select

from adapter.store.db import make_engine, make_sessionmaker
from adapter.store.models import Attempt, InboxEvent, ReplyRow, StateChange, Submission
from adapter.store.states import OPEN_STATES

_OPEN = [s.value for s in OPEN_STATES]
FINAL = ("accepted", "rejected", "invalid", "dead")


class Store:
    def __init__(self, url: str):
        self.engine = make_engine(url)
        self.sessions = make_sessionmaker(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def progress(self) -> dict[str, int]:
        with self.sessions() as s:
            events = s.scalar(select(func.count()).select_from(InboxEvent)) or 0
            open_ = s.scalar(select(func.count()).select_from(Submission).where(Submission.state.in_(_OPEN))) or 0
        return {"events": events, "open": open_}

    def states(self) -> dict[str, int]:
        with self.sessions() as s:
            return dict(s.execute(select(Submission.state, func.count()).group_by(Submission.state)).all())

    def his_answer_ms(self) -> list[float]:
        """Per prescription: its ``occurred_at`` to its first answer reply on the reply queue
        (``prescription.registered`` or ``paper_fallback.issued``, as the outbox marked it published)."""
        answers = ("prescription.registered", "paper_fallback.issued", "adapter.paper_fallback")
        with self.sessions() as s:
            rows = s.execute(select(InboxEvent.occurred_at, func.min(ReplyRow.published_at))
                             .join(ReplyRow, ReplyRow.event_id == InboxEvent.event_id)
                             .where(InboxEvent.event_type == "prescription.created", ReplyRow.type.in_(answers),
                                    ReplyRow.published_at.is_not(None))
                             .group_by(InboxEvent.event_id, InboxEvent.occurred_at)).all()
        return [(published - written).total_seconds() * 1000 for written, published in rows if written and published]

    def answers_pending(self) -> int:
        with self.sessions() as s:
            return s.scalar(select(func.count()).select_from(ReplyRow).where(ReplyRow.state == "pending")) or 0

    def window(self) -> dict[str, Any]:
        """First receipt and last final state change (the span of the run as the store saw it)."""
        with self.sessions() as s:
            first = s.scalar(select(func.min(InboxEvent.received_at)))
            last = s.scalar(select(func.max(StateChange.at)).where(StateChange.to_state.in_(FINAL),
                                                                  StateChange.submission_id.is_not(None)))
            last_in = s.scalar(select(func.max(InboxEvent.received_at)))
        return {"first_received": first, "last_received": last_in, "last_final": last}

    def latency_rows(self) -> list[dict[str, Any]]:
        """One row per accepted submission: received, first claim, last attempt start/duration, accepted."""
        with self.sessions() as s:
            received = dict(s.execute(select(InboxEvent.event_id, InboxEvent.received_at)).all())
            subs = s.execute(select(Submission.id, Submission.event_id, Submission.operation)
                             .where(Submission.state == "accepted")).all()
            changes: dict[int, dict[str, dt.datetime]] = {}
            for sid, to_state, at in s.execute(select(StateChange.submission_id, StateChange.to_state, StateChange.at)
                                               .where(StateChange.submission_id.is_not(None))
                                               .order_by(StateChange.id)):
                slot = changes.setdefault(sid, {})
                if to_state == "sending" and "claimed" not in slot:
                    slot["claimed"] = at
                if to_state == "accepted":
                    slot["accepted"] = at
            attempts: dict[int, tuple[dt.datetime, int, int]] = {}
            for sid, started, duration, number in s.execute(
                    select(Attempt.submission_id, Attempt.started_at, Attempt.duration_ms, Attempt.number)):
                if sid not in attempts or number > attempts[sid][2]:
                    attempts[sid] = (started, duration, number)
        rows = []
        for sid, event_id, operation in subs:
            c = changes.get(sid, {})
            if "accepted" not in c or event_id not in received:
                continue
            started, duration, number = attempts.get(sid, (None, None, 0))
            rows.append({"operation": operation, "received": received[event_id], "claimed": c.get("claimed"),
                         "accepted": c["accepted"], "attempt_started": started, "attempt_ms": duration,
                         "attempts": number})
        return rows


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    values = sorted(values)

    def pick(q: float) -> float:
        return round(values[min(len(values) - 1, int(round(q * (len(values) - 1))))], 1)

    return {"n": len(values), "p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99), "max": round(values[-1], 1),
            "mean": round(statistics.fmean(values), 1)}


def latency_figures(rows: list[dict[str, Any]], sim_latency_ms: float) -> dict[str, Any]:
    """Added latency = (accepted - received) - the simulator's latency, in ms; with its parts."""
    def ms(a: dt.datetime | None, b: dt.datetime | None) -> float | None:
        return None if a is None or b is None else (b - a).total_seconds() * 1000

    added, wait, queued, http_extra, settle = [], [], [], [], []
    by_op: dict[str, list[float]] = {}
    first_try = [r for r in rows if r["attempts"] == 1]
    for r in rows:
        total = ms(r["received"], r["accepted"])
        if total is None:
            continue
        added.append(total - sim_latency_ms)
        by_op.setdefault(r["operation"], []).append(total - sim_latency_ms)
    for r in first_try:
        if (w := ms(r["received"], r["claimed"])) is not None:
            wait.append(w)
        if (q := ms(r["claimed"], r["attempt_started"])) is not None:
            queued.append(q)
        if r["attempt_ms"] is not None:
            http_extra.append(r["attempt_ms"] - sim_latency_ms)
        if r["attempt_started"] is not None and r["attempt_ms"] is not None:
            end = r["attempt_started"] + dt.timedelta(milliseconds=r["attempt_ms"])
            if (x := ms(end, r["accepted"])) is not None:
                settle.append(x)
    return {"added_ms": percentiles(added),
            "by_operation": {op: percentiles(v) for op, v in sorted(by_op.items())},
            "parts_first_attempt": {"received_to_claimed_ms": percentiles(wait),
                                    "claimed_to_send_ms": percentiles(queued),
                                    "http_minus_sim_latency_ms": percentiles(http_extra),
                                    "response_to_accepted_ms": percentiles(settle)},
            "retried": len(rows) - len(first_try)}
