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
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from adapter.destinations.plugin import Screen
from adapter.events.content import content_digest, stored_body_digest
from adapter.events.parse import EventRejected, Problem, body_fingerprint, event_id_or_none, read_event
from adapter.mapping import MappingError, MappingSet
from adapter.redact import pseudonym
from adapter.replies.make import (ReplyRules, Settled, conflict_reply, his_ref, invalid_event_reply,
                                  invalid_submission_reply, paper_reply)
from adapter.replies.rows import add_replies
from adapter.outage import records as outage_records
from adapter.events import keys
from adapter.store.audit import audit_rows, state_change
from adapter.store.models import InboxEvent, Outage, Submission
from adapter.store.states import EventStatus, State
from adapter.store import at_rest, versions
from adapter.store.types import utcnow

log = logging.getLogger(__name__)
ACTOR = "intake"
_INBOX = InboxEvent.__table__
_SUBMISSIONS = Submission.__table__
_OPEN_OUTAGE_DESTINATIONS = select(Outage.__table__.c.destination).where(Outage.__table__.c.ended_at.is_(None)).distinct()


class Received(str, Enum):
    stored = "stored"
    invalid = "invalid"
    duplicate = "duplicate"  # the same content again (counted in duplicate_receipts)
    conflict = "conflict"  # a different body under a known event id: kept as an event version


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
    digest: str  # adapter.events.content: what a repeat of the event id is compared by
    body: str  # as stored (a conflicting version keeps it)
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
_STALE = dt.timedelta(seconds=2)  # written this long before it is stored: look for an outage at that time
_NUMBER_RETRIES = 5


