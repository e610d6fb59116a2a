"""Broker message -> store, in ONE transaction: the inbox row (dedupe by event id) and one
submission row per destination operation the mappings route it to. The caller acks the
broker message only after ``receive`` returns, i.e. after the commit.

A body that fails the contract is stored as an ``invalid`` event with its reasons (and
acked: redelivering it would never make it valid). A mapping failure makes that one
submission ``invalid``, naming the mapping file and key.

Outage mode: a ``prescription.created`` event that arrives while a destination it goes to
has an open outage (circuit or declared) also gets a paper-fallback record, in the same
transaction. Its submission stays ``pending`` and is sent when the destination is back; the
runner publishes the reply that tells the HIS to print the paper (outbox: the record's
``reply_published_at``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from adapter.events.parse import EventRejected, Problem, body_fingerprint, event_id_or_none, parse_event
from adapter.mapping import MappingError, MappingSet
from adapter.redact import pseudonym
from adapter.outage import records as outage_records
from adapter.events import keys
from adapter.store.audit import audit_rows, state_change
from adapter.store.models import FallbackRecord, InboxEvent, Outage, Submission
from adapter.store.states import EventStatus, State
from adapter.store.types import utcnow

ACTOR = "intake"
_INBOX = InboxEvent.__table__
_SUBMISSIONS = Submission.__table__
_OPEN_OUTAGE_DESTINATIONS = select(Outage.__table__.c.destination).where(Outage.__table__.c.ended_at.is_(None)).distinct()


class Received(str, Enum):
    stored = "stored"
    invalid = "invalid"
    duplicate = "duplicate"


@dataclass(frozen=True)
class IntakeResult:
    outcome: Received
    event_id: str
    submissions: int = 0
    reason: str = ""
    fallbacks: int = 0  # paper-fallback records issued (their replies are due)
    destinations: tuple[str, ...] = ()  # where the stored submissions go (the runner wakes the dispatcher for them)


@dataclass(frozen=True)
class FallbackPolicy:
    enabled: bool = True
    number_prefix: str = "FB"
    timezone: str = "Asia/Tehran"


@dataclass(frozen=True)
class _Plan:
    """One message, parsed and routed: how to build its rows, and what storing it will report."""

    event_id: str
    outcome: Received
    build: Callable[[], tuple[dict[str, Any], list[dict[str, Any]]]]
    reason: str | None = None  # of the event's audit row (an invalid event's problems)
    event: dict[str, Any] = field(default_factory=dict)
    wants_paper: bool = False
    submissions: int = 0
    destinations: tuple[str, ...] = ()

    def result(self, fallbacks: int) -> IntakeResult:
        if self.outcome is Received.invalid:
            return IntakeResult(Received.invalid, self.event_id, reason=self.reason or "")
        return IntakeResult(Received.stored, self.event_id, self.submissions, fallbacks=fallbacks,
                            destinations=self.destinations)


FALLBACK_EVENT_TYPES = ("prescription.created",)
_NUMBER_RETRIES = 5


class Intake:
    def __init__(self, sessions: sessionmaker[Session], mappings: MappingSet, destinations: set[str],
                 patient_key: bytes, principal_mode: dict[str, str], fallback: FallbackPolicy | None = None):
        self._sessions = sessions
        self._fallback = fallback or FallbackPolicy()
        self._mappings = mappings
        self._destinations = destinations
        self._patient_key = patient_key
        self._principal_mode = principal_mode  # destination -> "facility" | "prescriber"

    def receive(self, body: bytes | str) -> IntakeResult:
        return self._store(self._plan(body))

    def receive_many(self, bodies: list[bytes | str]) -> list[IntakeResult] | None:
        """Store several messages in ONE transaction; the caller acks them only after this returns.

        Same rows and outcomes as ``receive`` one by one, in order (a repeat of an event id, in
        the store or earlier in the batch, is a duplicate receipt). None, with nothing stored,
        when the batch clashed with another writer (a fallback number taken meanwhile): the
        caller then stores the messages one by one, where that is retried."""
        plans = [self._plan(body) for body in bodies]
        with self._sessions() as session:
            try:
                results = self._write_all(session, plans)
                session.commit()
            except IntegrityError:
                session.rollback()
                return None
        return results

    def _write_all(self, session: Session, plans: list[_Plan]) -> list[IntakeResult]:
        """The batch's rows in a few multi-row statements (inbox rows, submissions, audit rows),
        then the paper-fallback records, which need the submissions' ids."""
        ids = list({plan.event_id for plan in plans})
        seen = set(session.connection().execute(select(_INBOX.c.event_id).where(_INBOX.c.event_id.in_(ids))).scalars())
        built: list[tuple[_Plan, dict[str, Any], list[dict[str, Any]]] | None] = []
        for plan in plans:
            if plan.event_id in seen:
                _add_duplicate_receipt(session, plan.event_id)
                built.append(None)
                continue
            seen.add(plan.event_id)
            row, submissions = plan.build()
            built.append((plan, row, submissions))
        _write_rows(session, [(row, submissions, plan.reason) for plan, row, submissions in filter(None, built)])
        results = []
        in_outage: set[str] | None = None  # read once, inside the write transaction
        for plan, entry in zip(plans, built):
            if entry is None:
                results.append(IntakeResult(Received.duplicate, plan.event_id))
                continue
            issued = 0
            if plan.wants_paper:
                in_outage = _in_outage(session) if in_outage is None else in_outage
                issued = self._issue_paper(session, plan.event, entry[2], in_outage)
            results.append(plan.result(issued))
        return results

    def quarantine(self, body: bytes, error: str) -> IntakeResult:
        """Store a message that ``receive`` keeps failing on (a bug, not bad data) as an invalid
        event, so it stops blocking the queue and stays visible for a replay after the fix."""
        try:
            event_id = event_id_or_none(json.loads(body).get("event_id"))
        except (ValueError, AttributeError, RecursionError):
            event_id = None
        problem = Problem("$", f"the adapter failed to store this message ({error}); quarantined for replay")
        return self._store(self._invalid(body, EventRejected([problem], event_id, None)))

    def _plan(self, body: bytes | str) -> _Plan:
        raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
        try:
            event = parse_event(raw, value_key=self._patient_key)
        except EventRejected as rejected:
            return self._invalid(raw, rejected)
        return self._valid(raw, event.model_dump(mode="json"))

    def _store(self, plan: _Plan) -> IntakeResult:
        issued = [0]

        def paper(session: Session, submissions: list[dict[str, Any]]) -> None:
            issued[0] = self._issue_paper(session, plan.event, submissions)

        done = self._insert(plan.build, plan.reason, paper if plan.wants_paper else None)
        return done or plan.result(issued[0])

    @staticmethod
    def _invalid(raw: bytes, rejected: EventRejected) -> _Plan:
        event_id = rejected.event_id or body_fingerprint(raw)
        row = dict(event_id=event_id, event_type=rejected.event_type, status=EventStatus.invalid.value,
                   body=_storable(raw.decode("utf-8", "replace"))[:1_000_000],
                   problems=[p.as_dict() for p in rejected.problems])
        return _Plan(event_id, Received.invalid, lambda: (dict(row), []), reason=str(rejected)[:2000])

    def _valid(self, raw: bytes, event: dict[str, Any]) -> _Plan:
        event_id = event["event_id"]
        mappings = self._routes(event)
        identifier = keys.patient_identifier(event)

        def build() -> tuple[dict[str, Any], list[dict[str, Any]]]:  # fresh rows for each try
            submissions = [self._submission(event, mapping) for mapping in mappings]
            row = dict(
                event_id=event_id, event_type=event["event_type"],
                status=(EventStatus.accepted if submissions else EventStatus.unrouted).value,
                facility_siam_id=event["facility_siam_id"], source_system=event["source_system"],
                correlation_id=event.get("correlation_id"), subject_key=keys.subject_key(event),
                patient_ref=pseudonym(identifier, self._patient_key) if identifier else None,
                occurred_at=_parse_time(event["occurred_at"]), body=raw.decode("utf-8"),
            )
            return row, submissions

        wants_paper = self._fallback.enabled and event["event_type"] in FALLBACK_EVENT_TYPES
        return _Plan(event_id, Received.stored, build, event=event, wants_paper=wants_paper, submissions=len(mappings),
                     destinations=tuple(sorted({m.destination for m in mappings})))

    def _routes(self, event: dict[str, Any]) -> list[Any]:
        return [m for m in self._mappings.for_event(event["event_type"])
                if m.destination in self._destinations and m.routes(event)]

    def _submission(self, event: dict[str, Any], mapping: Any) -> dict[str, Any]:
        """The submission row's columns (columns left out get the table's defaults)."""
        common = dict(
            event_id=event["event_id"], destination=mapping.destination, operation=mapping.operation,
            mapping=mapping.name, subject_key=keys.subject_key(event), after_key=keys.after_key(event),
            principal=self._principal(event, mapping.destination),
            idempotency_key=keys.idempotency_key(event["event_id"], mapping.destination, mapping.operation),
            next_attempt_at=utcnow(), last_error=None, last_error_class=None,
        )
        try:
            mapped = mapping.apply(event)
        except MappingError as exc:
            return dict(common, state=State.invalid.value,
                        last_error="; ".join(str(p) for p in exc.problems)[:4000], last_error_class="mapping")
        return dict(common, state=State.pending.value, params=mapped.params, payload=mapped.body)

    def _principal(self, event: dict[str, Any], destination: str) -> str | None:
        if self._principal_mode.get(destination) == "prescriber":
            return keys.prescriber_national_code(event)
        return event["facility_siam_id"]

    def _insert(self, build: Any, reason: str | None, extra: Any = None) -> IntakeResult | None:
        """Commit the event and its submissions (and what ``extra`` adds in the same transaction),
        or count a duplicate receipt. None means stored. A clash on a fallback number (another
        process took it) is retried with the next number.

        Core statements, no ORM unit of work: this runs once per message on the consumer thread."""
        for attempt in range(_NUMBER_RETRIES):
            row, submissions = build()
            with self._sessions() as session:
                if session.execute(select(InboxEvent.event_id).where(InboxEvent.event_id == row["event_id"])).first():
                    return self._count_duplicate(session, row["event_id"])
                _write_rows(session, [(row, submissions, reason)])
                if extra is not None:
                    extra(session, submissions)
                try:
                    session.commit()
                except IntegrityError:
                    session.rollback()
                    if extra is None or attempt == _NUMBER_RETRIES - 1 or session.execute(
                            select(InboxEvent.event_id).where(InboxEvent.event_id == row["event_id"])).first():
                        return self._count_duplicate(session, row["event_id"])
                    continue
            return None
        return None

    def _issue_paper(self, session: Session, event: dict[str, Any], submissions: list[dict[str, Any]],
                     in_outage: set[str] | None = None) -> int:
        """One paper-fallback record per destination in outage (its create submission). The count.

        ``in_outage``: the destinations with an open outage, if already read in this transaction."""
        by_destination: dict[str, dict[str, Any]] = {}
        for submission in submissions:
            if submission["operation"] == "create" or submission["destination"] not in by_destination:
                by_destination[submission["destination"]] = submission
        in_outage = _in_outage(session) if in_outage is None else in_outage
        issued = 0
        now = utcnow()
        for destination, submission in sorted(by_destination.items()):
            if destination not in in_outage:
                continue
            outage = outage_records.current_outage(session, destination)
            if outage is None:
                continue
            day = outage_records.fallback_day(now, self._fallback.timezone)
            number = outage_records.next_fallback_no(session, self._fallback.number_prefix,
                                                     event["facility_siam_id"], day)
            refused = submission["state"] != State.pending.value
            session.add(FallbackRecord(
                fallback_no=number, event_id=event["event_id"], submission_id=submission["id"], destination=destination,
                outage_id=outage.id, facility_siam_id=event["facility_siam_id"],
                prescription_id=event["payload"]["prescription_id"], reason=outage.reason, created_at=now,
                state=outage_records.PAPER_CLAIM if refused else outage_records.ISSUED,
                claimed_at=now if refused else None,
                claim_reason=f"{submission['state']}: {submission['last_error']}" if refused else None))
            session.flush()
            issued += 1
        return issued

    @staticmethod
    def _count_duplicate(session: Session, event_id: str) -> IntakeResult:
        _add_duplicate_receipt(session, event_id)
        session.commit()
        return IntakeResult(Received.duplicate, event_id)


