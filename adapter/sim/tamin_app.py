"""The Tamin simulator as a Starlette app: the wire contract of docs/tamin-wire.md.

Every Tamin endpoint goes through :func:`_endpoint`, which applies, in order: latency,
the scripted faults (downtime, ``fail_next``), the hang, the Bearer check, the handler,
and finally the "drop the answer after applying" fault. Each request is recorded with
the status the client saw (0 = connection closed without an answer).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import pydantic
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from adapter.sim import tamin_rules as rules
from adapter.sim.registry import API_ENDPOINTS, TaminRegistry
from adapter.sim.settings import TaminSimSettings

Handler = Callable[[Request, TaminRegistry], Awaitable[Response]]

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_RAW_SEND = "sim.raw_send"


class _TaminStarlette(Starlette):
    """Keeps the server's own ``send`` in the scope, so a fault can close the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[_RAW_SEND] = send
        await super().__call__(scope, receive, send)


def _envelope(data: Any, status: int = 200) -> JSONResponse:
    family = "SUCCESSFUL" if status < 400 else ("CLIENT_ERROR" if status < 500 else "SERVER_ERROR")
    return JSONResponse(
        {"status": status, "family": family, "reason": _REASONS.get(status, "OK"), "data": data},
        status_code=status,
    )


def _status_only(status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    family = "CLIENT_ERROR" if status < 500 else "SERVER_ERROR"
    body = {"status": status, "family": family, "reason": _REASONS.get(status, "Error")}
    return JSONResponse(body, status_code=status, headers=headers)


def _fault_response(status: int, retry_after_s: float | None, html: bool) -> Response:
    headers = {}
    if retry_after_s is not None and status in (429, 503):
        headers["Retry-After"] = str(max(1, round(retry_after_s)))
    if html:
        reason = _REASONS.get(status, "Error")
        page = f"<html><head><title>{status} {reason}</title></head><body><h1>{status} {reason}</h1></body></html>"
        return HTMLResponse(page, status_code=status, headers=headers)
    return _status_only(status, headers)


async def _close_connection(request: Request) -> None:
    """Close the client's connection without answering (uvicorn transports).

    After ``close()`` uvicorn marks the request disconnected on the next loop turn and
    drops whatever the app still sends. On a server whose transport cannot be found the
    fallback is an exception, i.e. a 500.
    """
    raw_send = request.scope.get(_RAW_SEND)
    transport = getattr(getattr(raw_send, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("simulated dropped connection (transport not reachable)")
    transport.close()
    for _ in range(3):
        await asyncio.sleep(0)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _provider_token(request: Request) -> str | None:
    """Dispensing/paraclinic: ``Bearer <token>`` or the raw token (as one public client sends it)."""
    header = request.headers.get("authorization", "").strip()
    scheme, _, rest = header.partition(" ")
    return (rest.strip() if scheme.lower() == "bearer" else header) or None


def _token_refusal(request: Request, registry: TaminRegistry, family: str | None) -> int | None:
    """401 without a valid token; 403 when a provider API is called with another family's token."""
    if family is None:
        token = _bearer(request)
        return None if token is not None and registry.access_token_valid(token) else 401
    token = _provider_token(request)
    audience = registry.token_audience(token) if token else None
    if audience is None:
        return 401
    return None if audience.startswith(family + ":") else 403


def _endpoint(name: str, handler: Handler, *, needs_token: bool = True,
              family: str | None = None) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        registry: TaminRegistry = request.app.state.registry
        method, path = request.method, request.url.path
        if name in API_ENDPOINTS:
            latency = registry.settings.latency_ms
            if latency > 0:
                await asyncio.sleep(latency / 1000.0)
        plan = registry.plan_faults(name)
        if plan.fail_status is not None:
            if plan.fail_status == 0:
                registry.record_request(name, method, path, 0)
                await _close_connection(request)
                return Response(status_code=500)
            registry.record_request(name, method, path, plan.fail_status)
            return _fault_response(plan.fail_status, plan.retry_after_s, plan.html)
        if plan.hang_s > 0:
            await request.body()  # read now: the client may give up (disconnect) while we hang
            await asyncio.sleep(plan.hang_s)
        refused = _token_refusal(request, registry, family) if needs_token else None
        if refused is not None:
            registry.record_request(name, method, path, refused)
            return _status_only(refused)
        response = await handler(request, registry)
        if plan.drop_after_apply:
            registry.record_request(name, method, path, 0)
            await _close_connection(request)
            return response
        registry.record_request(name, method, path, response.status_code)
        return response

    endpoint.__name__ = f"tamin_{name}"
    return endpoint


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


async def _form(request: Request) -> dict[str, str]:
    """URL-encoded form fields (first value of each); parsed here to avoid python-multipart."""
    raw = (await request.body()).decode("utf-8", errors="replace")
    return {key: values[0] for key, values in parse_qs(raw, keep_blank_values=True).items()}


def _today(request: Request, registry: TaminRegistry) -> Any:
    return registry.today(request.headers.get("x-sim-today"))


def _ttl_number(ttl: float) -> float | int:
    return int(ttl) if float(ttl).is_integer() else ttl


# ----- auth ------------------------------------------------------------------------------
async def _token(request: Request, registry: TaminRegistry) -> Response:
    form = await _form(request)
    settings = registry.settings
    if form.get("grant_type") != "client_credentials":
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
    if form.get("client_id") != settings.client_id or form.get("client_secret") != settings.client_secret:
        return JSONResponse({"error": "invalid_client"}, status_code=401)
    token, ttl = registry.issue_access_token()
    return JSONResponse({"access_token": token, "expires_in": _ttl_number(ttl), "token_type": "Bearer"})


async def _refresh(request: Request, registry: TaminRegistry) -> Response:
    form = await _form(request)
    if form.get("grant_type") != "refresh_token":
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
    if form.get("client_id") != registry.settings.client_id:
        return JSONResponse({"error": "invalid_client"}, status_code=401)
    result = registry.refresh(form.get("refresh_token", ""), form.get("audience") or None)
    if result is None:
        return JSONResponse({"error": "invalid_grant"}, status_code=400)
    access, ttl, refresh_token = result
    return JSONResponse(
        {
            "access_token": access,
            "expires_in": _ttl_number(ttl),
            "token_type": "Bearer",
            "refresh_token": refresh_token,
        }
    )


async def _acl_authenticate(request: Request, registry: TaminRegistry) -> Response:
    """Dispensing/paraclinic token (sim-defined answer: ``data.token`` + ``data.expires_in``)."""
    family = registry.authenticate_operator(await _json_body(request))
    if family is None:
        return _envelope({"error_Msg": "نام کاربری یا کلمه عبور اشتباه است"}, status=401)
    token, ttl = registry.issue_access_token(f"{family}:operator")
    return _envelope({"token": token, "expires_in": _ttl_number(ttl)})


# ----- API -------------------------------------------------------------------------------
async def _eligibility(request: Request, registry: TaminRegistry) -> Response:
    return _envelope(registry.eligibility(request.path_params["patient"]))


async def _create(request: Request, registry: TaminRegistry) -> Response:
    body = await _json_body(request)
    record = registry.create(body, request.headers.get("x-idempotency-key"), _today(request, registry))
    created = record.outcome == "created"
    result = {
        "head_EPRSC_ID": record.head_id if created else None,
        "trackingCode": record.tracking_code if created else None,
        "error_Code": record.error_code,
        "error_Msg": record.error_msg,
        "complemantary_Msg": "",
    }
    return _envelope({"result": result})


def _doc_nc(request: Request) -> str | None:
    return request.path_params.get("docNationalCode")


async def _detail(request: Request, registry: TaminRegistry) -> Response:
    p = request.path_params
    items = registry.detail(p["headId"], p["docId"], _doc_nc(request))
    if items is None:
        return _envelope({"error_Msg": rules.MSG_NOT_FOUND})
    return _envelope(items)


def _outcome(refusal: rules.Rejection | None) -> Response:
    if refusal is None:
        return _envelope({"statusCode": "200", "error_Code": "", "error_Msg": ""})
    return _envelope({"statusCode": "400", "error_Code": refusal.code, "error_Msg": refusal.message})


async def _edit(request: Request, registry: TaminRegistry) -> Response:
    p = request.path_params
    items = await _json_body(request)
    if not isinstance(items, list):
        return _outcome(rules.Rejection(rules.MSG_DATA_NULL))
    return _outcome(registry.edit(p["headId"], p["docId"], _doc_nc(request), items))


async def _delete(request: Request, registry: TaminRegistry) -> Response:
    p = request.path_params
    return _outcome(registry.delete(p["headId"], p["docId"], _doc_nc(request), _today(request, registry)))


async def _lookup(request: Request, registry: TaminRegistry) -> Response:
    q = request.query_params
    patient = q.get("patient")
    if patient and q.get("trackingCode"):
        try:
            tracking = int(q["trackingCode"])
        except ValueError:
            return _envelope({"list": []})
        return _envelope({"list": registry.lookup_by_tracking(patient, tracking)})
    if patient and q.get("docId") and q.get("prescDate"):
        return _envelope({"list": registry.lookup_by_day(patient, q["docId"], q["prescDate"])})
    return _envelope({"error_Msg": rules.MSG_DATA_NULL, "list": []}, status=400)


async def _claim_status(request: Request, registry: TaminRegistry) -> Response:
    """Sim-defined: the audit/payment status of one prescription's claim, with deductions."""
    q = request.query_params
    try:
        patient, tracking = q["patient"], int(q["trackingCode"])
    except (KeyError, ValueError):
        return _envelope({"error_Msg": rules.MSG_DATA_NULL, "claim": None}, status=400)
    claim = registry.claim_status(patient, tracking)
    if claim is None:
        return _envelope({"error_Msg": rules.MSG_NOT_FOUND, "claim": None})
    return _envelope({"claim": claim})


# ----- dispensing and paraclinic (adapter.sim.provider_registry) ----------------------------
def _provider_fetch(family: str) -> Handler:
    async def handler(request: Request, registry: TaminRegistry) -> Response:
        q = request.query_params
        provider_id = q.get("PhaId") or q.get("phaId") or q.get("parID") or q.get("parId")
        return _envelope(registry.provider_fetch(family, q.get("patientNationalCode"), q.get("trackingCode"),
                                                 provider_id))
    return handler


def _provider_submit(family: str) -> Handler:
    async def handler(request: Request, registry: TaminRegistry) -> Response:
        body = await _json_body(request)
        return _envelope(registry.provider_submit(family, body, request.headers.get("x-idempotency-key")))
    return handler


def _provider_confirm(family: str) -> Handler:
    async def handler(request: Request, registry: TaminRegistry) -> Response:
        body = await _json_body(request)
        return _envelope(registry.provider_confirm(family, body, request.headers.get("x-idempotency-key")))
    return handler


async def _admin_provider_requests(request: Request) -> Response:
    return JSONResponse({"list": request.app.state.registry.provider_requests()})


# ----- simulator admin -----------------------------------------------------------------
def _settings_json(registry: TaminRegistry) -> dict[str, Any]:
    return registry.settings.model_dump(mode="json")


async def _admin_stats(request: Request) -> Response:
    return JSONResponse(request.app.state.registry.stats())


async def _admin_reset(request: Request) -> Response:
    request.app.state.registry.reset()
    return JSONResponse({"reset": True})


async def _admin_faults(request: Request) -> Response:
    """Partial settings update plus two actions: ``revoke_tokens`` and ``down_for_s``."""
    registry: TaminRegistry = request.app.state.registry
    if request.method == "GET":
        return JSONResponse(_settings_json(registry))
    patch = await _json_body(request)
    if not isinstance(patch, dict):
        return JSONResponse({"error": "expected a JSON object"}, status_code=400)
    revoke = bool(patch.pop("revoke_tokens", False))
    down_for_s = patch.pop("down_for_s", None)
    try:
        registry.update_settings(patch)
    except pydantic.ValidationError as exc:
        return JSONResponse({"error": exc.errors(include_url=False, include_context=False)}, status_code=400)
    if revoke:
        registry.revoke_access_tokens()
    if down_for_s is not None:
        registry.go_down(float(down_for_s))
    return JSONResponse(_settings_json(registry))


async def _admin_refresh_tokens(request: Request) -> Response:
    body = await _json_body(request)
    audience = body.get("audience") if isinstance(body, dict) else None
    if not isinstance(audience, str) or not audience:
        return JSONResponse({"error": "audience (doctor national code) is required"}, status_code=400)
    return JSONResponse({"refresh_token": request.app.state.registry.issue_refresh_token(audience)})


async def _admin_dispense(request: Request) -> Response:
    found = request.app.state.registry.dispense(request.path_params["headId"])
    return JSONResponse({"dispensed": found}, status_code=200 if found else 404)


async def _admin_prescriptions(request: Request) -> Response:
    return JSONResponse({"list": request.app.state.registry.prescriptions()})


async def _admin_requests(request: Request) -> Response:
    return JSONResponse({"list": request.app.state.registry.request_log()})


async def _admin_creates(request: Request) -> Response:
    records = request.app.state.registry.create_records()
    return JSONResponse({"list": [vars(r) for r in records]})


async def _admin_json(request: Request) -> dict[str, Any] | None:
    body = await _json_body(request)
    return body if isinstance(body, dict) else None


async def _admin_claim(request: Request) -> Response:
    patch = await _admin_json(request)
    if patch is None:
        return JSONResponse({"error": "expected a JSON object"}, status_code=400)
    try:
        claim = request.app.state.registry.set_claim(request.path_params["headId"], patch)
    except (ValueError, TypeError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse({"claim": claim}, status_code=200 if claim else 404)


async def _admin_settle(request: Request) -> Response:
    patch = await _admin_json(request)
    if patch is None:
        return JSONResponse({"error": "expected a JSON object"}, status_code=400)
    try:
        changed = request.app.state.registry.settle_claims(patch)
    except (ValueError, TypeError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse({"changed": changed})


async def _admin_alter(request: Request) -> Response:
    registry: TaminRegistry = request.app.state.registry
    head_id = request.path_params["headId"]
    if request.method == "DELETE":
        found = registry.forget_prescription(head_id)
        return JSONResponse({"forgotten": found}, status_code=200 if found else 404)
    patch = await _admin_json(request)
    if patch is None:
        return JSONResponse({"error": "expected a JSON object"}, status_code=400)
    try:
        head = registry.alter_prescription(head_id, patch)
    except (ValueError, TypeError, KeyError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse({"head": head}, status_code=200 if head else 404)


async def _admin_inject(request: Request) -> Response:
    registry: TaminRegistry = request.app.state.registry
    head = await _admin_json(request)
    if head is None:
        return JSONResponse({"error": "expected a JSON object"}, status_code=400)
    try:
        created = registry.inject_prescription(head, _today(request, registry))
    except (ValueError, TypeError, KeyError) as exc:
        return JSONResponse({"error": f"bad prescription: {exc}"}, status_code=400)
    return JSONResponse({"head": created})


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if not request.url.path.startswith("/_sim/"):
        request.app.state.registry.record_request("unknown", request.method, request.url.path, status)
    return _status_only(status)


def _routes() -> list[Route]:
    def api(path: str, name: str, handler: Handler, method: str, needs_token: bool = True,
            family: str | None = None) -> Route:
        return Route(path, _endpoint(name, handler, needs_token=needs_token, family=family), methods=[method])

    def provider(path: str, name: str, factory: Callable[[str], Handler], method: str, family: str) -> Route:
        return api(path, name, factory(family), method, family=family)

    return [
        # auth (same paths on pilot and production account hosts)
        api("/auth/server/token", "token", _token, "POST", needs_token=False),
        api("/auth/server/v2/token", "refresh", _refresh, "POST", needs_token=False),
        # pilot spellings
        api("/api/v2/patients/deserve-info/{requestBy}/{siamId}/{docId}/{patient}", "eligibility", _eligibility, "GET"),
        api("/api/v2/SendEpresc", "create", _create, "POST"),
        api("/api/v2/ep/lookup", "lookup", _lookup, "GET"),
        api("/api/v2/ep/claim-status", "claim_status", _claim_status, "GET"),
        api("/api/v2/ep/{headId:int}/{docNationalCode}/{docId}/detail", "detail", _detail, "GET"),
        api("/api/v2/ep/update/{headId:int}/{docNationalCode}/{docId}", "edit", _edit, "POST"),
        api("/api/v2/ep/{headId:int}/{docNationalCode}/{docId}", "delete", _delete, "POST"),
        # production spellings
        api("/interface/epresc/SendEpresc/v2", "create", _create, "POST"),
        api("/interface/epresc/SendEpresc/v2/edit/{headId:int}/{docId}", "edit", _edit, "POST"),
        api("/interface/epresc/SendEpresc/v2/remove/{headId:int}/{docId}", "delete", _delete, "POST"),
        api("/interface/epresc/SendEpresc/v2/{headId:int}/{docId}", "detail", _detail, "GET"),
        api("/interface/epresc/patient/v2/deserve-info/{siamId}/{docId}/{patient}", "eligibility", _eligibility, "GET"),
        api("/interface/epresc/lookup", "lookup", _lookup, "GET"),
        api("/interface/epresc/claim-status", "claim_status", _claim_status, "GET"),
        # dispensing and paraclinic (pilot spellings, research s.8/s.9; confirm is sim-defined)
        api("/api/acl/authenticate", "acl_token", _acl_authenticate, "POST", needs_token=False),
        provider("/api/Pharmacy/DrugEpresc/GetActivePresc", "pharmacy_fetch", _provider_fetch, "GET", "pharmacy"),
        provider("/api/Pharmacy/DrugStore/PostPresc", "pharmacy_submit", _provider_submit, "POST", "pharmacy"),
        provider("/api/Pharmacy/DrugStore/ConfirmPresc", "pharmacy_confirm", _provider_confirm, "POST", "pharmacy"),
        provider("/api/ParaClinic/ParaEPresc/RequestList", "para_fetch", _provider_fetch, "GET", "paraclinic"),
        provider("/api/ParaClinic/ParaEPresc/RequestParPresc", "para_submit", _provider_submit, "POST", "paraclinic"),
        provider("/api/ParaClinic/ParaEPresc/ConfirmParPresc", "para_confirm", _provider_confirm, "POST", "paraclinic"),
        # simulator admin
        Route("/_sim/stats", _admin_stats, methods=["GET"]),
        Route("/_sim/provider-requests", _admin_provider_requests, methods=["GET"]),
        Route("/_sim/reset", _admin_reset, methods=["POST"]),
        Route("/_sim/faults", _admin_faults, methods=["GET", "POST"]),
        Route("/_sim/refresh-tokens", _admin_refresh_tokens, methods=["POST"]),
        Route("/_sim/dispense/{headId:int}", _admin_dispense, methods=["POST"]),
        Route("/_sim/prescriptions", _admin_prescriptions, methods=["GET"]),
        Route("/_sim/prescriptions", _admin_inject, methods=["POST"]),
        Route("/_sim/prescriptions/{headId:int}", _admin_alter, methods=["POST", "DELETE"]),
        Route("/_sim/claims/settle", _admin_settle, methods=["POST"]),
        Route("/_sim/claims/{headId:int}", _admin_claim, methods=["POST"]),
        Route("/_sim/requests", _admin_requests, methods=["GET"]),
        Route("/_sim/creates", _admin_creates, methods=["GET"]),
    ]


def create_tamin_app(settings: TaminSimSettings | None = None) -> Starlette:
    """A fresh simulator; ``app.state.registry`` is its :class:`TaminRegistry`."""
    app = _TaminStarlette(routes=_routes(), exception_handlers={404: _not_found, 405: _not_found})
    app.state.registry = TaminRegistry(settings)
    return app
