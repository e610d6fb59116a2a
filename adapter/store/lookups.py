"""What destinations may ask of and tell the store.

A destination gets a ``DestinationStore`` in ``prepare`` (a fresh session, before the send) and
in ``on_result`` (the dispatcher's settle transaction: what it writes commits, or not, with the
submission's new state). It never sees the session or the tables: each need has one named
function here, so the queries destinations depend on live in one place, next to the models.

The reads and writes on the dispatcher's path (the create of a subject, the visit's answer, the
eligibility upsert) are Core statements on the session's connection: they run once or twice
per send, and the ORM's identity map and flush cost more than the query (docs/performance.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapter.store.models import InboxEvent, Submission, Visit, table_of
from adapter.store.states import NEEDS_PERSON, OPEN_STATES, EventStatus, State
from adapter.store.types import utcnow

_OPEN = frozenset(s.value for s in OPEN_STATES)
_REFUSED = frozenset(s.value for s in NEEDS_PERSON)
_SUBMISSIONS = table_of(Submission)
_VISITS = table_of(Visit)

_CREATE_OF = select(_SUBMISSIONS.c.id, _SUBMISSIONS.c.state, _SUBMISSIONS.c.result, _SUBMISSIONS.c.payload,
                    _SUBMISSIONS.c.last_error_class).where(
    _SUBMISSIONS.c.destination == bindparam("destination"), _SUBMISSIONS.c.subject_key == bindparam("subject"),
    _SUBMISSIONS.c.operation == "create").order_by(_SUBMISSIONS.c.id).limit(1)
_EARLIER_ACCEPTED = select(_SUBMISSIONS.c.params, _SUBMISSIONS.c.result).where(
    _SUBMISSIONS.c.destination == bindparam("destination"), _SUBMISSIONS.c.subject_key == bindparam("subject"),
    _SUBMISSIONS.c.state == State.accepted.value, _SUBMISSIONS.c.id != bindparam("excluding")
).order_by(_SUBMISSIONS.c.id.desc())
_VISIT_KEY = (_VISITS.c.facility_siam_id == bindparam("w_facility"), _VISITS.c.visit_id == bindparam("w_visit"),
              _VISITS.c.destination == bindparam("w_destination"))
_VISIT_ANSWER = select(_VISITS.c.eligible, _VISITS.c.hid, _VISITS.c.detail).where(*_VISIT_KEY)
_ANSWER_COLUMNS = ("eligible", "hid", "detail", "checked_at")
_UPDATE_VISIT = update(_VISITS).where(*_VISIT_KEY).values(
    {name: bindparam(f"v_{name}", type_=_VISITS.c[name].type) for name in _ANSWER_COLUMNS})
_INSERT_VISIT = insert(_VISITS)


@dataclass(frozen=True)
class CreateRecord:
    """The first submission with operation ``create`` of a subject at a destination."""

    id: int
    state: str
    result: dict[str, Any] | None
    payload: Any
    error_class: str | None = None

    @property
    def open(self) -> bool:
        """Not settled yet (pending, sending, retry_wait): its ids are not known."""
        return self.state in _OPEN

    @property
    def refused(self) -> bool:
        """Rejected, invalid or dead: a person has to replay it before anything can build on it."""
        return self.state in _REFUSED


@dataclass(frozen=True)
class VisitAnswer:
    """What is kept on a visit for one destination: its eligibility answer, or what it gave back."""

    eligible: bool | None
    hid: str | None
    detail: dict[str, Any] | None

    @property
    def eligible_hid(self) -> str | None:
        """The HID, when the answer was "eligible" and gave one."""
        return self.hid if self.eligible and self.hid else None


def stored_event(session: Session, event_id: str) -> dict[str, Any] | None:
    """The stored event as a dict (for re-mapping and for destinations that need more than the payload)."""
    row = session.scalar(select(InboxEvent).where(InboxEvent.event_id == event_id))
    return json.loads(row.body) if row is not None and row.status != EventStatus.invalid.value else None


class DestinationStore:
    """The store as a destination sees it, on one session (the caller owns its transaction)."""

    def __init__(self, session: Session):
        self._session = session

    # ----- submissions ----------------------------------------------------------------------
    def create_of(self, destination: str, subject_key: str | None) -> CreateRecord | None:
        """The first ``create`` submission of ``subject_key`` at ``destination`` (lowest id), or None
        (none stored yet, or no subject: a None key matches nothing)."""
        row = self._session.connection().execute(_CREATE_OF, {"destination": destination,
                                                              "subject": subject_key}).first()
        return None if row is None else CreateRecord(row.id, row.state, row.result, row.payload,
                                                     row.last_error_class)

    def changes_open(self, destination: str, subject_key: str | None) -> bool:
        """Is a submission of ``subject_key`` at ``destination`` other than its create (an edit, a
        delete) still open (pending, sending, retry_wait)?"""
        return self._session.scalar(select(Submission.id).where(
            Submission.destination == destination, Submission.subject_key == subject_key,
            Submission.operation != "create", Submission.state.in_(_OPEN)).limit(1)) is not None

    def earlier_uids(self, destination: str, subject_key: str | None, message: Any,
                     excluding: int) -> dict[str, str]:
        """The ids the destination gave earlier accepted submissions of ``subject_key`` (all but
        submission ``excluding``), newest first: ``composition_uid`` of one with the same
        ``params.message``, ``patient_uid`` of any. Empty without a subject."""
        known: dict[str, str] = {}
        if not subject_key:
            return known
        rows = self._session.connection().execute(_EARLIER_ACCEPTED, {"destination": destination,
                                                                      "subject": subject_key,
                                                                      "excluding": excluding})
        for row in rows:
            result = row.result or {}
            if (row.params or {}).get("message") == message and result.get("composition_uid"):
                known.setdefault("composition_uid", result["composition_uid"])
            if result.get("patient_uid"):
                known.setdefault("patient_uid", result["patient_uid"])
        return known

    # ----- events ---------------------------------------------------------------------------
    def stored_event(self, event_id: str) -> dict[str, Any] | None:
        """The event as received (None once pruned to a marker, or when it was invalid)."""
        return stored_event(self._session, event_id)

    # ----- visits ---------------------------------------------------------------------------
    def visit_answer(self, facility: str, visit_id: str, destination: str) -> VisitAnswer | None:
        """What is kept on visit (``facility``, ``visit_id``) for ``destination``, or None."""
        row = self._session.connection().execute(_VISIT_ANSWER, {"w_facility": str(facility), "w_visit": str(visit_id),
                                                                 "w_destination": destination}).first()
        return None if row is None else VisitAnswer(row.eligible, row.hid, row.detail)

    def visit_patient_uid(self, facility: str, visit_id: str, destination: str) -> str | None:
        """The PatientUID ``destination`` gave earlier for this visit (``record_patient_uid``)."""
        answer = self.visit_answer(facility, visit_id, destination)
        uid = (answer.detail or {}).get("patient_uid") if answer is not None else None
        return uid or None

    def record_eligibility(self, facility: str, visit_id: str, destination: str, *, eligible: bool,
                           hid: str | None, detail: dict[str, Any]) -> None:
        """Keep ``destination``'s eligibility answer on the visit (replacing an earlier one):
        an UPDATE, and an INSERT when there was no row."""
        values = {"eligible": eligible, "hid": hid, "detail": detail, "checked_at": utcnow()}
        connection = self._session.connection()
        updated = connection.execute(_UPDATE_VISIT, {"w_facility": facility, "w_visit": visit_id,
                                                     "w_destination": destination,
                                                     **{f"v_{name}": value for name, value in values.items()}})
        if updated.rowcount == 0:
            connection.execute(_INSERT_VISIT, {"facility_siam_id": facility, "visit_id": visit_id,
                                               "destination": destination, **values})

    def record_patient_uid(self, facility: str, visit_id: str, destination: str, patient_uid: str) -> None:
        """Keep the PatientUID ``destination`` gave for the visit in its ``detail`` (other keys stay).

        Several messages of one visit can settle at once (parallel workers): the first one
        inserts the ``visits`` row in a savepoint; one that loses that race updates the row."""
        session = self._session
        key = (str(facility), str(visit_id), destination)
        patient = {"patient_uid": patient_uid}
        row = session.get(Visit, key)
        if row is None:
            try:
                with session.begin_nested():
                    session.add(Visit(facility_siam_id=key[0], visit_id=key[1], destination=destination,
                                      detail=patient))
                return
            except IntegrityError:
                row = session.get(Visit, key, populate_existing=True)
                if row is None:
                    raise
        row.detail = {**(row.detail or {}), **patient}
