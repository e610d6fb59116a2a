"""The embedded SQLite kombu transport: at-least-once across crashes.

Several tests run consumers/publishers in subprocesses, because the point of
the transport is what happens across processes (kill -9, concurrent writers).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import kombu
import pytest

from adapter.broker.sqlite_transport import SCHEME, database_path, register

REPO_ROOT = Path(__file__).resolve().parents[2]
QUEUE = "jobs"


@pytest.fixture(autouse=True)
def _registered() -> None:
    register()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"{SCHEME}:///{tmp_path / 'queue.db'}"  # four slashes: an absolute path


def connect(url: str, **options: object) -> kombu.Connection:
    return kombu.Connection(url, transport_options=options)


def queue() -> kombu.Queue:
    return kombu.Queue(QUEUE, routing_key=QUEUE)


def publish(conn: kombu.Connection, *bodies: object) -> None:
    producer = kombu.Producer(conn.default_channel)
    for body in bodies:
        producer.publish(body, routing_key=QUEUE, serializer="json")


def size(conn: kombu.Connection) -> int:
    return queue()(conn.default_channel).queue_declare().message_count


def drain(
    conn: kombu.Connection,
    *,
    ack: bool,
    idle: float = 0.3,
    limit: int | None = None,
    prefetch_count: int | None = None,
    deadline: float = 30.0,
) -> list[kombu.Message]:
    """Consume until ``idle`` seconds pass with no message (or ``limit``)."""
    got: list[kombu.Message] = []

    def on_message(body: object, message: kombu.Message) -> None:
        got.append(message)
        if ack:
            message.ack()

    end = time.monotonic() + deadline
    with kombu.Consumer(
        conn.default_channel,
        [queue()],
        callbacks=[on_message],
        accept=["json"],
        prefetch_count=prefetch_count,
    ):
        while time.monotonic() < end and (limit is None or len(got) < limit):
            try:
                conn.drain_events(timeout=idle)
            except socket.timeout:
                break
    return got


def bodies(messages: list[kombu.Message]) -> list[object]:
    return [m.decode() for m in messages]


def redelivered(message: kombu.Message) -> bool:
    return bool(message.delivery_info.get("redelivered"))


def run_python(code: str, *args: str, **popen: object) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args], env=env, **popen
    )


# -- URL and registration ------------------------------------------------------


def test_url_forms_resolve_like_sqlalchemy(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert database_path(f"{SCHEME}:////abs/q.db") == Path("/abs/q.db")
    assert database_path(f"{SCHEME}:///var/q.db") == tmp_path / "var" / "q.db"
    with pytest.raises(ValueError):
        database_path(f"{SCHEME}://")


def test_relative_url_creates_file_under_cwd(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with connect(f"{SCHEME}:///var/queue.db") as conn:
        publish(conn, {"n": 1})
        assert size(conn) == 1
    assert (tmp_path / "var" / "queue.db").is_file()


def test_database_is_in_wal_mode(url: str) -> None:
    with connect(url) as conn:
        publish(conn, {"n": 1})
    path = database_path(url)
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


# -- basic flow -----------------------------------------------------------------


def test_publish_consume_ack_in_fifo_order(url: str) -> None:
    with connect(url) as conn:
        publish(conn, {"n": 1}, {"n": 2}, {"n": 3})
        assert size(conn) == 3
        got = drain(conn, ack=True)
        assert bodies(got) == [{"n": 1}, {"n": 2}, {"n": 3}]
        assert not any(redelivered(m) for m in got)
        assert size(conn) == 0
    with connect(url) as conn:  # acked means gone, also for a new connection
        assert drain(conn, ack=True) == []


def test_publish_together_commits_all_or_none(url: str) -> None:
    with connect(url) as conn:
        queue()(conn.default_channel).declare()
        with pytest.raises(RuntimeError), conn.default_channel.publish_together():
            publish(conn, {"n": 1}, {"n": 2})
            raise RuntimeError("the group fails before its commit")
        assert size(conn) == 0  # neither message of the failed group is on the queue
        with connect(url) as other:
            assert size(other) == 0  # opened (schema checked) before the block takes the write lock
            with conn.default_channel.publish_together():
                publish(conn, {"n": 3}, {"n": 4})
                assert size(other) == 0  # not visible to another connection before the block ends
        assert bodies(drain(conn, ack=True)) == [{"n": 3}, {"n": 4}]


def test_drain_events_raises_socket_timeout_when_idle(url: str) -> None:
    with connect(url) as conn:
        with kombu.Consumer(conn.default_channel, [queue()], accept=["json"]):
            started = time.monotonic()
            with pytest.raises(socket.timeout):
                conn.drain_events(timeout=0.3)
            assert time.monotonic() - started < 2


def test_unacked_message_returns_after_clean_close(url: str) -> None:
    with connect(url, lease_seconds=600) as conn:
        publish(conn, {"n": 1})
        assert bodies(drain(conn, ack=False)) == [{"n": 1}]
    # The lease is long: only the close can have made it visible again.
    with connect(url, lease_seconds=600) as conn:
        got = drain(conn, ack=True)
        assert bodies(got) == [{"n": 1}]
        assert redelivered(got[0])
        assert size(conn) == 0


def test_leased_message_is_invisible_then_expires(url: str) -> None:
    with connect(url, lease_seconds=1.0) as first, connect(url) as second:
        publish(first, {"n": 1})
        held = first.default_channel.basic_get(QUEUE)
        assert held is not None
        assert second.default_channel.basic_get(QUEUE) is None
        time.sleep(1.1)
        again = second.default_channel.basic_get(QUEUE)
        assert again is not None and again.decode() == {"n": 1}
        assert again.delivery_info["redelivered"] is True
        # The stale holder's requeue must not expose a message it lost.
        held.requeue()
        assert second.default_channel.basic_get(QUEUE) is None
        again.ack()
        assert size(second) == 0


def test_requeue_makes_message_visible_at_once(url: str) -> None:
    with connect(url, lease_seconds=600) as conn:
        publish(conn, {"n": 1}, {"n": 2})
        channel = conn.default_channel
        first = channel.basic_get(QUEUE)
        assert first.decode() == {"n": 1}
        first.requeue()
        again = channel.basic_get(QUEUE)
        assert again.decode() == {"n": 1}  # keeps its place at the head
        assert again.delivery_info["redelivered"] is True
        again.ack()
        assert size(conn) == 1


def test_reject_without_requeue_moves_to_dead_table(url: str) -> None:
    with connect(url) as conn:
        publish(conn, {"n": 1})
        message = conn.default_channel.basic_get(QUEUE)
        message.reject()
        assert size(conn) == 0
        assert conn.default_channel.basic_get(QUEUE) is None
    db = sqlite3.connect(database_path(url))
    rows = db.execute("SELECT queue, deliveries FROM dead").fetchall()
    assert rows == [(QUEUE, 1)]


def test_reject_without_dead_letter_deletes(url: str) -> None:
    with connect(url, dead_letter=False) as conn:
        publish(conn, {"n": 1})
        conn.default_channel.basic_get(QUEUE).reject()
        assert size(conn) == 0
    db = sqlite3.connect(database_path(url))
    assert db.execute("SELECT COUNT(*) FROM dead").fetchone() == (0,)


def test_reject_with_requeue_redelivers(url: str) -> None:
    with connect(url, lease_seconds=600) as conn:
        publish(conn, {"n": 1})
        conn.default_channel.basic_get(QUEUE).reject(requeue=True)
        again = conn.default_channel.basic_get(QUEUE)
        assert again.decode() == {"n": 1} and redelivered(again)


def test_prefetch_count_limits_unacked_deliveries(url: str) -> None:
    with connect(url) as conn:
        publish(conn, *({"n": n} for n in range(5)))
        held = drain(conn, ack=False, prefetch_count=2)
        assert bodies(held) == [{"n": 0}, {"n": 1}]
        held[0].ack()
        assert size(conn) == 4
        more = drain(conn, ack=False, prefetch_count=2)
        # The window is the channel's: held[1] is still unacked.
        assert bodies(more) == [{"n": 2}]


def test_prefetch_window_reopens_on_ack(url: str) -> None:
    with connect(url) as conn:
        publish(conn, *({"n": n} for n in range(3)))
        got: list[kombu.Message] = []
        with kombu.Consumer(
            conn.default_channel, [queue()], callbacks=[lambda b, m: got.append(m)],
            accept=["json"], prefetch_count=1,
        ):
            conn.drain_events(timeout=1)
            with pytest.raises(socket.timeout):
                conn.drain_events(timeout=0.3)
            assert len(got) == 1
            got[0].ack()
            conn.drain_events(timeout=1)
            assert bodies(got) == [{"n": 0}, {"n": 1}]


def test_size_counts_leased_messages_and_purge_keeps_them(url: str) -> None:
    with connect(url, lease_seconds=600) as conn:
        publish(conn, {"n": 1}, {"n": 2}, {"n": 3})
        channel = conn.default_channel
        leased = channel.basic_get(QUEUE)
        assert size(conn) == 3  # visible + leased
        assert channel.queue_purge(QUEUE) == 2  # only the visible ones
        assert size(conn) == 1
        leased.ack()
        assert size(conn) == 0


# -- across processes -----------------------------------------------------------

_CONSUME_AND_HANG = """
    import sys, time, kombu
    from adapter.broker.sqlite_transport import register
    register()
    conn = kombu.Connection(sys.argv[1], transport_options={"lease_seconds": 2})
    def on_message(body, message):
        print("GOT", body["n"], flush=True)
        time.sleep(3600)  # never acks: killed here
    queue = kombu.Queue("jobs", routing_key="jobs")
    with kombu.Consumer(conn.default_channel, [queue], callbacks=[on_message],
                        accept=["json"]):
        conn.drain_events(timeout=30)
