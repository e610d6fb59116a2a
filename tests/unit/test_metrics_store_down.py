"""/metrics while the store cannot be read: the scrape still answers, with the last gauges read and
``adapter_store_readable`` 0, and recovers by itself when the store is back."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from adapter.pipeline.metrics import StoreCollector
from tests.support.store import migrated_sessions


def scrape(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def test_a_scrape_answers_while_the_store_is_away_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    for sessions in migrated_sessions(f"sqlite:///{path}"):
        registry = CollectorRegistry()
        registry.register(StoreCollector(sessions, cache_s=0))
        before = scrape(registry)
        assert "adapter_store_readable 1.0" in before and "adapter_fallback_records" in before
        sessions.kw["bind"].dispose()
        os.rename(path, tmp_path / "away.db")
        path.mkdir()  # the store's file is now a directory: every connection fails
        during = scrape(registry)
        assert "adapter_store_readable 0.0" in during
        assert "adapter_fallback_records" in during, "the last gauges read are still served"
        path.rmdir()
        os.rename(tmp_path / "away.db", path)
        assert "adapter_store_readable 1.0" in scrape(registry)
