"""The status HTTP service that ``adapter run`` starts beside its loops (config section ``status``).

* ``/healthz`` -- the process is up (always 200 while it answers);
* ``/readyz`` -- 200 only while the broker consumer is attached and its loop ran within
  ``status.ready_max_age_s``, the dispatcher loop ran recently and the database answers;
  503 with the failing checks otherwise. A consumer stuck in ``drain_events`` keeps the
  process up but stops stamping its heartbeat: red here, though ``/healthz`` stays green.
* ``/status`` -- JSON: ``adapter.ops.status.status_report`` (counts per destination and state,
  oldest pending, circuit, outage, fallback) plus last success and last error per destination,
  and the heartbeats;
* ``/metrics`` -- Prometheus text (``adapter.pipeline.metrics``);
* ``/`` -- the same as ``/status``, as a small read-only HTML page for people.

Bound to 127.0.0.1 by default. Bound anywhere else it requires a bearer token
(``status.token_env``/``token_file``) or HTTP basic auth (``status.basic_user`` + password),
on every path, and HTTPS (``status.tls_cert_file`` + ``tls_key_file``, unless
``status.allow_plain_http``); without them the adapter refuses to start (``resolve_auth``,
``resolve_serving``). Served by ``adapter.ops.status_server``: a connection cap, header and
idle timeouts, TLS.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hmac
import html
import ipaddress
import json
import resource
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from adapter.config import AdapterConfig, ConfigError, read_secret
from adapter.ops.status_server import ConnectionLimits, StatusServer
from adapter.pipeline import metrics
from adapter.redact import redact_text
from adapter.store.health import store_reason
from adapter.store.states import FINISHED
from adapter.store.types import utcnow
from adapter.tls import server_context

FINISHED_OK = tuple(s.value for s in FINISHED)
DB_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class StatusAuth:
    token: str | None = None
    user: str | None = None
    password: str | None = None

    def allows(self, header: str | None) -> bool:
        """Whether ``header`` (the request's Authorization) carries the credentials. An empty
        credential never matches, configured or presented (``resolve_auth`` refuses to start with
        one; this holds even if one got here). Secrets are compared with ``hmac.compare_digest``,
        every part of a pair always compared, so the time taken tells nothing about them."""
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if self.token is not None and scheme == "bearer":
            presented = value.strip().encode()
            return hmac.compare_digest(presented, self.token.encode()) & bool(presented) & _filled(self.token)
        if self.user is not None and self.password is not None and scheme == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return hmac.compare_digest(user.encode(), self.user.encode()) & \
                hmac.compare_digest(password.encode(), self.password.encode()) & \
                bool(user) & bool(password) & _filled(self.user) & _filled(self.password)
        return False


def _filled(secret: str) -> bool:
    return bool(secret.strip())


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_auth(config: AdapterConfig) -> StatusAuth | None:
    """The credentials the status service requires (None: none, loopback only).

    Raises ``ConfigError`` naming the key and the fix when the service is bound beyond
    loopback without credentials, or a configured secret cannot be read."""
    status, source = config.status, config.source_file
    token = None
    if status.token_env or status.token_file:
        token = read_secret(status.token_env, status.token_file, None, what="status.token", source=source)
    user = password = None
    if status.basic_user:
        if not (status.basic_password_env or status.basic_password_file):
            raise ConfigError([f"{source}: status.basic_user: set without a password -- fix: set "
                               "status.basic_password_env or status.basic_password_file"])
        password = read_secret(status.basic_password_env, status.basic_password_file, None,
                               what="status.basic_password", source=source)
        user = status.basic_user
    elif status.basic_password_env or status.basic_password_file:
        raise ConfigError([f"{source}: status.basic_password_env: a password without status.basic_user -- fix: "
                           "set status.basic_user too (or use status.token_env)"])
    # read_secret never returns an empty secret; refuse one here too, whatever the reader did
    if token is not None and not _filled(token):
        raise ConfigError([f"{source}: status.token_{'env' if status.token_env else 'file'}: the bearer token is "
                           "empty -- fix: put a long random token in it"])
    if password is not None and not _filled(password):
        raise ConfigError([f"{source}: status.basic_password_{'env' if status.basic_password_env else 'file'}: the "
                           "basic-auth password is empty -- fix: put a long random password in it"])
    if user is not None and not _filled(user):
        raise ConfigError([f"{source}: status.basic_user: is only whitespace -- fix: set a user name"])
    if token is None and user is None:
        if status.enabled and not is_loopback(status.host):
            raise ConfigError([f"{source}: status.host: {status.host} is reachable from other machines but the status "
                               "service has no credentials -- fix: set status.token_env (or status.token_file, or "
                               "status.basic_user with status.basic_password_env), or bind status.host to 127.0.0.1"])
        return None
    return StatusAuth(token=token, user=user, password=password)


@dataclass(frozen=True)
class Serving:
    """How the status service serves: its TLS context (None: plain HTTP) and connection limits."""

    tls: ssl.SSLContext | None
    limits: ConnectionLimits


DESCRIPTOR_SHARE = 4
"""The status service may take at most 1/4 of the process's file descriptors (``ulimit -n``)."""


def resolve_serving(config: AdapterConfig) -> Serving:
    """The status service's TLS and limits. Raises ``ConfigError`` naming key and fix when the
    certificate files are missing, unreadable or do not load; when the service is bound beyond
    loopback without them (unless ``status.allow_plain_http``); or when ``status.max_connections``
    would take more than a quarter of the process's file descriptors, which delivery needs."""
    status, source = config.status, config.source_file
    limits = ConnectionLimits(status.max_connections, status.header_timeout_s, status.idle_timeout_s)
    if not status.enabled:
        return Serving(None, limits)
    tls = server_context(status.tls_cert_file, status.tls_key_file, "status", source)
    if tls is None and not status.allow_plain_http and not is_loopback(status.host):
        raise ConfigError([f"{source}: status.host: {status.host} is reachable from other machines but the status "
                           "service would serve plain HTTP -- fix: set status.tls_cert_file and status.tls_key_file "
                           "(PEM), or status.allow_plain_http: true behind a TLS-terminating proxy, or bind "
                           "status.host to 127.0.0.1"])
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and status.max_connections > soft // DESCRIPTOR_SHARE:
        raise ConfigError([f"{source}: status.max_connections: {status.max_connections} would let the status service "
                           f"take more than a quarter of this process's {soft} file descriptors, which delivery needs "
                           f"-- fix: lower it to {max(1, soft // DESCRIPTOR_SHARE)} or less, or raise ulimit -n"])
    return Serving(tls, limits)


# -- what is shown -----------------------------------------------------------------------------

def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def last_outcomes(session: Any) -> dict[str, dict[str, Any]]:
    """Per destination: when a submission last finished well, and the newest error a submission holds."""
    from adapter.store.models import Submission

    out: dict[str, dict[str, Any]] = {}
    for destination, at in session.execute(
            select(Submission.destination, func.max(Submission.updated_at))
            .where(Submission.state.in_(FINISHED_OK)).group_by(Submission.destination)):
        out.setdefault(destination, {})["last_success_at"] = _iso(at)
    destinations = [d for (d,) in session.execute(select(Submission.destination).distinct())]
    for destination in destinations:
        row = session.execute(
            select(Submission.id, Submission.state, Submission.last_error, Submission.last_error_class,
                   Submission.updated_at)
            .where(Submission.destination == destination, Submission.last_error.is_not(None))
            .order_by(Submission.updated_at.desc(), Submission.id.desc()).limit(1)).first()
        entry = out.setdefault(destination, {})
        entry.setdefault("last_success_at", None)
        entry["last_error"] = None if row is None else {
            "submission_id": row.id, "state": row.state, "class": row.last_error_class,
            "message": redact_text(row.last_error or "")[:500], "at": _iso(row.updated_at)}
    return out


def status_document(app: Any, liveness: Any | None) -> dict[str, Any]:
    """``/status``: the store's report, last success/error per destination, heartbeats."""
    from adapter.ops.status import status_report

    with app.sessions() as session:
        report = status_report(session)
        last = last_outcomes(session)
    for destination, health in report["health"].items():
        health.update(last.get(destination, {"last_success_at": None, "last_error": None}))
        health["outage_mode"] = health["outage"] is not None or health["circuit"] != "closed"
    return {"instance": app.config.instance, "generated_at": utcnow().isoformat(),
            "liveness": liveness.snapshot() if liveness is not None else None, **report}


def ping_database(app: Any) -> None:
    with app.engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def readiness_checks(snapshot: dict[str, Any] | None, max_age_s: float, dispatch_max_age_s: float,
                     database_error: str | None) -> dict[str, dict[str, Any]]:
    snapshot = snapshot or {}
    consumer_age = snapshot.get("consumer_age_s")
    dispatcher_age = snapshot.get("dispatcher_age_s")
    consumer_ok = bool(snapshot.get("consumer_attached")) and consumer_age is not None and consumer_age <= max_age_s
    consumer: dict[str, Any] = {"ok": consumer_ok, "attached": bool(snapshot.get("consumer_attached")),
                                "heartbeat_age_s": consumer_age, "max_age_s": max_age_s,
                                "last_delivery_age_s": snapshot.get("delivery_age_s")}
    if not consumer_ok:
        consumer["why"] = ("the broker consumer is not attached (broker unreachable or reconnecting)"
                           if not snapshot.get("consumer_attached") else
                           "the consumer loop has not run for longer than status.ready_max_age_s (stuck)")
    dispatcher_ok = dispatcher_age is not None and dispatcher_age <= dispatch_max_age_s
    dispatcher: dict[str, Any] = {"ok": dispatcher_ok, "heartbeat_age_s": dispatcher_age,
                                  "max_age_s": dispatch_max_age_s}
    database: dict[str, Any] = {"ok": database_error is None}
    if database_error is not None:
        database["why"] = database_error
    return {"consumer": consumer, "dispatcher": dispatcher, "database": database, "store": _store_check(snapshot)}


def _store_check(snapshot: dict[str, Any]) -> dict[str, Any]:
    """What the running loops found of the store (``adapter.store.health``): red while one of them
    finds it unavailable -- also when a ping would pass (a full disk refuses writes, not reads)."""
    ok = snapshot.get("store_available") is not False
    check: dict[str, Any] = {"ok": ok, "unavailable_since": snapshot.get("store_unavailable_since"),
                             "unavailable_s": snapshot.get("store_unavailable_s"),
                             "failing_loops": snapshot.get("store_failing_loops") or []}
    if not ok:
        check["why"] = (f"store unavailable since {check['unavailable_since']} ({snapshot.get('store_reason')}); "
                        "the loops wait and retry on a new connection")
    return check


# -- the web app -------------------------------------------------------------------------------

class _Cached:
    def __init__(self, seconds: float):
        self._seconds = seconds
        self._lock = threading.Lock()
        self._value: tuple[float, Any] | None = None

    def get(self, make: Any) -> Any:
        with self._lock:
            now = time.monotonic()
            if self._value is None or now - self._value[0] > self._seconds:
                self._value = (now, make())
            return self._value[1]


class _RequireAuth:
    def __init__(self, app: Any, auth: StatusAuth):
        self.app, self.auth = app, auth

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if not self.auth.allows(headers.get("authorization")):
                challenge = 'Basic realm="adapter"' if self.auth.user is not None else 'Bearer realm="adapter"'
                response = PlainTextResponse("authentication required\n", status_code=401,
                                             headers={"WWW-Authenticate": challenge})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_status_app(app: Any, liveness: Any | None = None, auth: StatusAuth | None = None) -> Any:
    status_cfg = app.config.status
    cached_status = _Cached(status_cfg.cache_s)
    dispatch_max_age = status_cfg.ready_max_age_s + app.config.dispatch.lease_s  # a batch may take a lease to send

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "up", "instance": app.config.instance})

    async def readyz(_: Request) -> Response:
        error = None
        try:
            await asyncio.wait_for(run_in_threadpool(ping_database, app), DB_TIMEOUT_S)
        except asyncio.TimeoutError:
            error = f"no answer within {DB_TIMEOUT_S:.0f}s"
        except Exception as exc:
            error = store_reason(exc)  # the driver's first line: not SQLAlchemy's statement and parameters
        checks = readiness_checks(liveness.snapshot() if liveness is not None else None,
                                  status_cfg.ready_max_age_s, dispatch_max_age, error)
        ready = all(check["ok"] for check in checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    async def status(_: Request) -> Response:
        document = await run_in_threadpool(cached_status.get, lambda: status_document(app, liveness))
        return JSONResponse(json.loads(json.dumps(document, default=str)))

    async def page(_: Request) -> Response:
        document = await run_in_threadpool(cached_status.get, lambda: status_document(app, liveness))
        return HTMLResponse(render_page(document))

    async def metrics_endpoint(_: Request) -> Response:
        body = await run_in_threadpool(metrics.render)
        return Response(body, media_type=metrics.CONTENT_TYPE)

    web = Starlette(routes=[Route("/", page), Route("/healthz", healthz), Route("/readyz", readyz),
                            Route("/status", status), Route("/metrics", metrics_endpoint)])
    return _RequireAuth(web, auth) if auth is not None else web


class StatusService:
    """The status app on the gated server (``adapter.ops.status_server``) in a daemon thread, with
    its store collector in the metrics registry."""

    def __init__(self, app: Any, liveness: Any | None = None, auth: StatusAuth | None = None):
        self.auth = auth if auth is not None else resolve_auth(app.config)
        serving = resolve_serving(app.config)
        status_cfg = app.config.status
        self._collector = metrics.StoreCollector(
            app.sessions, app.token_caches, status_cfg.cache_s,
            extra=(lambda: metrics.liveness_family(liveness.snapshot())) if liveness is not None else None)
        self._detach: Any = None
        self._server = StatusServer(create_status_app(app, liveness, self.auth), status_cfg.host, status_cfg.port,
                                    serving.limits, serving.tls)

    @property
    def base_url(self) -> str:
        return self._server.base_url

    def start(self) -> StatusService:
        self._detach = metrics.attach(self._collector)
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
        if self._detach is not None:
            self._detach()
            self._detach = None


# -- the page ----------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d232a;background:#f7f8fa}
h1{font-size:1.3rem;margin:0 0 .2rem}h2{font-size:1.05rem;margin:1.4rem 0 .4rem}
.sub{color:#5b6570;font-size:.85rem}
table{border-collapse:collapse;background:#fff;min-width:32rem}
th,td{border:1px solid #d5d9de;padding:.3rem .6rem;text-align:left;font-size:.9rem;vertical-align:top}
th{background:#eef1f4}.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#13703a;font-weight:600}.warn{color:#9a6200;font-weight:600}.bad{color:#b3261e;font-weight:600}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _circuit_class(state: str) -> str:
    return {"closed": "ok", "half_open": "warn"}.get(state, "bad")


def render_page(document: dict[str, Any]) -> str:
    """A read-only page: no forms, no scripts; reloads itself every 10 seconds."""
    rows = []
    destinations = sorted(set(document["destinations"]) | set(document["health"]))
    for name in destinations:
        states = document["destinations"].get(name, {})
        health = document["health"].get(name, {})
        counts = ", ".join(f"{_e(k)}={_e(v)}" for k, v in sorted(states.items())) or "none"
        outage = health.get("outage")
        outage_text = f"{_e(outage.get('detected'))} since {_e(outage.get('started_at'))}" if outage else "none"
        error = health.get("last_error")
        error_text = (f"{_e(error['at'])} ({_e(error['class'])}, submission {_e(error['submission_id'])}): "
                      f"{_e(error['message'])}") if error else "none"
        fallback = ", ".join(f"{_e(k)}={_e(v)}" for k, v in sorted((health.get("fallback") or {}).items()))
        circuit = health.get("circuit", "closed")
        rows.append(
            f"<tr><td><b>{_e(name)}</b></td><td>{counts}</td>"
            f"<td class='{_circuit_class(circuit)}'>{_e(circuit)}</td><td>{outage_text}</td><td>{fallback}</td>"
            f"<td>{_e(health.get('last_success_at') or 'never')}</td><td>{error_text}</td></tr>")
    events = document["events"]
    event_rows = "".join(f"<tr><td>{_e(k)}</td><td class='num'>{_e(v)}</td></tr>" for k, v in sorted(events.items()))
    oldest = document.get("oldest_pending")
    oldest_text = (f"{_e(oldest['age_seconds'])} s &mdash; submission {_e(oldest['submission_id'])} "
                   f"({_e(oldest['destination'])}, {_e(oldest['state'])}) since {_e(oldest['since'])}"
                   if oldest else "none")
    live = document.get("liveness") or {}
    live_rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in live.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="10">
<title>adapter status &mdash; {_e(document['instance'])}</title><style>{_STYLE}</style></head>
<body>
<h1>Adapter status: {_e(document['instance'])}</h1>
<div class="sub">generated {_e(document['generated_at'])} &middot; read-only &middot; JSON at
<a href="status">/status</a>, readiness at <a href="readyz">/readyz</a>, metrics at <a href="metrics">/metrics</a></div>
<h2>Destinations</h2>
<table><tr><th>destination</th><th>submissions by state</th><th>circuit</th><th>outage</th><th>paper fallback</th>
<th>last success</th><th>last error</th></tr>
{''.join(rows) or '<tr><td colspan="7">no submissions yet</td></tr>'}
</table>
<h2>Oldest pending</h2><p>{oldest_text}</p>
<h2>Events</h2><table><tr><th>status</th><th>count</th></tr>{event_rows}</table>
<h2>Loops</h2><table><tr><th>heartbeat</th><th>value</th></tr>{live_rows or '<tr><td colspan="2">not running</td></tr>'}</table>
</body></html>
"""