def _write_rows(session: Session, events: list[tuple[dict[str, Any], list[dict[str, Any]], str | None]]) -> None:
    """Inbox rows, their submissions (each gets its ``id``) and the audit rows -- the event's
    status, then each submission's first state (``state_change`` checks it against the table of
    allowed moves: new -> pending or invalid) -- in a few multi-row statements.
    ``events``: (inbox row, submission rows, reason) each."""
    _insert_rows(session, _INBOX, [row for row, _, _ in events])
    _insert_rows(session, _SUBMISSIONS, [s for _, submissions, _ in events for s in submissions], returning_ids=True)
    audit_rows(session, [change for row, submissions, reason in events for change in (
        [state_change(row["event_id"], None, None, row["status"], ACTOR, reason)]
        + [state_change(row["event_id"], s["id"], None, s["state"], ACTOR, s["last_error"]) for s in submissions])])


def _insert_rows(session: Session, table: Any, rows: list[dict[str, Any]], returning_ids: bool = False) -> None:
    """Insert ``rows``, one multi-row statement per set of columns given (a column left out keeps
    its default); with ``returning_ids`` each row gets its new ``id``."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    connection = session.connection()
    for group in groups.values():
        if not returning_ids:
            connection.execute(insert(table), group)
            continue
        statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
        for row, new_id in zip(group, connection.execute(statement, group).scalars().all(), strict=True):
            row["id"] = new_id


def _in_outage(session: Session) -> set[str]:
    """Destinations with an open outage (one cheap Core query; almost always none)."""
    return set(session.connection().execute(_OPEN_OUTAGE_DESTINATIONS).scalars())


def _add_duplicate_receipt(session: Session, event_id: str) -> None:
    session.execute(update(InboxEvent).where(InboxEvent.event_id == event_id)
                    .values(duplicate_receipts=InboxEvent.duplicate_receipts + 1))


def _storable(text: str) -> str:
    """PostgreSQL text cannot hold NUL: keep it visible as its JSON escape."""
    return text.replace("\x00", "\\u0000")


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)
