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


REFUSED = "OperationalError: [Errno 111] Connection refused"


def test_an_outage_reads_lost_unreachable_then_restored_with_its_length(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    link = BrokerLink(clock)
    caplog.set_level(logging.INFO)
    link.restored("his.events")
    assert link.lost("ConnectionResetError", was_consuming=True) == 1
    clock.now += 1
    assert link.lost(REFUSED, was_consuming=False) == 1
    clock.now += 1
    link.lost("OperationalError: timed out", was_consuming=False)  # a new reason is logged at once
    clock.now += 1.5
    link.restored("his.events")
    assert messages(caplog) == [
        "consuming from queue his.events",
        "broker connection lost (ConnectionResetError); reconnecting in 1s",
        f"broker unreachable ({REFUSED}; 1 failed attempts, down 1s); next attempt in 1s",
        "broker unreachable (OperationalError: timed out; 2 failed attempts, down 2s); next attempt in 1s",
        "broker connection restored after 3.5s (2 failed attempts); consuming from queue his.events",
    ]


def test_a_long_outage_slows_the_attempts_and_logs_a_line_per_half_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    link = BrokerLink(clock)
    caplog.set_level(logging.INFO)
    waits = [link.lost("ConnectionForced", was_consuming=True)]
    while clock.now < 100 + 120:  # two minutes of refused attempts
        clock.now += waits[-1]
        waits.append(link.lost(REFUSED, was_consuming=False))
    assert set(waits[:30]) == {1.0} and waits[-1] == 5.0  # every second for the first half minute, then every 5 s
    unreachable = [m for m in messages(caplog) if m.startswith("broker unreachable")]
    assert 4 <= len(unreachable) <= 5, unreachable  # at 1 s, then about every 30 s: not one line per attempt
    assert unreachable[-1].endswith("next attempt in 5s")
    link.restored("q")
    assert f"({len(waits) - 1} failed attempts)" in messages(caplog)[-1]


def test_the_next_outage_is_counted_from_its_own_start(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    link = BrokerLink(clock)
    link.lost("ConnectionForced", was_consuming=True)
    clock.now += 30
    link.lost("OperationalError", was_consuming=False)
    link.restored("q")
    clock.now += 600  # consuming for ten minutes
    caplog.set_level(logging.INFO)
    assert link.lost("ConnectionForced", was_consuming=True) == 1  # fast again: a new outage
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
