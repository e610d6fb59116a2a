"""Tamin e-prescription client: eligibility, create (SendEpresc), edit, delete, lookup.

Paths come from config (pilot and production spell them differently); tokens from a
``TokenCache``; a 401 refreshes the token once and retries at once. Each call returns an
``Outcome`` with a PHI-free summary of request and answer for the attempt log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from adapter.config import TaminConfig
from adapter.destinations.tamin import answers as tamin_answers
from adapter.destinations.auth import TokenCache, TokenError
from adapter.destinations.classify import class_of_exception, class_of_status, retry_after_seconds
from adapter.destinations.outcome import Outcome, OutcomeClass
from adapter.destinations.routes import RouteNotFillable, body_summary, fill_route
from adapter.redact import redact_text

DESTINATION = "tamin"
_METHODS = {"eligibility": "GET", "detail": "GET", "lookup": "GET", "create": "POST", "update": "POST", "cancel": "POST"}


@dataclass(frozen=True)
class TaminCall:
    operation: str  # eligibility | create | update | cancel
    params: dict[str, Any]
    body: Any
    principal: str
    idempotency_key: str
    deadline: float = float("inf")  # time.monotonic(): every request must be answered by then


CallNotPossible = RouteNotFillable  # the call cannot be built: a config or mapping fault


class TaminClient:
    def __init__(self, config: TaminConfig, http: httpx.Client, tokens: TokenCache):
        self._config, self._http, self._tokens = config, http, tokens

    def call(self, call: TaminCall) -> Outcome:
        template = getattr(self._config.routes, call.operation)
        path = fill_route(template, call.params)
        outcome = self._exchange(_METHODS[call.operation], path, call.body, call.principal, call.idempotency_key,
                                 call.deadline)
        outcome.request.update({"operation": call.operation, "route": template, **body_summary(call.body)})
        if outcome.klass is not OutcomeClass.accepted or outcome.response.get("parsed") is None:
            outcome.response.pop("parsed", None)
            return outcome
        return self._read(call.operation, outcome)

    def _read(self, operation: str, exchanged: Outcome) -> Outcome:
        answer = exchanged.response.pop("parsed")
        reader = {
            "create": tamin_answers.read_create,
            "eligibility": tamin_answers.read_eligibility,
            "update": lambda a: tamin_answers.read_change(a, "edit"),
            "cancel": lambda a: tamin_answers.read_change(a, "delete"),
        }[operation]
        read = reader(answer)
        read.request, read.response, read.duration_ms = exchanged.request, exchanged.response, exchanged.duration_ms
        read.response.update({k: v for k, v in read.result.items() if k in ("head_id", "tracking_code", "error_code")})
        if read.message:
            read.response["message"] = read.message
        return read

    def _exchange(self, method: str, path: str, body: Any, principal: str, key: str,
                  deadline: float = float("inf")) -> Outcome:
        """One request with a token; on 401 one refresh and one retry. The answer's JSON goes in ``response['parsed']``."""
        started = time.monotonic()
        for try_number in (1, 2):
            try:
                token = self._tokens.token(principal)
            except TokenError as exc:
                return Outcome(exc.klass, str(exc), duration_ms=_ms(started), request={"method": method})
            outcome = self._send_once(method, path, body, token, key, deadline)
            if outcome.klass is OutcomeClass.auth and try_number == 1:
                self._tokens.invalidate(principal, token)
                continue
            outcome.duration_ms = _ms(started)
            outcome.request["method"] = method
            outcome.request["token_refreshed"] = try_number == 2
            if outcome.klass is OutcomeClass.auth:
                outcome.message = "HTTP 401 twice, even with a fresh token: check client_id/secret and the principal's rights"
            return outcome
        raise AssertionError("unreachable")

    def _timeout(self, deadline: float) -> httpx.Timeout | None:
        """The configured timeouts, shortened so the answer comes before ``deadline``; None: no time left."""
        remaining = deadline - time.monotonic()
        if remaining < 0.05:
            return None
        return httpx.Timeout(min(self._config.read_timeout_s, remaining),
                             connect=min(self._config.connect_timeout_s, remaining))

    def _send_once(self, method: str, path: str, body: Any, token: str, key: str, deadline: float) -> Outcome:
        timeout = self._timeout(deadline)
        if timeout is None:
            return Outcome(OutcomeClass.waiting, "not sent: the claim's lease is nearly spent (tried again shortly)")
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if self._config.idempotency_header:
            headers["X-Idempotency-Key"] = key
        try:
            answer = self._http.request(method, self._config.base_url.rstrip("/") + path, headers=headers,
                                        json=body if method == "POST" and body is not None else None, timeout=timeout)
        except httpx.HTTPError as exc:
            klass = class_of_exception(exc)
            return Outcome(klass, f"{type(exc).__name__}: {redact_text(str(exc))[:200]}",
                           response={"error": type(exc).__name__})
        response: dict[str, Any] = {"status": answer.status_code}
        klass = class_of_status(answer.status_code)
        if klass is not None:
            retry_after = retry_after_seconds(answer.headers.get("Retry-After"))
            return Outcome(klass, f"HTTP {answer.status_code}", retry_after_s=retry_after, response=response)
        # An unreadable 2xx answer reached the insurer's side: it may have been applied, so it is
        # ambiguous (looked up before any resend), never a blind retry.
        unreadable = OutcomeClass.ambiguous if method == "POST" else OutcomeClass.transient
        if "json" not in answer.headers.get("content-type", ""):
            return Outcome(unreadable, f"HTTP {answer.status_code} without JSON (a gateway page?)", response=response)
        try:
            response["parsed"] = answer.json()
        except ValueError:
            return Outcome(unreadable, "unreadable JSON answer", response=response)
        return Outcome(OutcomeClass.accepted, response=response)

    def lookup(self, call: TaminCall, known: dict[str, Any]) -> Outcome:
        """After an ambiguous outcome: did Tamin register this already? ``accepted`` if so, ``not_found`` if not."""
        template = self._config.routes.lookup
        if not template:
            return Outcome(OutcomeClass.not_found, "no lookup route configured; relying on the 304 duplicate answer")
        query = _lookup_query(call, known)
        exchanged = self._exchange("GET", template + "?" + "&".join(f"{k}={quote(str(v))}" for k, v in query.items()),
                                   None, call.principal, call.idempotency_key, call.deadline)
        exchanged.request.update({"operation": "lookup", "route": template})
        parsed = exchanged.response.pop("parsed", None)
        if exchanged.klass is not OutcomeClass.accepted or parsed is None:
            return exchanged
        heads = (parsed.get("data") or {}).get("list") or [] if isinstance(parsed, dict) else []
        match = _matching_head(call, heads)
        if match is None:
            return Outcome(OutcomeClass.not_found, "not registered at Tamin", request=exchanged.request,
                           response=exchanged.response, duration_ms=exchanged.duration_ms)
        return Outcome(OutcomeClass.accepted, "found at Tamin after an unanswered request",
                       result={"head_id": str(match["head_EPRSC_ID"]), "tracking_code": str(match["trackingCode"]),
                               "found_by_lookup": True},
                       request=exchanged.request, response=exchanged.response, duration_ms=exchanged.duration_ms)


