"""Tamin as a dispatch destination: edits and deletes use the create's head id, prescriptions
carry the visit's HID, eligibility answers are kept on the visit.

The store is read and written through ``DestinationStore`` (adapter/store/lookups.py), whose
statements on this path are Core: they run once or twice per send, and the ORM's identity map
and flush cost more than the query (docs/performance.md)."""

from __future__ import annotations

from adapter.destinations.base import Job
from adapter.destinations.outcome import Outcome, OutcomeClass
from adapter.destinations.tamin.client import DESTINATION, CallNotPossible, TaminCall, TaminClient
from adapter.destinations.tamin.coverage import refused_predecessor
from adapter.store.lookups import DestinationStore


class TaminDestination:
    name = DESTINATION

    def __init__(self, client: TaminClient, hid_field: str | None = "hid"):
        self._client = client
        self._hid_field = hid_field

    def prepare(self, store: DestinationStore, job: Job) -> Job | Outcome:
        if job.operation in ("update", "cancel"):
            return self._with_create_ids(store, job)
        if job.operation == "create" and self._hid_field and job.after_key:
            hid = _visit_hid(store, job.after_key)
            if hid and isinstance(job.payload, dict) and self._hid_field not in job.payload:
                return job.with_context(payload={**job.payload, self._hid_field: hid})
        return job

    def _with_create_ids(self, store: DestinationStore, job: Job) -> Job | Outcome:
        create = store.create_of(job.destination, job.subject_key)
        if create is None or create.open:
            return Outcome(OutcomeClass.waiting, "the prescription's create is not registered at Tamin yet")
        if create.refused:
            return refused_predecessor(create, "the prescription's create")
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

    def on_result(self, store: DestinationStore, job: Job, outcome: Outcome) -> None:
        if job.operation != "eligibility" or outcome.klass not in (OutcomeClass.accepted, OutcomeClass.rejected):
            return
        facility, visit_id = _split_visit_key(job.subject_key)
        store.record_eligibility(facility, visit_id, self.name, eligible=bool(outcome.result.get("eligible")),
                                 hid=outcome.result.get("hid"),
                                 detail={k: v for k, v in outcome.result.items() if k != "hid"})


def _split_visit_key(key: str | None) -> tuple[str, str]:
    _, facility, visit_id = (key or "visit::").split(":", 2)
    return facility, visit_id


def _visit_hid(store: DestinationStore, visit_key: str) -> str | None:
    facility, visit_id = _split_visit_key(visit_key)
    answer = store.visit_answer(facility, visit_id, DESTINATION)
    return answer.eligible_hid if answer is not None else None
