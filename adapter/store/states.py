"""Submission states (see shared/architecture.md), the one table of the moves allowed between
them, and the groups of states the rest of the adapter asks about.

Every writer of a submission's state goes through ``adapter.store.audit`` (``transition``,
``move``, ``move_unaudited``, ``state_change``), which calls ``check_transition``: a move the
table does not list raises :class:`IllegalTransition` before the transaction commits (the
dispatcher's bulk claim and intake's inserts write their rows first and are checked when their
audit rows are made, in the same transaction, so an illegal move is rolled back with it).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from types import MappingProxyType


class State(str, Enum):
    pending = "pending"
    sending = "sending"
    retry_wait = "retry_wait"
    accepted = "accepted"
    rejected = "rejected"
    invalid = "invalid"
    dead = "dead"
    # No ``fallback`` state: a paper issued during an outage is a FallbackRecord row
    # (issued -> linked | paper_claim, adapter/outage/records.py); its submission keeps its own state.
    confirmed = "confirmed"
    discrepancy = "discrepancy"
    billed = "billed"
    paid = "paid"
    deducted = "deducted"


DUE_STATES = (State.pending, State.retry_wait)
"""States the dispatcher picks up once ``next_attempt_at`` has passed."""

OPEN_STATES = (State.pending, State.sending, State.retry_wait)
"""Work the adapter still owes: counted as pending in summaries."""

SETTLED_STATES = tuple(s for s in State if s not in OPEN_STATES)
"""No further automatic action: either done or waiting for a person."""

NEEDS_PERSON = (State.rejected, State.invalid, State.dead)
"""Refused or given up: a person looks, then replays (back to ``pending``)."""

SEND_RESULTS = (State.accepted, State.rejected, State.invalid, State.retry_wait, State.dead)
"""What a ``sending`` submission settles to, by the outcome of the attempt (``adapter.pipeline.policy.decide``)."""

VERDICT_STATES = (State.confirmed, State.discrepancy)
"""What reconciliation makes of an accepted submission."""

RECONCILABLE = (State.accepted, *VERDICT_STATES)
"""States reconciliation moves to its verdict (billing states are never moved back)."""

BILLING_STATES = (State.billed, State.paid, State.deducted)
"""The insurer's billing status of a claim, as the billing job found it."""

BILLABLE = (State.confirmed, *BILLING_STATES)
"""Claims the billing job asks about (reconciled and found at the insurer, or already billed)."""

ACCEPTED_FAMILY = (State.accepted, *VERDICT_STATES, *BILLING_STATES)
"""States of a submission the insurer accepted (and what reconciliation/billing made of it)."""

FINISHED = (State.accepted, State.confirmed, *BILLING_STATES)
"""Done: nothing owed and nobody needs to look (``discrepancy`` is not: a person checks it)."""


def _to(*states: State) -> frozenset[State]:
    return frozenset(states)


TRANSITIONS: Mapping[State | None, frozenset[State]] = MappingProxyType({
    # intake creates the row (None): to send, or invalid when its mapping failed
    None: _to(State.pending, State.invalid),
    # the dispatcher claims due work; a ``sending`` row whose lease ran out is reclaimed (ambiguous)
    State.pending: _to(State.sending),
    State.retry_wait: _to(State.sending),
    State.sending: _to(State.sending, *SEND_RESULTS),
    # replay: back to pending; invalid when re-mapping from the stored event fails (again)
    State.rejected: _to(State.pending, State.invalid),
    State.invalid: _to(State.pending, State.invalid),
    State.dead: _to(State.pending, State.invalid),
    # reconciliation (a later run may change its verdict), then billing, which follows the
    # insurer's claim status -- that may also go back (a payment reversed, a deduction withdrawn)
    State.accepted: _to(*VERDICT_STATES),
    State.confirmed: _to(State.discrepancy, *BILLING_STATES),
    State.discrepancy: _to(State.confirmed),
    State.billed: _to(State.paid, State.deducted),
    State.paid: _to(State.billed, State.deducted),
    State.deducted: _to(State.billed, State.paid),
})
"""from-state (None: the row is being created) -> the states it may move to. The only list of
allowed moves: README.md's diagram is drawn from it."""

_ALLOWED: frozenset[tuple[str | None, str]] = frozenset(
    (None if source is None else source.value, target.value) for source, targets in TRANSITIONS.items()
    for target in targets)
"""The table as (from, to) value pairs: one set lookup per check, on the dispatcher's hot path."""


class IllegalTransition(ValueError):
    """A submission state change the table (``TRANSITIONS``) does not allow."""

    def __init__(self, from_state: str | None, to_state: str):
        self.from_state = from_state
        self.to_state = to_state
        super().__init__(f"illegal submission state change: {from_state or '(new)'} -> {to_state}")


def check_transition(from_state: State | str | None, to_state: State | str) -> None:
    """Raise :class:`IllegalTransition` (naming both states) unless ``TRANSITIONS`` allows the move.

    ``from_state`` None: the submission row is being created."""
    source = from_state.value if isinstance(from_state, State) else from_state
    target = to_state.value if isinstance(to_state, State) else to_state
    if (source, target) not in _ALLOWED:
        raise IllegalTransition(source, target)


def allowed(from_state: State | str | None, to_state: State | str) -> bool:
    """Whether ``TRANSITIONS`` allows the move (``check_transition`` without the exception)."""
    try:
        check_transition(from_state, to_state)
    except IllegalTransition:
        return False
    return True


class EventStatus(str, Enum):
    accepted = "accepted"  # valid, submissions created
    invalid = "invalid"  # failed the contract; no submissions
    unrouted = "unrouted"  # valid, but no mapping sends it anywhere