"""


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "subprocess printed nothing in time"
    return proc.stdout.readline().decode().strip()


def test_message_survives_consumer_kill_9(url: str) -> None:
    with connect(url) as conn:
        publish(conn, {"n": 42})
    proc = run_python(_CONSUME_AND_HANG, url, stdout=subprocess.PIPE)
    try:
        assert _read_line(proc, timeout=30) == "GOT 42"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    with connect(url) as conn:
        assert size(conn) == 1  # still there, leased by the dead consumer
        got = drain(conn, ack=True, idle=5, limit=1)
        assert bodies(got) == [{"n": 42}]
        assert redelivered(got[0])
        assert size(conn) == 0


_PUBLISH_MANY = """
    import sys, kombu
    from adapter.broker.sqlite_transport import register
    register()
    name, count = sys.argv[2], int(sys.argv[3])
    with kombu.Connection(sys.argv[1]) as conn:
        producer = kombu.Producer(conn.default_channel)
        for i in range(count):
            producer.publish({"p": name, "i": i}, routing_key="jobs")
"""


def test_concurrent_publishers_lose_nothing_while_consuming(url: str) -> None:
    per_publisher = 500
    with connect(url) as conn:  # create the file before the race starts
        size(conn)
    publishers = [
        run_python(_PUBLISH_MANY, url, name, str(per_publisher)) for name in ("a", "b")
    ]
    seen: list[tuple[str, int]] = []
    with connect(url) as conn:
        while len(seen) < 2 * per_publisher:
            batch = drain(conn, ack=True, idle=3, limit=2 * per_publisher - len(seen))
            if not batch and all(p.poll() is not None for p in publishers):
                break
            seen.extend((m.decode()["p"], m.decode()["i"]) for m in batch)
        for p in publishers:
            assert p.wait(timeout=60) == 0
        assert size(conn) == 0
    assert len(seen) == len(set(seen)) == 2 * per_publisher
    for name in ("a", "b"):  # FIFO per publisher
        assert [i for p, i in seen if p == name] == list(range(per_publisher))
