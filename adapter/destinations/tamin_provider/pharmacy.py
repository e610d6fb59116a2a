"""Tamin dispensing (``tamin_pharmacy``): a ``dispense.completed`` becomes fetch -> PostPresc -> confirm.

Never registered twice: every attempt starts with the fetch, which lists the requests this
pharmacy already registered for the prescription (keyed by the HIS dispense id, sent as
``hisRequestId``). When ours is there the attempt goes straight to the confirm, and a confirm
of a confirmed request is harmless. An unanswered PostPresc is looked up with the same fetch.
"""

from __future__ import annotations

from typing import Any

from adapter.destinations.base import Job
from adapter.destinations.outcome import Outcome, OutcomeClass
from adapter.destinations.tamin_provider.client import ProviderClient
from adapter.destinations.tamin_provider.answers import Fetched, read_confirm, read_submit
from adapter.destinations.tamin_provider.steps import Attempt, as_number, his_request_id, served_prescription
from adapter.store.lookups import DestinationStore

DESTINATION = "tamin_pharmacy"


def _match_details(drugs: list[dict[str, Any]], fetched: Fetched) -> list[dict[str, Any]] | Outcome:
    """Each delivered drug with the prescription line (``electronicPrescDetail``) of its drug code."""
    free = list(fetched.details)
    matched = []
    for number, drug in enumerate(drugs, start=1):
        detail = next((d for d in free if d.code == str(drug.get("drugCode"))), None)
        if detail is None:
            return Outcome(OutcomeClass.rejected, f"delivered item {number} (drug code {drug.get('drugCode')}) is not "
                                                  "on the Tamin prescription (or appears twice in the dispense)")
        free.remove(detail)
        matched.append({"electronicPrescDetail": as_number(detail.detail_id), **drug})
    return matched


class PharmacyDestination:
    name = DESTINATION

    def __init__(self, client: ProviderClient):
        self._client = client

    def prepare(self, store: DestinationStore, job: Job) -> Job | Outcome:
        served = served_prescription(store, job)
        return served if isinstance(served, Outcome) else job.with_context(**served)

    def send(self, job: Job) -> Outcome:
        attempt = Attempt(self._client, job)
        return attempt.finish(self._dispense(attempt, job))

    def _dispense(self, attempt: Attempt, job: Job) -> Outcome:
        values = attempt.values()
        if isinstance(values, Outcome):
            return values
        fetched = attempt.fetch(values)
        if isinstance(fetched, Outcome):
            return fetched
        ids = {"tracking_code": job.context.get("tracking_code"), "head_id": fetched.head_id}
        mine = fetched.ours(his_request_id(job))
        if mine is not None and mine.confirmed:
            return Outcome(OutcomeClass.accepted, "already registered and confirmed at Tamin",
                           result={**ids, "request_id": mine.request_id, "confirmed": True, **mine.prices})
        if mine is not None:
            request_id, prices = mine.request_id, mine.prices
        else:
            submitted = self._submit(attempt, job, values, fetched)
            if submitted.klass is not OutcomeClass.accepted:
                return submitted
            request_id, prices = submitted.result.pop("request_id"), submitted.result
        body = {"userInformation": {"phaId": values["provider_id"]}, "requestId": as_number(str(request_id))}
        confirmed = attempt.step("confirm", values, body, lambda a: read_confirm(a, "confirmation"))
        if confirmed.klass is not OutcomeClass.accepted:
            confirmed.message = f"registered as request {request_id}, not confirmed: {confirmed.message}"
            confirmed.result = {**ids, "request_id": str(request_id), "confirmed": False}
            return confirmed
        return Outcome(OutcomeClass.accepted, result={**ids, "request_id": str(request_id), "confirmed": True, **prices})

    def _submit(self, attempt: Attempt, job: Job, values: dict[str, Any], fetched: Fetched) -> Outcome:
        payload = dict(job.payload or {})
        drugs = _match_details(list(payload.get("drugsList") or []), fetched)
        if isinstance(drugs, Outcome):
            return drugs
        body = {"userInformation": {"phaId": values["provider_id"]}, "electronicPrescHead": as_number(fetched.head_id),
                **payload, "drugsList": drugs}
        return attempt.step("submit", values, body, lambda a: read_submit(a, "dispensing (PostPresc)"))

    def lookup(self, job: Job) -> Outcome:
        """After an unanswered call: registered and confirmed -> accepted; otherwise not_found, and
        the send that follows starts with the same fetch, so it confirms what is registered."""
        attempt = Attempt(self._client, job)
        values = attempt.values()
        if isinstance(values, Outcome):
            return values
        fetched = attempt.fetch(values)
        if isinstance(fetched, Outcome):
            return attempt.finish(fetched)
        mine = fetched.ours(his_request_id(job))
        if mine is None or not mine.confirmed:
            found = "registered, not confirmed yet" if mine else "not registered at Tamin"
            return attempt.finish(Outcome(OutcomeClass.not_found, found))
        return attempt.finish(Outcome(OutcomeClass.accepted, "found at Tamin after an unanswered request", result={
            "tracking_code": job.context.get("tracking_code"), "head_id": fetched.head_id,
            "request_id": mine.request_id, "confirmed": True, "found_by_lookup": True, **mine.prices}))

    def on_result(self, store: DestinationStore, job: Job, outcome: Outcome) -> None:
        return None
