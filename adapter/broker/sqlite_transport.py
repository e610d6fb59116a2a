"""Durable embedded kombu transport on SQLite, with leases (at-least-once).

This is the adapter's default "embedded" broker when no RabbitMQ is
installed.  kombu's own ``sqla+sqlite://`` and ``filesystem://`` transports
mark or move a message when it is *fetched*, and only give unacked messages
back on a clean channel close: a consumer killed with ``kill -9`` loses the
message it was working on.  Here a fetched message stays in its table and is
only *leased*:

* fetch (``_get``)      -- the oldest visible message of the queue is claimed
  in a ``BEGIN IMMEDIATE`` transaction: it becomes invisible until
  ``now + lease_seconds`` and gets a fresh lease token;
* ``message.ack()``     -- the row is deleted;
* ``message.requeue()`` / ``reject(requeue=True)`` and a clean channel close
  with unacked messages -- the lease is released, the message is visible
  again at once (only if this consumer still holds the lease);
* ``message.reject()``  (``requeue=False``) -- the row moves to the ``dead``
  table (or is deleted when ``dead_letter`` is False);
* the consumer dies (kill -9, power cut of the process) -- nothing happens at
  once; when the lease expires the message is visible again.

A message fetched after an earlier delivery carries
``message.delivery_info['redelivered'] == True``.

URL scheme
==========

Call :func:`register` once, then::

    kombu.Connection("sqlite-queue:////abs/path/queue.db")   # absolute path
    kombu.Connection("sqlite-queue:///var/queue.db")         # relative to cwd

Like SQLAlchemy's ``sqlite://`` URLs: three slashes and a relative path,
four slashes for an absolute one.  The relative path is resolved against
the current directory when the channel opens; missing parent directories are
created.  (kombu's URL check accepts the hyphen: it only refuses ``.`` and
``:`` in a scheme, and ``+`` would split it as ``prefix+url``.)

Transport options (``kombu.Connection(url, transport_options={...})``)
======================================================================

* ``lease_seconds`` (60) -- how long a fetched, unacked message stays
  invisible.  Must be longer than the slowest message handling, or the
  message is delivered a second time while still being worked on.
* ``polling_interval`` (0.1) -- seconds between polls of an empty queue.
* ``busy_timeout`` (30) -- seconds to wait for SQLite's write lock.
* ``synchronous`` ("FULL") -- SQLite ``PRAGMA synchronous``; FULL makes a
  published/acked message survive an OS crash, NORMAL only a process crash.
* ``dead_letter`` (True) -- keep rejected messages in the ``dead`` table.
* ``max_bytes`` (1 GiB) -- the space the queue's messages may take in the file; a
  publish beyond it raises :class:`QueueFull` (not a connection error, so kombu does not
  retry it) instead of filling the disk.

Patient data at rest
====================

The file is created mode 600 (an older one readable by others is tightened, with a log line).
When the payload key is set (``ADAPTER_PAYLOAD_KEY``, see :mod:`adapter.store.at_rest`) a
message body is stored encrypted and decrypted when fetched; messages stored in clear before
the key was set are read as they are. A body that cannot be decrypted (no key, another key) is
delivered as its encrypted text, which intake stores as an invalid event naming the key problem
(no crash, no redelivery loop); with the right key set, that body published again is stored.

Space
=====

The file uses ``auto_vacuum = INCREMENTAL`` (an older file is converted once, at open):
every ``RECLAIM_EVERY`` acks the free pages are counted and, when they are more than
``RECLAIM_FREE_RATIO`` of the file, given back to the file system ``RECLAIM_PAGES`` at a
time -- short write transactions, so delivery never waits long. The WAL file is truncated to
``WAL_SIZE_LIMIT`` when it is reset after a checkpoint.

Semantics worth knowing
=======================

* ``_size`` (``queue_declare(...).message_count``, ``SimpleQueue.qsize()``)
  counts **every not-yet-acked message**, visible or leased, so "run until
  the queue is empty" logic does not stop while a message is still in
  flight (and could still come back).  ``_purge`` removes only the messages
  that are visible now (like AMQP, in-flight messages are kept).
* Order is FIFO by insertion; a requeued message keeps its place.
* Publish with the default exchange and ``routing_key=<queue name>``.
  Exchanges and bindings are kept in memory per process (kombu's virtual
  transport), so a bound exchange declared only in the consumer does not
  route messages published by another process.
* An ack or a reject arriving after the lease expired still removes the
  message (the work is done or refused); a requeue after expiry is ignored,
  so a stale consumer cannot expose a message another consumer now holds.
* Lease times use the wall clock (``time.time()``), shared by all processes
  on the host.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from queue import Empty
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, virtual

from adapter.store import at_rest

SCHEME = "sqlite-queue"
TRANSPORT_PATH = "adapter.broker.sqlite_transport:Transport"

DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_POLLING_INTERVAL = 0.1
DEFAULT_BUSY_TIMEOUT = 30.0
DEFAULT_MAX_BYTES = 1 << 30

RECLAIM_EVERY = 64  # acks between two looks at the free pages
RECLAIM_FREE_RATIO = 0.25  # free pages above this share of the file are given back
RECLAIM_MIN_PAGES = 64  # ... and above this many (a nearly empty file is left alone)
RECLAIM_PAGES = 2048  # pages given back per write transaction (8 MiB at 4 KiB pages)
WAL_SIZE_LIMIT = 4 << 20

log = logging.getLogger("adapter.broker")
_SEALED = "adapter_sealed"  # envelope key: the body is encrypted with the payload key


class QueueFull(Exception):
    """The embedded queue holds ``max_bytes`` of messages: the publish is refused."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    queue       TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    visible_at  REAL    NOT NULL DEFAULT 0,
    lease_token TEXT,
    deliveries  INTEGER NOT NULL DEFAULT 0,
    created_at  REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_queue_id ON messages (queue, id);
