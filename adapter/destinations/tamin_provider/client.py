"""HTTP for Tamin's provider-side API families (dispensing, paraclinic): one request with the
facility operator's token (``acl/authenticate``), a 401 refreshes it once and retries.

Both families take three steps (fetch the prescription, submit, confirm) whose path templates
come from config. Each exchange returns an ``Outcome`` whose ``response['parsed']`` holds the
answer's JSON for the readers in ``tamin_provider_answers``; its summary (route template,
status, body size and hash) is PHI-free, because the filled path carries a national code.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from adapter.config import TaminProviderConfig
from adapter.destinations.auth import TokenCache, TokenError
from adapter.destinations.classify import class_of_exception, class_of_status, retry_after_seconds
from adapter.destinations.outcome import Outcome, OutcomeClass
from adapter.destinations.routes import body_summary, fill_route
from adapter.redact import redact_text

_METHODS = {"fetch": "GET", "submit": "POST", "confirm": "POST"}


class ProviderClient:
    """One family's HTTP: ``exchange(step, values, body, principal, key, deadline)``."""

    def __init__(self, config: TaminProviderConfig, http: httpx.Client, tokens: TokenCache):
        self._config, self._http, self._tokens = config, http, tokens

    def provider_id(self, facility: str) -> str | None:
        return self._config.provider_ids.get(facility)

    def exchange(self, step: str, values: dict[str, Any], body: Any, principal: str, key: str,
                 deadline: float = float("inf")) -> Outcome:
        template = getattr(self._config.routes, step)
        method = _METHODS[step]
        path = fill_route(template, values)
        started = time.monotonic()
        outcome = Outcome(OutcomeClass.transient, "not sent")
        for try_number in (1, 2):
            try:
                token = self._tokens.token(principal)
            except TokenError as exc:
                outcome = Outcome(exc.klass, str(exc))
                break
            outcome = self._send_once(method, path, body, token, key, deadline)
            if outcome.klass is OutcomeClass.auth and try_number == 1:
                self._tokens.invalidate(principal, token)
                continue
            outcome.request["token_refreshed"] = try_number == 2
            if outcome.klass is OutcomeClass.auth:
                outcome.message = "HTTP 401 twice, even with a fresh token: check the operator and software credentials"
            break
        outcome.duration_ms = int((time.monotonic() - started) * 1000)
        outcome.request.update({"step": step, "method": method, "route": template, **body_summary(body)})
        return outcome

    def _headers(self, token: str, key: str) -> dict[str, str]:
        scheme = self._config.auth.header_scheme.strip()
        headers = {"Authorization": f"{scheme} {token}" if scheme else token, "Accept": "application/json"}
        if self._config.idempotency_header:
            headers["X-Idempotency-Key"] = key
        return headers

    def _send_once(self, method: str, path: str, body: Any, token: str, key: str, deadline: float) -> Outcome:
        remaining = deadline - time.monotonic()
        if remaining < 0.05:
            return Outcome(OutcomeClass.waiting, "not sent: the claim's lease is nearly spent (tried again shortly)")
        timeout = httpx.Timeout(min(self._config.read_timeout_s, remaining),
                                connect=min(self._config.connect_timeout_s, remaining))
        try:
            answer = self._http.request(method, self._config.base_url.rstrip("/") + path,
                                        headers=self._headers(token, key),
                                        json=body if method == "POST" else None, timeout=timeout)
        except httpx.HTTPError as exc:
            klass = class_of_exception(exc)
            if method == "GET" and klass is OutcomeClass.ambiguous:
                klass = OutcomeClass.transient  # a read applies nothing: asking again is harmless
            return Outcome(klass, f"{type(exc).__name__}: {redact_text(str(exc))[:200]}",
                           response={"error": type(exc).__name__})
        return _read_http(answer, method)


def _read_http(answer: httpx.Response, method: str) -> Outcome:
    response: dict[str, Any] = {"status": answer.status_code}
    klass = class_of_status(answer.status_code)
    parsed = _json_or_none(answer)
    if klass is OutcomeClass.rejected and isinstance(parsed, dict):
        response["parsed"] = parsed  # a 4xx with problems[]: the readers take the insurer's message
    if klass is not None:
        return Outcome(klass, f"HTTP {answer.status_code}",
                       retry_after_s=retry_after_seconds(answer.headers.get("Retry-After")), response=response)
    if parsed is None:
        # a 2xx that is not JSON reached the insurer: a POST may have been applied -> ambiguous
        unreadable = OutcomeClass.ambiguous if method == "POST" else OutcomeClass.transient
        return Outcome(unreadable, f"HTTP {answer.status_code} without a JSON answer (a gateway page?)",
                       response=response)
    response["parsed"] = parsed
    return Outcome(OutcomeClass.accepted, response=response)


def _json_or_none(answer: httpx.Response) -> Any:
    if "json" not in answer.headers.get("content-type", ""):
        return None
    try:
        return answer.json()
    except ValueError:
        return None
