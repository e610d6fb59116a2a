"""Tamin paraclinic (``tamin_paraclinic``): ``paraclinic.requested`` registers the services
(RequestList -> RequestParPresc, operation ``create``); ``paraclinic.completed`` confirms them
(operation ``confirm``, with the registration's request id).

Never registered twice: the create starts with RequestList, which lists the requests this
centre registered for the prescription with the HIS order id (``hisRequestId``); when ours is
there it is taken. A confirm of a confirmed request is harmless; its lookup reads the same list.
"""

from __future__ import annotations

from typing import Any

from adapter.destinations.base import Job
from adapter.destinations.outcome import Outcome, OutcomeClass
from adapter.destinations.tamin_provider.client import ProviderClient
from adapter.destinations.tamin_provider.answers import Fetched, read_confirm, read_submit
from adapter.destinations.tamin_provider.steps import Attempt, as_number, his_request_id, create_result, served_prescription
from adapter.store.lookups import DestinationStore

DESTINATION = "tamin_paraclinic"


def _unknown_service(details: list[dict[str, Any]], fetched: Fetched) -> Outcome | None:
    codes = {d.code for d in fetched.details}
    for number, detail in enumerate(details, start=1):
        if str(detail.get("paR_TAREF_CODE")) not in codes:
            return Outcome(OutcomeClass.rejected, f"service {number} (code {detail.get('paR_TAREF_CODE')}) is not on "
                                                  "the Tamin prescription")
    return None


class ParaclinicDestination:
    name = DESTINATION

    def __init__(self, client: ProviderClient):
        self._client = client

    def prepare(self, store: DestinationStore, job: Job) -> Job | Outcome:
        if job.operation == "confirm":
            registered = create_result(store, self.name, job.subject_key, "the order's registration")
            if isinstance(registered, Outcome):
                return registered
            return job.with_context(request_id=registered.get("request_id"), head_id=registered.get("head_id"),
                                    tracking_code=registered.get("tracking_code"))
        served = served_prescription(store, job)
        return served if isinstance(served, Outcome) else job.with_context(**served)

    def send(self, job: Job) -> Outcome:
        attempt = Attempt(self._client, job)
        values = attempt.values()
        if isinstance(values, Outcome):
            return values
        if job.operation == "confirm":
            return attempt.finish(self._confirm(attempt, job, values))
        return attempt.finish(self._register(attempt, job, values))

    def _register(self, attempt: Attempt, job: Job, values: dict[str, Any]) -> Outcome:
        fetched = attempt.fetch(values)
        if isinstance(fetched, Outcome):
            return fetched
        ids = {"tracking_code": job.context.get("tracking_code"), "head_id": fetched.head_id}
        mine = fetched.ours(his_request_id(job))
        if mine is not None:
            return Outcome(OutcomeClass.accepted, "already registered at Tamin: took its request id",
                           result={**ids, "request_id": mine.request_id, **mine.prices})
        payload = dict(job.payload or {})
        refused = _unknown_service(list(payload.get("details") or []), fetched)
        if refused is not None:
            return refused
        body = {"userInformation": {"parID": values["provider_id"]}, "eprsC_ID": as_number(fetched.head_id), **payload}
        submitted = attempt.step("submit", values, body, lambda a: read_submit(a, "registration (RequestParPresc)"))
        if submitted.klass is OutcomeClass.accepted:
            submitted.result = {**ids, **submitted.result}
        return submitted

    def _confirm(self, attempt: Attempt, job: Job, values: dict[str, Any]) -> Outcome:
        request_id = job.context.get("request_id")
        if not request_id:
            return Outcome(OutcomeClass.invalid, "the order's registration was accepted without a request id")
        body = {"userInformation": {"parID": values["provider_id"]}, "requestID": as_number(str(request_id)),
                **dict(job.payload or {})}
        confirmed = attempt.step("confirm", values, body, lambda a: read_confirm(a, "confirmation"))
        if confirmed.klass is OutcomeClass.accepted:
            confirmed.result = {"request_id": str(request_id), "confirmed": True}
        return confirmed

    def lookup(self, job: Job) -> Outcome:
        attempt = Attempt(self._client, job)
        values = attempt.values()
        if isinstance(values, Outcome):
            return values
        fetched = attempt.fetch(values)
        if isinstance(fetched, Outcome):
            return attempt.finish(fetched)
        if job.operation == "confirm":
            mine = next((r for r in fetched.requests if r.request_id == str(job.context.get("request_id"))), None)
            if mine is None or not mine.confirmed:
                return attempt.finish(Outcome(OutcomeClass.not_found, "not confirmed at Tamin"))
            return attempt.finish(Outcome(OutcomeClass.accepted, "found confirmed at Tamin after an unanswered request",
                                          result={"request_id": mine.request_id, "confirmed": True, "found_by_lookup": True}))
        mine = fetched.ours(his_request_id(job))
        if mine is None:
            return attempt.finish(Outcome(OutcomeClass.not_found, "not registered at Tamin"))
        return attempt.finish(Outcome(OutcomeClass.accepted, "found at Tamin after an unanswered request", result={
            "tracking_code": job.context.get("tracking_code"), "head_id": fetched.head_id,
            "request_id": mine.request_id, "found_by_lookup": True, **mine.prices}))

    def on_result(self, store: DestinationStore, job: Job, outcome: Outcome) -> None:
        return None
