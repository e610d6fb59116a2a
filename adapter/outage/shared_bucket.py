"""``max_rps`` shared by every dispatcher process on one PostgreSQL store.

The in-memory ``TokenBucket`` is per process: N ``adapter run`` processes would send up to
N x max_rps. This bucket keeps the tokens in a ``rate_buckets`` row (one per destination) and
takes them in one short transaction per claim: the row lock orders the processes, and the
refill is computed from the database's clock, so processes on hosts whose clocks differ still
agree. ``wait_s`` is only a hint for sleeping and is computed from the last row seen, without
a round trip; ``take_up_to`` is the authority.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from adapter.outage.ratelimit import TokenBucket

log = logging.getLogger(__name__)

_CREATE = text("INSERT INTO rate_buckets (destination, tokens, refilled_at) VALUES (:d, :cap, clock_timestamp()) "
               "ON CONFLICT (destination) DO NOTHING")
_READ = text("SELECT tokens, GREATEST(0, EXTRACT(EPOCH FROM clock_timestamp() - refilled_at)) AS age_s, "
             "clock_timestamp() AS now FROM rate_buckets WHERE destination = :d FOR UPDATE")
_WRITE = text("UPDATE rate_buckets SET tokens = :tokens, refilled_at = :now WHERE destination = :d")


class SharedTokenBucket:
    def __init__(self, sessions: sessionmaker[Session], destination: str, rate: float, capacity: float | None = None,
                 monotonic: Callable[[], float] = time.monotonic):
        self._estimate = TokenBucket(rate, capacity, monotonic)  # checks the arguments; the last row seen, for wait_s
        self.rate, self.capacity = self._estimate.rate, self._estimate.capacity
        self._sessions = sessions
        self._destination = destination

    def take_up_to(self, most: int) -> int:
        """Take up to ``most`` whole tokens; the number taken (0 when the bucket is empty)."""
        return self._change(lambda tokens: max(0, min(most, int(tokens + 1e-9))))

    def give_back(self, count: int) -> None:
        """Return tokens that were taken but not used (fewer rows claimed than hoped). Best effort:
        it runs after a claim, which must not fail for it; a token not returned only slows the
        next sends down by 1/max_rps."""
        if count <= 0:
            return
        try:
            self._change(lambda tokens: -count)
        except SQLAlchemyError as exc:
            log.warning("could not return %d rate-limit tokens of %s (%s)", count, self._destination, type(exc).__name__)

    def wait_s(self) -> float:
        """Seconds until one whole token is likely available (from the last row seen)."""
        return self._estimate.wait_s()

    def _change(self, taken: Callable[[float], int]) -> int:
        """Refill the row to now, take ``taken(tokens)`` (negative: give back), store; the number taken."""
        params = {"d": self._destination}
        with self._sessions.begin() as session:
            row = session.execute(_READ, params).one_or_none()
            if row is None:  # first use of this destination on this store
                session.execute(_CREATE, {**params, "cap": self.capacity})
                row = session.execute(_READ, params).one()
            tokens = min(self.capacity, float(row.tokens) + float(row.age_s) * self.rate)
            count = taken(tokens)
            tokens = min(self.capacity, tokens - count)
            session.execute(_WRITE, {**params, "tokens": tokens, "now": row.now})
        self._estimate.mirror(tokens)
        return count
