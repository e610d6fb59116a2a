"""The DITAS/SEPAS simulator as a Starlette app (wire contract: docs/sepas-wire.md).

* ``POST /oauth/token``: password and refresh_token grants, HTTP Basic client auth.
* ``POST .../gwSepasHospital/SepasValidatorSecure``: decrypts, validates, answers
  ``result.data`` = a list of ValidationResultVO (empty = no error).
* ``POST .../gwSepasHospital/<Op>Secure`` for the six messages: decrypts, validates again,
  registers, answers ``result.data`` = ResultVO.
* ``POST .../gwSepasHospital/lookup``: ``{DocumentHash}`` -> the ResultVO of a record, or null.
* ``/_sim/stats`` (with ``duplicates``), ``/_sim/reset``, ``/_sim/faults``, ``/_sim/records``
  (``DELETE /_sim/records/<CompositionUID>``: SEPAS "lost" a record),
  ``/_sim/requests``, ``/_sim/public-key``.

Every API call needs ``Authorization: bearer <token>`` and a ``pid`` header.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pydantic
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from adapter.destinations.sepas.crypto import EnvelopeError, decrypt_envelope, generate_keypair, private_key_pem
from adapter.destinations.sepas.messages import MESSAGES, document_hash, parse_xml
from adapter.sim.ditas_registry import DitasRegistry, DitasSimSettings

BASE = "/api/client/apim/v1/sepas/gwSepasHospital"
_BY_OP = {spec.save_op: spec for spec in MESSAGES.values()}
_BY_CONTENT = {spec.content_type: spec for spec in MESSAGES.values()}
Handler = Callable[[Request, DitasRegistry], Awaitable[Response]]


def _wrap(data: Any, status: int = 200, message: list[str] | None = None) -> JSONResponse:
    return JSONResponse({"result": {"data": data}, "statusCode": status, "message": message or []}, status_code=status)


def _error(status: int, code: str, text: str) -> JSONResponse:
    return JSONResponse({"Code": code, "Error": code, "Error_Description": text}, status_code=status)


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except ValueError:
        return None


def _endpoint(name: str, handler: Handler, needs_token: bool = True) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        registry: DitasRegistry = request.app.state.registry
        plan = registry.plan_faults(name)
        if plan.fail_status is not None:
            registry.record_request(name, request.url.path, plan.fail_status)
            return _error(plan.fail_status, "SIM_FAULT", "scripted fault")
        if needs_token:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not registry.token_valid(token.strip()):
                registry.record_request(name, request.url.path, 401)
                return _error(401, "invalid_token", "access token missing, expired or revoked")
            pid = request.headers.get("pid", "")
            allowed = registry.settings.pids
            if not pid or (allowed is not None and pid not in allowed):
                registry.record_request(name, request.url.path, 403)
                return _error(403, "invalid_pid", "pid header missing or not subscribed")
        response = await handler(request, registry)
        if plan.drop_after_apply:
            registry.record_request(name, request.url.path, 502)
            return _error(502, "SIM_LOST_ANSWER", "applied, but the gateway lost the answer")
        registry.record_request(name, request.url.path, response.status_code)
        return response

    endpoint.__name__ = f"ditas_{name}"
    return endpoint


async def _token(request: Request, registry: DitasRegistry) -> Response:
    settings = registry.settings
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    try:
        client = base64.b64decode(encoded).decode() if scheme.lower() == "basic" else ""
    except ValueError:
        client = ""
    if client != f"{settings.client_id}:{settings.client_secret}":
        return JSONResponse({"error": "invalid_client"}, status_code=401)
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode(), keep_blank_values=True).items()}
    if form.get("grant_type") == "password":
        if form.get("username") != settings.username or form.get("password") != settings.password:
            return JSONResponse({"error": "invalid_grant", "error_description": "bad credentials"}, status_code=400)
        issued = registry.grant("password")
    elif form.get("grant_type") == "refresh_token":
        issued = registry.grant("refresh", form.get("refresh_token"))
    else:
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
    if issued is None:  # only a refresh grant is refused here
        return JSONResponse({"error": "invalid_grant", "error_description": "unknown refresh token"}, status_code=400)
    token, ttl, refresh = issued
    return JSONResponse({"access_token": token, "token_type": "bearer", "expires_in": int(ttl), "refresh_token": refresh})


def _open(registry: DitasRegistry, body: Any, expected: str | None) -> tuple[str, dict[str, Any], str] | JSONResponse:
    if not isinstance(body, dict):
        return _error(400, "BAD_REQUEST", "expected the secure envelope as a JSON object")
    spec = _BY_CONTENT.get(str(body.get("ContentType")))
    if spec is None or (expected is not None and spec.name != expected):
        return _wrap({"MessageUID": "", "ErrorMessage": f"ContentType {body.get('ContentType')!r} does not fit this service",
                      "CompositionUID": "", "patientUID": ""})
    try:
        xml = decrypt_envelope(body, registry.private_key)
        root, tree = parse_xml(xml)
    except (EnvelopeError, ValueError, SyntaxError) as exc:
        return _error(400, "BAD_ENVELOPE", f"cannot open or read the message: {type(exc).__name__}")
    if root != spec.vo:
        return _error(400, "BAD_ENVELOPE", f"root element {root} is not {spec.vo}")
    return spec.name, tree, document_hash(xml)


async def _validate(request: Request, registry: DitasRegistry) -> Response:
    opened = _open(registry, await _json(request), None)
    if isinstance(opened, Response):
        return opened
    message, tree, digest = opened
    return _wrap(registry.validate(message, tree, digest))


def _save(message: str) -> Handler:
    async def handler(request: Request, registry: DitasRegistry) -> Response:
        opened = _open(registry, await _json(request), message)
        if isinstance(opened, Response):
            return opened
        name, tree, digest = opened
        key = request.headers.get("x-idempotency-key") or digest
        return _wrap(registry.save(name, tree, digest, key))

    return handler


async def _lookup(request: Request, registry: DitasRegistry) -> Response:
    body = await _json(request)
    digest = body.get("DocumentHash") if isinstance(body, dict) else None
    if not isinstance(digest, str):
        return _error(400, "BAD_REQUEST", "DocumentHash is required")
    return _wrap(registry.lookup(digest))


async def _stats(request: Request) -> Response:
    return JSONResponse(request.app.state.registry.stats())


async def _reset(request: Request) -> Response:
    request.app.state.registry.reset()
    return JSONResponse({"reset": True})


async def _faults(request: Request) -> Response:
    registry: DitasRegistry = request.app.state.registry
    if request.method == "POST":
        patch = await _json(request)
        if not isinstance(patch, dict):
            return JSONResponse({"error": "expected a JSON object"}, status_code=400)
        if patch.pop("revoke_tokens", False):
            registry.revoke_tokens()
        try:
            registry.update_settings(patch)
        except pydantic.ValidationError as exc:
            return JSONResponse({"error": exc.errors(include_url=False, include_context=False)}, status_code=400)
    return JSONResponse(registry.settings.model_dump(mode="json", exclude={"private_key_pem"}))


async def _records(request: Request) -> Response:
    return JSONResponse({"list": request.app.state.registry.records()})


async def _forget_record(request: Request) -> Response:
    uid = request.path_params["uid"]
    if not request.app.state.registry.forget(uid):
        return JSONResponse({"error": f"no record {uid}"}, status_code=404)
    return JSONResponse({"deleted": uid})


async def _requests(request: Request) -> Response:
    return JSONResponse({"list": request.app.state.registry.request_log()})


async def _public_key(request: Request) -> Response:
    return PlainTextResponse(request.app.state.registry.public_key_pem.decode())


def _routes() -> list[Route]:
    routes = [
        Route("/oauth/token", _endpoint("token", _token, needs_token=False), methods=["POST"]),
        Route(f"{BASE}/SepasValidatorSecure", _endpoint("validate", _validate), methods=["POST"]),
        Route(f"{BASE}/lookup", _endpoint("lookup", _lookup), methods=["POST"]),
    ]
    for op, spec in _BY_OP.items():
        routes.append(Route(f"{BASE}/{op}Secure", _endpoint("save", _save(spec.name)), methods=["POST"]))
    routes += [
        Route("/_sim/stats", _stats, methods=["GET"]),
        Route("/_sim/reset", _reset, methods=["POST"]),
        Route("/_sim/faults", _faults, methods=["GET", "POST"]),
        Route("/_sim/records", _records, methods=["GET"]),
        Route("/_sim/records/{uid:path}", _forget_record, methods=["DELETE"]),
        Route("/_sim/requests", _requests, methods=["GET"]),
        Route("/_sim/public-key", _public_key, methods=["GET"]),
    ]
    return routes


def create_ditas_app(settings: DitasSimSettings | None = None) -> Starlette:
    """A fresh simulator; ``app.state.registry`` is its :class:`DitasRegistry` (``public_key_pem`` for the adapter)."""
    app = Starlette(routes=_routes())
    app.state.registry = DitasRegistry(settings)
    return app


@dataclass(frozen=True)
class SandboxKeys:
    private_key_file: Path
    public_key_file: Path  # what the adapter's destinations.sepas.public_key_file points at
    private_key_pem: str


def sandbox_keys(folder: Path) -> SandboxKeys:
    """The sandbox's "Ministry" key pair in ``folder``: kept across restarts (so an adapter
    configured with the public key keeps working), made on first use; the private key mode 600."""
    folder.mkdir(parents=True, exist_ok=True)
    private_file, public_file = folder / "moh-private.pem", folder / "moh-public.pem"
    if private_file.is_file():
        pem = private_file.read_bytes()
        registry = DitasRegistry(DitasSimSettings(private_key_pem=pem.decode()))
        public_pem = registry.public_key_pem
    else:
        private, public_pem = generate_keypair()
        pem = private_key_pem(private)
        descriptor = os.open(private_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)
    public_file.write_bytes(public_pem)
    return SandboxKeys(private_file, public_file, pem.decode())
