"""What the reconciliation, billing and report jobs share: the run's partition, the store,
state moves with audit rows, upserts by natural key."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from adapter.store.audit import transition
from adapter.store.db import make_engine, make_sessionmaker
from adapter.store.models import StateChange, Submission
from adapter.store.states import State

PRESCRIPTION_OPERATIONS = ("create", "update", "cancel")
"""Operations that change what the insurer holds; eligibility is a read and is not reconciled."""


@dataclass(frozen=True)
class Interval:
    """The partition one DAG run reads and writes: ``[start, end)`` plus the run's id."""

    start: dt.datetime
    end: dt.datetime
    run_id: str

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("interval bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"empty data interval {self.start} .. {self.end}: use a data-interval timetable")

    def to_json(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "run_id": self.run_id}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> "Interval":
        return cls(dt.datetime.fromisoformat(data["start"]), dt.datetime.fromisoformat(data["end"]), data["run_id"])


@contextmanager
def store(db_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on the adapter's database (schema must be migrated: the adapter does that)."""
    engine: Engine = make_engine(db_url)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


def accepted_in(session: Session, interval: Interval, *, operations: Iterable[str] = PRESCRIPTION_OPERATIONS,
                destination: str, since: dt.datetime | None = None) -> list[Submission]:
    """Submissions first accepted by the insurer inside the interval (by the audit trail,
    which never changes afterwards, so the partition is stable whatever happened since)."""
    first = (select(StateChange.submission_id, func.min(StateChange.at).label("at"))
             .where(StateChange.submission_id.is_not(None), StateChange.to_state == State.accepted.value)
             .group_by(StateChange.submission_id).subquery())
    query = (select(Submission).join(first, first.c.submission_id == Submission.id)
             .where(first.c.at >= (since or interval.start), first.c.at < interval.end,
                    Submission.destination == destination, Submission.operation.in_(tuple(operations)))
             .order_by(Submission.id))
    return list(session.scalars(query))


def move(session: Session, submission: Submission, to_state: State | str, *, actor: str, reason: str) -> bool:
    """Change a submission's state with its audit row (``audit.transition``, so checked against
    the table: ``IllegalTransition`` when not allowed); False when it is already there."""
    target = State(to_state)
    if submission.state == target.value:
        return False
    transition(session, submission, target, actor=actor, reason=reason)
    return True


def upsert(session: Session, model: type[Any], key: dict[str, Any], values: dict[str, Any],
           stamp: dict[str, Any]) -> str:
    """Insert or update the row with natural ``key``. ``stamp`` (interval, run id) is written
    only when something in ``values`` changed, so a re-run with the same answers changes
    nothing. Returns ``inserted``, ``updated`` or ``unchanged``."""
    row = session.scalar(select(model).filter_by(**key))
    if row is None:
        session.add(model(**key, **values, **stamp))
        return "inserted"
    changed = {name: value for name, value in values.items() if getattr(row, name) != value}
    if not changed:
        return "unchanged"
    for name, value in {**changed, **stamp}.items():
        setattr(row, name, value)
    return "updated"


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    size = max(1, int(size))
    return [items[i:i + size] for i in range(0, len(items), size)]