CREATE TABLE IF NOT EXISTS dead (
    id          INTEGER PRIMARY KEY,
    queue       TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    deliveries  INTEGER NOT NULL,
    created_at  REAL    NOT NULL,
    dead_at     REAL    NOT NULL
);
"""

_SYNCHRONOUS_MODES = {"OFF", "NORMAL", "FULL", "EXTRA"}


def register() -> None:
    """Make ``sqlite-queue://`` URLs resolve to this transport (idempotent)."""
    TRANSPORT_ALIASES[SCHEME] = TRANSPORT_PATH


def database_path(url: str) -> Path:
    """Absolute database path of ``sqlite-queue:///rel`` or ``:////abs``.

    A bare path (no ``://``) is accepted too.
    """
    if "://" in url:
        rest = url.split("://", 1)[1]
        if not rest.startswith("/") or len(rest) < 2:
            raise ValueError(
                f"{SCHEME} URL needs a path: {SCHEME}:///relative.db or "
                f"{SCHEME}:////absolute.db, got {url!r}"
            )
        rest = rest[1:]
    else:
        rest = url
    return Path(os.path.abspath(rest))


def _make_tag(row_id: int, token: str) -> str:
    return f"{row_id}:{token}"


def _split_tag(delivery_tag: str) -> tuple[int, str]:
    row_id, _, token = str(delivery_tag).partition(":")
    return int(row_id), token


class _Store:
    """The queue database: one sqlite3 connection per thread.

    kombu lets other threads ack messages, and an sqlite3 connection must
    not be shared by threads at once, so each thread lazily opens its own.
    Connections are in autocommit mode (``isolation_level=None``); the few
    multi-statement changes use :meth:`immediate`.
    """

    def __init__(self, path: Path, busy_timeout: float, synchronous: str) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.synchronous = synchronous
        self.page_size = 4096
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._create_schema()

    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._opened.append(conn)
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=False,  # only so close() may run in any thread
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        return conn

    def _create_schema(self) -> None:
        """Switch the file to WAL and create the tables.

        Two processes opening a new file at once can make the journal-mode
        switch fail with "database is locked" without waiting for the busy
        handler, so that step is retried until ``busy_timeout``.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        at_rest.private_sqlite_file(self.path)
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                conn = self.conn()
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # takes effect on a new, empty file
                conn.execute("PRAGMA journal_mode = WAL")
                with self.immediate() as c:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            c.execute(statement)
                self._convert_to_incremental_vacuum(conn)
                (self.page_size,) = conn.execute("PRAGMA page_size").fetchone()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _convert_to_incremental_vacuum(self, conn: sqlite3.Connection) -> None:
        """A file made before ``auto_vacuum`` was set: one VACUUM switches it (and compacts it)."""
        (mode,) = conn.execute("PRAGMA auto_vacuum").fetchone()
        if mode == 2:
            return
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("VACUUM")
        log.warning("embedded queue %s: converted to incremental auto-vacuum (free space is now given back)",
                    self.path)

    def used_bytes(self) -> int:
        """Bytes of the file that hold data (its pages less the free ones)."""
        conn = self.conn()
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        (free,) = conn.execute("PRAGMA freelist_count").fetchone()
        return int((pages - free) * self.page_size)

    def reclaim(self) -> int:
        """Give free pages back to the file system when they are more than ``RECLAIM_FREE_RATIO``
        of the file: ``RECLAIM_PAGES`` per (short) write transaction. The pages given back."""
        conn = self.conn()
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        (free,) = conn.execute("PRAGMA freelist_count").fetchone()
        if free <= RECLAIM_MIN_PAGES or free <= pages * RECLAIM_FREE_RATIO:
            return 0
        for _ in range(-(-free // RECLAIM_PAGES)):
            # executescript steps the pragma to its end (execute would free one page per step taken)
            conn.executescript(f"PRAGMA incremental_vacuum({RECLAIM_PAGES});")
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # never waits for readers
        (left,) = conn.execute("PRAGMA freelist_count").fetchone()
        return int(free - left)

    @contextmanager
    def immediate(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock at BEGIN."""
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()
        self._local = threading.local()


