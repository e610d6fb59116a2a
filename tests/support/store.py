"""A migrated store for tests that work on the database directly (no broker, no adapter)."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy.orm import Session, sessionmaker

from adapter.store.db import make_engine, make_sessionmaker, upgrade


def migrated_sessions(url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on ``url`` with the schema at the newest version; the engine is disposed after."""
    upgrade(url)
    engine = make_engine(url)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()
