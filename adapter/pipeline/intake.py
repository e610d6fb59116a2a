"""Broker message -> store, in ONE transaction: the inbox row (dedupe by event id) and one
submission row per destination operation the mappings route it to. The caller acks the
broker message only after ``receive`` returns, i.e. after the commit.

A body that fails the contract is stored as an ``invalid`` event with its reasons (and
acked: redelivering it would never make it valid). A mapping failure makes that one
submission ``invalid``, naming the mapping file and key.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from adapter.events.parse import EventRejected, body_fingerprint, parse_event
from adapter.mapping import MappingError, MappingSet
from adapter.ops.redact import pseudonym
from adapter.pipeline import keys
from adapter.store.audit import record_event_state
from adapter.store.models import InboxEvent, StateChange, Submission
from adapter.store.states import EventStatus, State
from adapter.store.types import utcnow

ACTOR = "intake"


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


class Intake:
    def __init__(self, sessions: sessionmaker[Session], mappings: MappingSet, destinations: set[str],
                 patient_key: bytes, principal_mode: dict[str, str]):
        self._sessions = sessions
        self._mappings = mappings
        self._destinations = destinations
        self._patient_key = patient_key
        self._principal_mode = principal_mode  # destination -> "facility" | "prescriber"

    def receive(self, body: bytes | str) -> IntakeResult:
        raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
        try:
            event = parse_event(raw)
        except EventRejected as rejected:
            return self._store_invalid(raw, rejected)
        return self._store_valid(raw, event.model_dump(mode="json"))

    def _store_invalid(self, raw: bytes, rejected: EventRejected) -> IntakeResult:
        event_id = rejected.event_id or body_fingerprint(raw)
        row = InboxEvent(event_id=event_id, event_type=rejected.event_type, status=EventStatus.invalid.value,
                         body=raw.decode("utf-8", "replace")[:1_000_000],
                         problems=[p.as_dict() for p in rejected.problems])
        reason = str(rejected)[:2000]
        return self._insert(row, [], reason) or IntakeResult(Received.invalid, event_id, reason=reason)

    def _store_valid(self, raw: bytes, event: dict[str, Any]) -> IntakeResult:
        event_id = event["event_id"]
        submissions = [self._submission(event, mapping) for mapping in self._routes(event)]
        identifier = keys.patient_identifier(event)
        row = InboxEvent(
            event_id=event_id, event_type=event["event_type"],
            status=(EventStatus.accepted if submissions else EventStatus.unrouted).value,
            facility_siam_id=event["facility_siam_id"], source_system=event["source_system"],
            correlation_id=event.get("correlation_id"), subject_key=keys.subject_key(event),
            patient_ref=pseudonym(identifier, self._patient_key) if identifier else None,
            occurred_at=_parse_time(event["occurred_at"]), body=raw.decode("utf-8"),
        )
        return self._insert(row, submissions, None) or IntakeResult(Received.stored, event_id, len(submissions))

    def _routes(self, event: dict[str, Any]) -> list[Any]:
        return [m for m in self._mappings.for_event(event["event_type"]) if m.destination in self._destinations]

    def _submission(self, event: dict[str, Any], mapping: Any) -> Submission:
        common = dict(
            event_id=event["event_id"], destination=mapping.destination, operation=mapping.operation,
            mapping=mapping.name, subject_key=keys.subject_key(event), after_key=keys.after_key(event),
            principal=self._principal(event, mapping.destination),
            idempotency_key=keys.idempotency_key(event["event_id"], mapping.destination, mapping.operation),
            next_attempt_at=utcnow(),
        )
        try:
            mapped = mapping.apply(event)
        except MappingError as exc:
            return Submission(**common, state=State.invalid.value,
                              last_error="; ".join(str(p) for p in exc.problems)[:4000], last_error_class="mapping")
        return Submission(**common, state=State.pending.value, params=mapped.params, payload=mapped.body)

    def _principal(self, event: dict[str, Any], destination: str) -> str | None:
        if self._principal_mode.get(destination) == "prescriber":
            return keys.prescriber_national_code(event)
        return event["facility_siam_id"]

    def _insert(self, row: InboxEvent, submissions: list[Submission], reason: str | None) -> IntakeResult | None:
        """Commit the event and its submissions, or count a duplicate receipt. None means stored."""
        with self._sessions() as session:
            if session.get(InboxEvent, row.event_id) is not None:
                return self._count_duplicate(session, row.event_id)
            session.add(row)
            session.flush()
            record_event_state(session, row.event_id, row.status, actor=ACTOR, reason=reason)
            for submission in submissions:
                session.add(submission)
            session.flush()
            for submission in submissions:
                session.add(StateChange(event_id=row.event_id, submission_id=submission.id, from_state=None,
                                        to_state=submission.state, actor=ACTOR, reason=submission.last_error))
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                return self._count_duplicate(session, row.event_id)
        return None

    @staticmethod
    def _count_duplicate(session: Session, event_id: str) -> IntakeResult:
        session.execute(update(InboxEvent).where(InboxEvent.event_id == event_id)
                        .values(duplicate_receipts=InboxEvent.duplicate_receipts + 1))
        session.commit()
        return IntakeResult(Received.duplicate, event_id)


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def stored_event(session: Session, event_id: str) -> dict[str, Any] | None:
    """The stored event as a dict (for re-mapping and for destinations that need more than the payload)."""
    row = session.scalar(select(InboxEvent).where(InboxEvent.event_id == event_id))
    return json.loads(row.body) if row is not None and row.status != EventStatus.invalid.value else None
