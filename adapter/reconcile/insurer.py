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

from dataclasses import dataclass
from typing import Any

import httpx

from adapter.destinations.auth import ClientCredentialsProvider, TokenCache, TokenError
from adapter.destinations.classify import TRANSIENT_STATUS, retry_after_seconds
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


class TaminStatusClient:
    def __init__(self, endpoint: TaminEndpoint, http: httpx.Client | None = None):
        self._endpoint = endpoint
        self._http = http or httpx.Client(timeout=httpx.Timeout(endpoint.timeout_s, connect=min(endpoint.timeout_s, 10)))
        self._owns_http = http is None
        base = endpoint.base_url.rstrip("/")
        provider = ClientCredentialsProvider(self._http, base + endpoint.token_path, endpoint.client_id,
                                             endpoint.client_secret)
        self._tokens = TokenCache(provider, leeway_s=60)
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

    # ----- one exchange -------------------------------------------------------------------
    def _get(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        url = self._endpoint.base_url.rstrip("/") + path
        for try_number in (1, 2):
            try:
                token = self._tokens.token(PRINCIPAL)
            except TokenError as exc:
                if exc.klass is OutcomeClass.transient:
                    raise InsurerTransient(f"token: {exc}") from None
                raise InsurerPermanent(f"token: {exc} -- check the tamin connection's login/password") from None
            self.calls += 1
            try:
                answer = self._http.get(url, params=query, headers={"Authorization": f"Bearer {token}",
                                                                    "Accept": "application/json"})
            except httpx.HTTPError as exc:
                raise InsurerTransient(f"{path}: {type(exc).__name__}") from None
            if answer.status_code == 401:
                self._tokens.invalidate(PRINCIPAL, token)
                if try_number == 1:
                    continue
                raise InsurerPermanent(f"{path}: HTTP 401 even with a fresh token: check client id/secret and rights")
            return _read(path, answer)
        raise AssertionError("unreachable")


def read_json(path: str, answer: httpx.Response) -> Any:
    """An insurer's answer as JSON, or the retry class its status or body calls for."""
    status = answer.status_code
    if status in TRANSIENT_STATUS or status >= 500:
        raise InsurerTransient(f"{path}: HTTP {status}", retry_after_seconds(answer.headers.get("Retry-After")))
    if status >= 400:
        raise InsurerPermanent(f"{path}: HTTP {status}")
    if "json" not in answer.headers.get("content-type", ""):
        raise InsurerTransient(f"{path}: HTTP {status} without JSON (a gateway page?)")
    try:
        return answer.json()
    except ValueError:
        raise InsurerTransient(f"{path}: unreadable JSON") from None


def _read(path: str, answer: httpx.Response) -> dict[str, Any]:
    parsed = read_json(path, answer)
    data = parsed.get("data") if isinstance(parsed, dict) else None
    if not isinstance(data, dict):
        raise InsurerPermanent(f"{path}: answer without a data object")
    return data
