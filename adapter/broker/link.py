"""What the consumer tells operators about its broker connection: each lost connection or failed
attempt as a warning, and on coming back how long the broker was gone -- so a 3 a.m. log reads
"lost ... restored after 42.0 s (5 failed attempts)" instead of a bare run of retries."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("adapter.pipeline.runner")


class BrokerLink:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._down_since: float | None = None
        self._failed_attempts = 0  # connection attempts that failed since the link went down

    def lost(self, reason: str, retry_in_s: float, was_consuming: bool) -> None:
        """A session ended (``was_consuming``) or an attempt to open one failed."""
        if self._down_since is None:
            self._down_since = self._clock()
        if was_consuming:
            log.warning("broker connection lost (%s); reconnecting in %.0fs", reason, retry_in_s)
            return
        self._failed_attempts += 1
        log.warning("broker unreachable (%s; %d failed attempts, down %.0fs); next attempt in %.0fs",
                    reason, self._failed_attempts, self._clock() - self._down_since, retry_in_s)

    def restored(self, queue: str) -> None:
        """Consuming ``queue`` (again)."""
        if self._down_since is None:
            log.info("consuming from queue %s", queue)
            return
        log.warning("broker connection restored after %.1fs (%d failed attempts); consuming from queue %s",
                    self._clock() - self._down_since, self._failed_attempts, queue)
        self._down_since, self._failed_attempts = None, 0
