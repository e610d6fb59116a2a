"""The one HTTP exchange: every request to an insurer or a gateway is made here.

A client (Tamin prescribing, the provider families, DITAS/SEPAS, the reconciliation reads)
keeps only its routes and its answer readers; what a request has to go through is decided
once, in :meth:`Exchange.send`:

* the principal's token is attached and, on a 401, refreshed once and the request sent
  again (:class:`TokenAuth`, an ``httpx.Auth``);
* the configured connect/read timeouts are cut to the claim's ``deadline``, so an answer
  cannot outlive the lease (another dispatcher could then send the same submission); with
  almost no time left nothing is sent and the outcome is ``waiting``;
* the answer is classed into the error classes of the README (``classify``): an HTTP status
  that decides alone, ``Retry-After``, a transport error before or after the request left;
* a request that may change something at the far side (a POST, unless the client says it is
  a read) whose answer is missing or unreadable is **ambiguous**: looked up before any resend;
* every request and answer is handed to the exchange's recorder (method, route, status,
  headers with secrets masked, bodies) for the audit trail and the evaluation-lab capture.

The summary an outcome carries for the attempt log is PHI-free: the route template, the
status, body size and hash. The recorder gets the real bodies: whoever records them keeps
them as patient data (encrypted at rest, never logged).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from adapter.destinations.auth import TokenCache, TokenError
from adapter.destinations.classify import certificate_failure, class_of_status, retry_after_seconds
from adapter.destinations.outcome import Outcome, OutcomeClass
from adapter.destinations.routes import body_summary
from adapter.redact import redact_text

log = logging.getLogger(__name__)
NOT_SENT_LEASE = "not sent: the claim's lease is nearly spent (tried again shortly)"
MIN_TIME_LEFT_S = 0.05
"""Less time than this before the deadline: the request is not sent at all."""
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "pid", "x-api-key"})


@dataclass(frozen=True)
class Endpoint:
    """Where and how one client calls: built from its destination's config."""

    base_url: str
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    auth_scheme: str = "Bearer"
    """``Authorization: <scheme> <token>``; empty: the bare token (some provider gateways)."""
    idempotency_header: str | None = None
    """Header carrying the submission's idempotency key (``X-Idempotency-Key``), or None."""
    auth_hint: str = "check the credentials and the principal's rights"
    """Said after a 401 that a fresh token did not cure."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    """The filled path: may carry a national code, so it is never put in a summary."""
    route: str = ""
    """The path template, for the PHI-free summary."""
    json: Any = None
    query: Mapping[str, str] | None = None
    principal: str = ""
    idempotency_key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    deadline: float = float("inf")
    """``time.monotonic()`` by which the answer must have come."""
    applies: bool | None = None
    """May this request change something at the far side? None: only a POST may."""

    @property
    def may_apply(self) -> bool:
        return self.method.upper() == "POST" if self.applies is None else self.applies


@dataclass
class Exchanged:
    """What came back: the classed outcome (``accepted`` = a readable 2xx) and the answer's JSON
    (a 2xx's, or a refusal's body when it was JSON: the readers take the insurer's message)."""

    outcome: Outcome
    parsed: Any = None
    status: int | None = None


@dataclass(frozen=True)
class ExchangeRecord:
    """One request and its answer, as the recorder receives it."""

    method: str
    route: str
    path: str
    status: int | None
    request_headers: dict[str, str]
    request_body: bytes
    response_headers: dict[str, str]
    response_body: bytes
    duration_ms: int
    outcome: str


Recorder = Callable[[ExchangeRecord], None]
HttpClient = httpx.Client
"""The connection pool every exchange and token provider of one process shares."""


class NoTimeLeft(Exception):
    """The claim's deadline came before a request could be sent (again)."""


class TokenAuth(httpx.Auth):
    """The principal's token on the request; on a 401 it is forgotten, a fresh one fetched and
    the request sent once more, with its timeouts cut again to what is left before the deadline
    (``retime``; none left: :class:`NoTimeLeft`, nothing resent). A token that cannot be had
    raises ``TokenError``."""

    requires_response_body = True  # read the 401 so its connection goes back to the pool before the refresh

    def __init__(self, tokens: TokenCache, principal: str, scheme: str, retime: Callable[[], httpx.Timeout | None]):
        self._tokens, self._principal, self._scheme, self._retime = tokens, principal, scheme.strip(), retime
        self.refreshed = False

    def _attach(self, request: httpx.Request, token: str) -> None:
        request.headers["Authorization"] = f"{self._scheme} {token}" if self._scheme else token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._tokens.token(self._principal)
        self._attach(request, token)
        response = yield request
        if response.status_code != 401:
            return
        self._tokens.invalidate(self._principal, token)
        self.refreshed = True
        self._attach(request, self._tokens.token(self._principal))
        timeout = self._retime()
        if timeout is None:
            raise NoTimeLeft(NOT_SENT_LEASE)
        request.extensions["timeout"] = timeout.as_dict()
        yield request


class Exchange:
    """One endpoint's requests: ``send(Request) -> Exchanged``. Thread-safe (the httpx client
    and the token cache are; a ``TokenAuth`` is made per request)."""

    def __init__(self, http: httpx.Client, endpoint: Endpoint, tokens: TokenCache | None = None,
                 recorder: Recorder | None = None):
        self._http, self._endpoint, self._tokens, self._recorder = http, endpoint, tokens, recorder

    def send(self, request: Request) -> Exchanged:
        started = time.monotonic()
        summary: dict[str, Any] = {"method": request.method, "route": request.route, **body_summary(request.json)}
        timeout = self._timeout(request.deadline)
        if timeout is None:
            return Exchanged(Outcome(OutcomeClass.waiting, NOT_SENT_LEASE, request=summary))
        auth = None
        if self._tokens is not None:
            auth = TokenAuth(self._tokens, request.principal, self._endpoint.auth_scheme,
                             lambda: self._timeout(request.deadline))
        try:
            answer = self._http.request(request.method, self._endpoint.base_url.rstrip("/") + request.path,
                                        params=dict(request.query) if request.query else None, json=request.json,
                                        headers=self._headers(request), timeout=timeout,
                                        auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT)
        except TokenError as exc:
            exchanged = Exchanged(Outcome(exc.klass, str(exc)))
        except NoTimeLeft as exc:  # the first answer was a 401: nothing was applied, nothing is resent
            exchanged = Exchanged(Outcome(OutcomeClass.waiting, f"{exc} (after a 401 and a token refresh)"))
        except httpx.HTTPError as exc:
            exchanged = Exchanged(self._lost(request, exc))
            self._record_lost(request, exc, started, exchanged.outcome)
        else:
            exchanged = self._read(request, answer, auth is not None and auth.refreshed)
            for earlier in answer.history:
                self._record(request, earlier, started, "auth")
            self._record(request, answer, started, exchanged.outcome.klass.value)
        outcome = exchanged.outcome
        outcome.duration_ms = int((time.monotonic() - started) * 1000)
        outcome.request = {**summary, "token_refreshed": auth is not None and auth.refreshed}
        return exchanged

    def _headers(self, request: Request) -> dict[str, str]:
        headers = {"Accept": "application/json", **request.headers}
        if self._endpoint.idempotency_header and request.idempotency_key:
            headers[self._endpoint.idempotency_header] = request.idempotency_key
        return headers

    def _timeout(self, deadline: float) -> httpx.Timeout | None:
        """The configured timeouts, cut so the answer comes before ``deadline``; None: no time left."""
        remaining = deadline - time.monotonic()
        if remaining < MIN_TIME_LEFT_S:
            return None
        return httpx.Timeout(min(self._endpoint.read_timeout_s, remaining),
                             connect=min(self._endpoint.connect_timeout_s, remaining))

    @staticmethod
    def _lost(request: Request, exc: httpx.HTTPError) -> Outcome:
        """No answer. Before the request left: transient. After: ambiguous if it may have applied.
        A refused TLS certificate: ``config``, with the fix in the message."""
        refused = certificate_failure(exc)
        if refused is not None:
            return Outcome(OutcomeClass.config, f"{type(exc).__name__}: {refused}", response={"error": type(exc).__name__})
        klass = class_of_exception(exc)
        if klass is OutcomeClass.ambiguous and not request.may_apply:
            klass = OutcomeClass.transient  # a read applies nothing: asking again is harmless
        return Outcome(klass, f"{type(exc).__name__}: {redact_text(str(exc))[:200]}",
                       response={"error": type(exc).__name__})

    def _read(self, request: Request, answer: httpx.Response, refreshed: bool) -> Exchanged:
        response: dict[str, Any] = {"status": answer.status_code}
        parsed = _json_or_none(answer)
        klass = class_of_status(answer.status_code)
        if klass is not None:
            message = f"HTTP {answer.status_code}"
            if answer.status_code in GATEWAY_LOST and request.may_apply:
                # the gateway lost the application's answer, not the request: it may have applied
                klass, message = OutcomeClass.ambiguous, f"HTTP {answer.status_code} from a gateway: may have applied"
            if klass is OutcomeClass.auth and refreshed:
                message = f"HTTP 401 twice, even with a fresh token: {self._endpoint.auth_hint}"
            return Exchanged(Outcome(klass, message, retry_after_s=retry_after_seconds(answer.headers.get("Retry-After")),
                                     response=response), parsed, answer.status_code)
        if parsed is None:
            # a 2xx that cannot be read reached the far side: what may have applied is looked up first
            unreadable = OutcomeClass.ambiguous if request.may_apply else OutcomeClass.transient
            return Exchanged(Outcome(unreadable, f"HTTP {answer.status_code} without a readable JSON answer "
                                                 "(a gateway page?)", response=response), None, answer.status_code)
        return Exchanged(Outcome(OutcomeClass.accepted, response=response), parsed, answer.status_code)

    def _record(self, request: Request, answer: httpx.Response, started: float, outcome: str) -> None:
        """Hand one request and its answer to the recorder, if there is one."""
        if self._recorder is not None:
            sent = answer.request
            self._hand_over(ExchangeRecord(
                method=request.method, route=request.route, path=request.path, status=answer.status_code,
                request_headers=masked_headers(sent.headers), request_body=bytes(sent.content),
                response_headers=masked_headers(answer.headers), response_body=answer.content,
                duration_ms=int((time.monotonic() - started) * 1000), outcome=outcome))

    def _record_lost(self, request: Request, exc: httpx.HTTPError, started: float, outcome: Outcome) -> None:
        """A request no answer came to, as httpx built it (when it got that far)."""
        if self._recorder is None:
            return
        try:
            sent: httpx.Request | None = exc.request
        except RuntimeError:  # failed before a request was built
            sent = None
        self._hand_over(ExchangeRecord(
            method=request.method, route=request.route, path=request.path, status=None,
            request_headers=masked_headers(sent.headers) if sent is not None else {},
            request_body=bytes(sent.content) if sent is not None else b"", response_headers={}, response_body=b"",
            duration_ms=int((time.monotonic() - started) * 1000), outcome=outcome.klass.value))

    def _hand_over(self, record: ExchangeRecord) -> None:
        """A recorder that fails must not change the outcome: the request was sent either way."""
        assert self._recorder is not None
        try:
            self._recorder(record)
        except Exception:
            log.warning("the exchange recorder failed on %s %s", record.method, record.route, exc_info=True)

GATEWAY_LOST = frozenset({502, 504})
"""Statuses a gateway gives when the application behind it did not answer in time or answered
badly: a write may have been applied, so it is looked up before it is sent again (503 and 500
say the application refused or failed it: retried)."""


def class_of_exception(exc: httpx.HTTPError) -> OutcomeClass:
    """Before the request left: transient. After it left with no answer, or with one that cannot be
    decoded: ambiguous (the caller makes that transient for a request that applies nothing). A refused
    TLS certificate, on either side: config (nothing reached the insurer's application)."""
    if certificate_failure(exc) is not None:
        return OutcomeClass.config
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return OutcomeClass.transient
    if isinstance(exc, (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError, httpx.WriteTimeout,
                        httpx.DecodingError)):
        return OutcomeClass.ambiguous
    return OutcomeClass.transient


def masked_headers(headers: httpx.Headers) -> dict[str, str]:
    return {name: ("***" if name.lower() in SECRET_HEADERS else value) for name, value in headers.items()}


def _json_or_none(answer: httpx.Response) -> Any:
    if "json" not in answer.headers.get("content-type", ""):
        return None
    try:
        return answer.json()
    except ValueError:
        return None
