"""A circuit breaker per destination: small, pure (no I/O, no threads), driven by a clock.

* **closed** -- every send is allowed; each outcome goes into a sliding window of the last
  ``window`` outcomes. Only *failures* (transient or ambiguous: the insurer did not answer)
  count against it; a rejection is the insurer working fine. Once the window holds at
  least ``min_calls`` outcomes and ``failures / len(window) >= failure_rate``, it opens.
* **open** -- nothing is sent for ``open_s`` seconds, then it is half-open.
* **half_open** -- at most ``half_open_probes`` probe sends are let through. One failure
  opens it again (for another ``open_s``); when all probes succeed it closes. When fewer
  probes were possible because there was no more work, ``release_if_idle`` closes it after
  at least one success and no failure.

Sends are tied to the period they started in by a ``Permit``: an answer that arrives after
the state moved on (a slow send from before the circuit opened) does not count as a probe.
The caller serialises calls (the dispatcher holds a lock); the breaker itself is not
thread-safe.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class CircuitState(str, Enum):
    closed = "closed"
    open = "open"
    half_open = "half_open"


class Verdict(str, Enum):
    success = "success"  # the destination answered (accepted, rejected, 401, ...)
    failure = "failure"  # transient or ambiguous: no usable answer
    neutral = "neutral"  # nothing reached the destination (mapping problem, waiting, internal error)


@dataclass(frozen=True)
class BreakerSettings:
    window: int = 20
    min_calls: int = 10
    failure_rate: float = 0.5
    open_s: float = 30.0
    half_open_probes: int = 2

    def __post_init__(self) -> None:
        if self.window < 1 or self.min_calls < 1 or self.half_open_probes < 1:
            raise ValueError("window, min_calls and half_open_probes must be at least 1")
        if not 0 < self.failure_rate <= 1:
            raise ValueError("failure_rate must be in (0, 1]")
        if self.open_s < 0:
            raise ValueError("open_s must not be negative")


@dataclass(frozen=True)
class Permit:
    """Leave to send once, in one period of the breaker; hand it back with ``record``."""

    generation: int
    probe: bool


@dataclass(frozen=True)
class Transition:
    """A state change, for the caller to record (outage rows, logs)."""

    from_state: CircuitState
    to_state: CircuitState
    why: str


class Breaker:
    def __init__(self, settings: BreakerSettings, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self._clock = clock
        self._state = CircuitState.closed
        self._generation = 0
        self._window: deque[bool] = deque(maxlen=settings.window)  # True = failure
        self._opened_at = 0.0
        self._probes_started = 0
        self._probe_successes = 0
        self.last_failure: str = ""

    # -- reading -----------------------------------------------------------------------------
    @property
    def state(self) -> CircuitState:
        return self._state

    def poll(self) -> Transition | None:
        """Let time act: an open circuit whose ``open_s`` has passed becomes half-open."""
        if self._state is CircuitState.open and self._clock() - self._opened_at >= self.settings.open_s:
            return self._move(CircuitState.half_open, f"open for {self.settings.open_s:g}s: probing")
        return None

    def open_remaining(self) -> float:
        """Seconds until an open circuit may probe (0 when not open)."""
        if self._state is not CircuitState.open:
            return 0.0
        return max(0.0, self.settings.open_s - (self._clock() - self._opened_at))

    def allowance(self) -> int | None:
        """How many sends may start now: None = no limit (closed), 0 = none, k = probe slots left."""
        self.poll()
        if self._state is CircuitState.closed:
            return None
        if self._state is CircuitState.open:
            return 0
        return max(0, self.settings.half_open_probes - self._probes_started)

    def failure_rate(self) -> float:
        return sum(self._window) / len(self._window) if self._window else 0.0

    # -- sending -----------------------------------------------------------------------------
    def acquire(self) -> Permit | None:
        """A permit to send now, or None (open, or every probe slot taken)."""
        allowed = self.allowance()
        if allowed is None:
            return Permit(self._generation, probe=False)
        if allowed <= 0:
            return None
        self._probes_started += 1
        return Permit(self._generation, probe=True)

    def record(self, permit: Permit, verdict: Verdict, detail: str = "") -> Transition | None:
        """The answer to a permitted send. Answers from an earlier period are ignored."""
        if permit.generation != self._generation:
            return None
        if verdict is Verdict.failure and detail:
            self.last_failure = detail
        if self._state is CircuitState.closed:
            if verdict is Verdict.neutral:
                return None
            self._window.append(verdict is Verdict.failure)
            failures, calls = sum(self._window), len(self._window)
            if calls >= self.settings.min_calls and failures / calls >= self.settings.failure_rate:
                return self._move(CircuitState.open, f"{failures} of the last {calls} sends failed"
                                  + (f" (last: {self.last_failure})" if self.last_failure else ""))
            return None
        if self._state is CircuitState.half_open and permit.probe:
            if verdict is Verdict.neutral:
                self._probes_started -= 1  # the slot is free again: nothing was learnt
                return None
            if verdict is Verdict.failure:
                return self._move(CircuitState.open, "a probe send failed"
                                  + (f" ({self.last_failure})" if self.last_failure else ""))
            self._probe_successes += 1
            if self._probe_successes >= self.settings.half_open_probes:
                return self._move(CircuitState.closed, f"{self._probe_successes} probe sends succeeded")
        return None

    def release_if_idle(self) -> Transition | None:
        """No more work to probe with: close after at least one successful probe and none pending."""
        if self._state is CircuitState.half_open and self._probe_successes >= 1 \
                and self._probes_started == self._probe_successes:
            return self._move(CircuitState.closed, f"{self._probe_successes} probe send(s) succeeded, no more work to probe with")
        return None

    # -- outside decisions ------------------------------------------------------------------
    def force_half_open(self, why: str) -> Transition | None:
        """Probe at once (e.g. after a restart while an automatic outage was still open)."""
        if self._state is CircuitState.half_open:
            return None
        return self._move(CircuitState.half_open, why)

    def reset(self, why: str) -> Transition | None:
        """Close at once (an operator ended the outage)."""
        if self._state is CircuitState.closed:
            return None
        return self._move(CircuitState.closed, why)

    def _move(self, to_state: CircuitState, why: str) -> Transition:
        previous = self._state
        self._state = to_state
        self._generation += 1
        self._probes_started = self._probe_successes = 0
        self._window.clear()
        if to_state is CircuitState.open:
            self._opened_at = self._clock()
        if to_state is CircuitState.closed:
            self.last_failure = ""
        return Transition(previous, to_state, why)
