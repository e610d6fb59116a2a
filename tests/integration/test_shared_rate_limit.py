"""``max_rps`` on PostgreSQL is one allowance for every dispatcher process: the bucket is a row,
taken under its lock and refilled from the database's clock. Two buckets here stand for two
processes; the several-dispatcher test checks the same through two real `adapter run`s."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from adapter.outage.shared_bucket import SharedTokenBucket
from adapter.store.db import make_engine, make_sessionmaker, upgrade
from adapter.store.models import RateBucket
from tests.support import services as svc

pytestmark = pytest.mark.integration


@pytest.fixture
def store_url(pg_admin_url: str) -> Iterator[str]:
    """A new migrated PostgreSQL store per test: each test reads the rate_buckets rows it made."""
    name = svc.unique_name()
    url = svc.create_database(pg_admin_url, name)
    upgrade(url)
    yield url
    svc.drop_database(pg_admin_url, name)


def test_two_processes_draw_on_one_allowance(store_url: str) -> None:
    engines = [make_engine(store_url) for _ in range(2)]  # one engine each, as two processes have
    buckets = [SharedTokenBucket(make_sessionmaker(engine), "tamin", rate=20, capacity=2) for engine in engines]
    taken = [0, 0]
    stop = threading.Event()

    def draw(i: int) -> None:
        while not stop.is_set():
            taken[i] += buckets[i].take_up_to(3)
            time.sleep(0.005)

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(2)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    for engine in engines:
        engine.dispose()
    total = sum(taken)
    assert total <= 2 + 20 * elapsed + 1, f"{taken} in {elapsed:.2f}s: more than one allowance"  # per process it would be twice
    assert total >= 0.8 * 20 * 2.0, f"{taken} in {elapsed:.2f}s: the allowance is not used"
    assert min(taken) > 0, "one process starved"


def test_tokens_given_back_and_the_burst_cap(store_url: str) -> None:
    engine = make_engine(store_url)
    sessions = make_sessionmaker(engine)
    try:
        bucket = SharedTokenBucket(sessions, "sepas", rate=1, capacity=3)
        assert bucket.take_up_to(10) == 3  # a new row starts full: one burst
        assert bucket.take_up_to(1) == 0 and bucket.wait_s() > 0.5
        bucket.give_back(2)
        assert bucket.take_up_to(5) == 2
        time.sleep(1.2)
        assert bucket.take_up_to(5) == 1  # refilled at 1/s
        with sessions() as session:
            assert session.scalar(select(RateBucket.destination)) == "sepas"
        other = SharedTokenBucket(sessions, "tamin", rate=1, capacity=1)
        assert other.take_up_to(1) == 1, "each destination its own row"
    finally:
        engine.dispose()


def test_a_store_that_does_not_answer_fails_the_take_but_not_the_give_back(caplog: pytest.LogCaptureFixture) -> None:
    """A take must fail (nothing may be sent without a token); a give-back runs after a claim
    and must not fail it (a token not returned only slows the next sends a little)."""
    engine = make_engine("postgresql+psycopg://adapter@127.0.0.1:1/nowhere?connect_timeout=2")
    bucket = SharedTokenBucket(make_sessionmaker(engine), "tamin", rate=10, capacity=2)
    try:
        with pytest.raises(OperationalError):
            bucket.take_up_to(1)
        bucket.give_back(1)
    finally:
        engine.dispose()
    assert "could not return 1 rate-limit tokens of tamin (OperationalError)" in caplog.text
