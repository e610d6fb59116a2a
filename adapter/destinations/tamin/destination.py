"""Tamin as a dispatch destination: edits and deletes use the create's head id, prescriptions
carry the visit's HID, eligibility answers are kept on the visit.

The store is read and written here with Core statements on the session's connection: these run
once or twice per send, and the ORM's identity map and flush cost more than the query
(docs/performance.md)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from adapter.destinations.base import Job
from adapter.destinations.outcome import Outcome, OutcomeClass
from adapter.destinations.tamin.client import DESTINATION, CallNotPossible, TaminCall, TaminClient
from adapter.store.models import Submission, Visit
from adapter.store.states import OPEN_STATES, State
from adapter.store.types import utcnow

_REFUSED = (State.rejected.value, State.invalid.value, State.dead.value)
_OPEN = {s.value for s in OPEN_STATES}
_SUBMISSIONS: Table = Submission.__table__  # type: ignore[assignment]
_VISITS: Table = Visit.__table__  # type: ignore[assignment]
_CREATE_OF = select(_SUBMISSIONS.c.id, _SUBMISSIONS.c.state, _SUBMISSIONS.c.result, _SUBMISSIONS.c.payload).where(
    _SUBMISSIONS.c.destination == bindparam("destination"), _SUBMISSIONS.c.subject_key == bindparam("subject"),
    _SUBMISSIONS.c.operation == "create").order_by(_SUBMISSIONS.c.id).limit(1)
_VISIT_KEY = (_VISITS.c.facility_siam_id == bindparam("w_facility"), _VISITS.c.visit_id == bindparam("w_visit"),
              _VISITS.c.destination == bindparam("w_destination"))
_VISIT_HID = select(_VISITS.c.hid, _VISITS.c.eligible).where(*_VISIT_KEY)
_ANSWER_COLUMNS = ("eligible", "hid", "detail", "checked_at")
_UPDATE_VISIT = update(_VISITS).where(*_VISIT_KEY).values(
    {name: bindparam(f"v_{name}", type_=_VISITS.c[name].type) for name in _ANSWER_COLUMNS})
_INSERT_VISIT = insert(_VISITS)


class TaminDestination:
    name = DESTINATION

    def __init__(self, client: TaminClient, hid_field: str | None = "hid"):
        self._client = client
        self._hid_field = hid_field

    def prepare(self, session: Session, job: Job) -> Job | Outcome:
        if job.operation in ("update", "cancel"):
            return self._with_create_ids(session, job)
        if job.operation == "create" and self._hid_field and job.after_key:
            hid = _visit_hid(session, job.after_key)
            if hid and isinstance(job.payload, dict) and self._hid_field not in job.payload:
                return job.with_context(payload={**job.payload, self._hid_field: hid})
        return job

    def _with_create_ids(self, session: Session, job: Job) -> Job | Outcome:
        create = session.connection().execute(_CREATE_OF, {"destination": job.destination,
                                                           "subject": job.subject_key}).first()
        if create is None or create.state in _OPEN:
            return Outcome(OutcomeClass.waiting, "the prescription's create is not registered at Tamin yet")
        if create.state in _REFUSED:
            return Outcome(OutcomeClass.invalid, f"the prescription's create (submission {create.id}) is {create.state}: "
                                                 "replay it first, then this one")
        result = create.result or {}
        return job.with_context(head_id=result.get("head_id"), tracking_code=result.get("tracking_code"),
                                patient=(create.payload or {}).get("patient"))

    def _call(self, job: Job) -> TaminCall:
        params = dict(job.params)
        if job.context.get("head_id"):
            params["head_id"] = job.context["head_id"]
        return TaminCall(job.operation, params, job.context.get("payload", job.payload), job.principal, job.idempotency_key,
                         job.deadline)

    def send(self, job: Job) -> Outcome:
        try:
            return self._client.call(self._call(job))
        except CallNotPossible as exc:
            return Outcome(OutcomeClass.invalid, str(exc))

    def lookup(self, job: Job) -> Outcome:
        if job.operation == "eligibility":
            return Outcome(OutcomeClass.not_found, "eligibility is a read: asking again is harmless")
        return self._client.lookup(self._call(job), job.context)

    def on_result(self, session: Session, job: Job, outcome: Outcome) -> None:
        if job.operation != "eligibility" or outcome.klass not in (OutcomeClass.accepted, OutcomeClass.rejected):
            return
        facility, visit_id = _split_visit_key(job.subject_key)
        values = {"eligible": bool(outcome.result.get("eligible")), "hid": outcome.result.get("hid"),
                  "detail": {k: v for k, v in outcome.result.items() if k != "hid"}, "checked_at": utcnow()}
        connection = session.connection()
        updated = connection.execute(_UPDATE_VISIT, {"w_facility": facility, "w_visit": visit_id,
                                                     "w_destination": self.name,
                                                     **{f"v_{name}": value for name, value in values.items()}})
        if updated.rowcount == 0:
            connection.execute(_INSERT_VISIT, {"facility_siam_id": facility, "visit_id": visit_id,
                                               "destination": self.name, **values})


def _split_visit_key(key: str | None) -> tuple[str, str]:
    _, facility, visit_id = (key or "visit::").split(":", 2)
    return facility, visit_id


def _visit_hid(session: Session, visit_key: str) -> Any:
    facility, visit_id = _split_visit_key(visit_key)
    row = session.connection().execute(_VISIT_HID, {"w_facility": facility, "w_visit": visit_id,
                                                    "w_destination": DESTINATION}).first()
    return row.hid if row is not None and row.eligible else None
