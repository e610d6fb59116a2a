"""Submission states (see shared/architecture.md) and which of them are final."""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    pending = "pending"
    sending = "sending"
    retry_wait = "retry_wait"
    accepted = "accepted"
    rejected = "rejected"
    invalid = "invalid"
    dead = "dead"
    fallback = "fallback"
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


class EventStatus(str, Enum):
    accepted = "accepted"  # valid, submissions created
    invalid = "invalid"  # failed the contract; no submissions
    unrouted = "unrouted"  # valid, but no mapping sends it anywhere
