"""Retention (config section ``retention``): ``adapter prune`` and the scheduled prune of
``adapter run`` (``retention.prune_every_s``).

Only **finished** work is touched: submissions in ``accepted``, ``confirmed``, ``billed``,
``paid`` or ``deducted`` whose last change is older than the cut-off. Submissions that are
not finished -- ``pending``, ``sending``, ``retry_wait`` (the adapter still owes them),
``rejected``, ``invalid``, ``dead``, ``discrepancy`` (a person still has to look)
-- are never touched, nor is any event that has one of them, nor an invalid event.

Two ages (Mirth's data pruner has the same two: content and metadata):

* ``payload_days``: the submission's payload is cleared and its attempts' request/response
  bodies are replaced by ``{"pruned": true}`` (``submissions.pruned_at`` is set); the event's
  body is replaced by ``{"pruned_at": ...}`` once every submission of it qualifies
  (``inbox_events.pruned_at``), and the earlier versions kept of it (``event_versions`` rows
  ``superseded`` or ``replayed``: whole bodies too) are deleted; an unresolved ``conflict``
  waits for its operator. What identifies the work stays: ids, states, results (tracking
  codes, head ids), errors, times.
* ``audit_days``: the attempt rows and the state changes of such submissions (and the
  event-level state changes of such events) are deleted.

Every change is a conditional statement that re-checks the state in its WHERE clause, so a
submission re-opened meanwhile (``adapter replay``) is left alone. ``dry_run`` counts only.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, and_, delete, exists, func, not_, null, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from adapter.config import RetentionConfig
from adapter.store.models import Attempt, EventVersion, InboxEvent, StateChange, Submission
from adapter.store.states import FINISHED as FINISHED_STATES
from adapter.store.states import EventStatus, State
from adapter.store.types import utcnow
from adapter.store.versions import VersionState

FINISHED = tuple(s.value for s in FINISHED_STATES)
NEVER_TOUCHED = tuple(s.value for s in State if s.value not in FINISHED)
PRUNED = {"pruned": True}
CONFLICT = VersionState.conflict.value


@dataclass
class PruneReport:
    dry_run: bool
    payload_cutoff: str
    audit_cutoff: str
    submission_payloads: int = 0
    attempt_bodies: int = 0
    event_bodies: int = 0
    event_versions_deleted: int = 0
    attempts_deleted: int = 0
    state_changes_deleted: int = 0

    @property
    def total(self) -> int:
        return (self.submission_payloads + self.attempt_bodies + self.event_bodies + self.event_versions_deleted
                + self.attempts_deleted + self.state_changes_deleted)

    def summary(self) -> str:
        verb = "would prune" if self.dry_run else "pruned"
        return (f"{verb}: submission payloads={self.submission_payloads} attempt bodies={self.attempt_bodies} "
                f"event bodies={self.event_bodies} earlier event versions={self.event_versions_deleted} "
                f"(older than {self.payload_cutoff}); attempts deleted="
                f"{self.attempts_deleted} state changes deleted={self.state_changes_deleted} "
                f"(older than {self.audit_cutoff})")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


def _finished_before(cutoff: dt.datetime, submission: Any = Submission) -> Any:
    return and_(submission.state.in_(FINISHED), submission.updated_at < cutoff)


def _event_done_before(cutoff: dt.datetime) -> Any:
    """An event whose every submission is finished before ``cutoff`` (and that is not invalid)."""
    other = aliased(Submission)
    unfinished_or_recent = exists().where(
        other.event_id == InboxEvent.event_id, or_(other.state.not_in(FINISHED), other.updated_at >= cutoff))
    return and_(InboxEvent.status != EventStatus.invalid.value, InboxEvent.received_at < cutoff,
                not_(unfinished_or_recent))


def _ids(session: Session, query: Any, limit: int) -> list[Any]:
    return list(session.scalars(query.limit(limit)))


def prune(sessions: sessionmaker[Session], retention: RetentionConfig, *, now: dt.datetime | None = None,
          dry_run: bool = False, stop: Callable[[], bool] | None = None) -> PruneReport:
    now = now or utcnow()
    payload_cut = now - dt.timedelta(days=retention.payload_days)
    audit_cut = now - dt.timedelta(days=retention.audit_days)
    report = PruneReport(dry_run, payload_cut.isoformat(), audit_cut.isoformat())
    batch = retention.batch_size
    stopped = stop or (lambda: False)

    payload_subs = select(Submission.id).where(_finished_before(payload_cut), Submission.pruned_at.is_(None))
    event_bodies = select(InboxEvent.event_id).where(_event_done_before(payload_cut), InboxEvent.pruned_at.is_(None))
    versions = select(EventVersion.id).where(
        EventVersion.state != CONFLICT,
        EventVersion.event_id.in_(select(InboxEvent.event_id).where(InboxEvent.pruned_at.is_not(None))))
    old_subs = select(Submission.id).where(_finished_before(audit_cut))
    audit_attempts = select(Attempt.id).where(Attempt.submission_id.in_(old_subs))
    old_changes = or_(
        StateChange.submission_id.in_(old_subs),
        and_(StateChange.submission_id.is_(None),
             StateChange.event_id.in_(select(InboxEvent.event_id).where(_event_done_before(audit_cut)))))
    audit_changes = select(StateChange.id).where(old_changes)

    if dry_run:
        with sessions() as session:
            def count(q: Any) -> int:
                return session.scalar(select(func.count()).select_from(q.subquery())) or 0
            report.submission_payloads = count(payload_subs)
            report.attempt_bodies = count(select(Attempt.id).where(Attempt.submission_id.in_(payload_subs)))
            report.event_bodies = count(event_bodies)
            report.event_versions_deleted = count(select(EventVersion.id).where(
                EventVersion.state != CONFLICT, EventVersion.event_id.in_(
                    select(InboxEvent.event_id).where(or_(InboxEvent.pruned_at.is_not(None),
                                                          InboxEvent.event_id.in_(event_bodies))))))
            report.attempts_deleted = count(audit_attempts)
            report.state_changes_deleted = count(audit_changes)
        return report

    while not stopped():  # payloads and attempt bodies
        with sessions() as session:
            ids = _ids(session, payload_subs.order_by(Submission.id), batch)
            if not ids:
                break
            # an UPDATE's result is a CursorResult (with rowcount); Session.execute is typed Result
            done = cast(CursorResult[Any], session.execute(
                update(Submission).where(Submission.id.in_(ids), _finished_before(payload_cut),
                                         Submission.pruned_at.is_(None))
                .values(payload=null(), pruned_at=now).execution_options(synchronize_session=False)))
            report.submission_payloads += done.rowcount
            if done.rowcount == 0:
                break
            bodies = cast(CursorResult[Any], session.execute(
                update(Attempt).where(Attempt.submission_id.in_(
                    select(Submission.id).where(Submission.id.in_(ids), Submission.pruned_at.is_not(None))))
                .values(request=PRUNED, response=PRUNED).execution_options(synchronize_session=False)))
            report.attempt_bodies += bodies.rowcount
            session.commit()
    marker = json.dumps({"pruned_at": now.isoformat()})
    report.event_bodies += _in_batches(sessions, event_bodies.order_by(InboxEvent.event_id), batch, stopped, lambda ids: (
        update(InboxEvent).where(InboxEvent.event_id.in_(ids), _event_done_before(payload_cut),
                                 InboxEvent.pruned_at.is_(None)).values(body=marker, pruned_at=now)))
    report.event_versions_deleted += _in_batches(sessions, versions.order_by(EventVersion.id), batch, stopped,
                                                 lambda ids: delete(EventVersion).where(EventVersion.id.in_(ids),
                                                                                        EventVersion.state != CONFLICT))
    report.attempts_deleted += _in_batches(sessions, audit_attempts.order_by(Attempt.id), batch, stopped, lambda ids: (
        delete(Attempt).where(Attempt.id.in_(ids), Attempt.submission_id.in_(old_subs))))
    report.state_changes_deleted += _in_batches(sessions, audit_changes.order_by(StateChange.id), batch, stopped,
                                                lambda ids: delete(StateChange).where(StateChange.id.in_(ids),
                                                                                      old_changes))
    return report


def _in_batches(sessions: sessionmaker[Session], ids_query: Any, batch: int, stopped: Callable[[], bool],
                statement_for: Callable[[list[Any]], Any]) -> int:
    """Run ``statement_for(ids)`` over ``ids_query`` one batch per transaction (the statement re-checks
    its own conditions); the rows it changed. Stops when asked, or when a batch changes nothing."""
    total = 0
    while not stopped():
        with sessions() as session:
            ids = _ids(session, ids_query, batch)
            if not ids:
                break
            done = cast(CursorResult[Any],  # an UPDATE or DELETE: see above
                        session.execute(statement_for(ids).execution_options(synchronize_session=False)))
            total += done.rowcount
            session.commit()
            if done.rowcount == 0:
                break
    return total
