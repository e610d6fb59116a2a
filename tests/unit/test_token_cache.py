"""Token providers and the token cache against the Tamin simulator over real HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from adapter.destinations.auth import (
    ClientCredentialsProvider,
    RefreshTokenProvider,
    TokenCache,
    TokenError,
)
from adapter.destinations.outcome import OutcomeClass
from adapter.sim.server import SimServer
from adapter.sim.settings import TaminSimSettings
from adapter.sim.tamin_app import create_tamin_app
from adapter.store.db import make_engine, make_sessionmaker, upgrade
from adapter.store.refresh_tokens import DbRefreshTokenStore

CLIENT_ID, SECRET = "adapter-test", "adapter-test-secret"
FACILITY = "1234567"
DOC_NC = "1234567891"
DETAIL = f"/api/v2/ep/1/{DOC_NC}/2000200092/detail"  # any authenticated API call


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(create_tamin_app(TaminSimSettings())) as server:
        yield server


@pytest.fixture
def http(sim: SimServer) -> Iterator[httpx.Client]:
    sim.app.state.registry.reset()
    with httpx.Client(base_url=sim.base_url, timeout=5.0) as client:
        yield client


def provider(http: httpx.Client, secret: str = SECRET) -> ClientCredentialsProvider:
    return ClientCredentialsProvider(http, str(http.base_url).rstrip("/") + "/auth/server/token", CLIENT_ID, secret)


def sim_stats(http: httpx.Client) -> dict:
    return http.get("/_sim/stats").json()


def works(http: httpx.Client, token: str) -> bool:
    """Does the simulator take this access token for an API call?"""
    status = http.get(DETAIL, headers={"Authorization": f"Bearer {token}"}).status_code
    assert status in (200, 401)
    return status == 200


# ----- client credentials + cache ---------------------------------------------------------
def test_one_fetch_serves_many_calls(http: httpx.Client) -> None:
    cache = TokenCache(provider(http), leeway_s=60)
    tokens = {cache.token(FACILITY) for _ in range(25)}
    assert len(tokens) == 1
    assert cache.fetches == 1
    assert sim_stats(http)["tokens_issued"] == 1
    assert works(http, tokens.pop())


def test_principals_get_their_own_tokens(http: httpx.Client) -> None:
    cache = TokenCache(provider(http), leeway_s=60)
    first, second = cache.token("facility-a"), cache.token("facility-b")
    assert first != second
    assert cache.token("facility-a") == first
    assert cache.fetches == 2


def test_token_within_leeway_of_expiry_is_refreshed_before_use(http: httpx.Client) -> None:
    http.post("/_sim/faults", json={"token_ttl_s": 2.0}).raise_for_status()
    cache = TokenCache(provider(http), leeway_s=0.8)  # fresh for ~1.2 s, then refreshed early
    first = cache.token(FACILITY)
    assert cache.token(FACILITY) == first and cache.fetches == 1
    time.sleep(1.35)
    assert works(http, first), "the old token must still be valid at Tamin: this is an early refresh"
    second = cache.token(FACILITY)
    assert second != first
    assert cache.fetches == 2
    assert sim_stats(http)["tokens_issued"] == 2
    assert works(http, second)


def test_leeway_longer_than_the_token_life_still_reuses_the_token(http: httpx.Client) -> None:
    http.post("/_sim/faults", json={"token_ttl_s": 2.0}).raise_for_status()
    cache = TokenCache(provider(http), leeway_s=60)  # capped at half the 2 s lifetime
    first = cache.token(FACILITY)
    assert [cache.token(FACILITY) for _ in range(20)] == [first] * 20
    assert cache.fetches == 1
    time.sleep(1.1)
    assert cache.token(FACILITY) != first and cache.fetches == 2


def test_expired_token_is_never_served(http: httpx.Client) -> None:
    http.post("/_sim/faults", json={"token_ttl_s": 0.2}).raise_for_status()
    cache = TokenCache(provider(http), leeway_s=0)
    first = cache.token(FACILITY)
    time.sleep(0.3)
    second = cache.token(FACILITY)
    assert second != first and works(http, second) and not works(http, first)


def test_invalidate_after_401_forces_exactly_one_new_fetch(http: httpx.Client) -> None:
    cache = TokenCache(provider(http), leeway_s=60)
    first = cache.token(FACILITY)
    http.post("/_sim/faults", json={"revoke_tokens": True}).raise_for_status()
    assert not works(http, first)  # the 401
    cache.invalidate(FACILITY, first)
    second = cache.token(FACILITY)
    assert second != first and works(http, second)
    assert cache.token(FACILITY) == second
    assert cache.fetches == 2
    assert sim_stats(http)["tokens_issued"] == 2


def test_invalidate_of_a_token_already_replaced_keeps_the_new_one(http: httpx.Client) -> None:
    cache = TokenCache(provider(http), leeway_s=60)
    first = cache.token(FACILITY)
    cache.invalidate(FACILITY, first)
    second = cache.token(FACILITY)
    cache.invalidate(FACILITY, first)  # a slower thread reports its 401 for the old token
    assert cache.token(FACILITY) == second
    assert cache.fetches == 2


def test_concurrent_callers_cause_one_fetch(http: httpx.Client) -> None:
    cache = TokenCache(provider(http), leeway_s=60)
    threads_n = 16
    barrier = threading.Barrier(threads_n)
    got: list[str] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            barrier.wait(timeout=5)
            got.append(cache.token(FACILITY))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not errors
    assert len(got) == threads_n and len(set(got)) == 1
    assert cache.fetches == 1
    assert sim_stats(http)["tokens_issued"] == 1


def test_wrong_client_secret_is_an_auth_error(http: httpx.Client) -> None:
    cache = TokenCache(provider(http, secret="not-the-secret"), leeway_s=60)
    with pytest.raises(TokenError) as caught:
        cache.token(FACILITY)
    assert caught.value.klass is OutcomeClass.auth
    assert "not-the-secret" not in str(caught.value)
    assert sim_stats(http)["tokens_issued"] == 0


def test_token_endpoint_down_is_transient(http: httpx.Client) -> None:
    http.post("/_sim/faults", json={"down_for_s": 5}).raise_for_status()
    try:
        with pytest.raises(TokenError) as caught:
            TokenCache(provider(http)).token(FACILITY)
        assert caught.value.klass is OutcomeClass.transient
    finally:
        http.post("/_sim/reset").raise_for_status()


def test_unreachable_token_endpoint_is_transient() -> None:
    with httpx.Client(timeout=1.0) as client:
        dead = ClientCredentialsProvider(client, "http://127.0.0.1:9/auth/server/token", CLIENT_ID, SECRET)
        with pytest.raises(TokenError) as caught:
            TokenCache(dead).token(FACILITY)
    assert caught.value.klass is OutcomeClass.transient


# ----- refresh-token grant + encrypted store ------------------------------------------------
@pytest.fixture
def token_store(db_url: str) -> Iterator[tuple[DbRefreshTokenStore, object]]:
    upgrade(db_url)
    engine = make_engine(db_url)
    store = DbRefreshTokenStore(make_sessionmaker(engine), Fernet.generate_key(), "tamin")
    yield store, engine
    engine.dispose()


def refresh_provider(http: httpx.Client, store: DbRefreshTokenStore) -> RefreshTokenProvider:
    return RefreshTokenProvider(http, str(http.base_url).rstrip("/") + "/auth/server/v2/token", CLIENT_ID, store)


def test_refresh_grant_rotates_and_stores_the_new_token_encrypted(http: httpx.Client, token_store) -> None:
    store, engine = token_store
    first = http.post("/_sim/refresh-tokens", json={"audience": DOC_NC}).json()["refresh_token"]
    store.put(DOC_NC, first)
    cache = TokenCache(refresh_provider(http, store), leeway_s=60)

    access = cache.token(DOC_NC)
    assert works(http, access)
    rotated = store.get(DOC_NC)
    assert rotated and rotated != first

    with engine.connect() as conn:  # type: ignore[attr-defined]
        rows = conn.execute(text("SELECT principal_ref, token_encrypted FROM refresh_tokens")).all()
    assert len(rows) == 1
    principal_ref, raw = rows[0]
    assert rotated not in raw and first not in raw
    assert DOC_NC not in principal_ref

    form = {"grant_type": "refresh_token", "client_id": CLIENT_ID, "audience": DOC_NC}
    old = http.post("/auth/server/v2/token", data={**form, "refresh_token": first})
    assert (old.status_code, old.json()) == (400, {"error": "invalid_grant"})

    # the stored (rotated) one is what the next fetch uses
    cache.invalidate(DOC_NC, access)
    assert works(http, cache.token(DOC_NC))
    assert store.get(DOC_NC) not in (first, rotated)
    assert cache.fetches == 2


def test_refresh_grant_without_a_stored_token_is_an_auth_error(http: httpx.Client, token_store) -> None:
    store, _ = token_store
    with pytest.raises(TokenError) as caught:
        TokenCache(refresh_provider(http, store)).token(DOC_NC)
    assert caught.value.klass is OutcomeClass.auth
    assert sim_stats(http)["requests"].get("refresh", 0) == 0


def test_refresh_grant_with_a_used_token_is_an_auth_error(http: httpx.Client, token_store) -> None:
    store, _ = token_store
    first = http.post("/_sim/refresh-tokens", json={"audience": DOC_NC}).json()["refresh_token"]
    form = {"grant_type": "refresh_token", "client_id": CLIENT_ID, "audience": DOC_NC, "refresh_token": first}
    assert http.post("/auth/server/v2/token", data=form).status_code == 200  # someone else used it
    store.put(DOC_NC, first)
    with pytest.raises(TokenError) as caught:
        TokenCache(refresh_provider(http, store)).token(DOC_NC)
    assert caught.value.klass is OutcomeClass.auth
    assert store.get(DOC_NC) == first  # nothing stored over it
