"""A RabbitMQ connection that goes silent -- no bytes, no close, as when a firewall or NAT between
the adapter and the broker forgets it -- must not stall the consumer. The adapter notices within
about two heartbeats, connects again, and the events published after go through. Without
heartbeats and bounded waits, the consumer blocks in a socket read for as long as the kernel
keeps the dead connection (hours), and the status page only shows a stale heartbeat.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapter.sim.server import SimServer
from adapter.sim.settings import TaminSimSettings
from adapter.sim.tamin_app import create_tamin_app
from tests.support import services as svc
from tests.support.stack import Stack, good_event_lines, wait_all_final, wait_consumers
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

HEARTBEAT_S = 2


@pytest.fixture
def stack(tmp_path: Path, pg_admin_url: str, relay: tuple[TcpProxy, str]) -> Iterator[Stack]:
    via_proxy = relay[1]
    with SimServer(create_tamin_app(TaminSimSettings())) as sim:
        name = svc.unique_name()
        built = Stack("rabbitmq+postgresql", tmp_path, svc.create_database(pg_admin_url, name), via_proxy, sim)
        built.write_config()
        with built.edited_config() as config:
            config["broker"]["heartbeat_s"] = HEARTBEAT_S
            config["status"] = {"port": 0}
        try:
            yield built
        finally:
            svc.drop_database(pg_admin_url, name)


def wait_log(stack: Stack, starts: str, timeout: float) -> float:
    """Seconds until a log line starting with ``starts`` appears."""
    began = time.monotonic()
    while not any(str(entry.get("event", "")).startswith(starts) for entry in stack.log_entries()):
        assert time.monotonic() - began < timeout, f"no {starts!r} after {timeout:.0f}s\n{stack.log_tail()}"
        time.sleep(0.1)
    return time.monotonic() - began


def test_a_silent_broker_connection_is_given_up_and_consuming_resumes(stack: Stack, proxy: TcpProxy) -> None:
    events = good_event_lines(40)
    process = stack.start_adapter()
    try:
        wait_consumers(stack, 1)
        stack.publish(events[:20])
        wait_all_final(stack, 20, timeout=60)
        assert proxy.silence() >= 1  # the consumer's connection, and its publisher's if open

        process.send_signal(signal.SIGUSR1)  # what an operator does on a stale heartbeat: where is each thread?
        noticed_s = wait_log(stack, "broker connection lost", timeout=3 * HEARTBEAT_S + 2)  # the silence limit (2 heartbeats), no slow goodbye
        dump = (stack.workdir / "adapter.log").read_text(errors="replace")
        assert "Thread 0x" in dump and "in _consume_forever" in dump, "no thread dump after SIGUSR1"
        restored_s = wait_log(stack, "broker connection restored", timeout=30)
        # the broker drops the silent consumer once it misses the heartbeats: then only the new one
        wait_consumers(stack, 1, timeout=30, exactly=True)
        stack.publish(events[20:])
        wait_all_final(stack, 40, timeout=60)
        assert process.poll() is None, stack.log_tail()
    finally:
        process.terminate()
        process.wait(timeout=60)
    print(f"silence noticed after {noticed_s:.1f}s, consuming again after {restored_s:.1f}s")
    assert stack.store()["states"] == {"accepted": sum(stack.store()["states"].values())}
