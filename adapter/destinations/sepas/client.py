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

Tokens (the password grant: ``adapter.destinations.auth.PasswordGrantProvider``), the 401
refresh, timeouts cut to the claim's deadline and the error classes are the exchange's.
Validate and lookup are reads (a lost answer is transient); a save whose answer is lost or
unreadable is ambiguous: looked up before it is sent again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapter.destinations.http import Endpoint, Exchange, Request
from adapter.destinations.outcome import Outcome, OutcomeClass
from adapter.destinations.sepas.config import SepasConfig
from adapter.destinations.sepas.crypto import Envelope
from adapter.destinations.sepas.messages import MessageSpec
from adapter.redact import redact_text

DESTINATION = "sepas"


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
    """The DITAS services SEPAS needs (validate, save, lookup) on the one exchange."""

    def __init__(self, config: SepasConfig, exchange: Exchange, principal: str = "ditas"):
        self._config, self._exchange, self._principal = config, exchange, principal

    def envelope_body(self, spec: MessageSpec, envelope: Envelope, location_id: str) -> dict[str, Any]:
        return {"IPClient": self._config.client_ip, "IPServer": self._config.client_ip,
                "SystemID": self._config.system_id, "LocationID": location_id,
                "ContentType": spec.content_type, **envelope.as_fields()}

    def validate(self, spec: MessageSpec, body: dict[str, Any], key: str,
                 deadline: float = float("inf")) -> tuple[Outcome, list[ValidationItem]]:
        """accepted = the validator found no critical error (warnings in the list); invalid = it did."""
        payload = {**body, "ValidationType": self._config.validation_type}
        outcome, data = self._post(self._config.routes.validate_, payload, self._config.pid("validate"), key, deadline,
                                   applies=False)
        outcome.request.update({"operation": "validate", "message": spec.name})
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

    def save(self, spec: MessageSpec, body: dict[str, Any], key: str, deadline: float = float("inf")) -> Outcome:
        path = self._config.routes.save.format(op=spec.save_op)
        outcome, data = self._post(path, body, self._config.pid(spec.name), key, deadline, applies=True)
        outcome.request.update({"operation": "save", "message": spec.name})
        if outcome.klass is not OutcomeClass.accepted:
            return outcome
        return read_save(data, outcome)

    def lookup(self, spec: MessageSpec, document_hash: str, location_id: str, key: str,
               deadline: float = float("inf")) -> Outcome:
        path = self._config.routes.lookup
        if not path:
            return Outcome(OutcomeClass.not_found, "no SEPAS lookup route configured: sending again")
        body = lookup_body(self._config.system_id, spec.content_type, document_hash, location_id)
        outcome, data = self._post(path, body, self._config.pid("lookup") or self._config.pid(spec.name), key, deadline,
                                   applies=False)
        outcome.request.update({"operation": "lookup", "message": spec.name})
        if outcome.klass is not OutcomeClass.accepted:
            return outcome
        if not isinstance(data, dict) or not data.get("CompositionUID"):
            return Outcome(OutcomeClass.not_found, "not registered at SEPAS", request=outcome.request,
                           response=outcome.response, duration_ms=outcome.duration_ms)
        found = read_save(data, outcome)
        found.result["found_by_lookup"] = True
        found.message = "found at SEPAS after an unanswered request"
        return found

    def _post(self, path: str, body: dict[str, Any], pid: str | None, key: str, deadline: float,
              applies: bool) -> tuple[Outcome, Any]:
        """One POST of the envelope; the outcome and the answer's ``result.data``."""
        exchanged = self._exchange.send(Request("POST", path, path, json=body, principal=self._principal,
                                                idempotency_key=key, headers={"pid": pid} if pid else {},
                                                deadline=deadline, applies=applies))
        outcome = exchanged.outcome
        outcome.request["pid"] = bool(pid)
        if outcome.klass is not OutcomeClass.accepted:
            detail = gateway_error(exchanged.parsed) if exchanged.status is not None else ""
            if detail and outcome.klass is not OutcomeClass.auth:
                outcome.message = f"{outcome.message}: {detail}"
            return outcome, None
        return outcome, result_data(exchanged.parsed)


def lookup_body(system_id: str, content_type: str, document_hash: str, location_id: str) -> dict[str, Any]:
    """The lookup-by-document-hash request (the dispatcher's ambiguous check and reconciliation)."""
    return {"SystemID": system_id, "LocationID": location_id, "ContentType": content_type,
            "DocumentHash": document_hash}


def result_data(parsed: Any) -> Any:
    """DITAS answers carry their result under ``result.data``."""
    result = parsed.get("result") if isinstance(parsed, dict) else None
    return result.get("data") if isinstance(result, dict) else None


def endpoint(config: SepasConfig) -> Endpoint:
    """How DITAS is called, from its config (the same timeouts cut to the claim's deadline as Tamin's)."""
    return Endpoint(config.base_url, config.connect_timeout_s, config.read_timeout_s, "bearer", "X-Idempotency-Key",
                    "check the DITAS user and client")


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


def gateway_error(parsed: Any) -> str:
    """``BaseResponse {Code, Error, Error_Description}`` / OAuth ``error`` of a refused call, if any."""
    if not isinstance(parsed, dict):
        return ""
    text = parsed.get("Error_Description") or parsed.get("error_description") or parsed.get("Error") or parsed.get("error")
    return redact_text(str(text))[:200] if text else ""