class QoS(virtual.QoS):
    """kombu QoS whose ack/reject change the database row.

    ``restore_unacked`` (channel close, ``basic_recover``) is inherited: it
    calls :meth:`Channel._restore` for each unacked message, which releases
    the lease.
    """

    def ack(self, delivery_tag: str) -> None:
        self.channel._delete_row(delivery_tag)
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if requeue:
            self.channel._release(delivery_tag)
        else:
            self.channel._bury(delivery_tag)
        self._quick_ack(delivery_tag)


class Channel(virtual.Channel):
    """A kombu virtual channel backed by the ``messages`` table."""

    QoS = QoS

    lease_seconds: float = DEFAULT_LEASE_SECONDS
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    synchronous: str = "FULL"
    dead_letter: bool = True
    max_bytes: int = DEFAULT_MAX_BYTES

    from_transport_options = virtual.Channel.from_transport_options + (  # type: ignore[assignment]  # kombu infers a 2-tuple
        "lease_seconds",
        "busy_timeout",
        "synchronous",
        "dead_letter",
        "max_bytes",
    )

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self.lease_seconds = float(self.lease_seconds)
        if self.lease_seconds <= 0:
            raise ValueError("lease_seconds must be > 0")
        self.synchronous = str(self.synchronous).upper()
        if self.synchronous not in _SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS_MODES)}")
        self.max_bytes = int(self.max_bytes)
        if self.max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        path = database_path(self.connection.client.hostname or "")
        self._store = _Store(path, float(self.busy_timeout), self.synchronous)
        self._acks = 0

    # -- the virtual-transport primitives ---------------------------------

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        used = self._store.used_bytes()
        if used >= self.max_bytes:
            raise QueueFull(
                f"embedded queue {self._store.path} is full ({used // (1 << 20)} MB of messages, the limit is "
                f"{self.max_bytes // (1 << 20)} MB, broker.embedded_max_mb): this message was not published -- the adapter "
                "is not consuming (stopped, or its store is down); start it or let it catch up, then publish again")
        payload = json.dumps(self._sealed(message))
        self._store.conn().execute(
            "INSERT INTO messages (queue, payload, created_at) VALUES (?, ?, ?)",
            (queue, payload, time.time()),
        )

    def publish_together(self) -> AbstractContextManager[sqlite3.Connection]:
        """Messages published inside this block commit together (one write lock, one sync): all of
        them or, when the block raises, none. For a producer with many small messages to send at
        once (the reply outbox), where one commit each would spend a disk sync per message."""
        return self._store.immediate()

    def _sealed(self, message: dict[str, Any]) -> dict[str, Any]:
        """``message`` with its body encrypted when the payload key is set (else unchanged)."""
        properties = message.get("properties", {})
        if message.get("body") is None:
            return message
        body = self.decode_body(message["body"], properties.get("body_encoding"))
        raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body or b"")
        sealed = at_rest.seal_bytes(raw)
        if sealed is None:
            return message
        return {**message, "body": sealed, _SEALED: True, "properties": {**properties, "body_encoding": None}}

    @staticmethod
    def _opened(message: dict[str, Any], row_id: int) -> dict[str, Any]:
        """A fetched message with its body decrypted; one that cannot be (no key, another key)
        keeps its encrypted text as body, for intake to store as an invalid event."""
        if not message.pop(_SEALED, False):
            return message
        properties = message.setdefault("properties", {})
        try:
            raw = at_rest.open_sealed(message["body"])
        except at_rest.PayloadKeyError as exc:
            log.error("embedded queue message %d: %s; delivered encrypted (stored as an invalid event)", row_id, exc)
            properties["body_encoding"] = None
            message.update({"content-type": "application/octet-stream", "content-encoding": "binary"})
            return message
        message["body"] = base64.b64encode(raw).decode("ascii")
        properties["body_encoding"] = "base64"
        return message

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        """Lease the oldest visible message of ``queue`` or raise Empty."""
        # A cheap read first, so idle polling never takes the write lock.
        if self._next_visible(self._store.conn(), queue, time.time()) is None:
            raise Empty()
        token = uuid.uuid4().hex
        with self._store.immediate() as conn:
            now = time.time()
            row = self._next_visible(conn, queue, now)
            if row is None:
                raise Empty()
            row_id, payload, deliveries = row
            conn.execute(
                "UPDATE messages SET visible_at = ?, lease_token = ?,"
                " deliveries = deliveries + 1 WHERE id = ?",
                (now + self.lease_seconds, token, row_id),
            )
        message = self._opened(json.loads(payload), row_id)
        properties = message.setdefault("properties", {})
        properties["delivery_tag"] = _make_tag(row_id, token)
        properties.setdefault("delivery_info", {})["redelivered"] = deliveries > 0
        return message

    @staticmethod
    def _next_visible(conn: sqlite3.Connection, queue: str, now: float) -> tuple[Any, ...] | None:
        return conn.execute(
            "SELECT id, payload, deliveries FROM messages"
            " WHERE queue = ? AND visible_at <= ? ORDER BY id LIMIT 1",
            (queue, now),
        ).fetchone()

    def _size(self, queue: str) -> int:
        """All not-yet-acked messages of ``queue``: visible *and* leased."""
        (count,) = self._store.conn().execute(
            "SELECT COUNT(*) FROM messages WHERE queue = ?", (queue,)
        ).fetchone()
        return count

    def _purge(self, queue: str) -> int:
        """Delete the messages visible now; leased ones stay."""
        cursor = self._store.conn().execute(
            "DELETE FROM messages WHERE queue = ? AND visible_at <= ?",
            (queue, time.time()),
        )
        self._store.reclaim()
        return cursor.rowcount

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        self._store.conn().execute("DELETE FROM messages WHERE queue = ?", (queue,))
        self._store.reclaim()

    def _restore(self, message: Any) -> None:
        """Give an unacked message back (clean close, recover, requeue)."""
        self._release(message.delivery_tag)

    def _restore_at_beginning(self, message: Any) -> None:
        self._release(message.delivery_tag)

    # -- row changes behind ack / reject / requeue -------------------------

    def _delete_row(self, delivery_tag: str) -> None:
        row_id, _ = _split_tag(delivery_tag)
        self._store.conn().execute("DELETE FROM messages WHERE id = ?", (row_id,))
        self._acks += 1
        if self._acks % RECLAIM_EVERY == 0:
            self._store.reclaim()

    def _release(self, delivery_tag: str) -> None:
        """Make the message visible now, if we still hold its lease."""
        row_id, token = _split_tag(delivery_tag)
        self._store.conn().execute(
            "UPDATE messages SET visible_at = 0, lease_token = NULL"
            " WHERE id = ? AND lease_token = ?",
            (row_id, token),
        )

    def _bury(self, delivery_tag: str) -> None:
        """Move a rejected message to ``dead`` (or drop it)."""
        row_id, _ = _split_tag(delivery_tag)
        with self._store.immediate() as conn:
            if self.dead_letter:
                conn.execute(
                    "INSERT OR REPLACE INTO dead"
                    " (id, queue, payload, deliveries, created_at, dead_at)"
                    " SELECT id, queue, payload, deliveries, created_at, ?"
                    " FROM messages WHERE id = ?",
                    (time.time(), row_id),
                )
            conn.execute("DELETE FROM messages WHERE id = ?", (row_id,))

    def close(self) -> None:
        try:
            super().close()  # releases the leases of unacked messages
        finally:
            self._store.close()


class Transport(virtual.Transport):
    """kombu transport class for ``sqlite-queue://`` URLs."""

    Channel = Channel

    can_parse_url = True  # the whole URL reaches us as ``client.hostname``
    default_port = 0  # type: ignore[assignment]  # kombu's unannotated `default_port = None` is typed None
    driver_type = "sqlite"
    driver_name = "sqlite3"
    polling_interval = DEFAULT_POLLING_INTERVAL
    connection_errors = virtual.Transport.connection_errors + (  # type: ignore[assignment]  # kombu infers a 1-tuple
        sqlite3.OperationalError,)

    def driver_version(self) -> str:
        return sqlite3.sqlite_version

    def as_uri(self, uri: str, include_password: bool = False, mask: str = "**") -> str:
        return uri
