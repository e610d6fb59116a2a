"""Replay a conflicting version of an event as the event (``adapter replay --conflict``).

A different body under a known event id is kept as a ``conflict`` (``adapter.store.versions``).
An operator who finds it is the HIS's correction replays it: intake's rules run on the new body
(contract, routes, mappings) and its rows take the old body's place, in one transaction:

* the inbox row gets the new body, digest and status (audited as an event state change); the old
  body is kept as a ``superseded`` version, so a late redelivery of it is a duplicate;
* a submission of the old body to the same destination and operation is re-used (its idempotency
  key stays): it moves to ``pending`` with the new payload (or ``invalid`` when the new body's
  mapping fails); one the new body does not route to becomes ``invalid`` ("superseded");
  new routes get new submissions.

Only when that cannot send anything twice: every submission of the old body must be one the
insurer refused or never got (``rejected``, ``invalid``, ``dead``) and not ``ambiguous`` (a try
whose answer was lost). Anything else refuses with the reason and changes nothing: an accepted
submission means the insurer holds the old version (the HIS sends the correction as an update
under a new event id), an open one may be on its way (wait until it settles). A new body that
fails the contract is refused too: it would replace an event with one nobody can send.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from adapter.pipeline.intake import Intake, Received
from adapter.store import versions
from adapter.store.audit import audit_rows, state_change, transition
from adapter.store.models import InboxEvent, Submission
from adapter.store.states import NEEDS_PERSON, State
from adapter.store.types import utcnow

REPLACEABLE = tuple(s.value for s in NEEDS_PERSON)  # refused by the insurer, or never sent
_EVENT_COLUMNS = ("event_type", "status", "facility_siam_id", "source_system", "correlation_id", "subject_key",
                  "patient_ref", "occurred_at", "body", "content_digest", "problems")
_SUBMISSION_COLUMNS = ("mapping", "subject_key", "after_key", "principal", "params", "payload", "his_ref",
                       "last_error", "last_error_class")


class ConflictRefused(Exception):
    """The conflict cannot be replayed as asked; nothing was changed. The message says why and what to do."""


@dataclass
class Superseded:
    event_id: str
    version_id: int
    from_status: str
    to_status: str
    submissions: list[dict[str, Any]] = field(default_factory=list)  # id, destination, operation, from, to
    dry_run: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "version": self.version_id, "from_status": self.from_status,
                "to_status": self.to_status, "submissions": self.submissions, "dry_run": self.dry_run}


def replay_conflict(sessions: sessionmaker[Session], intake: Intake, event_id: str, *, actor: str, reason: str,
                    dry_run: bool = False) -> Superseded:
    """Make the newest open conflicting version of ``event_id`` the event (see the module's rules)."""
    if not reason.strip():
        raise ConflictRefused("--reason is required (it goes into the audit trail)")
    with sessions() as session:
        event = session.get(InboxEvent, event_id)
        if event is None:
            raise ConflictRefused(f"no event {event_id} in the store")
        version = versions.newest_conflict(session, event_id, lock=True)
        if version is None:
            raise ConflictRefused(f"event {event_id} has no open conflict (adapter show {event_id} lists its versions)")
        outcome, row, planned = intake.version_rows(version.body)
        if outcome is not Received.stored:
            problems = "; ".join(f"{p['field']}: {p['rule']}" for p in row.get("problems") or [])
            raise ConflictRefused(f"version {version.id} of {event_id} is not a valid event ({problems}): nothing "
                                  "changed; the HIS has to send a corrected body")
        now = utcnow()
        version_id = version.id
        if not versions.mark_replayed(session, version_id, actor=actor, reason=reason.strip(), now=now):
            raise ConflictRefused(f"version {version_id} of {event_id} was resolved meanwhile: nothing changed")
        old = _claim_old_submissions(session, event_id)
        session.refresh(event)
        why = f"{reason.strip()}; replayed version {version_id} of the event"
        report = Superseded(event_id, version_id, event.status, row["status"], dry_run=dry_run)
        versions.keep_superseded(session, event_id, event.content_digest or intake.stored_digest(event.body),
                                 event.body, actor=actor, reason=why, now=now)
        for name in _EVENT_COLUMNS:
            setattr(event, name, row.get(name))
        audit_rows(session, [state_change(event_id, None, report.from_status, report.to_status, actor, why)])
        _replace_submissions(session, old, planned, actor, why, report)
        if dry_run:
            session.rollback()
        else:
            session.commit()
    return report


def _claim_old_submissions(session: Session, event_id: str) -> dict[tuple[str, str], Submission]:
    """Lock the old body's submissions, all of them replaceable, or refuse (the UPDATE takes the
    write lock on SQLite and the row locks on PostgreSQL before anything is read)."""
    claimed = session.execute(update(Submission).where(
        Submission.event_id == event_id, Submission.state.in_(REPLACEABLE), Submission.ambiguous.is_(False))
        .values(updated_at=utcnow()).execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
    total = session.scalar(select(func.count()).select_from(Submission).where(Submission.event_id == event_id)) or 0
    rows = session.scalars(select(Submission).where(Submission.event_id == event_id).order_by(Submission.id)
                           .execution_options(populate_existing=True)).all()
    if claimed != total:
        blocking = [s for s in rows if s.state not in REPLACEABLE or s.ambiguous]
        session.rollback()
        raise ConflictRefused("; ".join(_blocked(s) for s in blocking) + ": nothing changed")
    return {(s.destination, s.operation): s for s in rows}


def _blocked(sub: Submission) -> str:
    where = f"submission {sub.id} ({sub.destination}/{sub.operation}) is {sub.state}"
    if sub.state in REPLACEABLE:
        return f"{where} but its last try's answer was lost (ambiguous): the insurer may hold the old version"
    if sub.state in (State.pending.value, State.sending.value, State.retry_wait.value):
        return f"{where}: the old version may be on its way; replay the conflict once it has settled"
    return (f"{where}: the insurer holds the old version; the HIS sends the correction as an update "
            "under a new event id")


def _replace_submissions(session: Session, old: dict[tuple[str, str], Submission], planned: list[dict[str, Any]],
                         actor: str, reason: str, report: Superseded) -> None:
    now = utcnow()
    for new in planned:
        key = (new["destination"], new["operation"])
        sub = old.pop(key, None)
        if sub is None:
            sub = Submission(**new)
            session.add(sub)
            session.flush()
            audit_rows(session, [state_change(sub.event_id, sub.id, None, sub.state, actor, reason)])
            report.submissions.append(_moved(sub, None))
            continue
        before = sub.state
        transition(session, sub, State(new["state"]), actor=actor, reason=reason, next_attempt_at=now, attempts=0,
                   first_attempt_at=None, ambiguous=False, lease_until=None, lease_owner=None, result=None,
                   **{name: new.get(name) for name in _SUBMISSION_COLUMNS})
        report.submissions.append(_moved(sub, before))
    for (destination, operation), sub in old.items():
        before = sub.state
        transition(session, sub, State.invalid, actor=actor, reason=reason, next_attempt_at=None,
                   last_error=f"superseded: the replayed version does not go to {destination}/{operation}",
                   last_error_class="superseded")
        report.submissions.append(_moved(sub, before))


def _moved(sub: Submission, before: str | None) -> dict[str, Any]:
    return {"id": sub.id, "destination": sub.destination, "operation": sub.operation, "from": before, "to": sub.state}
