"""Tokens: one provider interface, a cache per principal, refresh before expiry.

A *principal* is whoever the insurer issues the token to: the facility (client
credentials), a prescriber (refresh-token grant), later a pharmacy operator. Providers
fetch; the cache decides when. On a 401 the caller invalidates and asks once more.
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from adapter.destinations.classify import certificate_failure, transport_class
from adapter.destinations.outcome import OutcomeClass


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_at: float  # time.monotonic() seconds
    refresh_token: str | None = None
    issued_at: float = field(default_factory=time.monotonic)

    def refresh_due(self, leeway_s: float) -> bool:
        """Due within ``leeway_s`` of expiry; the leeway is capped at half the lifetime, so a
        short-lived token is still reused instead of being fetched again for every call."""
        lifetime = self.expires_at - self.issued_at
        return time.monotonic() >= self.expires_at - min(leeway_s, lifetime / 2)


class TokenError(Exception):
    """A token could not be had. ``klass`` says whether to retry (transient) or not (auth)."""

    def __init__(self, message: str, klass: OutcomeClass):
        self.klass = klass
        super().__init__(message)


def _refused(exc: BaseException) -> str:
    """``": <what certificate was refused and the fix>"`` for a TLS certificate failure, else ``""``."""
    refused = certificate_failure(exc)
    return f": {refused}" if refused is not None else ""


class TokenProvider(Protocol):
    def fetch(self, principal: str) -> IssuedToken: ...


class RefreshTokenStore(Protocol):
    def get(self, principal: str) -> str | None: ...
    def put(self, principal: str, refresh_token: str) -> None: ...


def issued_token(answer: httpx.Response, what: str) -> tuple[str, float, str | None]:
    if answer.status_code in (400, 401, 403):
        raise TokenError(f"{what} refused the credentials (HTTP {answer.status_code})", OutcomeClass.auth)
    if answer.status_code != 200:
        raise TokenError(f"{what} answered HTTP {answer.status_code}", OutcomeClass.transient)
    try:
        data = answer.json()
        return str(data["access_token"]), float(data.get("expires_in", 3600)), data.get("refresh_token")
    except (ValueError, KeyError, TypeError):
        raise TokenError(f"{what} answered without access_token", OutcomeClass.transient) from None


def _post_form(http: httpx.Client, url: str, form: dict[str, str], what: str) -> httpx.Response:
    try:
        return http.post(url, data=form)
    except httpx.HTTPError as exc:
        # A lost client-credentials answer is harmless: asking again issues another token. A lost
        # refresh-grant answer is not when the insurer rotates refresh tokens (the old one is spent):
        # the next try then fails as ``auth`` with the re-login hint below.
        raise TokenError(f"{what}: {type(exc).__name__}{_refused(exc)}", transport_class(exc)) from None


class ClientCredentialsProvider:
    """Seed 001: form post of client_id and client_secret; answer ``{expires_in, access_token}``."""

    def __init__(self, http: httpx.Client, url: str, client_id: str, client_secret: str):
        self._http, self._url, self._form = http, url, {
            "grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret}

    def fetch(self, principal: str) -> IssuedToken:
        token, ttl, _ = issued_token(_post_form(self._http, self._url, self._form, "token endpoint"), "token endpoint")
        return IssuedToken(token, time.monotonic() + ttl)


class RefreshTokenProvider:
    """The doctor flow's ``/auth/server/v2/token`` refresh grant, one refresh token per prescriber.

    The prescriber's national code is the ``audience``. When the answer carries a new
    refresh token (rotation) it replaces the stored one before the access token is used.
    """

    def __init__(self, http: httpx.Client, url: str, client_id: str, store: RefreshTokenStore):
        self._http, self._url, self._client_id, self._store = http, url, client_id, store

    def fetch(self, principal: str) -> IssuedToken:
        refresh = self._store.get(principal)
        if not refresh:
            raise TokenError("no refresh token stored for this prescriber: run `adapter auth set-refresh-token`",
                             OutcomeClass.auth)
        form = {"grant_type": "refresh_token", "client_id": self._client_id, "refresh_token": refresh, "audience": principal}
        try:
            token, ttl, rotated = issued_token(_post_form(self._http, self._url, form, "refresh endpoint"), "refresh endpoint")
        except TokenError as exc:
            if exc.klass is OutcomeClass.auth:
                raise TokenError("the prescriber's refresh token was refused (expired, revoked or already used): the "
                                 "prescriber must log in to Tamin again, then `adapter auth set-refresh-token`",
                                 OutcomeClass.auth) from None
            raise
        if rotated and rotated != refresh:
            self._store.put(principal, rotated)
        return IssuedToken(token, time.monotonic() + ttl, rotated)


class TokenCache:
    """Tokens per principal, refreshed ``leeway_s`` before expiry; one fetch at a time per principal."""

    def __init__(self, provider: TokenProvider, leeway_s: float = 60.0):
        self._provider = provider
        self._leeway = leeway_s
        self._tokens: dict[str, IssuedToken] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.fetches = 0

    def _lock_for(self, principal: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(principal, threading.Lock())

    def token(self, principal: str) -> str:
        with self._lock_for(principal):
            current = self._tokens.get(principal)
            if current is None or current.refresh_due(self._leeway):
                current = self._provider.fetch(principal)
                self.fetches += 1
                self._tokens[principal] = current
            return current.access_token

    def invalidate(self, principal: str, token: str) -> None:
        """Forget ``token`` (after a 401), unless another thread already replaced it."""
        with self._lock_for(principal):
            current = self._tokens.get(principal)
            if current is not None and current.access_token == token:
                del self._tokens[principal]


@dataclass(frozen=True)
class Operator:
    """The Tamin operator account of one facility (pharmacy or paraclinic centre user)."""

    username: str
    password: str


def _read_acl_answer(answer: httpx.Response) -> tuple[str, float]:
    """The ``acl/authenticate`` answer shape is not public (research s.2.2): take ``access_token``
    or ``token``, flat or under ``data``; ``expires_in`` (seconds) defaults to 3600."""
    if answer.status_code in (400, 401, 403):
        raise TokenError(f"acl/authenticate refused the operator's credentials (HTTP {answer.status_code})",
                         OutcomeClass.auth)
    if answer.status_code != 200:
        raise TokenError(f"acl/authenticate answered HTTP {answer.status_code}", OutcomeClass.transient)
    try:
        data = answer.json()
    except ValueError:
        raise TokenError("acl/authenticate answered without JSON", OutcomeClass.transient) from None
    for node in (data, data.get("data") if isinstance(data, dict) else None):
        if not isinstance(node, dict):
            continue
        token = node.get("access_token") or node.get("token")
        if isinstance(token, str) and token:
            try:
                ttl = float(node.get("expires_in") or 3600)
            except (TypeError, ValueError):
                ttl = 3600.0
            return token, ttl
    raise TokenError("acl/authenticate answered without a token", OutcomeClass.transient)


class AclAuthenticateProvider:
    """Dispensing and paraclinic tokens (seed 001): JSON post of the facility's operator
    username/password plus this software's ``SoftwareClientID``/``SoftwareClientSecret``.

    The principal is the facility; each facility has its own operator, hence its own token."""

    def __init__(self, http: httpx.Client, url: str, software_client_id: str, software_client_secret: str,
                 operators: dict[str, Operator]):
        self._http, self._url = http, url
        self._software = {"SoftwareClientID": software_client_id, "SoftwareClientSecret": software_client_secret}
        self._operators = dict(operators)

    def fetch(self, principal: str) -> IssuedToken:
        operator = self._operators.get(principal)
        if operator is None:
            raise TokenError("no Tamin operator is configured for this facility: add it under auth.operators",
                             OutcomeClass.auth)
        body = {"username": operator.username, "password": operator.password, **self._software}
        try:
            answer = self._http.post(self._url, json=body)
        except httpx.HTTPError as exc:  # asking again only issues another token: harmless
            raise TokenError(f"acl/authenticate: {type(exc).__name__}{_refused(exc)}", transport_class(exc)) from None
        token, ttl = _read_acl_answer(answer)
        return IssuedToken(token, time.monotonic() + ttl)


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
            raise TokenError(f"DITAS token endpoint: {type(exc).__name__}{_refused(exc)}",
                             transport_class(exc)) from None

    def fetch(self, principal: str) -> IssuedToken:
        with self._lock:
            refresh = self._refresh.pop(principal, None)
        if refresh:
            try:
                token, ttl, rotated = issued_token(self._post({"grant_type": "refresh_token", "refresh_token": refresh}),
                                              "DITAS refresh")
                self.refresh_grants += 1
                return self._keep(principal, token, ttl, rotated or refresh)
            except TokenError as exc:
                if exc.klass is OutcomeClass.transient:
                    raise
        token, ttl, rotated = issued_token(self._post({"grant_type": "password", "username": self._username,
                                                  "password": self._password}), "DITAS token endpoint")
        self.password_grants += 1
        return self._keep(principal, token, ttl, rotated)

    def _keep(self, principal: str, token: str, ttl: float, refresh: str | None) -> IssuedToken:
        if refresh:
            with self._lock:
                self._refresh[principal] = refresh
        return IssuedToken(token, time.monotonic() + ttl, refresh)
