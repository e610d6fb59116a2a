"""A token bucket: at most ``rate`` sends per second on average, bursts up to ``capacity``.

Pure and clock-driven. The dispatcher takes tokens when it *claims* submissions (not while
a send waits), so a claimed submission is sent at once and its lease never runs out while
it waits for its turn.
"""

from __future__ import annotations

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
