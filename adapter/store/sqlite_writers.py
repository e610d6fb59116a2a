"""One writer at a time per SQLite file, queued in the process instead of in SQLite's busy handler.

SQLite lets one connection write at a time. When a second one wants to write, SQLite's busy
handler makes it sleep and try again: 1, 2, 5, 10, 15, 20, 25 ... 100 ms. With eight send
threads settling outcomes, the dispatcher claiming and intake storing, most of those sleeps
outlast the transaction they wait for (a settle takes well under a millisecond), and the
profile showed a fifth of each send thread's time asleep there (docs/performance.md).

Here every connection of the process to one database file takes a shared lock before its first
writing statement (INSERT/UPDATE/DELETE/REPLACE) and gives it back after the commit or rollback,
so a waiting writer starts the moment the previous one has finished. Reads never take it (WAL
readers do not block). Other processes (an operator's ``adapter status``, a second adapter) are
still queued by SQLite itself. A lock not given back within ``timeout_s`` is not waited for any
longer: the statement goes ahead and SQLite's own busy handling applies, as before.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Engine, event

_WRITING = ("INSERT", "UPDATE", "DELETE", "REPLACE")
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(database: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(database, threading.Lock())


def _raw(connection: Any) -> Any:
    """The DBAPI connection behind a pool proxy (or itself)."""
    return getattr(connection, "dbapi_connection", connection)


class _Writers:
    """Which DBAPI connections of one engine hold the file's write lock."""

    def __init__(self, lock: threading.Lock, timeout_s: float):
        self._lock, self._timeout_s = lock, timeout_s
        self._holders: set[int] = set()
        self._guard = threading.Lock()

    def take(self, raw_connection: Any) -> None:
        key = id(raw_connection)
        with self._guard:
            if key in self._holders:
                return
        if self._lock.acquire(timeout=self._timeout_s):
            with self._guard:
                self._holders.add(key)

    def give_back(self, raw_connection: Any) -> None:
        with self._guard:
            held = id(raw_connection) in self._holders
            self._holders.discard(id(raw_connection))
        if held:
            self._lock.release()


def serialise_writers(engine: Engine, database: str, timeout_s: float = 30.0) -> None:
    """Queue ``engine``'s writing transactions on ``database``'s in-process lock (see the module doc)."""
    writers = _Writers(_lock_for(database), timeout_s)

    @event.listens_for(engine, "before_cursor_execute")
    def _before_write(conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip()[:8].upper().startswith(_WRITING):
            writers.take(_raw(conn.connection))

    dialect = engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(dbapi_connection: Any) -> None:
        try:
            commit(dbapi_connection)
        finally:
            writers.give_back(_raw(dbapi_connection))

    def do_rollback(dbapi_connection: Any) -> None:
        try:
            rollback(dbapi_connection)
        finally:
            writers.give_back(_raw(dbapi_connection))

    dialect.do_commit = do_commit  # type: ignore[method-assign]  # wrapped on this engine's dialect only
    dialect.do_rollback = do_rollback  # type: ignore[method-assign]  # wrapped on this engine's dialect only

    @event.listens_for(engine, "close")
    def _closed(dbapi_connection: Any, _record: Any) -> None:
        writers.give_back(dbapi_connection)

    @event.listens_for(engine, "invalidate")
    def _invalidated(dbapi_connection: Any, _record: Any, _exception: Any) -> None:
        writers.give_back(dbapi_connection)
