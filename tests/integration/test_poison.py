"""A message the adapter itself cannot store (a bug, not bad data) must not block the queue:
after a few tries it is quarantined as an invalid event, visible and replayable, and the
messages behind it flow. Real embedded queue, real SQLite store, the simulator over HTTP."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from adapter.app import build
from adapter.broker.connection import connect, publish_bodies, queue_depth
from adapter.pipeline.runner import POISON_AFTER, Runner
from adapter.samples.generate import generate
from adapter.sim.server import SimServer
from adapter.sim.tamin_app import create_tamin_app
from adapter.store.models import InboxEvent
from tests.support.pipeline import adapter_config


def test_poison_message_is_quarantined_and_the_queue_keeps_flowing(tmp_path: Path) -> None:
    lines = [line for line in generate(dt.datetime.now(dt.timezone.utc), patients=3).lines
             if line.startswith(b'{"event_id": "evt-')][:3]
    poison = lines[1]
    with SimServer(create_tamin_app()) as sim:
        config = adapter_config(f"sqlite:///{tmp_path / 'a.db'}", sim.base_url, tmp_path,
                                broker__url=f"sqlite-queue:///{tmp_path / 'q.db'}")
        publish_bodies(config.broker, lines)
        app = build(config)
        real_plan = app.intake._plan  # parse and route: the step every message takes, alone or in a batch
        calls: list[bytes] = []

        def plan_with_a_bug(body: bytes) -> Any:
            calls.append(body)
            if body == poison:
                raise KeyError("a bug that only this message triggers")
            return real_plan(body)

        app.intake._plan = plan_with_a_bug  # type: ignore[method-assign]
        runner = Runner(app, until_idle=True, idle_horizon_s=0)
        try:
            runner.run()
            with app.sessions() as session:
                rows = {r.event_id: r for r in session.scalars(select(InboxEvent))}
        finally:
            app.close()
        with connect(config.broker) as connection:
            assert queue_depth(connection, config.broker) == 0
    poison_id = json.loads(poison)["event_id"]
    assert poison in calls
    assert runner.stats.intake_errors == POISON_AFTER  # tried alone that often (after any batch it was in failed)
    assert rows[poison_id].status == "invalid"
    assert "quarantined" in rows[poison_id].problems[0]["rule"]
    assert "KeyError" in rows[poison_id].problems[0]["rule"]
    others = [json.loads(line)["event_id"] for line in lines if line != poison]
    assert all(rows[event_id].status == "accepted" for event_id in others)
