"""The one HTTP exchange (adapter.destinations.http), through httpx.MockTransport: token and its
refresh, every error class, Retry-After, the deadline, the ambiguous rule, the recorder.

These run once here instead of once per client; the last two tests are the divergences the
DITAS client had before it went through the exchange (no deadline, unreadable save = transient).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapter.destinations.auth import IssuedToken, TokenCache, TokenError
from adapter.destinations.http import Endpoint, Exchange, ExchangeRecord, Request
from adapter.destinations.outcome import OutcomeClass
from tests.unit.sepas_support import make_destination
from tests.unit.test_sepas_golden import CASES, mapped_job

Handler = Callable[[httpx.Request], httpx.Response]


class Tokens:
    """A token provider that hands out tok-1, tok-2, ... (or refuses); ``refetch_s``: how long
    every fetch after the first takes."""

    def __init__(self, refuse: OutcomeClass | None = None, refetch_s: float = 0.0):
        self.issued = 0
        self.refuse = refuse
        self.refetch_s = refetch_s

    def fetch(self, principal: str) -> IssuedToken:
        if self.refuse is not None:
            raise TokenError("the token endpoint refused the credentials", self.refuse)
        if self.issued:
            time.sleep(self.refetch_s)
        self.issued += 1
        return IssuedToken(f"tok-{self.issued}", time.monotonic() + 3600)


class Far:
    """The far side: answers with ``handler`` and keeps every request it saw."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.seen: list[httpx.Request] = []
        self.auth: list[str | None] = []  # as sent (a resent request is the same object, its header changed)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        self.auth.append(request.headers.get("authorization"))
        return self.handler(request)


def exchange(far: Far, tokens: Tokens | None = None, records: list[ExchangeRecord] | None = None,
             **endpoint: Any) -> Exchange:
    http = httpx.Client(transport=httpx.MockTransport(far))
    settings = Endpoint("http://insurer", **{"idempotency_header": "X-Idempotency-Key", **endpoint})
    return Exchange(http, settings, TokenCache(tokens or Tokens()),
                    records.append if records is not None else None)


def ok(_: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"data": {"ok": True}})


POST = Request("POST", "/api/send/0012345679", "/api/send/{patient}", json={"patient": "0012345679"},
               principal="facility", idempotency_key="key-1")
GET = dataclasses.replace(POST, method="GET", json=None)
POST_BODY = b'{"patient":"0012345679"}'


def test_token_scheme_idempotency_key_and_a_phi_free_summary() -> None:
    far = Far(ok)
    got = exchange(far).send(POST)
    assert got.outcome.klass is OutcomeClass.accepted and got.parsed == {"data": {"ok": True}}
    sent = far.seen[0]
    assert sent.headers["authorization"] == "Bearer tok-1" and sent.headers["x-idempotency-key"] == "key-1"
    assert sent.url.path == "/api/send/0012345679"
    summary = repr((got.outcome.request, got.outcome.response, got.outcome.message))
    assert "0012345679" not in summary and got.outcome.request["route"] == "/api/send/{patient}"
    assert got.outcome.request["token_refreshed"] is False and got.outcome.response == {"status": 200}


def test_a_bare_token_when_the_scheme_is_empty() -> None:
    far = Far(ok)
    exchange(far, auth_scheme="").send(GET)
    assert far.seen[0].headers["authorization"] == "tok-1"


def test_a_401_refreshes_the_token_once_and_sends_again() -> None:
    tokens = Tokens()
    far = Far(lambda r: httpx.Response(401) if r.headers["authorization"] == "Bearer tok-1" else ok(r))
    got = exchange(far, tokens).send(POST)
    assert got.outcome.klass is OutcomeClass.accepted and got.outcome.request["token_refreshed"] is True
    assert far.auth == ["Bearer tok-1", "Bearer tok-2"]
    assert len(far.seen) == 2 and far.seen[1].content == POST_BODY  # the same body, sent again
    assert tokens.issued == 2


def first_token_refused(request: httpx.Request) -> httpx.Response:
    return httpx.Response(401) if request.headers["authorization"] == "Bearer tok-1" else ok(request)


