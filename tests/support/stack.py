"""A whole adapter stack for end-to-end tests: the simulator in this process, the adapter
as real subprocesses (``python -m adapter``), with a config file written for the backend:
embedded (SQLite store + SQLite queue) or RabbitMQ + PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import func, select

from adapter.broker.connection import connect, event_queue
from adapter.config import BrokerConfig
from adapter.samples.generate import generate
from adapter.sim.server import SimServer
from adapter.store.db import make_engine, make_sessionmaker
from adapter.store.models import InboxEvent, Submission

REPO = Path(__file__).resolve().parents[2]


def good_event_lines(count: int) -> list[bytes]:
    """``count`` valid sample events (visits, prescriptions, edits, deletes), no bad ones."""
    lines: list[bytes] = []
    patients = count // 2 + 10
    sample = generate(dt.datetime.now(dt.timezone.utc), patients=patients)
    for line in sample.lines[: sample.distinct_events]:
        if line.startswith(b'{"event_id": "evt-'):
            lines.append(line)
    assert len(lines) >= count, "generate() made fewer events than asked"
    return lines[:count]


@dataclass
class Stack:
    name: str
    workdir: Path
    db_url: str
    broker_url: str
    sim: SimServer
    queue: str = field(default_factory=lambda: f"his.events.{uuid.uuid4().hex[:8]}")

    @property
    def config_path(self) -> Path:
        return self.workdir / "adapter.yaml"

    def write_config(self, **dispatch: Any) -> Path:
        config = yaml.safe_load((REPO / "config" / "embedded.yaml").read_text())
        config["database"]["url"] = self.db_url
        config["broker"].update(url=self.broker_url, queue=self.queue, embedded_lease_s=2)
        config["mappings_root"] = str(REPO / "mappings")
        config["destinations"]["tamin"]["base_url"] = self.sim.base_url
        config["destinations"]["tamin"]["retry"].update(base_delay_s=0.2, max_delay_s=2)
        config["dispatch"] = {"workers": 8, "lease_s": 2, "poll_interval_s": 0.05, "ambiguous_grace_s": 0.5, **dispatch}
        config["secrets"] = {"token_key_file": str(self.workdir / "token.key")}
        config["logging"] = {"level": "INFO", "format": "json"}
        self.config_path.write_text(yaml.safe_dump(config))
        return self.config_path

    @contextmanager
    def edited_config(self) -> Iterator[dict[str, Any]]:
        """The config file as a dict to change; written back when the block ends."""
        config = yaml.safe_load(self.config_path.read_text())
        yield config
        self.config_path.write_text(yaml.safe_dump(config))

    def log_entries(self, log_name: str = "adapter.log") -> list[dict[str, Any]]:
        """The JSON lines of an adapter log (other lines -- the CLI's own, a thread dump -- skipped)."""
        entries = []
        for line in (self.workdir / log_name).read_text(errors="replace").splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
        return entries

    def adapter(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        with open(self.workdir / "adapter.log", "a") as log:
            return subprocess.run([sys.executable, "-m", "adapter", *args, "--config", str(self.config_path)],
                                  cwd=self.workdir, stdout=subprocess.PIPE, stderr=log, text=True, timeout=timeout,
                                  env=self._env())

    def start_adapter(self, *args: str, log_name: str = "adapter.log") -> subprocess.Popen[bytes]:
        log = open(self.workdir / log_name, "a")
        return subprocess.Popen([sys.executable, "-m", "adapter", "run", *args, "--config", str(self.config_path)],
                                cwd=self.workdir, stdout=log, stderr=log, env=self._env())

    def _env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("ADAPTER")}

    def publish(self, lines: list[bytes]) -> None:
        path = self.workdir / f"events-{uuid.uuid4().hex[:6]}.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        done = self.adapter("publish", str(path))
        assert done.returncode == 0, self.log_tail()

    def sim_stats(self) -> dict[str, Any]:
        return httpx.get(self.sim.base_url + "/_sim/stats", timeout=10).json()

    def sim_faults(self, **faults: Any) -> None:
        httpx.post(self.sim.base_url + "/_sim/faults", json=faults, timeout=10).raise_for_status()

    def wait_for_sim(self, key: str, at_least: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.sim_stats().get(key, 0) < at_least:
            assert time.monotonic() < deadline, f"simulator never reached {key} >= {at_least}"
            time.sleep(0.05)

    def store(self) -> dict[str, Any]:
        engine = make_engine(self.db_url)
        try:
            with make_sessionmaker(engine)() as session:
                states: dict[str, int] = dict(session.execute(
                    select(Submission.state, func.count()).group_by(Submission.state)).all())
                creates = session.scalar(select(func.count()).where(Submission.operation == "create"))
                events = session.scalar(select(func.count()).select_from(InboxEvent))
                receipts = session.scalar(select(func.coalesce(func.sum(InboxEvent.duplicate_receipts), 0)))
        finally:
            engine.dispose()
        return {"states": states, "creates": creates, "events": events, "duplicate_receipts": receipts}

    def log_tail(self, lines: int = 40) -> str:
        path = self.workdir / "adapter.log"
        return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else ""


def assert_all_accepted_once(stack: Stack, events: int) -> None:
    """All ``events`` stored, every submission accepted, and each prescription received once by the simulator."""
    store, sim = stack.store(), stack.sim_stats()
    assert store["events"] == events
    assert store["states"] == {"accepted": sum(store["states"].values())}, stack.log_tail()
    assert sim["duplicates"] == 0
    assert sim["prescriptions"] == store["creates"]
    assert sim["received_submissions"] == store["creates"]


def status_json(stack: Stack) -> dict[str, Any]:
    done = stack.adapter("status", "--json")
    assert done.returncode == 0, stack.log_tail()
    return json.loads(done.stdout)


def wait_all_final(stack: Stack, events: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        store = stack.store()
        if store["events"] == events and set(store["states"]) <= {"accepted", "rejected", "invalid", "dead"}:
            return
        assert time.monotonic() < deadline, f"not finished in {timeout:.0f}s: {store}"
        time.sleep(0.5)


def wait_consumers(stack: Stack, count: int, timeout: float = 60, exactly: bool = False) -> None:
    """Until ``count`` consumers (at least, or ``exactly``) are attached to the stack's queue (RabbitMQ's own count)."""
    config = BrokerConfig(url=stack.broker_url, queue=stack.queue)
    deadline = time.monotonic() + timeout
    with connect(config) as connection:
        queue = event_queue(config)(connection.default_channel)
        queue.declare()  # as the adapter declares it: whoever comes first
        while True:
            _, _, consumers = queue.queue_declare(passive=True)
            if consumers == count or (consumers > count and not exactly):
                return
            assert time.monotonic() < deadline, f"{consumers} of {count} consumers attached after {timeout:.0f}s"
            time.sleep(0.1)


SEND_DELAY_SPREAD_S = 0.2  # claim to arrival at the simulator: thread hand-off, HTTP; more on a loaded CI machine


def assert_rate(log: list[dict[str, Any]], rps: float, burst: int) -> None:
    """In every 1-second window of arrivals at most burst + rps * (1 + spread) sends: the token
    bucket is taken when a send is claimed, and each send reaches the simulator a little later, by
    up to ``SEND_DELAY_SPREAD_S`` more than its neighbours, so an arrival second spans up to
    1 + spread seconds of claims."""
    times = sorted(r["at"] for r in log)
    bound = int(burst + rps * (1 + SEND_DELAY_SPREAD_S))
    for i, start in enumerate(times):
        inside = sum(1 for t in times[i:] if t < start + 1.0)
        assert inside <= bound, f"{inside} sends within one second (limit {rps}/s, burst {burst}: at most {bound})"
