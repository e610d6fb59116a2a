"""Broker connections and topology, the same for RabbitMQ (``amqp://``) and the embedded
SQLite queue (``sqlite-queue://``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from kombu import Connection, Exchange, Producer, Queue

from adapter.broker import sqlite_transport
from adapter.config import BrokerConfig

sqlite_transport.register()


def is_embedded(url: str) -> bool:
    return url.startswith("sqlite-queue:")


def connect(config: BrokerConfig) -> Connection:
    """A kombu connection; publisher confirms on AMQP so a publish returns only once the broker has it.

    On AMQP every wait is bounded: heartbeats (``broker.heartbeat_s``) and a socket read/write
    timeout of twice that, so a connection that goes silent -- a firewall or NAT forgot it, the
    broker hangs -- raises instead of blocking its thread for as long as the kernel keeps it."""
    if is_embedded(config.url):
        return Connection(config.url, heartbeat=0, transport_options={
            "lease_seconds": config.embedded_lease_s, "max_bytes": int(config.embedded_max_mb * (1 << 20))})
    silent_after_s = silence_limit_s(config)
    options: dict[str, object] = {"read_timeout": silent_after_s, "write_timeout": silent_after_s}
    if config.url.startswith(("amqp", "pyamqp")):
        options["confirm_publish"] = True
    return Connection(config.url, transport_options=options, heartbeat=config.heartbeat_s,
                      connect_timeout=config.connect_timeout_s)


def silence_limit_s(config: BrokerConfig) -> float:
    """Seconds without a byte from the broker after which a wait gives the connection up: two
    heartbeats (the broker sends one every half heartbeat, so a live connection is never that
    quiet), or a minute with heartbeats off."""
    return 2.0 * config.heartbeat_s if config.heartbeat_s else 60.0


def close_after_failure(connection: Connection, config: BrokerConfig) -> None:
    """Close a connection that just failed. AMQP: drop the socket without the closing handshake
    (on a dead connection each step of it -- cancel, channel close, connection close -- would wait
    out the silence limit). The embedded queue: a normal release, which hands the deliveries it
    held back at once instead of after their lease."""
    if is_embedded(config.url):
        connection.release()
    else:
        connection.collect()


def event_queue(config: BrokerConfig) -> Queue:
    exchange = Exchange(config.exchange, type="direct", durable=True)
    return Queue(config.queue, exchange=exchange, routing_key=config.queue, durable=True)


def declare(connection: Connection, config: BrokerConfig) -> Queue:
    queue = event_queue(config)
    bound = queue(connection.default_channel)
    bound.declare()
    return queue


def queue_depth(connection: Connection, config: BrokerConfig) -> int:
    """Messages in the queue that no consumer holds (RabbitMQ's ready count; the SQLite queue counts unacked too)."""
    bound = event_queue(config)(connection.default_channel)
    _, count, _ = bound.queue_declare(passive=True)
    return int(count)


@contextmanager
def producer(config: BrokerConfig) -> Iterator[Producer]:
    with connect(config) as connection:
        queue = declare(connection, config)
        yield Producer(connection.default_channel, exchange=queue.exchange, routing_key=config.queue,
                       serializer=None, auto_declare=False)


def publish_bodies(config: BrokerConfig, bodies: Iterable[bytes]) -> int:
    """Publish raw bodies as persistent messages (confirmed on AMQP); the number published."""
    count = 0
    with producer(config) as sender:
        for body in bodies:
            sender.publish(body, content_type="application/json", content_encoding="binary", delivery_mode=2,
                           retry=True, retry_policy={"max_retries": 5, "interval_start": 0.5, "interval_step": 1,
                                                     "interval_max": 5})
            count += 1
    return count
