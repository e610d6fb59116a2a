"""Replay: put submissions a person had to look at (``rejected``, ``invalid``, ``dead``) back
to ``pending`` so the dispatcher sends them again, optionally re-mapped from the stored
source event with the mapping files as they are now.

Every move is a ``transition`` (so checked against the table of allowed moves in
``adapter.store.states``, and an audit row with actor ``replay:<who>`` and the operator's
reason): ``rejected``/``invalid``/``dead`` -> ``pending``, or -> ``invalid`` when re-mapping
fails. Work is done in batches, one transaction per batch; each row is claimed with a
conditional UPDATE (state still replayable), so two operators replaying the same rows at
once replay each row once, and a row that moved meanwhile is reported as skipped rather
than overwritten.

Replay keeps the idempotency key (the destination still recognises a resend) and keeps
``ambiguous`` when it is set: a submission whose last try timed out after the request left
is looked up at the destination before it is sent again, so replaying it cannot send it
twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

from sqlalchemy import CursorResult, func, update
from sqlalchemy.orm import Session, sessionmaker

from adapter.destinations.plugin import NOT_COVERED, Refusal, Screen
from adapter.events.parse import EventRejected, parse_event
from adapter.mapping import MappingError, MappingSet
from adapter.ops.inspect import Filters, matching
from adapter.redact import redact_text
from adapter.store.audit import transition
from adapter.store.models import InboxEvent, Submission
from adapter.store.states import NEEDS_PERSON, State
from adapter.store.types import utcnow

REPLAYABLE: tuple[State, ...] = tuple(NEEDS_PERSON)  # rejected, invalid, dead
_REPLAYABLE_VALUES = [s.value for s in REPLAYABLE]
ACTOR_PREFIX = "replay:"
_ACTOR_MAX = 64  # StateChange.actor is String(64)

Progress = Callable[[int, int], None]
"""``progress(done, total)`` after each batch."""


class ReplayArgumentError(ValueError):
    """The request cannot be carried out as asked (nothing was changed)."""


@dataclass(frozen=True)
class Skipped:
    id: int
    state: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "reason": self.reason}


@dataclass
class ReplayReport:
    dry_run: bool
    replayed: list[int] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    matched: int = 0
    """Filter mode: how many replayable submissions matched in all (may exceed ``--max``)."""
    selected: int = 0
    """How many were looked at (ids given, or filter matches up to ``--max``)."""

    @property
    def over_max(self) -> int:
        return max(0, self.matched - self.selected)

    def as_json(self) -> dict[str, Any]:
        return {"replayed": len(self.replayed), "skipped": [s.as_dict() for s in self.skipped], "dry_run": self.dry_run}


@dataclass(frozen=True)
class _Remapped:
    mapping: str
    params: dict[str, Any]
    body: Any


def actor_name(actor: str) -> str:
    return (ACTOR_PREFIX + actor.strip())[:_ACTOR_MAX]


class Replayer:
    """``replay_ids`` for named submissions, ``replay_matching`` for a filter.

    ``mappings`` set means re-map each submission from its stored event first; a mapping
    that fails leaves the submission ``invalid`` with the new reason (reported as skipped).
    ``screens`` (the destinations' own, as intake runs them) are run before re-mapping: an event
    a destination must never be sent (a patient not covered) stays refused, whatever the mapping.
    """

    def __init__(self, sessions: sessionmaker[Session], *, actor: str, reason: str | None,
                 mappings: MappingSet | None = None, dry_run: bool = False, batch_size: int = 100,
                 clock: Callable[[], dt.datetime] = utcnow, screens: dict[str, Screen] | None = None):
        if batch_size < 1:
            raise ReplayArgumentError("--batch-size must be at least 1")
        if not actor or not actor.strip():
            raise ReplayArgumentError("--actor must not be empty")
        if not dry_run and not (reason and reason.strip()):
            raise ReplayArgumentError("--reason is required (it goes into the audit trail); or use --dry-run")
        self._sessions = sessions
        self._actor = actor_name(actor)
        self._reason = (reason or "").strip()
        self._mappings = mappings
        self._screens = screens or {}
        self._dry_run = dry_run
        self._batch_size = batch_size
        self._clock = clock

    # -- entry points ----------------------------------------------------------------------
    def replay_ids(self, ids: Iterable[int], progress: Progress | None = None, *,
                   matched: int | None = None) -> ReplayReport:
        """Replay these submissions (in this order). ``matched``: how many a filter matched in all,
        when ``ids`` are its first ``--max`` (see ``candidates``)."""
        unique = list(dict.fromkeys(int(i) for i in ids))
        report = ReplayReport(self._dry_run, selected=len(unique), matched=len(unique) if matched is None else matched)
        self._run(unique, report, progress)
        return report

    def candidates(self, filters: Filters, max_rows: int) -> tuple[list[int], int]:
        """Replayable submissions matching ``filters``, oldest first, at most ``max_rows``; and how many matched."""
        if max_rows < 1:
            raise ReplayArgumentError("--max must be at least 1")
        states = list(filters.states) or _REPLAYABLE_VALUES
        refused = [s for s in states if s not in _REPLAYABLE_VALUES]
        if refused:
            raise ReplayArgumentError(f"--state {', '.join(refused)}: only {', '.join(_REPLAYABLE_VALUES)} "
                                      "submissions can be replayed")
        scoped = replace(filters, states=tuple(states))
        with self._sessions() as session:
            total = session.scalar(matching(scoped, func.count(Submission.id))) or 0
            ids = list(session.scalars(matching(scoped, Submission.id).order_by(Submission.id).limit(max_rows)))
        return ids, int(total)

    def replay_matching(self, filters: Filters, max_rows: int, progress: Progress | None = None) -> ReplayReport:
        ids, total = self.candidates(filters, max_rows)
        return self.replay_ids(ids, progress, matched=total)

    # -- batches ---------------------------------------------------------------------------
    def _run(self, ids: Sequence[int], report: ReplayReport, progress: Progress | None) -> None:
        done = 0
        if progress:
            progress(0, len(ids))
        for start in range(0, len(ids), self._batch_size):
            chunk = ids[start:start + self._batch_size]
            with self._sessions() as session:
                for sid in chunk:
                    self._one(session, sid, report)
                if self._dry_run:
                    session.rollback()
                else:
                    session.commit()
            done += len(chunk)
            if progress:
                progress(done, len(ids))

    def _one(self, session: Session, sid: int, report: ReplayReport) -> None:
        now = self._clock()
        if self._dry_run:
            row = session.get(Submission, sid)
            claimed = row is not None and row.state in _REPLAYABLE_VALUES
        else:
            # Claim first (takes the write lock on SQLite, the row lock on PostgreSQL): a row
            # that left the replayable states since it was selected is not touched.
            claimed = cast(CursorResult[Any], session.execute(  # an UPDATE: Session.execute is typed Result
                update(Submission).where(Submission.id == sid, Submission.state.in_(_REPLAYABLE_VALUES))
                .values(updated_at=now).execution_options(synchronize_session=False))).rowcount == 1
            row = session.get(Submission, sid, populate_existing=True)
        if row is None:
            report.skipped.append(Skipped(sid, None, "no such submission"))
            return
        if not claimed:
            report.skipped.append(Skipped(sid, row.state, f"state {row.state} is not replayable "
                                                          f"(only {', '.join(_REPLAYABLE_VALUES)})"))
            return
        fields: dict[str, Any] = {}
        reason = self._reason
        if self._mappings is None and row.params is None and row.payload is None:
            report.skipped.append(Skipped(sid, row.state, _never_mapped(row)))
            return
        if self._mappings is not None:
            remapped = self._remap(session, row)
            if isinstance(remapped, Refusal):
                report.skipped.append(Skipped(sid, row.state, f"still refused ({remapped.error_class}): {remapped.reason}"))
                return
            if isinstance(remapped, str):
                why = f"re-map failed: {remapped}"
                if not self._dry_run:
                    transition(session, row, State.invalid, actor=self._actor, reason=f"{self._reason}; {why}",
                               last_error=remapped[:4000], last_error_class="mapping", next_attempt_at=None,
                               lease_until=None, lease_owner=None)
                report.skipped.append(Skipped(sid, State.invalid.value, redact_text(why)))
                return
            fields.update(mapping=remapped.mapping, params=remapped.params, payload=remapped.body)
            reason = f"{self._reason}; re-mapped with {remapped.mapping}"
        if not self._dry_run:
            transition(session, row, State.pending, actor=self._actor, reason=reason, next_attempt_at=now,
                       attempts=0, first_attempt_at=None, ambiguous=bool(row.ambiguous), last_error=None,
                       last_error_class=None, lease_until=None, lease_owner=None, **fields)
        report.replayed.append(sid)

    def _remap(self, session: Session, row: Submission) -> _Remapped | Refusal | str:
        """The submission mapped again from its stored event; the destination's refusal of the event;
        or why mapping failed (no patient values)."""
        assert self._mappings is not None
        stored = session.get(InboxEvent, row.event_id)
        if stored is None:
            return f"the source event {row.event_id} is not in the store"
        try:
            event = parse_event(stored.body.encode("utf-8", "surrogatepass")).model_dump(mode="json")
        except EventRejected as exc:
            return f"the stored event no longer passes the event contract: {exc}"
        screen = self._screens.get(row.destination)
        refusal = screen(event) if screen is not None else None
        if refusal is not None:
            return refusal
        event_type = event.get("event_type") or stored.event_type or ""
        mappings = [m for m in self._mappings.for_event(event_type, row.destination) if m.operation == row.operation]
        if not mappings:
            return (f"no current mapping sends {event_type} to {row.destination}/{row.operation} "
                    f"(it was {row.mapping})")
        mapping = next((m for m in mappings if m.name == row.mapping), mappings[0])
        try:
            mapped = mapping.apply(event)
        except MappingError as exc:
            return "; ".join(str(p) for p in exc.problems)
        return _Remapped(mapping.name, mapped.params, mapped.body)


def _never_mapped(row: Submission) -> str:
    """Why a submission with no stored request cannot be replayed as it stands."""
    if row.last_error_class == NOT_COVERED:
        return ("it was refused as not covered and never mapped: if the config now lets "
                f"{row.destination} take such patients, replay it with --remap")
    return "it was never mapped (its mapping failed): fix the mapping files, then replay it with --remap"
