"""The consumer's broker connection, as the consumer paces it and operators read it.

Pacing: after a lost connection, one attempt a second for the first ``FAST_FOR_S`` of the
outage (a broker restart is met within about a second of the broker being back), then one
every ``SLOW_EVERY_S``. An attempt on a down broker is one refused TCP connect, so this is cheap.

Logging: the lost connection, the first failed attempt, then a failed attempt only when its
reason changes or ``LOG_EVERY_S`` have passed (no flood at one line a second), and on coming
back how long the broker was gone -- so a 3 a.m. log reads "lost ... restored after 42.0s
(40 failed attempts)"."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("adapter.pipeline.runner")

FAST_EVERY_S = 1.0
FAST_FOR_S = 30.0
SLOW_EVERY_S = 5.0
LOG_EVERY_S = 30.0


class BrokerLink:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._down_since: float | None = None
        self._failed_attempts = 0  # connection attempts that failed since the link went down
        self._logged: tuple[str, float] | None = None  # reason and time of the last failure logged

    def lost(self, reason: str, was_consuming: bool) -> float:
        """A session ended (``was_consuming``) or an attempt to open one failed: seconds to wait
        before the next attempt."""
        now = self._clock()
        if self._down_since is None or was_consuming:
            self._down_since, self._failed_attempts = now, 0
        down_s = now - self._down_since
        wait_s = FAST_EVERY_S if down_s < FAST_FOR_S else SLOW_EVERY_S
        if was_consuming:
            log.warning("broker connection lost (%s); reconnecting in %.0fs", reason, wait_s)
            self._logged = None
            return wait_s
        self._failed_attempts += 1
        if self._logged is None or self._logged[0] != reason or now - self._logged[1] >= LOG_EVERY_S:
            log.warning("broker unreachable (%s; %d failed attempts, down %.0fs); next attempt in %.0fs",
                        reason, self._failed_attempts, down_s, wait_s)
            self._logged = (reason, now)
        return wait_s

    def restored(self, queue: str) -> None:
        """Consuming ``queue`` (again)."""
        if self._down_since is None:
            log.info("consuming from queue %s", queue)
            return
        log.warning("broker connection restored after %.1fs (%d failed attempts); consuming from queue %s",
                    self._clock() - self._down_since, self._failed_attempts, queue)
        self._down_since, self._failed_attempts, self._logged = None, 0, None
