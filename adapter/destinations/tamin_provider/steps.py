"""What the dispensing and paraclinic destinations share: finding the prescription they serve
(and the registration a paraclinic confirm needs) in the store, and running one attempt's
steps (fetch, submit, confirm) with one PHI-free trail for the attempt log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from adapter.destinations.base import Job
from adapter.destinations.outcome import Outcome, OutcomeClass
from adapter.destinations.tamin.client import DESTINATION as PRESCRIBING
from adapter.destinations.tamin.coverage import refused_predecessor
from adapter.destinations.routes import RouteNotFillable
from adapter.destinations.tamin_provider.client import ProviderClient
from adapter.destinations.tamin_provider.answers import Fetched, problems_message, read_fetch
from adapter.events import keys
from adapter.store.lookups import DestinationStore

Read = TypeVar("Read")
"""What a step's answer reader makes of the answer (a ``Fetched``, an ``Outcome``)."""


def create_result(store: DestinationStore, destination: str, subject_key: str | None,
                  what: str) -> dict[str, Any] | Outcome:
    """The result of ``destination``'s create for ``subject_key``: waiting while it is open (or not
    stored yet: its event may come later), invalid while it is refused, else its ids."""
    create = store.create_of(destination, subject_key)
    if create is None or create.open:
        return Outcome(OutcomeClass.waiting, f"{what} is not registered at Tamin yet")
    if create.refused:
        return refused_predecessor(create, what)
    return dict(create.result or {})


def served_prescription(store: DestinationStore, job: Job) -> dict[str, Any] | Outcome:
    """``{tracking_code, head_id?}`` of the Tamin prescription the event serves: the tracking code
    the patient brought, or the ids of this adapter's own SendEpresc for the HIS prescription."""
    event = store.stored_event(job.event_id)
    if event is None:
        return Outcome(OutcomeClass.invalid, "the event's body is no longer stored (pruned?): cannot find its prescription")
    reference = event["payload"].get("prescription") or {}
    if reference.get("tracking_code"):
        return {"tracking_code": str(reference["tracking_code"])}
    prescription_key = keys.served_prescription_key(event)
    found = create_result(store, PRESCRIBING, prescription_key, "the prescription it serves")
    if isinstance(found, Outcome):
        return found
    if store.changes_open(PRESCRIBING, prescription_key):
        # serve the prescription as last edited: Tamin refuses an edit once a provider registered on it
        return Outcome(OutcomeClass.waiting, "an edit or delete of the prescription it serves is not settled at Tamin yet")
    if not found.get("tracking_code"):
        return Outcome(OutcomeClass.invalid, "the prescription's create was accepted without a tracking code")
    return {"tracking_code": str(found["tracking_code"]), "head_id": found.get("head_id")}


def as_number(value: str) -> int | str:
    """Ids go back as numbers when they are numbers (the answers give them as JSON numbers)."""
    return int(value) if value.isdigit() else value


def his_request_id(job: Job) -> str | None:
    """The HIS's own id of this dispense / order, sent as ``hisRequestId`` (the mapping puts it there)."""
    his = job.payload.get("hisRequestId") if isinstance(job.payload, dict) else None
    return str(his) if his is not None else None


class Attempt:
    """One attempt's exchanges with a provider API: runs each step, reads its answer, and folds
    every step's summary into the final outcome."""

    def __init__(self, client: ProviderClient, job: Job):
        self._client, self._job = client, job
        self._requests: list[dict[str, Any]] = []
        self._responses: list[dict[str, Any]] = []
        self._ms = 0

    def values(self) -> dict[str, Any] | Outcome:
        """What the route templates may name: patient, tracking code, provider id."""
        provider_id = self._client.provider_id(self._job.principal)
        if not provider_id:
            return Outcome(OutcomeClass.invalid, "no Tamin provider id for this facility: add it under provider_ids")
        return {"patient": self._job.params.get("patient"), "tracking_code": self._job.context.get("tracking_code"),
                "provider_id": provider_id}

    def step(self, step: str, values: dict[str, Any], body: Any, reader: Callable[[Any], Read]) -> Read | Outcome:
        """The reader's result for the answer, or the ``Outcome`` that ends the attempt."""
        try:
            exchanged = self._client.exchange(step, values, body, self._job.principal, self._job.idempotency_key,
                                              self._job.deadline)
        except RouteNotFillable as exc:
            return Outcome(OutcomeClass.invalid, str(exc))
        outcome, parsed = exchanged.outcome, exchanged.parsed
        self._requests.append(outcome.request)
        self._responses.append({**outcome.response, "outcome": outcome.klass.value})
        self._ms += outcome.duration_ms
        if outcome.klass is OutcomeClass.rejected and parsed is not None and problems_message(parsed):
            return Outcome(OutcomeClass.rejected, f"Tamin refused the {step} ({outcome.message}): "
                                                  f"{problems_message(parsed)}")
        if outcome.klass is not OutcomeClass.accepted:
            outcome.message = f"{step}: {outcome.message}"
            return outcome
        return reader(parsed)

    def fetch(self, values: dict[str, Any]) -> Fetched | Outcome:
        return self.step("fetch", values, None, read_fetch)

    def finish(self, outcome: Outcome) -> Outcome:
        outcome.request = {"steps": self._requests}
        outcome.response = {"steps": self._responses}
        outcome.duration_ms = self._ms
        return outcome