class Timeouts(Far):
    """Also keeps the read timeout each request went out with (the resent one is the same object)."""

    def __init__(self, handler: Handler):
        super().__init__(handler)
        self.read: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.read.append(request.extensions["timeout"]["read"])
        return super().__call__(request)


def test_the_request_resent_after_a_401_keeps_to_the_deadline() -> None:
    far = Timeouts(first_token_refused)
    got = exchange(far, Tokens(refetch_s=0.5)).send(dataclasses.replace(POST, deadline=time.monotonic() + 3))
    assert got.outcome.klass is OutcomeClass.accepted and len(far.read) == 2
    assert far.read[0] <= 3 and far.read[1] <= far.read[0] - 0.4, far.read  # what was left after the refresh


def test_a_401_with_no_time_left_for_the_resend_waits_and_sends_nothing_more() -> None:
    far = Far(first_token_refused)
    got = exchange(far, Tokens(refetch_s=0.3)).send(dataclasses.replace(POST, deadline=time.monotonic() + 0.25))
    assert got.outcome.klass is OutcomeClass.waiting and len(far.seen) == 1
    assert got.outcome.request["token_refreshed"] is True


def test_a_401_with_a_fresh_token_too_is_auth_with_the_endpoints_hint() -> None:
    far = Far(lambda r: httpx.Response(401))
    got = exchange(far, auth_hint="check the DITAS user").send(POST)
    assert got.outcome.klass is OutcomeClass.auth and len(far.seen) == 2
    assert got.outcome.message == "HTTP 401 twice, even with a fresh token: check the DITAS user"


@pytest.mark.parametrize("refuse", [OutcomeClass.auth, OutcomeClass.transient])
def test_a_token_that_cannot_be_had_sends_nothing(refuse: OutcomeClass) -> None:
    far = Far(ok)
    got = exchange(far, Tokens(refuse)).send(POST)
    assert got.outcome.klass is refuse and far.seen == [] and "refused" in got.outcome.message


@pytest.mark.parametrize("status, klass", [(503, OutcomeClass.transient), (429, OutcomeClass.transient),
                                           (500, OutcomeClass.transient), (408, OutcomeClass.transient),
                                           (400, OutcomeClass.rejected), (404, OutcomeClass.rejected)])
def test_status_classes_and_retry_after(status: int, klass: OutcomeClass) -> None:
    far = Far(lambda r: httpx.Response(status, headers={"Retry-After": "7"}, json={"problems": ["no"]}))
    got = exchange(far).send(POST)
    assert (got.outcome.klass, got.outcome.retry_after_s, got.status) == (klass, 7.0, status)
    assert got.parsed == {"problems": ["no"]}  # a refusal's body, for the client's reader


@pytest.mark.parametrize("error, post_class, get_class", [
    (httpx.ConnectError("refused"), OutcomeClass.transient, OutcomeClass.transient),
    (httpx.ConnectTimeout("slow"), OutcomeClass.transient, OutcomeClass.transient),
    (httpx.ReadTimeout("no answer"), OutcomeClass.ambiguous, OutcomeClass.transient),
    (httpx.RemoteProtocolError("cut"), OutcomeClass.ambiguous, OutcomeClass.transient),
])
def test_a_lost_answer_is_ambiguous_only_for_what_may_have_applied(error: Exception, post_class: OutcomeClass,
                                                                   get_class: OutcomeClass) -> None:
    def fail(_: httpx.Request) -> httpx.Response:
        raise error

    assert exchange(Far(fail)).send(POST).outcome.klass is post_class
    assert exchange(Far(fail)).send(GET).outcome.klass is get_class
    a_read = dataclasses.replace(POST, applies=False)  # a POST that changes nothing (a validator, a lookup)
    assert exchange(Far(fail)).send(a_read).outcome.klass is get_class


@pytest.mark.parametrize("answer", [
    httpx.Response(200, text="<html>gateway</html>", headers={"content-type": "text/html"}),
    httpx.Response(200, text="{not json", headers={"content-type": "application/json"}),
])
def test_an_unreadable_2xx_is_ambiguous_for_a_post_and_transient_for_a_read(answer: httpx.Response) -> None:
    post = exchange(Far(lambda r: answer)).send(POST)
    assert post.outcome.klass is OutcomeClass.ambiguous and post.parsed is None
    assert exchange(Far(lambda r: answer)).send(GET).outcome.klass is OutcomeClass.transient


