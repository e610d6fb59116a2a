"""Whether the store answers, as the running loops find it (issue 16: every loop survives store errors).

A PostgreSQL connection cut (``pg_terminate_backend``, a server restart, a network drop) or a
full disk on SQLite raises out of whatever statement the loop was running. The loops of
``adapter run`` catch such an error (``is_store_error``), tell ``StoreHealth`` (``failed``), wait
the back-off it answers (0.5 s doubling to 10 s, per loop) and try again; the engine hands them a
fresh connection (``pool_pre_ping``, and SQLAlchemy drops the whole pool when it sees a
disconnect). The next success of that loop is ``ok``. One line is logged when a loop first finds
the store unavailable and one when it is back, never a traceback per try.

``/readyz`` reports not ready while any loop finds the store unavailable, the ``store_unavailable``
alert is sent when that lasts longer than ``alerts.rules.store_unavailable_s``, and
``/metrics`` has ``adapter_store_available`` (``snapshot``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from adapter.redact import redact_text

log = logging.getLogger(__name__)
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 10.0
_DRIVER_MODULES = ("sqlite3", "psycopg", "psycopg2")


def _driver_error(exc: BaseException) -> bool:
    """A DBAPI error not wrapped by SQLAlchemy (raised by a driver call made directly)."""
    return type(exc).__module__.split(".")[0] in _DRIVER_MODULES and type(exc).__name__ in (
        "OperationalError", "InterfaceError")


def is_store_outage(exc: BaseException) -> bool:
    """The store cannot be used right now, whatever was asked of it: a lost or refused
    connection, a server shutting down, a full disk, a lock or pool wait that ran out. Not an
    error a particular row causes (a constraint, a value too long): those are the data's."""
    seen: BaseException | None = exc
    for _ in range(4):  # the error itself and what it was raised from
        if seen is None:
            return False
        if isinstance(seen, (OperationalError, InterfaceError, PoolTimeout)) or _driver_error(seen):
            return True
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__
    return False


def is_store_error(exc: BaseException) -> bool:
    """Any error of the store (an outage, or a statement the store refused): a loop waits and
    tries again rather than end ``adapter run``."""
    return is_store_outage(exc) or isinstance(exc, DBAPIError)


def store_reason(exc: BaseException) -> str:
    """One line for a log or a page: the driver's error type and the first line of its message,
    redacted. Never SQLAlchemy's own text, which quotes the statement and its parameters."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    said = redact_text(lines[0].strip())[:200] if lines else ""
    return f"{type(orig).__name__}: {said}" if said else type(orig).__name__


@dataclass
class _Outage:
    since: dt.datetime  # wall clock, for people
    since_mono: float
    reason: str
    tries: int = 1
    retry_at: float = 0.0  # monotonic: when the loop's next try is due
    delay_s: float = FIRST_DELAY_S


class StoreHealth:
    """Which of the running loops find the store unavailable, since when and why. Thread-safe."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
                 first_delay_s: float = FIRST_DELAY_S, max_delay_s: float = MAX_DELAY_S):
        self._monotonic, self._wall = monotonic, wall
        self._first, self._max = first_delay_s, max_delay_s
        self._lock = threading.Lock()
        self._failing: dict[str, _Outage] = {}

    def failed(self, loop: str, exc: BaseException) -> float:
        """``loop`` found the store unavailable: the seconds to wait before its next try (doubling
        from 0.5 s to 10 s while the outage lasts). Logged once per outage of that loop."""
        reason, now = store_reason(exc), self._monotonic()
        with self._lock:
            outage = self._failing.get(loop)
            if outage is None:
                outage = self._failing[loop] = _Outage(self._wall(), now, reason, delay_s=self._first)
                first = True
            else:
                outage.tries += 1
                outage.reason = reason
                outage.delay_s = min(self._max, outage.delay_s * 2)
                first = False
            outage.retry_at = now + outage.delay_s
            delay = outage.delay_s
        if first:
            log.warning("store unavailable to the %s (%s); waiting and retrying on a new connection, every "
                        "%.1f s at first, at most every %.0f s; nothing is acked or sent blindly meanwhile",
                        loop, reason, delay, self._max)
        return delay

    def ok(self, loop: str) -> None:
        """``loop`` used the store again; the recovery is logged when it had found it unavailable."""
        with self._lock:
            outage = self._failing.pop(loop, None)
        if outage is not None:
            log.info("store available again to the %s after %.1f s (%d failed tries)", loop,
                     self._monotonic() - outage.since_mono, outage.tries)

    def failing(self, loop: str) -> bool:
        with self._lock:
            return loop in self._failing

    def retry_due(self, loop: str) -> bool:
        """Whether ``loop`` is failing and its back-off has passed (it should try the store again)."""
        with self._lock:
            outage = self._failing.get(loop)
            return outage is not None and self._monotonic() >= outage.retry_at

    def unavailable_for_s(self) -> float | None:
        """Seconds since the first loop still failing found the store unavailable (None: it answers)."""
        with self._lock:
            if not self._failing:
                return None
            return self._monotonic() - min(o.since_mono for o in self._failing.values())

    def snapshot(self) -> dict[str, Any]:
        """For ``/readyz``, ``/status`` and ``/metrics``: no identifiers, only the driver's reason."""
        with self._lock:
            if not self._failing:
                return {"store_available": True, "store_unavailable_since": None, "store_unavailable_s": None,
                        "store_reason": None, "store_failing_loops": []}
            first = min(self._failing.values(), key=lambda o: o.since_mono)
            latest = max(self._failing.values(), key=lambda o: o.retry_at)
            return {"store_available": False, "store_unavailable_since": first.since.isoformat(timespec="seconds"),
                    "store_unavailable_s": round(self._monotonic() - first.since_mono, 3),
                    "store_reason": latest.reason, "store_failing_loops": sorted(self._failing)}


_UNREACHABLE = ("connection refused", "could not connect", "timeout expired", "timed out", "is starting up",
                "is shutting down", "server closed the connection", "no route to host", "connection reset",
                "temporary failure in name resolution", "network is unreachable")
"""What a PostgreSQL server says (or the OS says for it) while it is down, restarting or not yet
reachable: worth waiting for. Anything else (a wrong password, a database that does not exist,
pg_hba refusing the host) is the config's, and waiting would only hide it."""


def wait_until_reachable(url: str, *, sleep: Callable[[float], None] = time.sleep,
                         connect: Callable[[str], None] | None = None) -> int:
    """Start-up: while the PostgreSQL server of ``url`` cannot be reached, log once and try again
    (0.5 s doubling to 10 s) instead of ending ``adapter run``; the number of failed tries. A fault
    waiting cannot cure is left to opening the store, which names it. SQLite is a local file:
    nothing to wait for."""
    if url.startswith("sqlite"):
        return 0
    try_connect = connect or _connect_once
    tries, delay = 0, FIRST_DELAY_S
    while True:
        try:
            try_connect(url)
        except Exception as exc:
            if not is_store_outage(exc) or not any(s in str(exc).lower() for s in _UNREACHABLE):
                return tries  # the config's fault: opening the store reports it, as it always has
            tries += 1
            if tries == 1:
                log.warning("the store cannot be reached (%s); waiting for it, trying again every %.0f s at most",
                            store_reason(exc), MAX_DELAY_S)
            sleep(delay)
            delay = min(MAX_DELAY_S, delay * 2)
            continue
        if tries:
            log.info("the store is reachable after %d tries", tries)
        return tries


def _connect_once(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url, pool_pre_ping=False, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    finally:
        engine.dispose()
