"""Smoke tests: the per-run PostgreSQL database and RabbitMQ vhost work."""

from __future__ import annotations

import socket

import kombu
import pytest
from sqlalchemy import create_engine, inspect, make_url, text


def _roundtrip(url: str) -> list[tuple[int, str]]:
    """Create a table, write a row, read it back."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            assert inspect(conn).get_table_names() == []  # a fresh database
            conn.execute(text("CREATE TABLE smoke (id INTEGER PRIMARY KEY, note TEXT)"))
            conn.execute(text("INSERT INTO smoke VALUES (1, 'hello')"))
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text("SELECT id, note FROM smoke"))]
    finally:
        engine.dispose()


@pytest.mark.integration
def test_pg_url_is_a_fresh_database_of_this_run(pg_url: str) -> None:
    name = make_url(pg_url).database
    assert name.startswith("adapter_test_")
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar() == name
    finally:
        engine.dispose()


def test_db_url_gives_an_empty_usable_database(db_url: str) -> None:
    assert _roundtrip(db_url) == [(1, "hello")]


@pytest.mark.integration
def test_amqp_vhost_publish_and_consume(amqp_url: str) -> None:
    vhost = amqp_url.rsplit("/", 1)[1]
    assert vhost.startswith("adapter_test_")
    queue = kombu.Queue("smoke", routing_key="smoke", durable=True)
    received: list[object] = []

    def on_message(body: object, message: kombu.Message) -> None:
        received.append(body)
        message.ack()

    with kombu.Connection(amqp_url, transport_options={"confirm_publish": True}) as conn:
        assert conn.virtual_host == vhost
        kombu.Producer(conn.default_channel).publish(
            {"hello": "world"}, routing_key="smoke", declare=[queue], serializer="json"
        )
        with kombu.Consumer(conn.default_channel, [queue], callbacks=[on_message],
                            accept=["json"]):
            try:
                conn.drain_events(timeout=10)
            except socket.timeout:
                pass
    assert received == [{"hello": "world"}]