def _lookup_query(call: TaminCall, known: dict[str, Any]) -> dict[str, Any]:
    if call.operation == "create":
        body = call.body or {}
        return {"patient": body.get("patient", ""), "docId": body.get("docId", ""), "prescDate": body.get("prescDate", "")}
    return {"patient": known.get("patient", ""), "trackingCode": known.get("tracking_code", "")}


def _items_key(items: list[dict[str, Any]]) -> list[tuple[str, int]]:
    def code(item: dict[str, Any]) -> str:
        srv = item.get("srvId")
        return str(srv.get("srvCode") if isinstance(srv, dict) else item.get("srvCode"))
    return sorted((code(i), int(i.get("srvQty", 0))) for i in items)


def _matching_head(call: TaminCall, heads: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The registered head that is this call: same type and items for a create; for an edit the
    new items are in place; for a delete the head is gone."""
    for head in heads:
        if call.operation == "create":
            body = call.body or {}
            same_type = str(head.get("prescTypeId")) == str((body.get("prescType") or {}).get("prescTypeId"))
            if same_type and head.get("status", "active") == "active" and \
                    _items_key(head.get("items", [])) == _items_key(body.get("noteDetailEprscs", [])):
                return head
        elif call.operation == "update" and head.get("edited") and \
                _items_key(head.get("items", [])) == _items_key(call.body or []):
            return head
        elif call.operation == "cancel" and head.get("status") == "deleted":
            return head
    return None


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