class Intake:
    def __init__(self, sessions: sessionmaker[Session], mappings: MappingSet, destinations: set[str],
                 patient_key: bytes, principal_mode: dict[str, str], fallback: FallbackPolicy | None = None,
                 replies: ReplyRules | None = None, screens: dict[str, Screen] | None = None):
        self._sessions = sessions
        self._screens = screens or {}  # destination -> refuses events it must never be sent
        self._replies = replies or ReplyRules()
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
        known = _Known(session, self._patient_key, [plan.event_id for plan in plans])
        built: list[tuple[_Plan, dict[str, Any], list[dict[str, Any]]] | None] = []
        repeats: list[Received | None] = []
        for plan in plans:
            repeat = known.classify(plan)
            repeats.append(repeat)
            if repeat is not None:
                built.append(None)
                continue
            known.add(plan)
            row, submissions = plan.build()
            built.append((plan, row, submissions))
        _write_rows(session, [(row, submissions, plan.reason) for plan, row, submissions in filter(None, built)],
                    self._replies)
        kept = known.write_repeats(session, self._replies)
        results = []
        in_outage: set[str] | None = None  # read once, inside the write transaction
        for plan, entry, repeat in zip(plans, built, repeats):
            if entry is None or repeat is not None:
                results.append(_repeat_result(plan, repeat or Received.duplicate, kept))
                continue
            issued = 0
            if plan.wants_paper:
                in_outage = _in_outage(session) if in_outage is None else in_outage
                issued = self._issue_paper(session, plan.event, entry[2], in_outage)
            results.append(plan.result(issued))
        return results

    def version_rows(self, body: str) -> tuple[Received, dict[str, Any], list[dict[str, Any]]]:
        """What intake would store for ``body`` (a conflicting version an operator replays): the
        outcome (``stored`` or ``invalid``), the inbox row and the submission rows. Nothing is written."""
        plan = self._plan(body.encode("utf-8", "surrogatepass"))
        row, submissions = plan.build()
        return plan.outcome, row, submissions

    def stored_digest(self, body: str) -> str:
        """The content digest of a body stored before digests were kept (``adapter.events.content``)."""
        return stored_body_digest(body, key=self._patient_key)

    def quarantine(self, body: bytes, error: str) -> IntakeResult:
        """Store a message that ``receive`` keeps failing on (a bug, not bad data) as an invalid
        event, so it stops blocking the queue and stays visible for a replay after the fix."""
        try:
            event_id = event_id_or_none(json.loads(body).get("event_id"))
        except (ValueError, AttributeError, RecursionError):
            event_id = None
        problem = Problem("$", f"the adapter failed to store this message ({error}); quarantined for replay")
        return self._store(self._invalid(body, EventRejected([problem], event_id, None),
                                         content_digest(body, key=self._patient_key)))

    def _plan(self, body: bytes | str) -> _Plan:
        raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
        if at_rest.is_sealed(raw):  # the embedded queue could not decrypt it (see adapter.broker.sqlite_transport)
            try:
                raw = at_rest.open_sealed(raw)
            except at_rest.PayloadKeyError as exc:
                return self._invalid(raw, EventRejected([Problem("$", str(exc))], None, None),
                                     content_digest(raw, key=self._patient_key))
        try:
            event, document = read_event(raw, value_key=self._patient_key)
        except EventRejected as rejected:
            digest = content_digest(raw, key=self._patient_key) if rejected.document is None \
                else content_digest(raw, rejected.document, key=self._patient_key)
            return self._invalid(raw, rejected, digest)
        return self._valid(raw, event.model_dump(mode="json"), content_digest(raw, document, key=self._patient_key))

    def _store(self, plan: _Plan) -> IntakeResult:
        issued = [0]

        def paper(session: Session, submissions: list[dict[str, Any]]) -> None:
            issued[0] = self._issue_paper(session, plan.event, submissions)

        done = self._insert(plan, paper if plan.wants_paper else None)
        return done or plan.result(issued[0])

    @staticmethod
    def _invalid(raw: bytes, rejected: EventRejected, digest: str) -> _Plan:
        event_id = rejected.event_id or body_fingerprint(raw)
        body = _storable(raw.decode("utf-8", "replace"))[:1_000_000]
        row = dict(event_id=event_id, event_type=rejected.event_type, status=EventStatus.invalid.value,
                   body=body, problems=[p.as_dict() for p in rejected.problems], content_digest=digest)
        return _Plan(event_id, Received.invalid, lambda: (dict(row), []), digest, body, reason=str(rejected)[:2000])

    def _valid(self, raw: bytes, event: dict[str, Any], digest: str) -> _Plan:
        event_id = event["event_id"]
        mappings = self._routes(event)
        identifier = keys.patient_identifier(event)
        ref = his_ref(event)

        def build() -> tuple[dict[str, Any], list[dict[str, Any]]]:  # fresh rows for each try
            submissions = [dict(self._submission(event, mapping), his_ref=ref) for mapping in mappings]
            row = dict(
                event_id=event_id, event_type=event["event_type"],
                status=(EventStatus.accepted if submissions else EventStatus.unrouted).value,
                facility_siam_id=event["facility_siam_id"], source_system=event["source_system"],
                correlation_id=event.get("correlation_id"), subject_key=keys.subject_key(event),
                patient_ref=pseudonym(identifier, self._patient_key) if identifier else None,
                occurred_at=_parse_time(event["occurred_at"]), body=raw.decode("utf-8"), content_digest=digest,
            )
            return row, submissions

        wants_paper = self._fallback.enabled and event["event_type"] in FALLBACK_EVENT_TYPES
        return _Plan(event_id, Received.stored, build, digest, raw.decode("utf-8"), event=event,
                     wants_paper=wants_paper, submissions=len(mappings),
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
        screen = self._screens.get(mapping.destination)
        refusal = screen(event) if screen else None
        if refusal:
            return dict(common, state=State.invalid.value, last_error=refusal.reason, last_error_class=refusal.error_class)
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

    def _insert(self, plan: _Plan, extra: Any = None) -> IntakeResult | None:
        """Commit the event and its submissions (and what ``extra`` adds in the same transaction),
        or, when the event id is known, count a duplicate receipt or keep a conflicting version.
        None means stored. A clash on a fallback number (another process took it) is retried with
        the next number; a clash on the event id (another process stored it meanwhile) is a repeat.

        Core statements, no ORM unit of work: this runs once per message on the consumer thread."""
        for attempt in range(_NUMBER_RETRIES):
            row, submissions = plan.build()
            with self._sessions() as session:
                known = _Known(session, self._patient_key, [plan.event_id])
                if known.has(plan.event_id):
                    return self._settle_repeat(session, known, plan, self._replies)
                _write_rows(session, [(row, submissions, plan.reason)], self._replies)
                if extra is not None:
                    extra(session, submissions)
                try:
                    session.commit()
                except IntegrityError:
                    session.rollback()
                    known = _Known(session, self._patient_key, [plan.event_id])
                    if known.has(plan.event_id) or extra is None or attempt == _NUMBER_RETRIES - 1:
                        return self._settle_repeat(session, known, plan, self._replies)
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
        written = _parse_time(event["occurred_at"])
        for destination, submission in sorted(by_destination.items()):
            if destination in in_outage:
                outage = outage_records.current_outage(session, destination)
            elif written < now - _STALE and outage_records.any_outages(session):
                # written during an outage that has ended since: decided by when it was written
                outage = outage_records.outage_at(session, destination, written)
            else:
                continue
            if outage is None:
                continue
            refused = submission["state"] != State.pending.value
            record = outage_records.new_paper_record(
                session, self._fallback.number_prefix, self._fallback.timezone, event_id=event["event_id"],
                facility=event["facility_siam_id"], prescription_id=event["payload"]["prescription_id"],
                submission_id=submission["id"], destination=destination, outage_id=outage.id, reason=outage.reason,
                now=now, refused=f"{submission['state']}: {submission['last_error']}" if refused else None)
            add_replies(session, self._replies, [(paper_reply(record, submission.get("his_ref") or {}, now,
                                                              self._replies.legacy_paper_type), None)], now)
            issued += 1
        return issued

    @staticmethod
    def _settle_repeat(session: Session, known: "_Known", plan: _Plan, replies: ReplyRules | None) -> IntakeResult:
        """A message whose event id is in the store: a duplicate receipt or a conflict, committed."""
        repeat = known.classify(plan) if known.has(plan.event_id) else Received.duplicate
        kept = known.write_repeats(session, replies)
        session.commit()
        return _repeat_result(plan, repeat or Received.duplicate, kept)


def _write_rows(session: Session, events: list[tuple[dict[str, Any], list[dict[str, Any]], str | None]],
                replies: ReplyRules | None = None) -> None:
    """Inbox rows, their submissions (each gets its ``id``) and the audit rows -- the event's
    status, then each submission's first state (``state_change`` checks it against the table of
    allowed moves: new -> pending or invalid) -- in a few multi-row statements; then the replies
    the HIS gets at once (an invalid event, a submission that cannot be sent).
    ``events``: (inbox row, submission rows, reason) each."""
    _insert_rows(session, _INBOX, [row for row, _, _ in events])
    _insert_rows(session, _SUBMISSIONS, [s for _, submissions, _ in events for s in submissions], returning_ids=True)
    audit_rows(session, [change for row, submissions, reason in events for change in (
        [state_change(row["event_id"], None, None, row["status"], ACTOR, reason)]
        + [state_change(row["event_id"], s["id"], None, s["state"], ACTOR, s["last_error"]) for s in submissions])])
    if replies is not None and replies.enabled:
        now = utcnow()
        add_replies(session, replies, _intake_replies(events, now), now)


def _intake_replies(events: list[tuple[dict[str, Any], list[dict[str, Any]], str | None]],
                    now: dt.datetime) -> list[tuple[dict[str, Any] | None, int | None]]:
    """The replies due when an event is stored: it failed the contract, or a submission cannot be sent."""
    out: list[tuple[dict[str, Any] | None, int | None]] = []
    for row, submissions, _ in events:
        if row["status"] == EventStatus.invalid.value:
            out.append((invalid_event_reply(row["event_id"], row.get("event_type"), row.get("facility_siam_id"),
                                            row.get("problems") or [], now), None))
        for s in submissions:
            if s["state"] == State.invalid.value:
                settled = Settled(row["event_id"], s["id"], s["destination"], s["operation"], s["state"],
                                  s.get("his_ref") or {}, {}, s.get("last_error"), s.get("last_error_class"), 0)
                out.append((invalid_submission_reply(settled, now), s["id"]))
    return out



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


class _Known:
    """The event ids of one transaction's messages that are already stored (one indexed read for
    the whole batch), and what their repeats are: the same content -> a duplicate receipt; a
    different body -> a conflict, unless it is the body of a version kept earlier (read only
    then). Ids stored earlier in the same batch count as known."""

    def __init__(self, session: Session, patient_key: bytes, event_ids: list[str]):
        self._session = session
        self._key = patient_key
        self._digests: dict[str, str | None] = {
            event_id: digest for event_id, (digest, _) in versions.stored_digests(session, list(set(event_ids))).items()}
        self._others: dict[str, set[str]] = {}
        self.repeats: Counter[str] = Counter()
        self.conflicts: list[_Plan] = []

    def has(self, event_id: str) -> bool:
        return event_id in self._digests

    def add(self, plan: _Plan) -> None:
        """``plan`` is stored in this transaction: later messages with its id are repeats."""
        self._digests[plan.event_id] = plan.digest
        self._others[plan.event_id] = set()

    def classify(self, plan: _Plan) -> Received | None:
        """None: a new event id. Otherwise the repeat is noted for ``write_repeats``."""
        if plan.event_id not in self._digests:
            return None
        stored = self._stored_digest(plan.event_id)
        if plan.event_id.startswith(_FINGERPRINT) or stored is None or plan.digest == stored \
                or plan.digest in self._other_digests(plan.event_id):
            self.repeats[plan.event_id] += 1
            return Received.duplicate
        self._others[plan.event_id].add(plan.digest)
        self.conflicts.append(plan)
        return Received.conflict

    def write_repeats(self, session: Session, replies: ReplyRules | None = None) -> dict[int, int]:
        """Count the duplicates and keep the conflicts (after the batch's inbox rows exist), each
        with its ``event.conflict`` reply; ``id(plan)`` -> the version id of each conflict kept."""
        versions.count_repeats(session, dict(self.repeats))
        kept = {}
        now = utcnow()
        for plan in self.conflicts:
            kept[id(plan)] = versions.add_conflict(session, plan.event_id, plan.digest, plan.body)
            log.warning("event %s: a different body under a known event id, kept as version %d (conflict): "
                        "see adapter show, then adapter replay --conflict", plan.event_id, kept[id(plan)])
        if replies is not None and self.conflicts:
            add_replies(session, replies, [(conflict_reply(plan.event_id, _held_event(plan), kept[id(plan)], now), None)
                                           for plan in self.conflicts], now)
        self.repeats.clear()
        self.conflicts.clear()
        return kept

    def _stored_digest(self, event_id: str) -> str | None:
        digest = self._digests[event_id]
        if digest is None:  # stored before digests were kept: compare with its body, if still there
            body, pruned = versions.stored_body(self._session, event_id)
            digest = None if pruned else stored_body_digest(body, key=self._key)
            self._digests[event_id] = digest
        return digest

    def _other_digests(self, event_id: str) -> set[str]:
        if event_id not in self._others:
            self._others[event_id] = versions.other_digests(self._session, event_id)
        return self._others[event_id]


def _held_event(plan: _Plan) -> dict[str, Any]:
    """The held body as far as it reads (its HIS ids for the reply), even when it fails the contract."""
    if plan.event:
        return plan.event
    try:
        parsed = json.loads(plan.body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


_FINGERPRINT = "unreadable-"  # body_fingerprint's ids: the id is a hash of the bytes, so a repeat is identical


def _repeat_result(plan: _Plan, repeat: Received, kept: dict[int, int]) -> IntakeResult:
    if repeat is Received.conflict:
        return IntakeResult(Received.conflict, plan.event_id,
                            reason=f"a different body under a known event id: kept as version {kept[id(plan)]}")
    return IntakeResult(Received.duplicate, plan.event_id)


def _storable(text: str) -> str:
    """PostgreSQL text cannot hold NUL: keep it visible as its JSON escape."""
    return text.replace("\x00", "\\u0000")


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)
