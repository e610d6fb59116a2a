"""Engine and sessions; schema managed by Alembic (``migrations/``)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool
from sqlalchemy.orm import Session, sessionmaker

from adapter.config import ConfigError
from adapter.store.at_rest import private_sqlite_file
from adapter.store.sqlite_writers import serialise_writers

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def _sqlite_pragmas(synchronous: str) -> Any:
    def apply(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
    return apply


def _sqlite_file(url: str) -> str:
    """The database file of a SQLite URL ('' for an in-memory one)."""
    path = url.split("///", 1)[1].split("?", 1)[0] if url.startswith("sqlite") and "///" in url else ""
    return "" if path in ("", ":memory:") else path


def _ensure_sqlite_folder(url: str) -> None:
    """The folder of a SQLite store, and the store file itself, private to this user
    (``at_rest.private_sqlite_file``): made before SQLite writes its first page."""
    path = _sqlite_file(url)
    if path:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnusable(url, f"cannot create the folder {Path(path).parent} ({exc.strerror})") from None
        try:
            private_sqlite_file(Path(path))
        except OSError as exc:
            raise StoreUnusable(url, f"cannot create {path} ({exc.strerror})") from None


class StoreUnusable(ConfigError):
    """``database.url`` names a store this process cannot write: a read-only file or folder, a
    folder it cannot create, a read-only PostgreSQL database (a standby, a read-only role or
    ``default_transaction_read_only``). A configuration problem like any other: one line with
    the key and the fix. ``source`` (the config file) is filled in by whoever knows it
    (``adapter.app.open_store``, the CLI), see ``named``."""

    def __init__(self, url: str, reason: str, source: str | None = None):
        self.url, self.reason, self.source = url, reason, source
        super().__init__([f"{source or '<config>'}: database.url: {_where(url)}: {reason} -- fix: {_store_fix(url)}"])

    def named(self, source: str) -> "StoreUnusable":
        return StoreUnusable(self.url, self.reason, source)


def _where(url: str) -> str:
    path = _sqlite_file(url)
    if path:
        return path
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001  an unparsable URL: say so rather than fail here
        return "(the URL)"


def _store_fix(url: str) -> str:
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except (KeyError, OSError):
        user = f"uid {os.geteuid()}"
    path = _sqlite_file(url)
    if path:
        return (f"make {path} and its folder {Path(path).parent} writable by the user the adapter runs as ({user}), "
                "or point database.url at a place it may write")
    return ("connect as a role that may write the adapter's tables, to the primary server (not a standby, "
            "default_transaction_read_only off), or correct database.url")


def _unusable(exc: BaseException, url: str) -> StoreUnusable | None:
    """The ``StoreUnusable`` a database error means, or None when it is something else."""
    if isinstance(exc, StoreUnusable):
        return exc
    orig = getattr(exc, "orig", None) or exc
    said = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    name = getattr(orig, "sqlite_errorname", "") or ""
    state = getattr(orig, "sqlstate", None)
    if name.startswith("SQLITE_READONLY") or state == "25006":
        return StoreUnusable(url, f"the store is read-only ({said})")
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")):
        return StoreUnusable(url, f"the store cannot be opened for writing ({said})")
    if state == "42501":
        return StoreUnusable(url, f"the store may not be written ({said})")
    return None


def check_writable(engine: Engine, url: str) -> None:
    """Raise ``StoreUnusable`` unless the store takes writes, so a read-only store stops
    ``adapter run`` at start-up instead of at the first write of a running loop. PostgreSQL is
    asked (a standby, or a session that is read-only by default; a role's table rights are not
    guessed at); SQLite takes a write that is rolled back (the file and its folder must be writable)."""
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                read_only = connection.execute(text(
                    "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'")).scalar()
                if read_only:
                    raise StoreUnusable(url, "the database is read-only (a standby, or transactions are read-only)")
            else:
                connection.execute(text("UPDATE alembic_version SET version_num = version_num"))
            connection.rollback()
    except (OSError, DBAPIError) as exc:
        unusable = _unusable(exc, url)
        if unusable is None:
            raise
        raise unusable from None


def make_engine(url: str, durable_commits: bool = False) -> Engine:
    """Create the engine; a SQLite file's folder is created, WAL is switched on.

    SQLite in WAL mode with ``synchronous=NORMAL`` survives a crash of the process but may lose
    the last commits on a power cut. That is fine for the dispatcher (a lost settle leaves a
    submission ``sending``, which is looked up before any resend), not for intake, which acks the
    broker after its commit: ``durable_commits`` gives intake ``synchronous=FULL`` (an fsync per
    commit), so an acked event is on disk. PostgreSQL commits are durable by default."""
    if url.startswith("sqlite"):
        _ensure_sqlite_folder(url)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas("FULL" if durable_commits else "NORMAL"))
        database = _sqlite_file(url)
        if database:
            serialise_writers(engine, str(Path(database).resolve()))
        return engine
    engine = create_engine(url, pool_size=16, max_overflow=8, pool_pre_ping=True, connect_args=pg_link_defaults(url))
    # psycopg 3 runs an executemany as one pipelined statement per row, in Python; audit and
    # attempt rows (many per transaction on the dispatcher's path) go faster as one multi-row
    # INSERT, which SQLAlchemy builds when the dialect asks for it (psycopg2's default).
    if engine.dialect.name == "postgresql":
        engine.dialect.use_insertmanyvalues_wo_returning = True
    return engine


# libpq settings that keep a PostgreSQL connection from hanging on a dead network path: TCP
# keepalives every 30 s (they also keep a firewall's idle timer from dropping the connection),
# a dead peer noticed after 3 unanswered probes, and sent data unacknowledged for 60 s fails
# the call (without it a query, or the pool's pre-ping, on a connection a firewall dropped
# waits for the kernel's retransmissions, about 15 minutes). A key in the URL's query wins.
PG_LINK_DEFAULTS: dict[str, int] = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30,
                                    "keepalives_interval": 10, "keepalives_count": 3, "tcp_user_timeout": 60_000}


def pg_link_defaults(url: str) -> dict[str, int]:
    """``PG_LINK_DEFAULTS`` less the ones the URL sets itself."""
    query = make_url(url).query
    return {key: value for key, value in PG_LINK_DEFAULTS.items() if key not in query}


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


# pg_advisory_lock key held while migrating ("ADPT"): any number of processes may start at once
_MIGRATION_LOCK = 0x41445054


def upgrade(url: str) -> None:
    """Bring the schema to the newest migration (idempotent).

    On PostgreSQL several ``adapter run`` processes may start at the same moment (scaled out,
    or restarted together): they take turns through a session advisory lock, so the second one
    finds the schema current instead of failing on a half-made ``alembic_version``.

    A store that cannot be created or written raises ``StoreUnusable`` (a ``ConfigError``)."""
    try:
        _upgrade(url)
    except (OSError, DBAPIError) as exc:
        unusable = _unusable(exc, url)
        if unusable is None:
            raise
        raise unusable from None


def _upgrade(url: str) -> None:
    _ensure_sqlite_folder(url)
    if not url.startswith("postgresql"):
        command.upgrade(alembic_config(url), "head")
        return
    engine = create_engine(url, poolclass=NullPool, connect_args=pg_link_defaults(url))
    try:
        with engine.connect() as lock:
            lock.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK})
            lock.commit()
            try:
                command.upgrade(alembic_config(url), "head")
            finally:
                lock.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATION_LOCK})
                lock.commit()
    finally:
        engine.dispose()
