"""Read-only Tamin calls the reconciliation and billing jobs make: lookups and claim status.

Errors are split the way ``shared/architecture.md`` classes them, as two exception types
the DAGs' retry policy maps to RETRY and FAIL:

* :class:`InsurerTransient` -- connect errors, timeouts, 408/429/5xx, a non-JSON page:
  retry later (``retry_after_s`` carries ``Retry-After``);
* :class:`InsurerPermanent` -- other 4xx, a 401 even with a fresh token, refused
  credentials: a person must look; retrying does not help.

Reads are safe to repeat, so an unanswered request is transient here (never ambiguous).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from adapter.config import TlsConfig
from adapter.tls import client_verify

from adapter.destinations.auth import ClientCredentialsProvider, TokenCache
from adapter.destinations.http import Endpoint, Exchange, Exchanged, Request
from adapter.destinations.outcome import OutcomeClass

PRINCIPAL = "facility"


class InsurerError(Exception):
    """Base of the two classes below."""


class InsurerTransient(InsurerError):
    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InsurerPermanent(InsurerError):
    pass


@dataclass(frozen=True)
class TaminEndpoint:
    """Where and as whom to call: from the Airflow Connection ``tamin`` (see ``dagkit``)."""

    base_url: str
    client_id: str
    client_secret: str
    token_path: str = "/auth/server/token"
    lookup_path: str = "/api/v2/ep/lookup"
    claim_status_path: str = "/api/v2/ep/claim-status"
    timeout_s: float = 30.0
    tls: TlsConfig = field(default_factory=TlsConfig)
    """CA bundle / client certificate, from the Connection's extras (as ``destinations.tamin.tls``)."""


def connection_tls(extra: dict[str, Any]) -> TlsConfig:
    """A Connection's TLS extras (``ca_file``, ``client_cert_file``, ``client_key_file``): the same
    files the adapter's ``destinations.<name>.tls`` names, so Airflow reaches the insurer as it does."""
    return TlsConfig(**{key: str(extra[key]) for key in ("ca_file", "client_cert_file", "client_key_file")
                        if extra.get(key)})


def endpoint_http(timeout_s: float, tls: TlsConfig, connection: str) -> httpx.Client:
    """The HTTP client of a reconciliation endpoint: its timeouts, and the TLS settings its Airflow
    Connection names (a CA bundle that verifies the insurer, a client certificate it asks for)."""
    return httpx.Client(timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10)),
                        verify=client_verify(tls, f"connection {connection} extras", f"Airflow connection {connection}"))


class TaminStatusClient:
    """Tamin's lookup and claim-status reads on the one exchange (``adapter.destinations.http``)."""

    def __init__(self, endpoint: TaminEndpoint, http: httpx.Client | None = None):
        self._endpoint = endpoint
        self._http = http or endpoint_http(endpoint.timeout_s, endpoint.tls, "tamin")
        self._owns_http = http is None
        provider = ClientCredentialsProvider(self._http, endpoint.base_url.rstrip("/") + endpoint.token_path,
                                             endpoint.client_id, endpoint.client_secret)
        self._exchange = Exchange(self._http, Endpoint(endpoint.base_url, min(endpoint.timeout_s, 10),
                                                       endpoint.timeout_s, "Bearer",
                                                       auth_hint="check client id/secret and rights"),
                                  TokenCache(provider, leeway_s=60))
        self.calls = 0

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> "TaminStatusClient":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ----- the calls --------------------------------------------------------------------
    def lookup_tracking(self, patient: str, tracking_code: str) -> list[dict[str, Any]]:
        """Every prescription (live or deleted) with this patient and tracking code."""
        data = self._get(self._endpoint.lookup_path, {"patient": patient, "trackingCode": tracking_code})
        return list(data.get("list") or [])

    def lookup_day(self, patient: str, doc_id: str, presc_date: str) -> list[dict[str, Any]]:
        """Every live prescription of this patient, prescriber and (Jalali) day."""
        data = self._get(self._endpoint.lookup_path, {"patient": patient, "docId": doc_id, "prescDate": presc_date})
        return list(data.get("list") or [])

    def claim_status(self, patient: str, tracking_code: str) -> dict[str, Any] | None:
        """The claim's audit/payment status with deductions, or ``None`` when the insurer has no such claim."""
        data = self._get(self._endpoint.claim_status_path, {"patient": patient, "trackingCode": tracking_code})
        claim = data.get("claim")
        return claim if isinstance(claim, dict) else None

    def _get(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        self.calls += 1
        parsed = answer_or_raise(self._exchange.send(Request("GET", path, path, query=query, principal=PRINCIPAL)),
                                 path, "check the tamin connection's login/password")
        data = parsed.get("data") if isinstance(parsed, dict) else None
        if not isinstance(data, dict):
            raise InsurerPermanent(f"{path}: answer without a data object")
        return data


def answer_or_raise(exchanged: Exchanged, path: str, credentials_hint: str) -> Any:
    """The answer's JSON of a read, or the retry class its outcome calls for."""
    outcome = exchanged.outcome
    if outcome.klass is OutcomeClass.accepted:
        return exchanged.parsed
    if outcome.klass in (OutcomeClass.transient, OutcomeClass.ambiguous, OutcomeClass.waiting):
        raise InsurerTransient(f"{path}: {outcome.message}", outcome.retry_after_s)
    if outcome.klass is OutcomeClass.auth and exchanged.status is None:  # no token could be had
        raise InsurerPermanent(f"token: {outcome.message} -- {credentials_hint}")
    raise InsurerPermanent(f"{path}: {outcome.message}")
