"""Store -> destinations. Claims due submissions, sends them, records each attempt and the
new state in one transaction.

Claiming is a conditional UPDATE (state and lease checked in the WHERE clause), so two
dispatchers never own one submission, on SQLite or PostgreSQL. A submission waits while an
earlier one about the same record (or the visit it belongs to) is still open, which keeps
create -> edit -> delete in order. A ``sending`` row whose lease ran out belonged to a
dispatcher that died mid-send: it is reclaimed as *ambiguous* and looked up at the
destination before anything is sent again.

Outage mode (``adapter.outage.control``): before claiming, each destination is asked how
many sends may start -- none during a declared outage or while its circuit is open, a few
probes when half-open (taken even before their retry time), and no more than the rate
limit allows. Each answer is reported back to the circuit breaker. A submission that ends
``accepted`` links its paper-fallback record (tracking code kept); one that ends
``rejected``/``invalid``/``dead`` leaves it for a paper claim -- in the same transaction.

A create waits for earlier open submissions about the same record, except for an edit or
delete of it: those wait for the create (they need its head id), so the create must not wait
for them (a redelivery after a crash can store an edit before its create).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from adapter.config import DispatchConfig, RetryConfig
from adapter.destinations.base import Destination, Job
from adapter.destinations.outcome import Outcome, OutcomeClass
from adapter.ops.metrics import observe_attempt
from adapter.outage.breaker import Permit
from adapter.outage.control import OutageControl
from adapter.outage.records import settle_fallback
from adapter.pipeline.policy import after_failure
from adapter.store.audit import transition
from adapter.store.models import Attempt, StateChange, Submission
from adapter.store.states import DUE_STATES, OPEN_STATES, State
from adapter.store.types import utcnow

log = logging.getLogger(__name__)
ACTOR = "dispatcher"
_OPEN = [s.value for s in OPEN_STATES]
_DUE = [s.value for s in DUE_STATES]


# need the create's ids (a paraclinic confirm: its registration's): they wait for it, never the reverse
_DEPENDENT_OPERATIONS = ("update", "cancel", "confirm")


def _claimable(now: dt.datetime, abandoned_before: dt.datetime, probe: bool = False) -> Any:
    """Due (or abandoned mid-send, lease out before ``abandoned_before``), and no earlier open
    submission about the same record.

    ``probe``: the destination's circuit is half-open -- waiting retries count as due now."""
    earlier = aliased(Submission)
    waits_for_this = and_(Submission.operation == "create", earlier.operation.in_(_DEPENDENT_OPERATIONS),
                          earlier.subject_key == Submission.subject_key)
    blocked = exists().where(
        earlier.destination == Submission.destination, earlier.id < Submission.id, earlier.state.in_(_OPEN),
        or_(earlier.subject_key == Submission.subject_key, earlier.subject_key == Submission.after_key),
        ~waits_for_this)
    waiting = Submission.state.in_(_DUE) if probe else and_(Submission.state.in_(_DUE), Submission.next_attempt_at <= now)
    due = or_(waiting, and_(Submission.state == State.sending.value, Submission.lease_until < abandoned_before))
    return and_(due, ~blocked)


