"""The spine end to end, as hospital IT runs it: `adapter publish`, `adapter run` as a real
process, the simulator over HTTP, on the embedded defaults and on RabbitMQ + PostgreSQL.

Proves: 1,000 events reach `accepted` exactly once at the insurer; publishing the same
1,000 again sends nothing new; stopping the adapter mid-stream (SIGTERM, kill -9) and
starting it again loses nothing and sends nothing twice.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapter.sim.server import SimServer
from adapter.sim.settings import TaminSimSettings
from adapter.sim.tamin_app import create_tamin_app
from tests.support import services as svc
from tests.support.stack import Stack, assert_all_accepted_once, good_event_lines, status_json


@pytest.fixture(params=["embedded", pytest.param("rabbitmq+postgresql", marks=pytest.mark.integration)])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    with SimServer(create_tamin_app(TaminSimSettings())) as sim:
        if request.param == "embedded":
            built = Stack("embedded", tmp_path, f"sqlite:///{tmp_path / 'adapter.db'}",
                          f"sqlite-queue:///{tmp_path / 'queue.db'}", sim)
            built.write_config()
            yield built
            return
        admin, amqp = request.getfixturevalue("pg_admin_url"), request.getfixturevalue("amqp_url")
        name = svc.unique_name()
        built = Stack("rabbitmq+postgresql", tmp_path, svc.create_database(admin, name), amqp, sim)
        built.write_config()
        try:
            yield built
        finally:
            svc.drop_database(admin, name)


def test_thousand_events_accepted_exactly_once_and_republish_sends_nothing(stack: Stack) -> None:
    lines = good_event_lines(1000)
    stack.publish(lines)
    done = stack.adapter("run", "--until-idle")
    assert done.returncode == 0, stack.log_tail()
    assert_all_accepted_once(stack, 1000)
    before = stack.sim_stats()["requests"]

    stack.publish(lines)
    assert stack.adapter("run", "--until-idle").returncode == 0, stack.log_tail()
    assert stack.sim_stats()["requests"] == before, "republished events reached the insurer again"
    store = stack.store()
    assert store["duplicate_receipts"] == 1000
    assert_all_accepted_once(stack, 1000)
    report = status_json(stack)
    assert report["destinations"]["tamin"] == {"accepted": sum(store["states"].values())}
    assert report["oldest_pending"] is None


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_stop_mid_stream_then_restart_loses_nothing_and_sends_nothing_twice(stack: Stack, stop_signal: int) -> None:
    lines = good_event_lines(600)
    stack.sim_faults(latency_ms=15)
    stack.publish(lines)
    process = stack.start_adapter()
    try:
        stack.wait_for_sim("create_calls", 60)
    finally:
        process.send_signal(stop_signal)
        code = process.wait(timeout=60)
    if stop_signal == signal.SIGTERM:
        assert code == 0, stack.log_tail()
    partial = stack.store()
    assert partial["events"] < 600 or "pending" in partial["states"] or "retry_wait" in partial["states"] \
        or "sending" in partial["states"], "the adapter finished before it was stopped: the test proved nothing"

    stack.sim_faults(latency_ms=0)
    done = stack.adapter("run", "--until-idle")
    assert done.returncode == 0, stack.log_tail()
    assert_all_accepted_once(stack, 600)
