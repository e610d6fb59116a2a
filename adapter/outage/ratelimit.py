"""A token bucket: at most ``rate`` sends per second on average, bursts up to ``capacity``;
and the pacer that keeps the same limit where the insurer sees it, at the moment of sending.

Pure and clock-driven. The dispatcher takes tokens when it *claims* submissions (not while
a send waits), so it never claims more than it may send. Between the claim and the send the
jobs wait for a worker thread; on a loaded machine several claimed a tenth of a second apart
can reach the insurer in the same instant. ``SendPacer`` spaces the sends themselves: a
worker about to send asks it for its turn and waits that long (a fraction of a second when
the claims were paced; it never refuses).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, rate: float, capacity: float | None = None, clock: Callable[[], float] = time.monotonic):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.capacity = float(capacity if capacity is not None else max(1.0, rate))
        if self.capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._clock = clock
        self._tokens = self.capacity
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def available(self) -> int:
        """Whole tokens available now."""
        self._refill()
        return int(self._tokens + 1e-9)

    def take_up_to(self, most: int) -> int:
        """Take up to ``most`` whole tokens; the number taken (0 when the bucket is empty)."""
        count = max(0, min(most, self.available()))
        self.take(count)
        return count

    def take(self, count: int) -> None:
        self._refill()
        self._tokens -= count

    def give_back(self, count: int) -> None:
        """Return tokens that were taken but not used (fewer rows claimed than hoped)."""
        self._refill()
        self._tokens = min(self.capacity, self._tokens + count)

    def mirror(self, tokens: float) -> None:
        """Hold ``tokens`` as of now (a copy of a bucket kept elsewhere: ``SharedTokenBucket``)."""
        self._tokens, self._at = min(self.capacity, tokens), self._clock()

    def wait_s(self) -> float:
        """Seconds until one whole token is available."""
        self._refill()
        return 0.0 if self._tokens >= 1 - 1e-9 else (1 - self._tokens) / self.rate


class SendPacer:
    """Send slots by the generic cell rate algorithm: ``rate`` a second, ``burst`` at once.

    ``turn()`` reserves the next slot and says how long to wait for it, so in any window of
    ``t`` seconds at most ``burst + rate * t`` sends start (``max_rps`` 10, burst 2: at most 12
    in any one second). Thread-safe; the caller sleeps (the pacer holds no thread)."""

    def __init__(self, rate: float, burst: int | None = None, clock: Callable[[], float] = time.monotonic):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._interval = 1.0 / rate
        self._tolerance = (max(1, burst if burst is not None else int(max(1.0, rate))) - 1) * self._interval
        self._clock = clock
        self._next = clock()  # the theoretical time of the next send
        self._lock = threading.Lock()

    def turn(self) -> float:
        """Seconds this send must wait for its slot (0: now); the slot is taken."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next - self._tolerance)
            self._next = max(now, self._next) + self._interval
            return start - now
