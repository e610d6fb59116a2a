"""Tamin e-prescription client: eligibility, create (SendEpresc), edit, delete, lookup.

Paths come from config (pilot and production spell them differently); tokens, the 401
refresh, timeouts and error classes are the exchange's (``adapter.destinations.http``). Each
call returns an ``Outcome`` with a PHI-free summary of request and answer for the attempt log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adapter.config import TaminConfig
from adapter.destinations.http import Endpoint, Exchange, Exchanged, Request
from adapter.destinations.outcome import Outcome, OutcomeClass
from adapter.destinations.routes import RouteNotFillable, fill_route
from adapter.destinations.tamin import answers as tamin_answers

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
    """Tamin's routes on the one exchange; answers read by ``answers``."""

    def __init__(self, config: TaminConfig, exchange: Exchange):
        self._config, self._exchange = config, exchange

    def call(self, call: TaminCall) -> Outcome:
        template = getattr(self._config.routes, call.operation)
        path = fill_route(template, call.params)
        exchanged = self._send(_METHODS[call.operation], path, template, call, call.body)
        outcome = exchanged.outcome
        outcome.request["operation"] = call.operation
        if outcome.klass is not OutcomeClass.accepted or exchanged.parsed is None:
            return outcome
        return self._read(call.operation, outcome, exchanged.parsed)

    def _send(self, method: str, path: str, route: str, call: TaminCall, body: Any,
              query: dict[str, str] | None = None) -> Exchanged:
        return self._exchange.send(Request(method, path, route, json=body if method == "POST" else None, query=query,
                                           principal=call.principal, idempotency_key=call.idempotency_key,
                                           deadline=call.deadline))

    @staticmethod
    def _read(operation: str, exchanged: Outcome, answer: Any) -> Outcome:
        readers: dict[str, Callable[[Any], Outcome]] = {
            "create": tamin_answers.read_create,
            "eligibility": tamin_answers.read_eligibility,
            "update": lambda a: tamin_answers.read_change(a, "edit"),
            "cancel": lambda a: tamin_answers.read_change(a, "delete"),
        }
        read = readers[operation](answer)
        read.request, read.response, read.duration_ms = exchanged.request, exchanged.response, exchanged.duration_ms
        read.response.update({k: v for k, v in read.result.items() if k in ("head_id", "tracking_code", "error_code")})
        if read.message:
            read.response["message"] = read.message
        return read

    def lookup(self, call: TaminCall, known: dict[str, Any]) -> Outcome:
        """After an ambiguous outcome: did Tamin register this already? ``accepted`` if so, ``not_found`` if not."""
        template = self._config.routes.lookup
        if not template:
            return Outcome(OutcomeClass.not_found, "no lookup route configured; relying on the 304 duplicate answer")
        query = {k: str(v) for k, v in _lookup_query(call, known).items()}
        exchanged = self._send("GET", template, template, call, None, query)
        outcome = exchanged.outcome
        outcome.request["operation"] = "lookup"
        parsed = exchanged.parsed
        if outcome.klass is not OutcomeClass.accepted or parsed is None:
            return outcome
        heads = (parsed.get("data") or {}).get("list") or [] if isinstance(parsed, dict) else []
        match = _matching_head(call, heads)
        if match is None:
            return Outcome(OutcomeClass.not_found, "not registered at Tamin", request=outcome.request,
                           response=outcome.response, duration_ms=outcome.duration_ms)
        return Outcome(OutcomeClass.accepted, "found at Tamin after an unanswered request",
                       result={"head_id": str(match["head_EPRSC_ID"]), "tracking_code": str(match["trackingCode"]),
                               "found_by_lookup": True},
                       request=outcome.request, response=outcome.response, duration_ms=outcome.duration_ms)


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


def endpoint(config: TaminConfig) -> Endpoint:
    """How the prescribing API is called, from its config."""
    return Endpoint(config.base_url, config.connect_timeout_s, config.read_timeout_s, "Bearer",
                    "X-Idempotency-Key" if config.idempotency_header else None,
                    "check client_id/secret and the principal's rights")
