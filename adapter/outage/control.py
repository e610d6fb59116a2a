"""What the dispatcher asks before and after each send to a destination: may I send, how
many, and what did that answer say about the destination's health.

Per destination it combines

* the **circuit breaker** (in this process's memory, ``breaker.py``); its changes are written
  to the store: an automatic outage row (``detected='circuit'``, started and ended by
  ``adapter``) and the ``circuit_states`` row that ``adapter status`` shows;
* **declared outages** (``adapter outage start``, another process): read from the store at
  most every ``sync_s`` seconds; while one is open nothing is sent, not even probes;
* the **rate limit** (token bucket, ``max_rps``), so a recovering insurer is not flooded by
  the backlog; on PostgreSQL the bucket is a row shared by every dispatcher process
  (``shared_bucket.py``), so N processes keep to ``max_rps`` together.

The store is the meeting point of processes: an open automatic outage found in the store
while this breaker is closed (a restart during an outage, or another dispatcher process)
makes it half-open at once, so it probes instead of flooding; an automatic outage that
someone else ended (``adapter outage end``) closes this breaker.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from adapter.config import CircuitConfig
from adapter.destinations.outcome import OutcomeClass
from adapter.outage import records
from adapter.outage.breaker import Breaker, BreakerSettings, CircuitState, Permit, Transition, Verdict
from adapter.outage.ratelimit import SendPacer, TokenBucket
from adapter.outage.shared_bucket import SharedTokenBucket
from adapter.store.models import Submission
from adapter.store.states import State
from adapter.store.types import utcnow

log = logging.getLogger(__name__)
ACTOR = "adapter"

_VERDICTS = {
    OutcomeClass.accepted: Verdict.success,
    OutcomeClass.rejected: Verdict.success,  # the insurer answered: it works, the data does not
    OutcomeClass.auth: Verdict.success,  # it answered too (credentials are a config problem)
    OutcomeClass.transient: Verdict.failure,
    OutcomeClass.ambiguous: Verdict.failure,
}


def verdict_of(klass: OutcomeClass | None) -> Verdict:
    """transient/ambiguous are failures; answers are successes; nothing sent is neutral."""
    return _VERDICTS.get(klass, Verdict.neutral) if klass is not None else Verdict.neutral


@dataclass(frozen=True)
class Plan:
    """How many submissions of one destination to claim now, and whether as probes
    (probes are taken even before their retry time: the point is to learn)."""

    permits: list[Permit]
    probe: bool
    held: str | None = None  # why nothing may be sent (declared outage, circuit open, rate limit)


class _Destination:
    def __init__(self, name: str, breaker: Breaker, bucket: TokenBucket | SharedTokenBucket | None,
                 pacer: SendPacer | None = None):
        self.name = name
        self.breaker = breaker
        self.bucket = bucket
        self.pacer = pacer
        self.declared = False
        self.circuit_row_open = False


class OutageControl:
    def __init__(self, sessions: sessionmaker[Session], breakers: dict[str, BreakerSettings],
                 rates: dict[str, tuple[float | None, int | None]], owner: str, *,
                 sync_s: float = 0.25, monotonic: Callable[[], float] = time.monotonic,
                 clock: Callable[[], dt.datetime] = utcnow, shared_rates: bool = False):
        """``shared_rates``: keep each ``max_rps`` bucket in the store (PostgreSQL), shared by
        every dispatcher process, instead of in this process's memory."""
        self._sessions = sessions
        self._owner = owner
        self._sync_s = sync_s
        self._monotonic = monotonic
        self._clock = clock
        self._lock = threading.RLock()
        self._synced_at: float | None = None
        self._dest: dict[str, _Destination] = {}
        for name, settings in breakers.items():
            rate, burst = rates.get(name, (None, None))
            bucket: TokenBucket | SharedTokenBucket | None = None
            if rate and shared_rates:
                bucket = SharedTokenBucket(sessions, name, rate, burst, monotonic)
            elif rate:
                bucket = TokenBucket(rate, burst, monotonic)
            pacer = SendPacer(rate, burst, monotonic) if rate else None
            self._dest[name] = _Destination(name, Breaker(settings, monotonic), bucket, pacer)

    # -- reading ----------------------------------------------------------------------------
    def circuit(self, destination: str) -> CircuitState:
        with self._lock:
            return self._dest[destination].breaker.state

    def sync(self, force: bool = False) -> None:
        """Read open outages from the store (declared ones, and automatic ones of other processes)."""
        with self._lock:
            now = self._monotonic()
            if not force and self._synced_at is not None and now - self._synced_at < self._sync_s:
                return
            self._synced_at = now
            with self._sessions() as session:
                rows = records.open_outages(session)
            for dest in self._dest.values():
                mine = [o for o in rows if o.destination == dest.name]
                dest.declared = any(o.detected == records.MANUAL for o in mine)
                circuit_open = any(o.detected == records.CIRCUIT for o in mine)
                state = dest.breaker.state
                if state is not CircuitState.closed and not circuit_open:
                    self._apply(dest, dest.breaker.reset("the automatic outage was ended by an operator"))
                elif state is CircuitState.closed and circuit_open:
                    self._apply(dest, dest.breaker.force_half_open(
                        "an automatic outage is open in the store (restart or another dispatcher): probing"))
                dest.circuit_row_open = circuit_open

    def plan(self, destination: str, most: int) -> Plan:
        """Permits for up to ``most`` sends to ``destination`` now; hand unused ones back with ``unused``."""
        self.sync()
        with self._lock:
            dest = self._dest.get(destination)
            if dest is None:
                return Plan([Permit(0, False)] * most, probe=False)
            if dest.declared:
                return Plan([], False, "declared outage")
            self._apply(dest, dest.breaker.poll())
            allowance = dest.breaker.allowance()
            if allowance == 0:
                return Plan([], False, f"circuit {dest.breaker.state.value}")
            count = most if allowance is None else min(most, allowance)
            if dest.bucket is not None:
                count = dest.bucket.take_up_to(count)
                if count <= 0:
                    return Plan([], False, "rate limit")
            permits = [p for p in (dest.breaker.acquire() for _ in range(count)) if p is not None]
            return Plan(permits, probe=dest.breaker.state is CircuitState.half_open)

    def unused(self, destination: str, permits: Iterable[Permit], *, claimed_none_as_probe: bool = False) -> None:
        """Permits not used (fewer submissions were claimable): slots and tokens go back."""
        with self._lock:
            dest = self._dest.get(destination)
            if dest is None:
                return
            returned = 0
            for permit in permits:
                dest.breaker.record(permit, Verdict.neutral)
                returned += 1
            if dest.bucket is not None and returned:
                dest.bucket.give_back(returned)
            if claimed_none_as_probe:
                self._apply(dest, dest.breaker.release_if_idle())

    def record(self, destination: str, permit: Permit, klass: OutcomeClass | None, detail: str = "") -> None:
        with self._lock:
            dest = self._dest.get(destination)
            if dest is None:
                return
            self._apply(dest, dest.breaker.record(permit, verdict_of(klass), detail))

    def wait_s(self, destination: str) -> float | None:
        """For "when is something due": None = held until a person acts (declared outage);
        otherwise seconds until a send may start (0 = now)."""
        self.sync()
        with self._lock:
            dest = self._dest.get(destination)
            if dest is None:
                return 0.0
            if dest.declared:
                return None
            self._apply(dest, dest.breaker.poll())
            wait = dest.breaker.open_remaining()
            if dest.bucket is not None:
                wait = max(wait, dest.bucket.wait_s())
            return wait

    def send_wait_s(self, destination: str) -> float:
        """Seconds a claimed send to ``destination`` waits for its turn (``SendPacer``; 0 without
        ``max_rps``). The slot is taken: call it once per request, just before sending."""
        dest = self._dest.get(destination)
        return dest.pacer.turn() if dest is not None and dest.pacer is not None else 0.0

    def probing(self, destination: str) -> bool:
        with self._lock:
            dest = self._dest.get(destination)
            return dest is not None and dest.breaker.state is CircuitState.half_open and not dest.declared

    # -- writing ------------------------------------------------------------------------------
    def _apply(self, dest: _Destination, transition: Transition | None) -> None:
        """Write a state change of the breaker to the store (outage row, circuit state)."""
        if transition is None:
            return
        log.warning("circuit of %s: %s -> %s (%s)", dest.name, transition.from_state.value,
                    transition.to_state.value, transition.why)
        opened = transition.to_state is CircuitState.open and transition.from_state is CircuitState.closed
        try:
            for with_outage in ((True, False) if opened else (False,)):
                try:
                    self._write(dest, transition, with_outage)
                    break
                except IntegrityError:  # an automatic outage was opened by another process meanwhile: keep it
                    continue
        except Exception:  # the breaker still works in memory; the next change writes again
            log.exception("could not record the circuit change of %s", dest.name)

    def _write(self, dest: _Destination, transition: Transition, open_outage: bool) -> None:
        with self._sessions() as session:
            now = self._clock()
            records.save_circuit_state(session, dest.name, transition.to_state.value, transition.why, self._owner, now)
            if open_outage:
                try:
                    records.start_outage(session, dest.name, reason=f"circuit opened: {transition.why}", actor=ACTOR,
                                         detected=records.CIRCUIT, now=now)
                except records.OutageError:
                    pass  # already open (another process, or left from before a restart): keep that one
                dest.circuit_row_open = True
            elif transition.to_state is CircuitState.closed:
                records.end_outages(session, dest.name, actor=ACTOR, detected=records.CIRCUIT, now=now,
                                    reason=f"circuit closed: {transition.why}")
                dest.circuit_row_open = False
                pull_forward(session, dest.name, now)
            session.commit()


def pull_forward(session: Session, destination: str, now: dt.datetime) -> int:
    """The destination is back: retries that waited out the outage become due now (the rate
    limit spreads them). Only transient/ambiguous failures; anything else keeps its time."""
    done = cast(CursorResult[Any], session.execute(  # an UPDATE: Session.execute is typed Result
        update(Submission).where(Submission.destination == destination, Submission.state == State.retry_wait.value,
                                 Submission.next_attempt_at > now,
                                 Submission.last_error_class.in_([OutcomeClass.transient.value,
                                                                  OutcomeClass.ambiguous.value]))
        .values(next_attempt_at=now).execution_options(synchronize_session=False)))
    return int(done.rowcount or 0)


def settings_from_config(circuit: CircuitConfig) -> BreakerSettings:
    return BreakerSettings(window=circuit.window, min_calls=circuit.min_calls,
                           failure_rate=circuit.failure_rate, open_s=circuit.open_s,
                           half_open_probes=circuit.half_open_probes)
