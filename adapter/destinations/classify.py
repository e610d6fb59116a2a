"""HTTP-level classification shared by every destination: what a status decides, ``Retry-After``.

Transport errors are classed by the exchange (``adapter.destinations.http``), the one module
that makes requests."""

from __future__ import annotations

import email.utils
import time

from adapter.destinations.outcome import OutcomeClass

TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


def class_of_status(status: int) -> OutcomeClass | None:
    """The class an HTTP status decides on its own, or None when the body must decide."""
    if status == 401:
        return OutcomeClass.auth
    if status in TRANSIENT_STATUS or status >= 500:
        return OutcomeClass.transient
    if 400 <= status < 500:
        return OutcomeClass.rejected
    return None


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
