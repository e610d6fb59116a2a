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

Two ways to run it: ``run_once`` claims a batch, sends it and waits for all of it (tests, the
demo); ``pump`` (the runner's loop) claims only as many as there are free send slots and returns
at once, so a new event or a finished send is picked up without waiting for the slowest send of
a batch. ``wake`` / ``wait_for_work`` connect it to intake. The hot path uses Core statements
(no ORM unit of work): a claim is one candidate SELECT, one ``UPDATE ... RETURNING`` per seen
state and one multi-row insert of audit rows; a settle is one conditional ``UPDATE``, the attempt
row and the audit row. Finished sends are recorded together: whichever send thread finds the
recorder free writes every outcome waiting by then in one transaction (``_settle_waiting``), so
eight threads do not queue for SQLite's single writer one commit each (docs/performance.md).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, and_, bindparam, exists, func, insert, or_, select, text, true, update
from sqlalchemy.orm import Session, sessionmaker

from adapter.config import DispatchConfig, RetryConfig
from adapter.destinations.base import Destination, Job
from adapter.destinations.outcome import Outcome, OutcomeClass
from adapter.pipeline.metrics import observe_attempt
from adapter.outage.breaker import Permit
from adapter.outage.control import OutageControl
from adapter.outage.records import settle_fallback
from adapter.pipeline.policy import Settlement, decide
from adapter.replies.make import ReplyRules, Settled, paper_reply, settled_reply
from adapter.replies.rows import add_replies
from adapter.store.audit import audit_rows, move_unaudited, state_change
from adapter.store.health import StoreHealth, is_store_outage, store_reason
from adapter.store.lookups import DestinationStore
from adapter.store.models import CLAIMABLE_STATES_SQL, Attempt, FallbackRecord, Submission, table_of
from adapter.store.states import DUE_STATES, OPEN_STATES, State
from adapter.store.types import utcnow

log = logging.getLogger(__name__)
ACTOR = "dispatcher"
_OPEN = [s.value for s in OPEN_STATES]
_DUE = [s.value for s in DUE_STATES]
_SUBMISSIONS = table_of(Submission)
_ATTEMPTS = table_of(Attempt)
_NEXT_AT = _SUBMISSIONS.c.next_attempt_at
_INSERT_ATTEMPT = insert(_ATTEMPTS)
_FALLBACKS = FallbackRecord.__table__
_FALLBACKS_OF = select(_FALLBACKS.c.submission_id).where(_FALLBACKS.c.submission_id.in_(bindparam("sids", expanding=True)))
_REPLY_STATES = (State.accepted, State.rejected, State.invalid, State.dead)  # what the HIS is told about
_DUE_NOW = text(f"submissions.{CLAIMABLE_STATES_SQL}")  # the index's own WHERE text: the planner then uses it


# need the create's ids (a paraclinic confirm: its registration's): they wait for it, never the reverse
_DEPENDENT_OPERATIONS = ("update", "cancel", "confirm")
_JOB_COLUMNS = ("id", "event_id", "destination", "operation", "params", "payload", "principal", "idempotency_key",
                "ambiguous", "subject_key", "after_key", "attempts", "result", "first_attempt_at", "his_ref")


@dataclass(frozen=True)
class _Claim:
    """What settling needs of the row as it was claimed (the row is not read again)."""

    result: dict[str, Any] | None
    first_attempt_at: dt.datetime | None
    his_ref: dict[str, Any] | None = None  # what the submission's replies name of the HIS's event


@dataclass
class _Finished:
    """A send that is over, waiting to be recorded (``_settle_waiting``)."""

    claimed: Job  # as claimed (its permit is found by its id)
    prepared: Job  # as prepared for the destination (what the attempt row describes)
    outcome: Outcome
    health: OutcomeClass | None  # what the answer says about the destination (None: nothing learnt)
    counted: bool  # in ``in_flight`` (started by ``pump``)
    done: threading.Event
    observe: bool = False  # set when recorded: an attempt row was written (log and count it)
    moved: bool = False  # set when recorded: the submission moved to its new state (the claim was still ours)


_SETTLE_BATCH = 64


def _blocked() -> Any:
    """An earlier open submission about the same record (or the visit it belongs to) exists."""
    s, earlier = _SUBMISSIONS, _SUBMISSIONS.alias("earlier")
    waits_for_this = and_(s.c.operation == "create", earlier.c.operation.in_(_DEPENDENT_OPERATIONS),
                          earlier.c.subject_key == s.c.subject_key)
    return exists().where(
        earlier.c.destination == s.c.destination, earlier.c.id < s.c.id, earlier.c.state.in_(_OPEN),
        or_(earlier.c.subject_key == s.c.subject_key, earlier.c.subject_key == s.c.after_key),
        ~waits_for_this)


@functools.lru_cache(maxsize=None)
def _candidate_queries(probe: bool, scope: str, postgres: bool, abandoned: bool) -> list[Any]:
    """The claim queries (due, and abandoned when asked), built once: building them is most of
    their cost. Parameters: ``now``, ``abandoned_before``, ``limit``, and ``destination`` (scope
    ``one``) or ``destinations`` (scope ``many``; ``all`` has no filter)."""
    s, moment = _SUBMISSIONS, _NEXT_AT.type
    mine: Any = {"one": s.c.destination == bindparam("destination"),
                 "many": s.c.destination.in_(bindparam("destinations", expanding=True)),
                 "all": true()}[scope]
    blocked = _blocked()
    due = select(s.c.id, s.c.state, s.c.next_attempt_at).where(_DUE_NOW, mine, ~blocked)
    if not probe:
        due = due.where(s.c.next_attempt_at <= bindparam("now", type_=moment))
    queries = [due]
    if abandoned:
        queries.append(select(s.c.id, s.c.state, s.c.next_attempt_at).where(
            s.c.state == State.sending.value, s.c.lease_until < bindparam("abandoned_before", type_=moment),
            mine, ~blocked))
    built = []
    for query in queries:
        query = query.order_by(s.c.next_attempt_at, s.c.id).limit(bindparam("limit", type_=Integer))
        if postgres:
            query = query.with_for_update(skip_locked=True, of=s)
        built.append(query)
    return built


def _candidates(session: Session, destinations: list[str] | None, now: dt.datetime, abandoned_before: dt.datetime,
                probe: bool, limit: int, abandoned: bool = True) -> list[tuple[int, str]]:
    """(id, state) of up to ``limit`` claimable submissions, the longest due first: due (or, when
    ``abandoned``, abandoned mid-send: lease out before ``abandoned_before``), and no earlier open
    submission about the same record. ``probe``: the destination's circuit is half-open --
    waiting retries count as due now.

    Due work is read through the partial index on open submissions (``ix_submissions_claim``),
    so the query costs with the work that is open, not with the history the store keeps."""
    scope = "all" if destinations is None else ("one" if len(destinations) == 1 else "many")
    postgres = session.bind is not None and session.bind.dialect.name == "postgresql"
    params: dict[str, Any] = {"now": now, "abandoned_before": abandoned_before, "limit": limit}
    if destinations is not None and scope == "one":
        params["destination"] = destinations[0]
    elif scope == "many":
        params["destinations"] = destinations
    connection = session.connection()
    rows: list[Any] = []
    for query in _candidate_queries(probe, scope, postgres, abandoned):
        rows += connection.execute(query, params).all()
    far = dt.datetime.max.replace(tzinfo=dt.timezone.utc)
    rows.sort(key=lambda r: (r.next_attempt_at or far, r.id))
    return [(r.id, r.state) for r in rows[:limit]]


@functools.lru_cache(maxsize=None)
def _take_statement(kind: str) -> Any:
    """The claiming UPDATE for rows seen ``due``, seen due as ``probe``, or ``abandoned`` mid-send."""
    s, moment = _SUBMISSIONS, _NEXT_AT.type
    guard = {"due": s.c.next_attempt_at <= bindparam("p_now", type_=moment),
             "probe": s.c.next_attempt_at.is_not(None),
             "abandoned": s.c.lease_until < bindparam("p_abandoned_before", type_=moment)}[kind]
    values: dict[str, Any] = dict(
        state=State.sending.value, lease_until=bindparam("p_lease_until", type_=moment),
        lease_owner=bindparam("p_owner"), attempts=s.c.attempts + 1, updated_at=bindparam("p_now", type_=moment),
        first_attempt_at=func.coalesce(s.c.first_attempt_at, bindparam("p_now", type_=moment)))
    if kind == "abandoned":
        values["ambiguous"] = True
    # ``state`` compared through an expression: a plain ``state = ?`` (with ``next_attempt_at``)
    # lets SQLite range-scan ix_submissions_due over every due row -- the whole backlog, per
    # claim -- instead of looking the few ids up by primary key (PostgreSQL takes the key anyway)
    seen_state = func.coalesce(s.c.state, "") == bindparam("seen")
    return update(s).where(s.c.id.in_(bindparam("ids", expanding=True)), seen_state, guard) \
        .values(**values).returning(*(s.c[c] for c in _JOB_COLUMNS))


class Dispatcher:
    def __init__(self, sessions: sessionmaker[Session], destinations: Mapping[str, Destination],
                 retry: Mapping[str, RetryConfig], config: DispatchConfig, owner: str,
                 clock: Callable[[], dt.datetime] = utcnow, outages: OutageControl | None = None,
                 replies: ReplyRules | None = None):
        self._sessions = sessions
        self._replies = replies or ReplyRules()
        self.on_replies: Callable[[], None] | None = None  # told after a commit that wrote replies (the outbox)
        self.store_health: StoreHealth | None = None  # told when a claim or a settle finds the store down or back
        self._outages = outages
        self._permits: dict[int, Permit] = {}
        self._claims: dict[int, _Claim] = {}
        self._destinations = destinations
        self._retry = retry
        self._config = config
        self._owner = owner
        self._clock = clock
        self._pool = ThreadPoolExecutor(config.workers, thread_name_prefix="send")
        self._lock = threading.Condition()
        self._in_flight = 0
        self._work = threading.Event()
        self._quiet_until: dict[str, float] = {}  # destination -> monotonic time: nothing was claimable
        self._abandoned_asked: dict[str, float] = {}  # destination -> monotonic time of the last look
        self._wakes: dict[str, int] = {}  # destination -> wakes so far
        self._finished: queue.SimpleQueue[_Finished] = queue.SimpleQueue()
        self._settling = threading.Lock()  # held by the thread recording a batch of finished sends

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._settle_waiting(block=True)

    def run_once(self) -> int:
        """Claim one batch, send it concurrently, wait until all of it is recorded; the number handled."""
        jobs = self._claim()
        if jobs:
            finished = list(self._pool.map(functools.partial(self._handle, counted=False), jobs))
            self._settle_waiting(block=True)
            for item in finished:
                item.done.wait()
        return len(jobs)

    # -- continuous mode (the runner) ---------------------------------------------------------
    def pump(self) -> int:
        """Claim up to the free send slots and start those sends without waiting; the number started.

        While sends are in flight, a claim waits until a quarter of the slots are free, so a
        saturated dispatcher claims in small batches instead of one row per finished send."""
        with self._lock:
            free = self._slots_to_claim()
        if not free:
            return 0
        jobs = self._claim(min(free, self._config.batch_size), skip_quiet=True)
        for job in jobs:
            with self._lock:
                self._in_flight += 1
            self._pool.submit(self._handle, job, counted=True)
        return len(jobs)

    def _slots_to_claim(self) -> int:
        """With ``_lock`` held: the free slots ``pump`` would claim for now -- 0 unless a quarter
        of the slots are free while sends are in flight (any free slot when none are)."""
        workers = self._config.workers
        free, busy = workers - self._in_flight, self._in_flight
        return free if free > 0 and (not busy or free >= max(1, workers // 4)) else 0

    def _sent(self, destination: str) -> None:
        """A send started by ``pump`` is recorded: its slot is free, and a successor may have
        become claimable. The pump is woken only when it would claim: waking it to find too few
        free slots costs a thread switch per send (a few per cent of the CPU when saturated)."""
        with self._lock:
            self._in_flight -= 1
            self._lock.notify_all()
            worth_it = self._slots_to_claim() > 0
        self._mark_woken([destination])
        if worth_it:
            self._work.set()

    def wake(self, destinations: Iterable[str] | None = None) -> None:
        """New work was committed for ``destinations`` (None: any): claim now rather than at the next poll."""
        self._mark_woken(destinations)
        self._work.set()

    def _mark_woken(self, destinations: Iterable[str] | None) -> None:
        """Count the wake and end the destinations' quiet time, so the next claim asks them."""
        for name in (self._destinations if destinations is None else destinations):
            self._wakes[name] = self._wakes.get(name, 0) + 1  # a claim already under way must not go quiet
            self._quiet_until.pop(name, None)

    def wait_for_work(self, timeout: float) -> None:
        """Until ``wake``, a finished send, or ``timeout`` seconds."""
        self._work.wait(timeout)
        self._work.clear()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Until every started send is settled; False if ``timeout`` passed first."""
        with self._lock:
            return self._lock.wait_for(lambda: self._in_flight == 0, timeout)

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
            if _candidates(session, None if destination is None else [destination], now, self._abandoned_before(now),
                           probe, 1):
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
    def _claim(self, most: int | None = None, skip_quiet: bool = False) -> list[Job]:
        """Claim up to ``most`` (default ``batch_size``) across the destinations.

        ``skip_quiet`` (continuous mode): a destination whose last claim came back short is not
        asked again until ``wake`` names it (intake stored work for it, one of its sends
        finished) or ``poll_interval_s`` has passed (retries coming due, other processes)."""
        most = most or self._config.batch_size
        if self._outages is None:
            return self._claim_for(list(self._destinations), most, False)
        jobs: list[Job] = []
        for name in self._destinations:
            if skip_quiet and self._quiet_until.get(name, 0.0) > time.monotonic():
                continue
            wakes = self._wakes.get(name, 0)
            plan = self._outages.plan(name, most - len(jobs))
            if not plan.permits:
                continue
            claimed = self._claim_for([name], len(plan.permits), plan.probe, self._look_for_abandoned(name, skip_quiet))
            for job, permit in zip(claimed, plan.permits):
                self._permits[job.submission_id] = permit
            self._outages.unused(name, plan.permits[len(claimed):], claimed_none_as_probe=plan.probe and not claimed)
            if len(claimed) < len(plan.permits) and self._wakes.get(name, 0) == wakes:
                self._quiet_until[name] = time.monotonic() + self._config.poll_interval_s
            jobs += claimed
            if len(jobs) >= most:
                break
        return jobs

    def _look_for_abandoned(self, destination: str, continuous: bool) -> bool:
        """Sends abandoned by a dead dispatcher surface only after lease_s + ambiguous_grace_s:
        in continuous mode, asking for them once per ``poll_interval_s`` is soon enough."""
        if not continuous:
            return True
        now = time.monotonic()
        if now - self._abandoned_asked.get(destination, -1e9) < self._config.poll_interval_s:
            return False
        self._abandoned_asked[destination] = now
        return True

    def _claim_for(self, destinations: list[str], limit: int, probe: bool, abandoned: bool = True) -> list[Job]:
        now = self._clock()
        lease_until = now + dt.timedelta(seconds=self._config.lease_s)
        with self._sessions() as session:
            candidates = _candidates(session, destinations, now, self._abandoned_before(now), probe, limit, abandoned)
            if not candidates:
                self._store_ok()
                return []
            order = {sid: i for i, (sid, _) in enumerate(candidates)}
            rows: list[Any] = []
            for seen_state in dict.fromkeys(state for _, state in candidates):
                ids = [sid for sid, state in candidates if state == seen_state]
                rows += self._take(session, ids, seen_state, now, lease_until, probe)
            rows.sort(key=lambda r: order[r.id])
            audit_rows(session, [state_change(r.event_id, r.id, seen, State.sending.value, ACTOR, reason)
                                 for r, seen, reason in (self._claim_reason(r, candidates, probe) for r in rows)])
            session.commit()
        self._store_ok()
        for row in rows:
            self._claims[row.id] = _Claim(row.result, row.first_attempt_at, row.his_ref)
        return [self._job(row) for row in rows]

    def _take(self, session: Session, ids: list[int], seen_state: str, now: dt.datetime, lease_until: dt.datetime,
              probe: bool) -> list[Any]:
        """Claim the rows still in ``seen_state`` (and still due): one conditional UPDATE ... RETURNING."""
        kind = "abandoned" if seen_state == State.sending.value else ("probe" if probe else "due")
        return list(session.connection().execute(_take_statement(kind), {
            "ids": ids, "seen": seen_state, "p_now": now, "p_lease_until": lease_until, "p_owner": self._owner,
            "p_abandoned_before": self._abandoned_before(now)}).all())

    @staticmethod
    def _claim_reason(row: Any, candidates: list[tuple[int, str]], probe: bool) -> tuple[Any, str, str]:
        seen = next(state for sid, state in candidates if sid == row.id)
        abandoned = seen == State.sending.value
        reason = "lease expired mid-send: outcome unknown, will look it up first" if abandoned else f"attempt {row.attempts}"
        if probe and not abandoned:
            reason += " (probe: the destination's circuit is half-open)"
        return row, seen, reason

    def _job(self, row: Any) -> Job:
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
    def _handle(self, job: Job, counted: bool) -> _Finished:
        """Send one claimed submission, then hand the outcome to ``_settle_waiting``."""
        prepared = job
        health: OutcomeClass | None = None
        try:
            prepared, outcome = self._attempt(job)
            health = outcome.klass
        except Exception as exc:  # a bug must not lose the submission: park it for a retry
            if is_store_outage(exc):  # preparing read the store: nothing was sent
                self._store_failed(exc)
            else:
                log.exception("dispatch failed for submission %s", job.submission_id)
            outcome = Outcome(OutcomeClass.transient, f"internal error: {type(exc).__name__}")
        finished = _Finished(job, prepared, outcome, health, counted, threading.Event())
        self._finished.put(finished)
        self._settle_waiting(block=False)
        return finished

    def _attempt(self, job: Job) -> tuple[Job, Outcome]:
        """Prepare, look up first when the last try's outcome is unknown, then send."""
        destination = self._destinations[job.destination]
        with self._sessions() as session:
            prepared = destination.prepare(DestinationStore(session), job)
        if isinstance(prepared, Outcome):
            return job, prepared
        if prepared.ambiguous:
            self._wait_turn(job.destination)
            found = destination.lookup(prepared)
            if found.klass is not OutcomeClass.not_found:
                return prepared, found
        self._wait_turn(job.destination)
        return prepared, destination.send(prepared)

    def _wait_turn(self, destination: str) -> None:
        """``max_rps`` where the insurer sees it: claims are paced, but claimed jobs that waited
        for a worker on a loaded machine would otherwise reach the insurer together."""
        wait = self._outages.send_wait_s(destination) if self._outages is not None else 0.0
        if wait > 0:
            time.sleep(wait)

    # -- recording outcomes -------------------------------------------------------------------
    def _settle_waiting(self, block: bool) -> None:
        """Record the finished sends waiting, many per transaction (group commit).

        The thread that finds the recorder free records everything queued by then, in one
        transaction; the others go back to sending. An outcome is queued before its sender tries,
        and the recorder looks at the queue again after letting go, so none is left behind. A
        crash before the commit leaves the submissions ``sending``: they are looked up at the
        destination after the lease, never resent blindly -- as with one transaction per send."""
        while not self._finished.empty():
            if not self._settling.acquire(blocking=block):
                return
            try:
                batch = self._take_finished()
                if batch:
                    self._record(batch)
            finally:
                self._settling.release()

    def _take_finished(self) -> list[_Finished]:
        batch: list[_Finished] = []
        while len(batch) < _SETTLE_BATCH:
            try:
                batch.append(self._finished.get_nowait())
            except queue.Empty:
                break
        return batch

    def _record(self, batch: list[_Finished]) -> None:
        """Record ``batch`` in one transaction, else one by one (one bad row must not keep the others
        unrecorded). Whatever is not recorded is left ``sending``: looked up at the destination after
        the lease, never resent blindly. With the store down, the rest are not tried one by one."""
        try:
            try:
                self._settle_all(batch)
                self._store_ok()
            except Exception as exc:
                if is_store_outage(exc):
                    self._store_failed(exc)
                else:
                    log.warning("recording %d outcomes together failed; recording them one by one", len(batch),
                                exc_info=True)
                self._record_one_by_one(batch)
        finally:
            for item in batch:
                self._after_record(item)

    def _record_one_by_one(self, batch: list[_Finished]) -> None:
        """One transaction each, on a new connection (a cut one was dropped); after a second store
        outage error the rest are left ``sending`` (the store is down, not the rows)."""
        outages = left = 0
        for item in batch:
            if outages > 1:
                item.moved = item.observe = False
                left += 1
                continue
            try:
                self._settle_all([item])
                self._store_ok()
            except Exception as exc:
                item.moved = item.observe = False
                left += 1
                if is_store_outage(exc):
                    outages += 1
                    self._store_failed(exc)
                else:
                    log.exception("could not record the outcome of submission %s", item.claimed.submission_id)
        if outages:
            log.warning("%d outcomes not recorded (store unavailable): left sending, looked up at the destination "
                        "after the lease before anything is sent again", left)

    def _store_ok(self) -> None:
        if self.store_health is not None:
            self.store_health.ok("dispatcher")

    def _store_failed(self, exc: BaseException) -> None:
        if self.store_health is not None:
            self.store_health.failed("dispatcher", exc)
        else:
            log.warning("store unavailable to the dispatcher (%s)", store_reason(exc))

    def _settle_all(self, batch: list[_Finished]) -> None:
        """Record the attempts and new states of ``batch`` in one transaction, each only if its claim
        is still ours: a conditional UPDATE per submission, then the audit and attempt rows of all
        in one statement each, then the paper-fallback records of those that have one."""
        now = self._clock()
        with self._sessions() as session:
            changes: list[dict[str, Any]] = []
            attempts: list[dict[str, Any]] = []
            papers: dict[int, tuple[bool, str | None, dict[str, Any] | None]] = {}
            replies: list[tuple[dict[str, Any] | None, int | None]] = []
            for item in batch:
                item.moved, item.observe = self._settle(session, item.prepared, item.outcome, now, changes, attempts,
                                                        papers, replies)
            audit_rows(session, changes)
            if attempts:
                session.connection().execute(_INSERT_ATTEMPT, attempts)
            for submission_id in _with_fallback(session, list(papers)):
                accepted, why, result = papers[submission_id]
                record = settle_fallback(session, submission_id, accepted=accepted, result=result, why=why, now=now)
                if accepted:  # the HIS printed paper for it: paper_fallback.linked is its registration reply
                    replies = [(body, sid) for body, sid in replies if sid != submission_id]
                replies.append((self._paper_reply(record, accepted, now), None))
            written = add_replies(session, self._replies, replies, now) if replies else 0
            for item in batch:
                if item.moved:
                    self._destinations[item.prepared.destination].on_result(DestinationStore(session), item.prepared,
                                                                            item.outcome)
            session.commit()
        if written and self.on_replies is not None:
            self.on_replies()

    def _after_record(self, item: _Finished) -> None:
        """Log and count the attempt, tell the circuit breaker, and free the send slot -- the slot
        even when the rest fails, or ``wait_idle`` would wait for ever."""
        job = item.claimed
        try:
            self._claims.pop(job.submission_id, None)
            if item.observe:
                observe_attempt(item.prepared, item.outcome)  # metrics + the attempt's log line, once it is recorded
            permit = self._permits.pop(job.submission_id, None)
            if self._outages is not None and permit is not None:
                self._outages.record(job.destination, permit, item.health, item.outcome.message)
        except Exception:  # reporting must not stop the sends that follow
            log.exception("after recording submission %s", job.submission_id)
        finally:
            item.done.set()
            if item.counted:
                self._sent(job.destination)

    def _settle(self, session: Session, job: Job, outcome: Outcome, now: dt.datetime, changes: list[dict[str, Any]],
                attempts: list[dict[str, Any]], papers: dict[int, tuple[bool, str | None, dict[str, Any] | None]],
                replies: list[tuple[dict[str, Any] | None, int | None]]) -> tuple[bool, bool]:
        """Move the submission to its new state if the claim is still ours, and add what else is to
        be written to ``changes`` (audit rows), ``attempts``, ``papers`` (what becomes of a
        paper-fallback record, if it has one) and ``replies`` (what the HIS is told). (moved, attempt
        recorded): an attempt is logged and counted once committed; none is recorded for ``waiting``."""
        claim = self._claims.get(job.submission_id)
        if claim is None:  # claimed by an earlier instance (tests), or the stash was lost: read it
            claim = self._read_claim(session, job.submission_id)
        settled = self._decide(job, claim, outcome, now)
        fields, paper = settled.fields, settled.paper
        change = move_unaudited(session, job.submission_id, job.event_id, State.sending.value, settled.to_state,
                                actor=ACTOR, reason=settled.reason, owner=self._owner, lease_until=None,
                                lease_owner=None, **fields)
        if change is None:
            return False, self._reclaimed(session, job, outcome, now, attempts)
        changes.append(change)
        if outcome.klass is OutcomeClass.waiting:
            return True, False
        if settled.to_state in _REPLY_STATES and self._replies.enabled:
            replies.append((self._settled_reply(job, claim, settled, now), job.submission_id))
        attempts.append(_attempt_row(job, outcome, now))
        if paper is not None:
            papers[job.submission_id] = (*paper, fields.get("result"))
        return True, True

    def _reclaimed(self, session: Session, job: Job, outcome: Outcome, now: dt.datetime,
                   attempts: list[dict[str, Any]]) -> bool:
        """Another dispatcher took the submission over (lease ran out): the answer is kept as an
        attempt only (True), if the submission still exists."""
        log.warning("submission %s was reclaimed while being sent; outcome kept as an attempt only", job.submission_id)
        if session.scalar(select(Submission.id).where(Submission.id == job.submission_id)) is None:
            return False
        attempts.append(_attempt_row(job, outcome, now))
        return True

    @staticmethod
    def _read_claim(session: Session, submission_id: int) -> _Claim:
        row = session.execute(select(Submission.result, Submission.first_attempt_at, Submission.his_ref)
                              .where(Submission.id == submission_id)).first()
        return _Claim(row.result, row.first_attempt_at, row.his_ref) if row is not None else _Claim(None, None)

    @staticmethod
    def _settled_reply(job: Job, claim: _Claim, settled: Settlement, now: dt.datetime) -> dict[str, Any] | None:
        fields = settled.fields
        return settled_reply(Settled(job.event_id, job.submission_id, job.destination, job.operation,
                                     settled.to_state.value, claim.his_ref or {},
                                     fields.get("result") or claim.result or {}, fields.get("last_error"),
                                     fields.get("last_error_class"), job.attempts), now)

    def _paper_reply(self, record: FallbackRecord | None, accepted: bool, now: dt.datetime) -> dict[str, Any] | None:
        """``paper_fallback.linked`` / ``.paper_claim`` when the record moved to it in this transaction."""
        if record is None or (not accepted and record.claimed_at != now):
            return None
        claim = self._claims.get(record.submission_id)
        ref = (claim.his_ref if claim else None) or {"event_type": "prescription.created",
                                                      "facility_siam_id": record.facility_siam_id,
                                                      "prescription_id": record.prescription_id}
        return paper_reply(record, ref, now)

    def _decide(self, job: Job, claim: _Claim, outcome: Outcome, now: dt.datetime) -> Settlement:
        """The new state, the audit reason, the columns to set, and what becomes of a paper-fallback
        record: ``adapter.pipeline.policy.decide`` with this dispatcher's settings."""
        return decide(job, claim.result, claim.first_attempt_at, outcome, now, self._retry[job.destination],
                      self._config.wait_delay_s, self._config.ambiguous_grace_s)


def _with_fallback(session: Session, submission_ids: list[int]) -> list[int]:
    """Which of ``submission_ids`` have a paper-fallback record (most have none: one query, no ORM)."""
    if not submission_ids:
        return []
    return list(session.connection().execute(_FALLBACKS_OF, {"sids": submission_ids}).scalars())


def _attempt_row(job: Job, outcome: Outcome, now: dt.datetime) -> dict[str, Any]:
    return dict(submission_id=job.submission_id, number=job.attempts,
                started_at=now - dt.timedelta(milliseconds=outcome.duration_ms), duration_ms=outcome.duration_ms,
                outcome=outcome.klass.value, request=outcome.request,
                response={**outcome.response, **({"message": outcome.message} if outcome.message else {})})
