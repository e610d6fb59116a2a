"""``adapter demo``: the whole path on the embedded defaults, with the bundled simulators.

It starts the Tamin and the DITAS/SEPAS simulators on free local ports, publishes the
bundled sample events (prescribing, and the hospital's own pharmacy, lab, imaging and
billing) to the embedded SQLite queue, runs the adapter until nothing is queued or due,
and returns the summary (per destination and state, plus each simulator's own duplicate
count).
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
from adapter.destinations import registry
from adapter.sim.ditas_app import create_ditas_app
from adapter.sim.ditas_registry import DitasSimSettings
from adapter.sim.server import SimServer
from adapter.sim.settings import TaminSimSettings
from adapter.sim.tamin_app import create_tamin_app
from adapter.store.models import InboxEvent, Submission
from adapter.store.states import OPEN_STATES, EventStatus
from adapter.ops.status import status_report, summary_counts


def demo_config(base: Path, workdir: Path, sim_url: str, ditas: SimServer | None = None) -> AdapterConfig:
    overrides = {
        "ADAPTER__DATABASE__URL": f"sqlite:///{workdir}/adapter.db",
        "ADAPTER__BROKER__URL": f"sqlite-queue:///{workdir}/queue.db",
        "ADAPTER__SECRETS__TOKEN_KEY_FILE": f"{workdir}/token.key",
    }
    overrides.update(simulator_overrides("tamin", sim_url))
    if ditas is not None:
        overrides.update(simulator_overrides("ditas", ditas.base_url))
        overrides.update(sepas_overrides(ditas, workdir))
    return load_config(base, overrides)


def simulator_overrides(simulator: str, url: str) -> dict[str, str]:
    """Every registered destination the named simulator plays, pointed at it (its plugin says which key)."""
    return {f"ADAPTER__DESTINATIONS__{plugin.name.upper()}__{plugin.simulator.url_key.upper()}": url
            for plugin in registry.plugins() if plugin.simulator is not None and plugin.simulator.name == simulator}


def sepas_overrides(ditas: SimServer, workdir: Path) -> dict[str, str]:
    """SEPAS on, against the DITAS simulator (its URL comes from ``simulator_overrides``): its
    credentials, and the public half of its key."""
    key_file = workdir / "moh-public.pem"
    key_file.write_bytes(ditas.app.state.registry.public_key_pem)
    settings = DitasSimSettings()
    values = {
        "ENABLED": "true", "AUTH__CLIENT_ID": settings.client_id,
        "AUTH__CLIENT_SECRET": settings.client_secret, "AUTH__USERNAME": settings.username,
        "AUTH__PASSWORD": settings.password, "PIDS__DEFAULT": "demo-package-id",
        "SYSTEM_ID": "4e794d6f-45a2-1186-817c-5e34e3fcf8ac",
        "DEFAULT_LOCATION_ID": "859773e8-5d81-46c6-9df1-5fb551b00495", "PUBLIC_KEY_FILE": str(key_file),
        "MAX_RPS": "null",
    }
    return {f"ADAPTER__DESTINATIONS__SEPAS__{key}": value for key, value in values.items()}


def by_event_type(app_sessions: Any) -> dict[str, dict[str, dict[str, int]]]:
    """event type -> destination -> state -> submissions; events no mapping routes count under "(unrouted)"."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    with app_sessions() as session:
        rows = session.execute(select(InboxEvent.event_type, Submission.destination, Submission.state, func.count())
                               .join(Submission, Submission.event_id == InboxEvent.event_id)
                               .group_by(InboxEvent.event_type, Submission.destination, Submission.state)).all()
        unrouted = session.execute(select(InboxEvent.event_type, func.count())
                                   .where(InboxEvent.status == EventStatus.unrouted.value)
                                   .group_by(InboxEvent.event_type)).all()
    for event_type, destination, state, count in rows:
        out.setdefault(event_type, {}).setdefault(destination, {})[state] = count
    for event_type, count in unrouted:
        out.setdefault(event_type, {})["(unrouted)"] = {"events": count}
    return dict(sorted(out.items()))


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
    samples: SampleSet = generate(dt.datetime.now(dt.timezone.utc), patients=patients, provider_side=True)
    sim_settings = TaminSimSettings(unknown_patients=samples.unknown_patients, expired_patients=samples.expired_patients)
    with SimServer(create_tamin_app(sim_settings)) as sim, SimServer(create_ditas_app()) as ditas:
        config = demo_config(config_path, workdir, sim.base_url, ditas)
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
            per_type = by_event_type(app.sessions)
        finally:
            app.close()
        sim_stats = httpx.get(sim.base_url + "/_sim/stats", timeout=10).json()
        ditas_stats = httpx.get(ditas.base_url + "/_sim/stats", timeout=10).json()
    counts = summary_counts(report)
    return {
        "events": samples.distinct_events,
        "published_messages": published,
        **counts,
        "duplicates_at_destination": sim_stats.get("duplicates", 0) + ditas_stats.get("duplicates", 0),
        "duplicate_receipts": report["events"].get("duplicate_receipts", 0),
        "by_destination": report["destinations"],
        "by_event_type": per_type,
        "event_status": {k: v for k, v in report["events"].items() if k not in ("duplicate_receipts", "total")},
        "simulator": {k: sim_stats.get(k) for k in ("prescriptions", "received_submissions", "tokens_issued", "rejections")},
        "ditas_simulator": {k: ditas_stats.get(k) for k in ("validations", "validation_failures", "saves", "duplicates",
                                                            "rejections")},
        "store": config.database.url,
        "complete": counts["pending"] == 0 and report["events"]["total"] == samples.distinct_events,
    }
