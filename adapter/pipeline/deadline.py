"""The answer deadline: every ``prescription.created`` gets a registration or a paper answer within
``fallback.answer_within_s`` of its own ``occurred_at``, outage declared or not.

A prescription whose create submission is still open when its deadline passes (the insurer hangs,
refuses to answer, or is failing without the circuit having opened yet) gets a paper-fallback
record and its ``paper_fallback.issued`` reply, in one transaction; its electronic submission goes
on as in an outage and is linked later. The sweep runs in ``adapter run`` every second; it reads
the store, so it holds across crashes: a prescription the adapter held when it was killed is
answered by the next process from its ``occurred_at``.

A submission stored less than ``fallback.late_grace_s`` ago is left alone even when its deadline
has passed (a message the HIS delivered late, after the adapter was down): a working insurer gets
those few seconds to register it first. A prescription written more than ``fallback.answer_horizon_s``
ago gets no paper from its deadline at all: nobody is waiting at the desk for it (a backlog is
registered; one written during an outage got its paper at intake, ``adapter.pipeline.intake``).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session, sessionmaker

from adapter.outage import records
from adapter.replies.make import GATEWAY_DESTINATIONS, ReplyRules, paper_reply
from adapter.replies.rows import add_replies
from adapter.store.models import FallbackRecord, InboxEvent, Submission
from adapter.store.states import OPEN_STATES
from adapter.store.types import utcnow

log = logging.getLogger(__name__)
_BATCH = 200


@dataclass(frozen=True)
class AnswerDeadline:
    answer_within_s: float
    late_grace_s: float
    horizon_s: float
    number_prefix: str
    timezone: str


def _overdue(session: Session, deadline: AnswerDeadline, now: dt.datetime) -> list[Any]:
    written_before = now - dt.timedelta(seconds=deadline.answer_within_s)
    written_after = now - dt.timedelta(seconds=deadline.horizon_s)
    stored_before = now - dt.timedelta(seconds=deadline.late_grace_s)
    s, e = Submission, InboxEvent
    return list(session.execute(
        select(s.id, s.event_id, s.destination, s.his_ref, s.state, s.last_error, e.facility_siam_id)
        .join(e, e.event_id == s.event_id)
        .where(s.operation == "create", e.event_type == "prescription.created",
               s.state.in_([state.value for state in OPEN_STATES]), s.destination.not_in(GATEWAY_DESTINATIONS),
               e.occurred_at <= written_before, e.occurred_at >= written_after, s.created_at <= stored_before,
               ~exists().where(FallbackRecord.submission_id == s.id))
        .order_by(s.id).limit(_BATCH)).all())


def _still_open(session: Session, submission_id: int) -> bool:
    """Lock the submission's row while it is still open (a dispatcher settling it waits for this
    transaction, then finds the paper record and links it)."""
    touched = session.execute(update(Submission).where(
        Submission.id == submission_id, Submission.state.in_([state.value for state in OPEN_STATES]))
        .values(updated_at=Submission.updated_at))
    return bool(getattr(touched, "rowcount", 0))


def issue_overdue_paper(sessions: sessionmaker[Session], deadline: AnswerDeadline, rules: ReplyRules,
                        now: dt.datetime | None = None) -> int:
    """Paper for every prescription past its deadline with no registration yet; the number issued."""
    if deadline.answer_within_s <= 0:
        return 0
    now = now or utcnow()
    issued = 0
    with sessions() as session:
        for row in _overdue(session, deadline, now):
            if not _still_open(session, row.id):  # settled meanwhile: its registration reply is the answer
                continue
            ref = row.his_ref or {}
            outage = records.current_outage(session, row.destination)
            why = (f"no answer from {row.destination} within {deadline.answer_within_s:.0f} s of the prescription "
                   f"({row.state}{': ' + row.last_error[:200] if row.last_error else ''})")
            record = records.new_paper_record(
                session, deadline.number_prefix, deadline.timezone, event_id=row.event_id,
                facility=row.facility_siam_id, prescription_id=str(ref.get("prescription_id") or ""),
                submission_id=row.id, destination=row.destination, outage_id=outage.id if outage else None,
                reason=outage.reason if outage else why, now=now)
            add_replies(session, rules, [(paper_reply(record, ref, now, rules.legacy_paper_type), None)], now)
            issued += 1
        session.commit()
    if issued:
        log.warning("answer deadline: issued %d paper prescriptions (no registration within %.0f s)", issued,
                    deadline.answer_within_s)
    return issued
