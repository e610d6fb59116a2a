"""Intake commits are on disk before the broker message is acked (SQLite ``synchronous=FULL``);
the dispatcher's connections keep the cheaper ``NORMAL`` (a lost settle is looked up, never resent)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from adapter.app import build
from adapter.store.db import make_engine
from tests.support.pipeline import adapter_config

FULL, NORMAL = 2, 1  # PRAGMA synchronous values


def synchronous(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        return int(connection.execute(text("PRAGMA synchronous")).scalar_one())


def test_make_engine_durable_commits_switches_sqlite_to_full(tmp_path: Path) -> None:
    for durable, expected in ((True, FULL), (False, NORMAL)):
        engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}", durable_commits=durable)
        try:
            with engine.connect() as connection:
                assert connection.execute(text("PRAGMA synchronous")).scalar_one() == expected
                assert connection.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        finally:
            engine.dispose()


def test_the_built_adapter_commits_intake_durably(tmp_path: Path) -> None:
    app = build(adapter_config(f"sqlite:///{tmp_path / 'adapter.db'}", "http://127.0.0.1:9", tmp_path))
    try:
        assert app.intake_engine is not None and synchronous(app.intake_engine) == FULL
        assert synchronous(app.engine) == NORMAL
    finally:
        app.close()