def test_timeouts_are_cut_to_the_deadline() -> None:
    far = Far(ok)
    exchange(far, connect_timeout_s=5, read_timeout_s=30).send(dataclasses.replace(POST, deadline=time.monotonic() + 2))
    timeout = far.seen[0].extensions["timeout"]
    assert 0 < timeout["read"] <= 2 and 0 < timeout["connect"] <= 2
    exchange(far, connect_timeout_s=5, read_timeout_s=30).send(POST)  # no deadline: the configured ones
    assert far.seen[1].extensions["timeout"]["read"] == 30 and far.seen[1].extensions["timeout"]["connect"] == 5


def test_no_time_left_sends_nothing_and_waits() -> None:
    far = Far(ok)
    got = exchange(far).send(dataclasses.replace(POST, deadline=time.monotonic() + 0.01))
    assert got.outcome.klass is OutcomeClass.waiting and far.seen == []


def test_the_recorder_gets_request_and_answer_with_secrets_masked() -> None:
    records: list[ExchangeRecord] = []
    far = Far(lambda r: httpx.Response(200, json={"data": 1}, headers={"set-cookie": "s=1"}))
    exchange(far, records=records).send(dataclasses.replace(POST, headers={"pid": "package-id"}))
    [record] = records
    assert (record.method, record.route, record.status, record.outcome) == ("POST", "/api/send/{patient}", 200,
                                                                            "accepted")
    assert record.request_headers["authorization"] == "***" and record.request_headers["pid"] == "***"
    assert record.response_headers["set-cookie"] == "***"
    assert b"0012345679" in record.request_body and record.response_body == b'{"data":1}'

    def cut(_: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer")

    exchange(Far(cut), records=records).send(POST)
    assert records[1].status is None and records[1].outcome == "ambiguous"
    assert records[1].request_body == POST_BODY and records[1].request_headers["authorization"] == "***"


def test_the_refused_first_try_is_recorded_too() -> None:
    records: list[ExchangeRecord] = []
    exchange(Far(first_token_refused), records=records).send(POST)
    assert [(r.status, r.outcome) for r in records] == [(401, "auth"), (200, "accepted")]


def test_a_failing_recorder_does_not_change_the_outcome() -> None:
    def broken(_: ExchangeRecord) -> None:
        raise OSError("capture disk full")

    http = httpx.Client(transport=httpx.MockTransport(Far(ok)))
    got = Exchange(http, Endpoint("http://insurer"), TokenCache(Tokens()), broken).send(POST)
    assert got.outcome.klass is OutcomeClass.accepted  # sent and applied: never "transient", never resent


# ----- what the DITAS client did differently before it used the exchange ---------------------
def ditas(handler: Callable[[httpx.Request], httpx.Response], tmp_path: Path) -> tuple[Any, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/oauth/token"):
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        if "Validator" in request.url.path:
            return httpx.Response(200, json={"result": {"data": []}})
        return handler(request)

    destination, _ = make_destination(tmp_path, transport=httpx.MockTransport(answer))
    return destination, seen


def medication_job() -> Any:
    return mapped_job(next(c for c in CASES if c.name.startswith("medication")))


def test_a_sepas_save_keeps_to_the_claims_deadline(tmp_path: Path) -> None:
    destination, seen = ditas(lambda r: httpx.Response(200, json={"result": {"data": {"CompositionUID": "c-1"}}}),
                              tmp_path)
    job = dataclasses.replace(medication_job(), deadline=time.monotonic() + 3)
    assert destination.send(job).klass is OutcomeClass.accepted
    calls = [r for r in seen if not r.url.path.endswith("/oauth/token")]
    assert len(calls) == 2  # validate, then save
    assert all(0 < r.extensions["timeout"]["read"] <= 3 for r in calls), [r.extensions["timeout"] for r in calls]


def test_an_unreadable_answer_to_a_sepas_save_is_ambiguous_not_resent_blindly(tmp_path: Path) -> None:
    destination, _ = ditas(lambda r: httpx.Response(200, text="<html>proxy</html>",
                                                    headers={"content-type": "text/html"}), tmp_path)
    outcome = destination.send(medication_job())
    assert outcome.klass is OutcomeClass.ambiguous, outcome.message
