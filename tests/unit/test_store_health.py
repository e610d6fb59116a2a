"""What the loops do with a store error (``adapter.store.health``): which errors are an outage,
the one-line reason (never the statement or its parameters), the capped back-off, the outage's
start and end; its ``/readyz`` check; and the ``store_unavailable`` alert, sent without the store."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from adapter.config import AlertRulesConfig
from adapter.ops.http_status import readiness_checks
from adapter.store.health import StoreHealth, is_store_error, is_store_outage, store_reason
from tests.unit.test_alert_rules import Clock, FakeNotifier, MemoryLedger, World, service

NATIONAL_CODE = "0012345679"


def disk_full_error(tmp_path: Path) -> DBAPIError:
    """SQLite's own SQLITE_FULL, raised by an insert past ``max_page_count``, with a patient-like value bound."""
    engine = create_engine(f"sqlite:///{tmp_path / 'full.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (v TEXT)"))
    try:
        with engine.begin() as connection:
            connection.execute(text("PRAGMA max_page_count = 3"))
            for _ in range(50):
                connection.execute(text("INSERT INTO t VALUES (:v)"), {"v": NATIONAL_CODE * 100})
    except DBAPIError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("the insert never filled the database")


def test_a_full_disk_is_an_outage_and_its_reason_is_one_line_without_the_statement(tmp_path: Path) -> None:
    exc = disk_full_error(tmp_path)
    assert is_store_outage(exc) and is_store_error(exc)
    assert NATIONAL_CODE in str(exc)  # SQLAlchemy's text quotes the parameters ...
    reason = store_reason(exc)
    assert reason == "OperationalError: database or disk is full"  # ... the reason does not


def test_a_row_the_store_refuses_is_a_store_error_but_not_an_outage() -> None:
    refused = IntegrityError("INSERT ...", {}, sqlite3.IntegrityError("UNIQUE constraint failed: t.v"))
    assert is_store_error(refused) and not is_store_outage(refused)  # counts towards poison, not an outage
    assert not is_store_error(ValueError("a bug"))
    wrapped = RuntimeError("while storing")
    wrapped.__cause__ = sqlite3.OperationalError("disk I/O error")
    assert is_store_outage(wrapped)


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_back_off_doubles_to_its_cap_and_the_outage_is_logged_once_then_its_end(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ticks, exc = Ticks(), disk_full_error(tmp_path)
    health = StoreHealth(monotonic=ticks)
    with caplog.at_level(logging.INFO, logger="adapter.store.health"):
        delays = [health.failed("dispatcher", exc) for _ in range(7)]
        assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
        assert health.failing("dispatcher") and not health.retry_due("dispatcher")
        ticks.now += 10
        assert health.retry_due("dispatcher")
        snapshot = health.snapshot()
        assert snapshot["store_available"] is False and snapshot["store_failing_loops"] == ["dispatcher"]
        assert snapshot["store_reason"] == "OperationalError: database or disk is full"
        assert health.unavailable_for_s() == 10.0
        health.ok("dispatcher")
        health.ok("dispatcher")  # already back: nothing more logged
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("store unavailable to the dispatcher (OperationalError: database or disk is full)")
    assert lines[1] == "store available again to the dispatcher after 10.0 s (7 failed tries)"
    assert NATIONAL_CODE not in "".join(lines)
    assert health.snapshot()["store_available"] is True and health.unavailable_for_s() is None
    assert health.failed("dispatcher", exc) == 0.5  # a new outage starts from the first delay


def test_readyz_is_red_while_a_loop_finds_the_store_unavailable_even_when_a_ping_passes(tmp_path: Path) -> None:
    health = StoreHealth()
    alive = {"consumer_attached": True, "consumer_age_s": 0.1, "dispatcher_age_s": 0.1}
    assert readiness_checks({**alive, **health.snapshot()}, 30, 30, None)["store"]["ok"] is True
    health.failed("consumer", disk_full_error(tmp_path))
    store = readiness_checks({**alive, **health.snapshot()}, 30, 30, None)["store"]
    assert store["ok"] is False and store["failing_loops"] == ["consumer"]
    assert store["why"].startswith(f"store unavailable since {store['unavailable_since']} "
                                   "(OperationalError: database or disk is full)")


def test_the_store_alert_starts_after_the_limit_is_retried_and_resolves_without_the_store() -> None:
    def unreadable(_: object) -> None:
        raise AssertionError("the store alert must not read the store")

    world, clock, hook = World(), Clock(), FakeNotifier("webhook:1")
    alerts = service(world, MemoryLedger(), [hook], clock, renotify_s=None,
                     rules=AlertRulesConfig(store_unavailable_s=60))
    alerts._facts = unreadable  # type: ignore[method-assign]  # the store is down: its facts cannot be read
    assert alerts.evaluate_store(None, None) == []
    assert alerts.evaluate_store(59.0, "OperationalError: x") == [] and hook.sent == []  # not yet
    hook.failing = True
    failed = alerts.evaluate_store(61.0, "OperationalError: database or disk is full")
    assert [(d.kind, d.ok) for d in failed] == [("start", False)]
    hook.failing = False
    assert [(d.kind, d.ok) for d in alerts.evaluate_store(91.0, "OperationalError: x")] == [("start", True)]
    assert alerts.evaluate_store(121.0, "OperationalError: x") == []  # told once
    assert hook.kinds() == [("start", "store_unavailable")]
    assert hook.sent[0].details["reason"] == "OperationalError: x"
    assert [(d.kind, d.ok) for d in alerts.evaluate_store(None, None)] == [("resolve", True)]
    assert hook.kinds() == [("start", "store_unavailable"), ("resolve", "store_unavailable")]
    assert alerts.evaluate_store(None, None) == []


def test_the_store_alert_can_be_switched_off() -> None:
    world, clock, hook = World(), Clock(), FakeNotifier("webhook:1")
    alerts = service(world, MemoryLedger(), [hook], clock, rules=AlertRulesConfig(store_unavailable_s=None))
    assert alerts.evaluate_store(10_000.0, "OperationalError: x") == [] and hook.sent == []
