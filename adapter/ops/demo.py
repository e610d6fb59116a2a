"""``adapter demo``: the whole path on the embedded defaults, with the bundled simulators.

It starts the Tamin and the DITAS/SEPAS simulators on free local ports, publishes the
bundled sample events (prescribing, and the hospital's own pharmacy, lab, imaging and
billing) to the embedded SQLite queue, runs the adapter until nothing is queued or due,
and returns the summary (per destination and state, plus each simulator's own duplicate
count). Its status service takes ``status.port`` (8090) when that is free and any free port
otherwise (an ``adapter run`` or a second demo on this machine), and says which.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from kombu import Connection
from sqlalchemy import func, select

from adapter.app import build
from adapter.broker.connection import publish_bodies
from adapter.config import AdapterConfig, load_config
from adapter.pipeline.runner import Runner, RunStats
from adapter.replies.sinks import reply_queue
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


def demo_config(base: Path, workdir: Path, sim_url: str, ditas: SimServer | None = None,
                notice: Callable[[str], None] | None = None) -> AdapterConfig:
    overrides = {
        "ADAPTER__DATABASE__URL": f"sqlite:///{workdir}/adapter.db",
        "ADAPTER__BROKER__URL": f"sqlite-queue:///{workdir}/queue.db",
        "ADAPTER__SECRETS__TOKEN_KEY_FILE": f"{workdir}/token.key",
    }
    overrides.update(simulator_overrides("tamin", sim_url))
    if ditas is not None:
        overrides.update(simulator_overrides("ditas", ditas.base_url))
        overrides.update(sepas_overrides(ditas, workdir))
    config = load_config(base, overrides)
    status = config.status
    if status.enabled and status.port and not port_is_free(status.host, status.port):
        port = free_port(status.host)
        if notice:
            notice(f"demo: port {status.port} is busy; the status service is on http://{status.host}:{port}/ instead")
        config = load_config(base, {**overrides, "ADAPTER__STATUS__PORT": str(port)})
    return config


def _bound(host: str, port: int) -> socket.socket:
    """A socket bound as the status service binds (``SimServer``: SO_REUSEADDR, so a port left in
    TIME_WAIT counts as free and only a listener makes it busy)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def port_is_free(host: str, port: int) -> bool:
    try:
        _bound(host, port).close()
    except OSError:
        return False
    return True


def free_port(host: str) -> int:
    """A port free now (the kernel's pick); another process could take it before the status
    service binds it, and then ``adapter run`` logs that and delivers without the service."""
    with _bound(host, 0) as sock:
        return int(sock.getsockname()[1])


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


_ANSWERS = ("prescription.registered", "paper_fallback.issued", "paper_fallback.linked")
_REFUSALS = ("prescription.rejected", "prescription.invalid", "prescription.dead")


def replies_received(config: AdapterConfig, app_sessions: Any) -> dict[str, Any]:
    """The HIS's side: take every reply off the reply queue and check it against the store --
    each prescription got exactly one registered-or-paper answer, or its refusal; each refusal
    at any insurer reached the HIS."""
    bodies = []
    with Connection(config.broker.url) as connection:
        queue = reply_queue(config.broker)(connection.default_channel)
        queue.declare()
        while (message := queue.get(no_ack=True)) is not None:
            bodies.append(json.loads(message.body))
    by_type = Counter(b["type"] for b in bodies)
    per_event: dict[str, Counter[str]] = {}
    for b in bodies:
        per_event.setdefault(b["event_id"], Counter())[b["type"]] += 1
    with app_sessions() as session:
        prescriptions = list(session.scalars(select(InboxEvent.event_id).where(
            InboxEvent.event_type == "prescription.created", InboxEvent.status == EventStatus.accepted.value)))
        refused = session.execute(select(Submission.event_id, Submission.destination).where(
            Submission.state.in_(["rejected", "invalid", "dead"]))).all()

    def answers(event_id: str) -> int:
        got = per_event.get(event_id, Counter())
        registered_or_paper = got["prescription.registered"] + got["paper_fallback.issued"]
        return registered_or_paper or sum(got[t] for t in _REFUSALS)

    return {"total": len(bodies), "by_type": dict(sorted(by_type.items())),
            "distinct_reply_ids": len({b["reply_id"] for b in bodies}),
            "unanswered_prescriptions": sum(1 for e in prescriptions if answers(e) == 0),
            "answered_more_than_once": sum(1 for e in prescriptions if answers(e) > 1),
            "unreported_refusals": sum(1 for event_id, _ in refused
                                       if not any(t.endswith((".rejected", ".invalid", ".dead", ".paper_claim"))
                                                  or t == "eligibility.result" for t in per_event.get(event_id, {})))}


def run_demo(config_path: Path, workdir: Path, patients: int,
             progress: Callable[[int, int], None] | None = None,
             notice: Callable[[str], None] | None = None) -> dict[str, Any]:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    samples: SampleSet = generate(dt.datetime.now(dt.timezone.utc), patients=patients, provider_side=True)
    sim_settings = TaminSimSettings(unknown_patients=samples.unknown_patients, expired_patients=samples.expired_patients)
    with SimServer(create_tamin_app(sim_settings)) as sim, SimServer(create_ditas_app()) as ditas:
        config = demo_config(config_path, workdir, sim.base_url, ditas, notice)
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
            his_side = replies_received(config, app.sessions)
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
        "replies": his_side,
        "event_status": {k: v for k, v in report["events"].items() if k not in ("duplicate_receipts", "conflicts", "total")},
        "simulator": {k: sim_stats.get(k) for k in ("prescriptions", "received_submissions", "tokens_issued", "rejections")},
        "ditas_simulator": {k: ditas_stats.get(k) for k in ("validations", "validation_failures", "saves", "duplicates",
                                                            "rejections")},
        "store": config.database.url,
        "complete": counts["pending"] == 0 and report["events"]["total"] == samples.distinct_events,
    }
