"""Batched intake on RabbitMQ: the consumer takes the deliveries already waiting (up to the
batch) before storing them in one transaction, then acks them. Real RabbitMQ (own vhost), the
SQLite store, the Tamin simulator.

The stall this pins: py-amqp hands deliveries over during any wait for a reply on the
connection, including the queue-depth check the consumer makes when nothing came. Those
deliveries were kept for the next drain cycle, but with the prefetch window full no further
delivery ever came, so they were never stored or acked and the consumer waited for ever."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from adapter.app import build
from adapter.broker.connection import connect, publish_bodies, queue_depth
from adapter.pipeline.runner import Runner
from adapter.sim.server import SimServer
from adapter.sim.settings import TaminSimSettings
from adapter.sim.tamin_app import create_tamin_app
from adapter.store.models import InboxEvent
from tests.support.pipeline import adapter_config
from tests.support.stack import good_event_lines

pytestmark = pytest.mark.integration


def _large_invalid(n: int) -> bytes:
    """A message of about 300 KB that the contract refuses (stored as an invalid event)."""
    return json.dumps({"event_id": f"big-{n:04d}", "event_type": "no.such.type", "filler": "x" * 300_000}).encode()


def test_bursts_and_large_messages_in_batches_are_all_stored_and_acked(tmp_path: Path, amqp_url: str) -> None:
    """The depth is asked after every batch, so RabbitMQ delivers the next prefetch window while
    the consumer waits for that answer; bursts also land while the idle consumer asks it (every
    0.5 s); large messages arrive split over many reads."""
    good = good_event_lines(60)
    bodies = [body for n in range(60) for body in (_large_invalid(n), good[n])]
    bursts = [bodies[i:i + 5] for i in range(0, len(bodies), 5)]
    with SimServer(create_tamin_app(TaminSimSettings())) as sim:
        config = adapter_config(f"sqlite:///{tmp_path / 'a.db'}", sim.base_url, tmp_path,
                                broker__url=amqp_url, broker__queue=f"his.events.{tmp_path.name[-12:]}",
                                broker__prefetch=5)
        app = build(config)
        runner = Runner(app)
        runner.depth_check_every_s = 0.0
        outcome: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: outcome.setdefault("stats", runner.run()), daemon=True)
        thread.start()
        for n, burst in enumerate(bursts):
            time.sleep(0.1 * (n % 6))  # lands at different points of the consumer's 0.5 s idle cycle
            publish_bodies(config.broker, burst)
        deadline = time.monotonic() + 90
        while runner.stats.stored + runner.stats.invalid < len(bodies) and time.monotonic() < deadline:
            time.sleep(0.2)
        runner.stop()
        thread.join(timeout=60)
        stalled = runner.stats.stored + runner.stats.invalid < len(bodies)
        try:
            with app.sessions() as session:
                stored = dict(session.execute(select(InboxEvent.status, func.count()).group_by(InboxEvent.status)).all())
        finally:
            app.close()
        with connect(config.broker) as connection:
            depth = queue_depth(connection, config.broker)
    assert not stalled, f"the consumer stalled: stored so far {stored}"
    assert stored.get("invalid") == 60 and sum(stored.values()) == 120, stored
    assert depth == 0
    assert runner.stats.intake_errors == 0 and not thread.is_alive()
