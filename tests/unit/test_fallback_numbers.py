"""Paper-fallback numbers: one sequence per facility and day, from 0001, past 9999."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from adapter.outage.records import next_fallback_no
from adapter.store.db import make_engine, make_sessionmaker, upgrade
from adapter.store.models import FallbackRecord


def _store(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    upgrade(url)
    return make_sessionmaker(make_engine(url))


def _add(session, number: str, n: int) -> None:
    session.add(FallbackRecord(fallback_no=number, event_id=f"evt-{n}", submission_id=n, destination="tamin",
                               outage_id=None, facility_siam_id="F1", prescription_id=f"rx-{n}", reason="test",
                               state="issued"))


def test_numbers_count_per_facility_and_day_and_go_past_9999(tmp_path: Path) -> None:
    sessions = _store(tmp_path)
    with sessions() as session:
        session.execute(text("PRAGMA foreign_keys=OFF"))  # numbering only: no events or submissions behind them
        assert next_fallback_no(session, "FB", "F1", "051109") == "FB-F1-051109-0001"
        for n, number in enumerate(["FB-F1-051109-0001", "FB-F1-051109-0002", "FB-F1-051108-0007",
                                    "FB-F2-051109-0040", "FB-F1-0511091-0050"]):
            _add(session, number, n)
        session.flush()
        assert next_fallback_no(session, "FB", "F1", "051109") == "FB-F1-051109-0003"
        assert next_fallback_no(session, "FB", "F1", "051108") == "FB-F1-051108-0008"
        assert next_fallback_no(session, "FB", "F3", "051109") == "FB-F3-051109-0001"
        _add(session, "FB-F1-051109-9999", 10)
        session.flush()
        assert next_fallback_no(session, "FB", "F1", "051109") == "FB-F1-051109-10000"
        _add(session, "FB-F1-051109-10000", 11)
        session.flush()
        assert next_fallback_no(session, "FB", "F1", "051109") == "FB-F1-051109-10001"


def test_below_9999_the_number_is_one_index_step_with_no_sort(tmp_path: Path) -> None:
    """During an outage this runs for every prescription: sorting the day's numbers made the
    fill of a 100,000-event outage slow down as the day filled."""
    from sqlalchemy import event

    sessions = _store(tmp_path)
    statements: list[tuple[str, tuple]] = []
    with sessions() as session:
        session.execute(text("PRAGMA foreign_keys=OFF"))
        for n in range(1, 40):
            _add(session, f"FB-F1-051109-{n:04d}", n)
        session.flush()
        engine = session.get_bind()
        listener = lambda _c, _cur, statement, params, *_: statements.append((statement, params))  # noqa: E731
        event.listen(engine, "before_cursor_execute", listener)
        try:
            assert next_fallback_no(session, "FB", "F1", "051109") == "FB-F1-051109-0040"
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        [(statement, params)] = [(s, p) for s, p in statements if "fallback_records" in s]
        plan = " ".join(str(row[-1]) for row in session.connection().exec_driver_sql(
            "EXPLAIN QUERY PLAN " + statement, params))
    assert "TEMP B-TREE" not in plan, plan
