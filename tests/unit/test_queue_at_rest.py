"""The embedded queue's file: private (mode 600), message bodies encrypted with the payload key,
a size cap that refuses a publish instead of filling the disk, and free space given back."""

from __future__ import annotations

import datetime as dt
import json
import socket
import sqlite3
import stat
from pathlib import Path

import kombu
import pytest
from cryptography.fernet import Fernet

from adapter.broker.connection import publish_bodies
from adapter.broker.sqlite_transport import SCHEME, QueueFull, register
from adapter.config import BrokerConfig
from adapter.samples.generate import generate

QUEUE = "his.events"


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    register()
    monkeypatch.delenv("ADAPTER_PAYLOAD_KEY", raising=False)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


def broker(path: Path, **fields: object) -> BrokerConfig:
    return BrokerConfig(url=f"{SCHEME}:///{path}", queue=QUEUE, **fields)  # type: ignore[arg-type]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def take_all(path: Path, **options: object) -> list[bytes]:
    """Consume and ack every message now in the queue; the raw bodies."""
    got: list[bytes] = []

    def on_message(message: kombu.Message) -> None:  # raw bodies, as the runner takes them
        got.append(message.body)
        message.ack()

    with kombu.Connection(f"{SCHEME}:///{path}", transport_options=options) as conn:
        with kombu.Consumer(conn.default_channel, [kombu.Queue(QUEUE, routing_key=QUEUE)], on_message=on_message):
            while True:
                try:
                    conn.drain_events(timeout=0.3)
                except socket.timeout:
                    return got


def event_line() -> tuple[bytes, str]:
    line = generate(dt.datetime.now(dt.timezone.utc), patients=1).lines[0]
    return line, json.loads(line)["payload"]["patient"]["identity"]["value"]


def pragma(path: Path, name: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"PRAGMA {name}").fetchone()[0])


# -- mode 600 -------------------------------------------------------------------------------


def test_a_new_queue_file_and_its_wal_are_private(path: Path) -> None:
    with kombu.Connection(f"{SCHEME}:///{path}") as conn:
        kombu.Producer(conn.default_channel).publish({"n": 1}, routing_key=QUEUE, serializer="json")
        members = [path, path.with_name("queue.db-wal"), path.with_name("queue.db-shm")]
        assert all(member.exists() for member in members)
        assert {member.name: mode(member) for member in members} == {member.name: 0o600 for member in members}


def test_an_old_queue_file_readable_by_others_is_tightened(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sqlite3.connect(path).close()
    path.chmod(0o644)
    with kombu.Connection(f"{SCHEME}:///{path}") as conn:
        conn.default_channel  # noqa: B018  opens the file
    assert mode(path) == 0o600
    assert f"{path} was readable by others (mode 644): now mode 600" in caplog.text


# -- encryption with the payload key ----------------------------------------------------------


def test_with_the_payload_key_the_file_holds_no_national_code_in_clear(path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    line, national_code = event_line()
    monkeypatch.setenv("ADAPTER_PAYLOAD_KEY", Fernet.generate_key().decode())
    publish_bodies(broker(path), [line])
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    stored = path.read_bytes() + b"".join(p.read_bytes() for p in path.parent.glob("queue.db-*"))
    assert national_code.encode() not in stored
    assert b"enc:v1:" in stored  # it is there, encrypted
    assert take_all(path) == [line]


def test_messages_from_before_the_key_stay_readable(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    publish_bodies(broker(path), [b'{"n": 1}'])
    monkeypatch.setenv("ADAPTER_PAYLOAD_KEY", Fernet.generate_key().decode())
    publish_bodies(broker(path), [b'{"n": 2}'])
    assert take_all(path) == [b'{"n": 1}', b'{"n": 2}']


def test_a_message_under_another_key_is_delivered_encrypted_not_a_crash(path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAPTER_PAYLOAD_KEY", Fernet.generate_key().decode())
    publish_bodies(broker(path), [b'{"n": 1}'])
    monkeypatch.setenv("ADAPTER_PAYLOAD_KEY", Fernet.generate_key().decode())
    (body,) = take_all(path)
    assert body.startswith(b"enc:v1:") and b'"n"' not in body
    assert pragma(path, "page_count") > 0 and take_all(path) == []  # acked like any other: no redelivery loop


# -- size cap ---------------------------------------------------------------------------------


def test_a_full_queue_refuses_a_publish_with_a_clear_error_until_it_drains(path: Path) -> None:
    body = json.dumps({"filler": "x" * 4000}).encode()
    config = broker(path, embedded_max_mb=0.25)
    published = 0
    with pytest.raises(QueueFull) as caught:
        for _ in range(1000):
            publish_bodies(config, [body])
            published += 1
    message = str(caught.value)
    assert str(path) in message and "broker.embedded_max_mb" in message and "not published" in message
    assert 0 < published < 1000
    assert 0.25 * (1 << 20) <= pragma(path, "page_count") * pragma(path, "page_size") < 0.25 * (1 << 20) + 2 * 4096 * 4
    assert len(take_all(path)) == published  # nothing half-written
    assert publish_bodies(config, [body]) == 1


# -- space given back -------------------------------------------------------------------------


def test_a_burst_then_a_drain_leaves_the_file_small_again(path: Path) -> None:
    body = json.dumps({"filler": "x" * 2000}).encode()
    publish_bodies(broker(path), [body] * 3000)
    peak = pragma(path, "page_count")
    assert peak > 1500  # about 6 MB of messages
    assert len(take_all(path)) == 3000
    after = pragma(path, "page_count")
    free = pragma(path, "freelist_count")
    assert after < peak / 4, (peak, after)
    assert free <= max(64, after // 4)
    assert path.stat().st_size < peak * 4096 / 4  # the file itself shrank (the last close checkpoints)


def test_an_old_file_without_auto_vacuum_is_converted_once(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with sqlite3.connect(path) as conn:  # a file the previous version made: auto_vacuum off, space never given back
        conn.execute("CREATE TABLE filler (x TEXT)")
        conn.executemany("INSERT INTO filler VALUES (?)", [("x" * 2000,)] * 2000)
        conn.execute("DROP TABLE filler")
    assert pragma(path, "auto_vacuum") == 0 and pragma(path, "freelist_count") > 900
    with kombu.Connection(f"{SCHEME}:///{path}") as conn:
        conn.default_channel  # noqa: B018
    assert pragma(path, "auto_vacuum") == 2  # incremental
    assert pragma(path, "freelist_count") == 0
    assert "converted to incremental auto-vacuum" in caplog.text
    caplog.clear()
    with kombu.Connection(f"{SCHEME}:///{path}") as conn:
        conn.default_channel  # noqa: B018
    assert "converted" not in caplog.text


def test_the_queue_full_error_is_not_a_connection_error() -> None:
    """kombu retries connection errors (publish with retry=True): a full queue must not be retried."""
    from adapter.broker.sqlite_transport import Transport

    assert not issubclass(QueueFull, tuple(Transport.connection_errors))
