"""``adapter demo``: the whole path on the embedded defaults, with the bundled simulator.

It starts the Tamin simulator on a free local port, publishes the bundled sample events to
the embedded SQLite queue, runs the adapter until nothing is queued or due, and returns
the summary (per destination and state, plus the simulator's own duplicate count).
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from adapter.app import build
from adapter.broker.connection import publish_bodies
from adapter.config import AdapterConfig, load_config
from adapter.pipeline.runner import Runner, RunStats
from adapter.samples.generate import SampleSet, generate
from adapter.sim.server import SimServer
from adapter.sim.settings import TaminSimSettings
from adapter.sim.tamin_app import create_tamin_app
from adapter.store.models import InboxEvent, Submission
from adapter.store.states import OPEN_STATES
from adapter.ops.status import status_report, summary_counts


def demo_config(base: Path, workdir: Path, sim_url: str) -> AdapterConfig:
    overrides = {
        "ADAPTER__DATABASE__URL": f"sqlite:///{workdir}/adapter.db",
        "ADAPTER__BROKER__URL": f"sqlite-queue:///{workdir}/queue.db",
        "ADAPTER__DESTINATIONS__TAMIN__BASE_URL": sim_url,
        "ADAPTER__SECRETS__TOKEN_KEY_FILE": f"{workdir}/token.key",
    }
    return load_config(base, overrides)


def settled_events(app_sessions: Any) -> int:
    """Events with no open submission left (invalid events count as settled)."""
    with app_sessions() as session:
        total = session.scalar(select(func.count()).select_from(InboxEvent)) or 0
        open_events = session.scalar(select(func.count(func.distinct(Submission.event_id))).where(
            Submission.state.in_([s.value for s in OPEN_STATES]))) or 0
    return total - open_events


def run_demo(config_path: Path, workdir: Path, patients: int,
             progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    samples: SampleSet = generate(dt.datetime.now(dt.timezone.utc), patients=patients)
    sim_settings = TaminSimSettings(unknown_patients=samples.unknown_patients, expired_patients=samples.expired_patients)
    with SimServer(create_tamin_app(sim_settings)) as sim:
        config = demo_config(config_path, workdir, sim.base_url)
        published = publish_bodies(config.broker, samples.lines)
        app = build(config)
        try:
            def tick(_: RunStats) -> None:
                if progress:
                    progress(settled_events(app.sessions), samples.distinct_events)
            Runner(app, until_idle=True, on_progress=tick).run()
            tick(RunStats())
            with app.sessions() as session:
                report = status_report(session)
        finally:
            app.close()
        sim_stats = httpx.get(sim.base_url + "/_sim/stats", timeout=10).json()
    counts = summary_counts(report)
    return {
        "events": samples.distinct_events,
        "published_messages": published,
        **counts,
        "duplicates_at_destination": sim_stats.get("duplicates", 0),
        "duplicate_receipts": report["events"].get("duplicate_receipts", 0),
        "by_destination": report["destinations"],
        "event_status": {k: v for k, v in report["events"].items() if k not in ("duplicate_receipts", "total")},
        "simulator": {k: sim_stats.get(k) for k in ("prescriptions", "received_submissions", "tokens_issued", "rejections")},
        "store": config.database.url,
        "complete": counts["pending"] == 0 and report["events"]["total"] == samples.distinct_events,
    }