class Dispatcher:
    def __init__(self, sessions: sessionmaker[Session], destinations: Mapping[str, Destination],
                 retry: Mapping[str, RetryConfig], config: DispatchConfig, owner: str,
                 clock: Callable[[], dt.datetime] = utcnow, outages: OutageControl | None = None):
        self._sessions = sessions
        self._outages = outages
        self._permits: dict[int, Permit] = {}
        self._destinations = destinations
        self._retry = retry
        self._config = config
        self._owner = owner
        self._clock = clock
        self._pool = ThreadPoolExecutor(config.workers, thread_name_prefix="send")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def run_once(self) -> int:
        """Claim one batch, send it concurrently, wait for all; the number handled."""
        jobs = self._claim()
        if jobs:
            list(self._pool.map(self._handle, jobs))
        return len(jobs)

    def next_due_in(self) -> float | None:
        """Seconds until something becomes claimable (0 = now), None when nothing can become due.

        A destination in a declared outage has nothing due until a person ends it; an open
        circuit or the rate limit delays what is due."""
        if self._outages is None:
            return self._due_in(None, False)
        answers = []
        for name in self._destinations:
            hold = self._outages.wait_s(name)
            if hold is None:
                continue
            due = self._due_in(name, self._outages.probing(name))
            if due is not None:
                answers.append(max(due, hold))
        return min(answers) if answers else None

    def _due_in(self, destination: str | None, probe: bool) -> float | None:
        now = self._clock()
        mine = Submission.destination == destination if destination is not None else Submission.id.is_not(None)
        with self._sessions() as session:
            if session.scalar(select(Submission.id).where(_claimable(now, self._abandoned_before(now), probe), mine)
                              .limit(1)) is not None:
                return 0.0
            upcoming = session.scalar(select(Submission.next_attempt_at).where(
                Submission.state.in_(_DUE), mine).order_by(Submission.next_attempt_at).limit(1))
            leased = session.scalar(select(Submission.lease_until).where(
                Submission.state == State.sending.value, mine).order_by(Submission.lease_until).limit(1))
        if leased is not None:
            leased += self._grace
        candidates = [t for t in (upcoming, leased) if t is not None]
        return max(0.0, (min(candidates) - now).total_seconds()) if candidates else None

    # -- claiming ---------------------------------------------------------------------------
    def _claim(self) -> list[Job]:
        if self._outages is None:
            return self._claim_for(list(self._destinations), self._config.batch_size, False)
        jobs: list[Job] = []
        for name in self._destinations:
            plan = self._outages.plan(name, self._config.batch_size)
            if not plan.permits:
                continue
            claimed = self._claim_for([name], len(plan.permits), plan.probe)
            for job, permit in zip(claimed, plan.permits):
                self._permits[job.submission_id] = permit
            self._outages.unused(name, plan.permits[len(claimed):], claimed_none_as_probe=plan.probe and not claimed)
            jobs += claimed
        return jobs

    def _claim_for(self, destinations: list[str], limit: int, probe: bool) -> list[Job]:
        now = self._clock()
        lease_until = now + dt.timedelta(seconds=self._config.lease_s)
        with self._sessions() as session:
            query = select(Submission.id, Submission.state).where(_claimable(now, self._abandoned_before(now), probe)) \
                .where(Submission.destination.in_(destinations)) \
                .order_by(Submission.next_attempt_at, Submission.id).limit(limit)
            if session.bind is not None and session.bind.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True, of=Submission)
            candidates = session.execute(query).all()
            jobs = [job for sid, state in candidates
                    if (job := self._claim_one(session, sid, state, now, lease_until, probe))]
            session.commit()
        return jobs

    def _claim_one(self, session: Session, sid: int, seen_state: str, now: dt.datetime,
                   lease_until: dt.datetime, probe: bool = False) -> Job | None:
        abandoned = seen_state == State.sending.value
        guard = Submission.lease_until < self._abandoned_before(now) if abandoned else (
            Submission.next_attempt_at.is_not(None) if probe else Submission.next_attempt_at <= now)
        claimed = session.execute(
            update(Submission).where(Submission.id == sid, Submission.state == seen_state, guard)
            .values(state=State.sending.value, lease_until=lease_until, lease_owner=self._owner,
                    attempts=Submission.attempts + 1, updated_at=now,
                    ambiguous=Submission.ambiguous | abandoned)
            .execution_options(synchronize_session=False))
        if claimed.rowcount != 1:
            return None
        row = session.get(Submission, sid, populate_existing=True)
        assert row is not None
        if row.first_attempt_at is None:
            row.first_attempt_at = now
        reason = "lease expired mid-send: outcome unknown, will look it up first" if abandoned else f"attempt {row.attempts}"
        if probe and not abandoned:
            reason += " (probe: the destination's circuit is half-open)"
        session.add(_audit(row, seen_state, State.sending.value, reason))
        return Job(submission_id=row.id, event_id=row.event_id, destination=row.destination, operation=row.operation,
                   params=row.params or {}, payload=row.payload, principal=row.principal or "",
                   idempotency_key=row.idempotency_key, ambiguous=row.ambiguous, subject_key=row.subject_key,
                   after_key=row.after_key, attempts=row.attempts, deadline=self._send_deadline())

    @property
    def _grace(self) -> dt.timedelta:
        return dt.timedelta(seconds=self._config.ambiguous_grace_s)

    def _abandoned_before(self, now: dt.datetime) -> dt.datetime:
        """A send abandoned mid-flight is looked up only after the grace: the insurer may still be applying it."""
        return now - self._grace

    def _send_deadline(self) -> float:
        """The lease less a margin for recording the outcome."""
        lease = self._config.lease_s
        return time.monotonic() + lease - min(5.0, lease * 0.2)

    # -- one submission -----------------------------------------------------------------------
    def _handle(self, job: Job) -> None:
        prepared = job
        health: OutcomeClass | None = None  # what the answer says about the destination (None: nothing learnt)
        try:
            prepared, outcome = self._attempt(job)
            health = outcome.klass
        except Exception as exc:  # a bug must not lose the submission: park it for a retry
            log.exception("dispatch failed for submission %s", job.submission_id)
            outcome = Outcome(OutcomeClass.transient, f"internal error: {type(exc).__name__}")
        try:
            self._settle(prepared, outcome)
        finally:
            permit = self._permits.pop(job.submission_id, None)
            if self._outages is not None and permit is not None:
                self._outages.record(job.destination, permit, health, outcome.message)

    def _attempt(self, job: Job) -> tuple[Job, Outcome]:
        """Prepare, look up first when the last try's outcome is unknown, then send."""
        destination = self._destinations[job.destination]
        with self._sessions() as session:
            prepared = destination.prepare(session, job)
        if isinstance(prepared, Outcome):
            return job, prepared
        if prepared.ambiguous:
            found = destination.lookup(prepared)
            if found.klass is not OutcomeClass.not_found:
                return prepared, found
        return prepared, destination.send(prepared)

    def _settle(self, job: Job, outcome: Outcome) -> None:
        now = self._clock()
        with self._sessions() as session:
            row = session.get(Submission, job.submission_id, with_for_update=True)
            if row is None or row.lease_owner != self._owner or row.state != State.sending.value:
                log.warning("submission %s was reclaimed while being sent; outcome kept as an attempt only", job.submission_id)
                if row is not None:
                    session.add(_attempt_row(job, outcome, now))
                    session.commit()
                    observe_attempt(job, outcome)
                return
            if outcome.klass is not OutcomeClass.waiting:
                session.add(_attempt_row(job, outcome, now))
            self._apply(session, row, outcome, now)
            self._destinations[job.destination].on_result(session, job, outcome)
            session.commit()
        if outcome.klass is not OutcomeClass.waiting:
            observe_attempt(job, outcome)  # metrics + the attempt's log line, once it is recorded

    def _apply(self, session: Session, row: Submission, outcome: Outcome, now: dt.datetime) -> None:
        klass = outcome.klass
        done = dict(lease_until=None, lease_owner=None)
        if klass is OutcomeClass.accepted:
            transition(session, row, State.accepted, actor=ACTOR, reason=outcome.message or "accepted",
                       result={**(row.result or {}), **outcome.result}, ambiguous=False, last_error=None,
                       last_error_class=None, next_attempt_at=None, **done)
            settle_fallback(session, row.id, accepted=True, result=row.result, now=now)
        elif klass in (OutcomeClass.rejected, OutcomeClass.invalid):
            state = State.rejected if klass is OutcomeClass.rejected else State.invalid
            transition(session, row, state, actor=ACTOR, reason=outcome.message, last_error=outcome.message,
                       last_error_class=klass.value, result={**(row.result or {}), **outcome.result},
                       next_attempt_at=None, **done)
            settle_fallback(session, row.id, accepted=False, why=f"{state.value}: {outcome.message}", now=now)
        elif klass is OutcomeClass.waiting:
            row.attempts -= 1  # waiting for a predecessor is not an attempt at the destination
            transition(session, row, State.retry_wait, actor=ACTOR, reason=outcome.message, last_error=outcome.message,
                       last_error_class=klass.value,
                       next_attempt_at=now + dt.timedelta(seconds=self._config.wait_delay_s), **done)
        else:
            self._retry_or_dead(session, row, outcome, now, done)

    def _retry_or_dead(self, session: Session, row: Submission, outcome: Outcome, now: dt.datetime,
                       done: dict[str, Any]) -> None:
        policy = self._retry[row.destination]
        decision = after_failure(policy, row.attempts, row.first_attempt_at or now, now, outcome.retry_after_s)
        ambiguous = row.ambiguous or outcome.klass is OutcomeClass.ambiguous
        message = f"{outcome.klass.value}: {outcome.message}"
        if decision.dead:
            transition(session, row, State.dead, actor=ACTOR, reason=f"{message}; {decision.why}", last_error=message,
                       last_error_class=outcome.klass.value, ambiguous=ambiguous, next_attempt_at=None, **done)
            settle_fallback(session, row.id, accepted=False, why=f"dead: {message}; {decision.why}", now=now)
        else:
            next_at, why = decision.next_attempt_at, decision.why
            if outcome.klass is OutcomeClass.ambiguous and next_at is not None and next_at < now + self._grace:
                # the insurer may still be applying the unanswered request: look it up only after the grace
                next_at, why = now + self._grace, f"look up in {self._config.ambiguous_grace_s:.0f}s (no answer came)"
            transition(session, row, State.retry_wait, actor=ACTOR, reason=f"{message}; {why}",
                       last_error=message, last_error_class=outcome.klass.value, ambiguous=ambiguous,
                       next_attempt_at=next_at, **done)


def _audit(row: Submission, from_state: str, to_state: str, reason: str) -> StateChange:
    return StateChange(event_id=row.event_id, submission_id=row.id, from_state=from_state, to_state=to_state,
                       actor=ACTOR, reason=reason)


def _attempt_row(job: Job, outcome: Outcome, now: dt.datetime) -> Attempt:
    return Attempt(submission_id=job.submission_id, number=job.attempts,
                   started_at=now - dt.timedelta(milliseconds=outcome.duration_ms), duration_ms=outcome.duration_ms,
                   outcome=outcome.klass.value, request=outcome.request,
                   response={**outcome.response, **({"message": outcome.message} if outcome.message else {})})
