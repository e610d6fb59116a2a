"""Retry policy: exponential backoff with jitter and a cap, ``Retry-After`` honoured,
and the budget (attempts and time-to-live) after which a submission is dead; and ``decide``,
what state a sent submission moves to by the outcome of its attempt."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from adapter.config import RetryConfig
from adapter.destinations.outcome import Outcome, OutcomeClass
from adapter.store.states import State

if TYPE_CHECKING:
    from adapter.destinations.base import Job


@dataclass(frozen=True)
class Decision:
    dead: bool
    next_attempt_at: dt.datetime | None
    why: str


def backoff_seconds(policy: RetryConfig, attempts: int, rng: random.Random | None = None) -> float:
    """Delay after the ``attempts``-th failed attempt: base * 2^(n-1), capped, +-jitter."""
    raw = min(policy.max_delay_s, policy.base_delay_s * (2 ** max(0, attempts - 1)))
    spread = raw * policy.jitter
    return max(0.0, raw + (rng or random).uniform(-spread, spread))


def after_failure(policy: RetryConfig, attempts: int, first_attempt_at: dt.datetime, now: dt.datetime,
                  retry_after_s: float | None = None) -> Decision:
    if attempts >= policy.max_attempts:
        return Decision(True, None, f"retry budget spent: {attempts} attempts")
    delay = backoff_seconds(policy, attempts)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, policy.max_delay_s))
    when = now + dt.timedelta(seconds=delay)
    if (when - first_attempt_at).total_seconds() > policy.ttl_s:
        return Decision(True, None, f"time-to-live spent: {policy.ttl_s:.0f}s since the first attempt")
    return Decision(False, when, f"retry in {delay:.1f}s")


@dataclass(frozen=True)
class Settlement:
    """What becomes of a ``sending`` submission after an attempt (``decide``)."""

    to_state: State
    reason: str
    """The audit row's reason."""
    fields: dict[str, Any] = field(default_factory=dict)
    """Columns to set with the state."""
    paper: tuple[bool, str | None] | None = None
    """What becomes of its paper-fallback record, if it has one: None untouched, else (accepted, why)."""


def decide(job: Job, claim_result: dict[str, Any] | None, claim_first_attempt_at: dt.datetime | None,
           outcome: Outcome, now: dt.datetime, retry_policy: RetryConfig, wait_delay_s: float,
           ambiguous_grace_s: float) -> Settlement:
    """The new state of the submission ``job`` was claimed from (with the ``result`` and
    ``first_attempt_at`` it had then) given the attempt's ``outcome``: accepted, rejected or
    invalid as answered; waiting for a predecessor -> ``retry_wait`` after ``wait_delay_s``
    (not an attempt: the count is given back); a configuration fault (a refused TLS
    certificate) -> parked in ``retry_wait`` for ``retry_policy.max_delay_s``, the count given
    back, never ``dead`` (``_parked``); anything else is a failure -> ``retry_wait`` by
    ``retry_policy`` (an unanswered request no sooner than ``ambiguous_grace_s``), or ``dead``
    once its budget is spent."""
    klass = outcome.klass
    if klass is OutcomeClass.accepted:
        return Settlement(State.accepted, outcome.message or "accepted", dict(
            result={**(claim_result or {}), **outcome.result}, ambiguous=False, last_error=None,
            last_error_class=None, next_attempt_at=None), (True, None))
    if klass in (OutcomeClass.rejected, OutcomeClass.invalid):
        state = State.rejected if klass is OutcomeClass.rejected else State.invalid
        return Settlement(state, outcome.message, dict(
            last_error=outcome.message, last_error_class=outcome.error_class or klass.value,
            result={**(claim_result or {}), **outcome.result}, next_attempt_at=None),
            (False, f"{state.value}: {outcome.message}"))
    if klass is OutcomeClass.waiting:  # waiting for a predecessor is not an attempt at the destination
        return Settlement(State.retry_wait, outcome.message, dict(
            attempts=job.attempts - 1, last_error=outcome.message, last_error_class=klass.value,
            next_attempt_at=now + dt.timedelta(seconds=wait_delay_s)), None)
    if klass is OutcomeClass.config:
        return _parked(job, outcome, now, retry_policy)
    return _retry_or_dead(job, claim_first_attempt_at, outcome, now, retry_policy, ambiguous_grace_s)


def _retry_or_dead(job: Job, claim_first_attempt_at: dt.datetime | None, outcome: Outcome, now: dt.datetime,
                   retry_policy: RetryConfig, ambiguous_grace_s: float) -> Settlement:
    decision = after_failure(retry_policy, job.attempts, claim_first_attempt_at or now, now, outcome.retry_after_s)
    ambiguous = job.ambiguous or outcome.klass is OutcomeClass.ambiguous
    message = f"{outcome.klass.value}: {outcome.message}"
    failed = dict(last_error=message, last_error_class=outcome.klass.value, ambiguous=ambiguous)
    if decision.dead:
        return Settlement(State.dead, f"{message}; {decision.why}", dict(failed, next_attempt_at=None),
                          (False, f"dead: {message}; {decision.why}"))
    next_at, why = decision.next_attempt_at, decision.why
    grace = dt.timedelta(seconds=ambiguous_grace_s)
    if outcome.klass is OutcomeClass.ambiguous and next_at is not None and next_at < now + grace:
        # the insurer may still be applying the unanswered request: look it up only after the grace
        next_at, why = now + grace, f"look up in {ambiguous_grace_s:.0f}s (no answer came)"
    return Settlement(State.retry_wait, f"{message}; {why}", dict(failed, next_attempt_at=next_at), None)


def _parked(job: Job, outcome: Outcome, now: dt.datetime, retry_policy: RetryConfig) -> Settlement:
    """A configuration fault is the hospital's to fix, not the insurer's outage: spending the retry
    budget on it would only make the submission dead. It waits the longest backoff and is tried
    again (after the fix and a restart it goes out by itself); the attempt is logged but not
    counted, and the ``ambiguous`` flag is left as it was (the handshake failed: nothing applied)."""
    message = f"config: {outcome.message}"
    delay = retry_policy.max_delay_s
    return Settlement(State.retry_wait, f"{message}; parked, tried again in {delay:.0f}s", dict(
        attempts=max(0, job.attempts - 1), last_error=message, last_error_class=outcome.klass.value,
        next_attempt_at=now + dt.timedelta(seconds=delay)), None)
