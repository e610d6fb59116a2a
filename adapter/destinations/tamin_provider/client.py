"""Tamin's provider-side API families (dispensing, paraclinic) on the one exchange.

Both families take three steps (fetch the prescription, submit, confirm) whose path templates
come from config; the token is the facility operator's (``acl/authenticate``). Each step
returns an ``Exchanged`` whose ``parsed`` holds the answer's JSON for the readers in
``answers``; its summary (route template, status, body size and hash) is PHI-free, because
the filled path carries a national code.
"""

from __future__ import annotations

from typing import Any

from adapter.config import TaminProviderConfig
from adapter.destinations.http import Endpoint, Exchange, Exchanged, Request
from adapter.destinations.routes import fill_route

_METHODS = {"fetch": "GET", "submit": "POST", "confirm": "POST"}


class ProviderClient:
    """One family's routes: ``exchange(step, values, body, principal, key, deadline)``."""

    def __init__(self, config: TaminProviderConfig, exchange: Exchange):
        self._config, self._exchange = config, exchange

    def provider_id(self, facility: str) -> str | None:
        return self._config.provider_ids.get(facility)

    def exchange(self, step: str, values: dict[str, Any], body: Any, principal: str, key: str,
                 deadline: float = float("inf")) -> Exchanged:
        template = getattr(self._config.routes, step)
        method = _METHODS[step]
        exchanged = self._exchange.send(Request(method, fill_route(template, values), template,
                                                json=body if method == "POST" else None, principal=principal,
                                                idempotency_key=key, deadline=deadline))
        exchanged.outcome.request["step"] = step
        return exchanged


def endpoint(config: TaminProviderConfig) -> Endpoint:
    """How a provider family is called, from its config."""
    return Endpoint(config.base_url, config.connect_timeout_s, config.read_timeout_s, config.auth.header_scheme,
                    "X-Idempotency-Key" if config.idempotency_header else None,
                    "check the operator and software credentials")
