"""The consumer's broker connection as operators read it: warnings while it is gone, how long it
was gone once it is back; and the bounds every AMQP wait gets from the config."""

from __future__ import annotations

import logging

import pytest

from adapter.broker.connection import connect, silence_limit_s
from adapter.broker.link import BrokerLink
from adapter.config import BrokerConfig


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_an_outage_reads_lost_unreachable_then_restored_with_its_length(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    link = BrokerLink(clock)
    caplog.set_level(logging.INFO)
    link.restored("his.events")
    link.lost("ConnectionResetError", 1, was_consuming=True)
    clock.now += 1
    link.lost("OperationalError: [Errno 111] Connection refused", 2, was_consuming=False)
    clock.now += 2
    link.lost("OperationalError: [Errno 111] Connection refused", 4, was_consuming=False)
    clock.now += 4.5
    link.restored("his.events")
    assert messages(caplog) == [
        "consuming from queue his.events",
        "broker connection lost (ConnectionResetError); reconnecting in 1s",
        "broker unreachable (OperationalError: [Errno 111] Connection refused; 1 failed attempts, down 1s); "
        "next attempt in 2s",
        "broker unreachable (OperationalError: [Errno 111] Connection refused; 2 failed attempts, down 3s); "
        "next attempt in 4s",
        "broker connection restored after 7.5s (2 failed attempts); consuming from queue his.events",
    ]


def test_the_next_outage_is_counted_from_its_own_start(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    link = BrokerLink(clock)
    link.lost("ConnectionForced", 1, was_consuming=True)
    clock.now += 30
    link.lost("OperationalError", 2, was_consuming=False)
    link.restored("q")
    clock.now += 600  # consuming for ten minutes
    caplog.set_level(logging.INFO)
    link.lost("ConnectionForced", 1, was_consuming=True)
    clock.now += 1.2
    link.restored("q")
    assert messages(caplog)[-1] == "broker connection restored after 1.2s (0 failed attempts); consuming from queue q"


@pytest.mark.parametrize(("heartbeat", "limit"), [(30, 60.0), (2, 4.0), (0, 60.0)])
def test_every_amqp_wait_is_bounded_by_the_silence_limit(heartbeat: int, limit: float) -> None:
    config = BrokerConfig(url="amqp://guest:guest@127.0.0.1:5672//", heartbeat_s=heartbeat, connect_timeout_s=3)
    assert silence_limit_s(config) == limit
    connection = connect(config)  # not opened: the options are what it would open with
    assert connection.transport_options["read_timeout"] == limit
    assert connection.transport_options["write_timeout"] == limit
    assert connection.heartbeat == heartbeat
    assert connection.connect_timeout == 3


def test_the_embedded_queue_gets_no_socket_options(tmp_path) -> None:  # type: ignore[no-untyped-def]
    connection = connect(BrokerConfig(url=f"sqlite-queue:///{tmp_path}/q.db"))
    assert "read_timeout" not in connection.transport_options
    assert connection.heartbeat == 0
