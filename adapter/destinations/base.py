"""What the dispatcher needs from a destination, whichever insurer or gateway it is."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from adapter.destinations.outcome import Outcome
from adapter.store.lookups import DestinationStore


@dataclass(frozen=True)
class Job:
    """A claimed submission, detached from the database session while it is sent."""

    submission_id: int
    event_id: str
    destination: str
    operation: str
    params: dict[str, Any]
    payload: Any
    principal: str
    idempotency_key: str
    ambiguous: bool
    subject_key: str | None
    after_key: str | None
    attempts: int
    context: dict[str, Any] = field(default_factory=dict)
    deadline: float = float("inf")
    """time.monotonic() by which every request of this attempt must be answered: before the
    claim's lease runs out, so no other dispatcher can reclaim a submission still in flight."""

    def with_context(self, **values: Any) -> "Job":
        return replace(self, context={**self.context, **values})


class Destination(Protocol):
    name: str

    def prepare(self, store: DestinationStore, job: Job) -> Job | Outcome:
        """Resolve what the call needs from earlier results (head id, HID); an Outcome means: do not send.

        ``store`` reads from a session of its own, closed before the send."""

    def send(self, job: Job) -> Outcome: ...

    def lookup(self, job: Job) -> Outcome:
        """Was this already applied at the destination? accepted (with ids) or not_found."""

    def on_result(self, store: DestinationStore, job: Job, outcome: Outcome) -> None:
        """Keep what later submissions need (e.g. the HID from eligibility), in the same transaction
        as the submission's new state (``store`` is on the dispatcher's settle transaction)."""
