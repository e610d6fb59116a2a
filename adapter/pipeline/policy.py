"""Retry policy: exponential backoff with jitter and a cap, ``Retry-After`` honoured,
and the budget (attempts and time-to-live) after which a submission is dead."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from adapter.config import RetryConfig


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
