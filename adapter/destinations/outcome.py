"""What one exchange with a destination came to, in the error classes of architecture.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class OutcomeClass(str, Enum):
    accepted = "accepted"  # the destination registered it (ids in ``result``)
    rejected = "rejected"  # permanent: a person must look (business error, other 4xx)
    transient = "transient"  # connect error, timeout before a reply, 408, 429, 5xx, non-JSON page
    auth = "auth"  # 401 after one refresh: credentials are wrong
    ambiguous = "ambiguous"  # sent, no answer: look it up before sending again
    not_found = "not_found"  # a lookup found nothing: safe to send
    invalid = "invalid"  # cannot be sent as it stands (mapping, route or a refused predecessor)
    waiting = "waiting"  # not sent now: a predecessor is not registered yet, or the claim's time ran out
    config = "config"  # a TLS certificate was refused, ours or the insurer's: parked until the config is fixed


@dataclass
class Outcome:
    klass: OutcomeClass
    message: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    retry_after_s: float | None = None
    request: dict[str, Any] = field(default_factory=dict)
    response: dict[str, Any] = field(default_factory=dict)
    duration_ms: int = 0
    error_class: str | None = None
    """A more specific class stored on the submission than ``klass`` (``not_covered``: an invalid
    outcome the HIS must meet with the free/paper path, not with a replay)."""
