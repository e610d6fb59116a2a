"""DITAS client for SEPAS: OAuth2 password grant, bearer + per-service ``pid``, validate then save.

Wire details and their sources: docs/sepas-wire.md. Every call is a JSON POST of the
secure envelope ``{IPClient, IPServer, SystemID, LocationID, ContentType, Data, Key, IV}``.
The answer's result sits under ``result.data``:

* save -> ``ResultVO {MessageUID, ErrorMessage, CompositionUID, patientUID}``; a non-empty
  ``ErrorMessage`` is a rejection, an answer with neither an error nor a CompositionUID is
  ambiguous (look it up before sending again);
* validate -> ``ValidationResultVO`` (one object or a list); an item with an
  ``ErrorMessage`` that is critical (``ErrorCategoryCritical`` not false) is an error.
  Each becomes ``{field, code, text}`` from ErrorCategorySource, ErrorCategoryType and
  ErrorMessage/ErrorDescription.

A 401 refreshes the token once and retries at once (like the Tamin client).
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from adapter.destinations.auth import IssuedToken, TokenCache, TokenError, _issued
from adapter.destinations.classify import class_of_exception, class_of_status, retry_after_seconds
from adapter.destinations.outcome import Outcome, OutcomeClass
from adapter.destinations.sepas.config import SepasConfig
from adapter.destinations.sepas.crypto import Envelope
from adapter.destinations.sepas.messages import MessageSpec
from adapter.redact import redact_text

DESTINATION = "sepas"


class PasswordGrantProvider:
    """``POST /oauth/token`` with ``grant_type=password`` and HTTP Basic client auth.

    When an answer carried a refresh_token, the next fetch first tries
    ``grant_type=refresh_token`` and falls back to the password grant if that is refused.
    """

    def __init__(self, http: httpx.Client, url: str, client_id: str, client_secret: str, username: str, password: str):
        self._http, self._url = http, url
        self._basic = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self._username, self._password = username, password
        self._refresh: dict[str, str] = {}
        self._lock = threading.Lock()
        self.password_grants = 0
        self.refresh_grants = 0

    def _post(self, form: dict[str, str]) -> httpx.Response:
        try:
            return self._http.post(self._url, data=form, headers={"Authorization": self._basic})
        except httpx.HTTPError as exc:
            raise TokenError(f"DITAS token endpoint: {type(exc).__name__}", OutcomeClass.transient) from None

    def fetch(self, principal: str) -> IssuedToken:
        with self._lock:
            refresh = self._refresh.pop(principal, None)
        if refresh:
            try:
                token, ttl, rotated = _issued(self._post({"grant_type": "refresh_token", "refresh_token": refresh}),
                                              "DITAS refresh")
                self.refresh_grants += 1
                return self._keep(principal, token, ttl, rotated or refresh)
            except TokenError as exc:
                if exc.klass is OutcomeClass.transient:
                    raise
        token, ttl, rotated = _issued(self._post({"grant_type": "password", "username": self._username,
                                                  "password": self._password}), "DITAS token endpoint")
        self.password_grants += 1
        return self._keep(principal, token, ttl, rotated)

    def _keep(self, principal: str, token: str, ttl: float, refresh: str | None) -> IssuedToken:
        if refresh:
            with self._lock:
                self._refresh[principal] = refresh
        return IssuedToken(token, time.monotonic() + ttl, refresh)


@dataclass(frozen=True)
class ValidationItem:
    field: str
    code: str
    text: str
    critical: bool
    solution: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "code": self.code, "text": self.text}
        if self.solution:
            out["solution"] = self.solution
        if not self.critical:
            out["critical"] = False
        return out


def _falsy(value: Any) -> bool:
    return value in (None, "", False) or str(value).strip().lower() in ("false", "0", "no")


def read_validation(data: Any) -> list[ValidationItem]:
    """Every reported problem, critical or not (an empty list: nothing to report)."""
    items = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
    found: list[ValidationItem] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        text = str(item.get("ErrorMessage") or item.get("NormalizedErrorMessage") or item.get("ErrorDescription") or "")
        if not text.strip():
            continue
        found.append(ValidationItem(
            field=str(item.get("ErrorCategorySource") or item.get("Field") or ""),
            code=str(item.get("ErrorCategoryType") or item.get("Code") or ""),
            text=text.strip(),
            critical=not _falsy(item.get("ErrorCategoryCritical", "true")),
            solution=str(item.get("ErrorSolution") or ""),
        ))
    return found


class DitasClient:
    def __init__(self, config: SepasConfig, http: httpx.Client, tokens: TokenCache, principal: str = "ditas"):
        self._config, self._http, self._tokens, self._principal = config, http, tokens, principal

    # ----- calls ------------------------------------------------------------------------
    def envelope_body(self, spec: MessageSpec, envelope: Envelope, location_id: str) -> dict[str, Any]:
        return {"IPClient": self._config.client_ip, "IPServer": self._config.client_ip,
                "SystemID": self._config.system_id, "LocationID": location_id,
                "ContentType": spec.content_type, **envelope.as_fields()}

    def validate(self, spec: MessageSpec, body: dict[str, Any], key: str) -> tuple[Outcome, list[ValidationItem]]:
        """accepted = the validator found no critical error (warnings in the list); invalid = it did."""
        payload = {**body, "ValidationType": self._config.validation_type}
        outcome = self._exchange(self._config.routes.validate_, payload, self._config.pid("validate"), key)
        outcome.request.update({"operation": "validate", "message": spec.name})
        data = outcome.response.pop("data", None)
        if outcome.klass is not OutcomeClass.accepted:
            return outcome, []
        items = read_validation(data)
        errors = [i for i in items if i.critical]
        if errors:
            outcome.klass = OutcomeClass.invalid
            outcome.message = "SEPAS validation: " + "; ".join(f"{i.field}: [{i.code}] {i.text}" for i in errors)[:1500]
        outcome.result = {"validation": [i.as_dict() for i in items]} if items else {}
        outcome.response["validation_errors"] = len(errors)
        return outcome, items

    def save(self, spec: MessageSpec, body: dict[str, Any], key: str) -> Outcome:
        path = self._config.routes.save.format(op=spec.save_op)
        outcome = self._exchange(path, body, self._config.pid(spec.name), key)
        outcome.request.update({"operation": "save", "message": spec.name})
        data = outcome.response.pop("data", None)
        if outcome.klass is not OutcomeClass.accepted:
            return outcome
        return read_save(data, outcome)

    def lookup(self, spec: MessageSpec, document_hash: str, location_id: str, key: str) -> Outcome:
        path = self._config.routes.lookup
        if not path:
            return Outcome(OutcomeClass.not_found, "no SEPAS lookup route configured: sending again")
        body = {"SystemID": self._config.system_id, "LocationID": location_id, "ContentType": spec.content_type,
                "DocumentHash": document_hash}
        outcome = self._exchange(path, body, self._config.pid("lookup") or self._config.pid(spec.name), key)
        outcome.request.update({"operation": "lookup", "message": spec.name})
        data = outcome.response.pop("data", None)
        if outcome.klass is not OutcomeClass.accepted:
            return outcome
        if not isinstance(data, dict) or not data.get("CompositionUID"):
            return Outcome(OutcomeClass.not_found, "not registered at SEPAS", request=outcome.request,
                           response=outcome.response, duration_ms=outcome.duration_ms)
        found = read_save(data, outcome)
        found.result["found_by_lookup"] = True
        found.message = "found at SEPAS after an unanswered request"
        return found

    # ----- HTTP ---------------------------------------------------------------------------
    def _exchange(self, path: str, body: dict[str, Any], pid: str | None, key: str) -> Outcome:
        started = time.monotonic()
        for try_number in (1, 2):
            try:
                token = self._tokens.token(self._principal)
            except TokenError as exc:
                return Outcome(exc.klass, str(exc), duration_ms=_ms(started), request={"method": "POST", "path": path})
            outcome = self._send_once(path, body, token, pid, key)
            if outcome.klass is OutcomeClass.auth and try_number == 1:
                self._tokens.invalidate(self._principal, token)
                continue
            outcome.duration_ms = _ms(started)
            outcome.request.update({"method": "POST", "path": path, "pid": bool(pid),
                                    "token_refreshed": try_number == 2, "body_bytes": len(body.get("Data", ""))})
            if outcome.klass is OutcomeClass.auth:
                outcome.message = "HTTP 401 twice, even with a fresh token: check the DITAS user and client"
            return outcome
        raise AssertionError("unreachable")

    def _send_once(self, path: str, body: dict[str, Any], token: str, pid: str | None, key: str) -> Outcome:
        headers = {"Authorization": f"bearer {token}", "Accept": "application/json", "X-Idempotency-Key": key}
        if pid:
            headers["pid"] = pid
        try:
            answer = self._http.post(self._config.base_url.rstrip("/") + path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            return Outcome(class_of_exception(exc), f"{type(exc).__name__}: {redact_text(str(exc))[:200]}",
                           response={"error": type(exc).__name__})
        response: dict[str, Any] = {"status": answer.status_code}
        klass = class_of_status(answer.status_code)
        if klass is not None:
            detail = _gateway_error(answer)
            return Outcome(klass, f"HTTP {answer.status_code}{': ' + detail if detail else ''}",
                           retry_after_s=retry_after_seconds(answer.headers.get("Retry-After")), response=response)
        if "json" not in answer.headers.get("content-type", ""):
            return Outcome(OutcomeClass.transient, f"HTTP {answer.status_code} without JSON (a gateway page?)",
                           response=response)
        try:
            parsed = answer.json()
        except ValueError:
            return Outcome(OutcomeClass.transient, "unreadable JSON answer", response=response)
        result = parsed.get("result") if isinstance(parsed, dict) else None
        response["data"] = result.get("data") if isinstance(result, dict) else None
        return Outcome(OutcomeClass.accepted, response=response)


def read_save(data: Any, exchanged: Outcome) -> Outcome:
    if not isinstance(data, dict):
        return Outcome(OutcomeClass.ambiguous, "save answer without result.data", request=exchanged.request,
                       response=exchanged.response, duration_ms=exchanged.duration_ms)
    error = str(data.get("ErrorMessage") or "").strip()
    ids = {"message_uid": data.get("MessageUID"), "composition_uid": data.get("CompositionUID"),
           "patient_uid": data.get("patientUID") or data.get("PatientUID")}
    ids = {k: v for k, v in ids.items() if v}
    exchanged.response.update({k: v for k, v in ids.items() if k != "patient_uid"})
    if error:
        return Outcome(OutcomeClass.rejected, f"SEPAS: {error[:500]}", result={"error_message": error, **ids},
                       request=exchanged.request, response=exchanged.response, duration_ms=exchanged.duration_ms)
    if not ids.get("composition_uid"):
        return Outcome(OutcomeClass.ambiguous, "SEPAS answered without an error and without a CompositionUID",
                       result=ids, request=exchanged.request, response=exchanged.response,
                       duration_ms=exchanged.duration_ms)
    return Outcome(OutcomeClass.accepted, "", result=ids, request=exchanged.request, response=exchanged.response,
                   duration_ms=exchanged.duration_ms)


def _gateway_error(answer: httpx.Response) -> str:
    """``BaseResponse {Code, Error, Error_Description}`` / OAuth ``error`` of a refused call, if any."""
    try:
        parsed = answer.json()
    except ValueError:
        return ""
    if not isinstance(parsed, dict):
        return ""
    text = parsed.get("Error_Description") or parsed.get("error_description") or parsed.get("Error") or parsed.get("error")
    return redact_text(str(text))[:200] if text else ""


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
