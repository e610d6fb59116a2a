"""HTTP-level classification shared by every destination: what a status decides, ``Retry-After``,
and which transport errors are a refused TLS certificate (``certificate_failure``).

Transport errors are classed by the exchange (``adapter.destinations.http``), the one module
that makes requests; the token providers use ``transport_class`` for theirs."""

from __future__ import annotations

import email.utils
import ssl
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


CERTIFICATE_ALERTS = frozenset({
    "TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_BAD_CERTIFICATE", "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED", "SSLV3_ALERT_CERTIFICATE_REVOKED", "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    "TLSV1_ALERT_UNKNOWN_CA", "TLSV1_ALERT_ACCESS_DENIED"})
"""Alerts the far side sends when it refuses this adapter's client certificate (or its absence)."""


def certificate_failure(exc: BaseException) -> str | None:
    """What refused TLS certificate the transport error ``exc`` comes from, or None.

    httpx wraps the ``ssl`` error (``exc.__cause__`` / ``__context__``, through httpcore). Either
    side's certificate being refused is a configuration fault, not an outage: the handshake never
    finished, so nothing reached the insurer's application, and sending again will not help until
    ``tls.*`` (or the insurer's certificate) is fixed. With TLS 1.3 a refused client certificate
    only shows on the first read, after the request was written: still nothing was applied."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return (f"the insurer's TLS certificate was not accepted ({current.verify_message or current.reason}) "
                    "-- fix: set tls.ca_file of the destination to the CA bundle that issued it")
        if isinstance(current, ssl.SSLError) and current.reason in CERTIFICATE_ALERTS:
            return (f"the insurer refused this adapter's TLS client certificate ({current.reason}) -- fix: set "
                    "tls.client_cert_file and tls.client_key_file of the destination to the certificate it expects")
        current = current.__cause__ or current.__context__
    return None


def transport_class(exc: BaseException) -> OutcomeClass:
    """A failed request that asked only for a token: ``config`` for a refused certificate, else
    ``transient`` (asking for a token again is harmless)."""
    return OutcomeClass.config if certificate_failure(exc) is not None else OutcomeClass.transient
