"""The status service of a running adapter (issue 7): real pipeline (embedded queue, SQLite
store, Tamin simulator over HTTP), the runner in a thread with its status service on a free
port. /healthz, /readyz (including a consumer that silently stops), /status, the HTML page,
and /metrics names and values after a scripted run."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import kombu
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapter.app import App, build
from adapter.broker.connection import publish_bodies
from adapter.pipeline.runner import Runner
from adapter.samples.generate import generate
from adapter.sim.server import SimServer
from adapter.sim.tamin_app import create_tamin_app
from tests.support.pipeline import adapter_config, good_lines

BAD_LINE = b'{"event_id": "not-an-event", "hello": 1}'


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def metric(values: dict[Any, float], name: str, **labels: str) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@dataclass
class Running:
    app: App
    runner: Runner
    base_url: str
    sim: SimServer

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.base_url + path, timeout=10)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    with SimServer(create_tamin_app()) as sim:
        config = adapter_config(f"sqlite:///{tmp_path / 'a.db'}", sim.base_url, tmp_path,
                                broker__url=f"sqlite-queue:///{tmp_path / 'q.db'}",
                                status__port=0, status__ready_max_age_s=1.5, status__cache_s=0)
        app = build(config)
        runner = Runner(app)
        thread = threading.Thread(target=runner.run, name="test-runner", daemon=True)
        thread.start()
        try:
            wait_until(lambda: runner.status_server is not None, 10, "the status service")
            yield Running(app, runner, runner.status_server.base_url, sim)  # type: ignore[attr-defined]
        finally:
            runner.stop()
            thread.join(timeout=30)
            app.close()
    assert runner.status_server is None, "the status service must stop with the runner"


def sample_lines(patients: int = 4) -> list[bytes]:
    """Distinct good sample events (no deliberate repeats)."""
    return good_lines(generate(dt.datetime.now(dt.timezone.utc), patients=patients).lines)


def settled(running: Running, events: int) -> bool:
    report = running.get("/status").json()
    open_states = {"pending", "sending", "retry_wait"}
    tamin = report["destinations"].get("tamin", {})
    return report["events"]["total"] >= events and not open_states & {s for s, n in tamin.items() if n}


def test_endpoints_and_metrics_after_a_scripted_run(running: Running) -> None:
    before = metric_values(running.get("/metrics").text)
    lines = sample_lines()
    publish_bodies(running.app.config.broker, [*lines, BAD_LINE])
    wait_until(lambda: settled(running, len(lines) + 1), 60, "all events settled")

    health = running.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "up"

    ready = running.get("/readyz")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert checks["consumer"]["attached"] and checks["database"]["ok"] and checks["dispatcher"]["ok"]
    assert checks["consumer"]["last_delivery_age_s"] is not None

    report = running.get("/status").json()
    states = report["destinations"]["tamin"]
    assert states.get("accepted", 0) > 0
    tamin = report["health"]["tamin"]
    assert tamin["circuit"] == "closed" and tamin["outage"] is None and tamin["outage_mode"] is False
    assert tamin["last_success_at"] is not None
    if states.get("rejected"):  # the sample has patients the simulator refuses
        assert tamin["last_error"]["class"] == "rejected"
    assert report["events"]["invalid"] == 1
    assert report["oldest_pending"] is None
    assert report["liveness"]["consumer_attached"] is True

    page = running.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "tamin" in page.text and f"accepted={states['accepted']}" in page.text
    assert "<form" not in page.text and "<script" not in page.text

    response = running.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    after = metric_values(response.text)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("adapter_events_received_total", outcome="stored") == len(lines)
    assert delta("adapter_events_received_total", outcome="invalid") == 1
    attempts = {o: delta("adapter_attempts_total", destination="tamin", outcome=o) for o in ("accepted", "rejected")}
    assert attempts["accepted"] >= states["accepted"]
    assert attempts["rejected"] == states.get("rejected", 0)
    assert delta("adapter_send_duration_seconds_count", destination="tamin", outcome="accepted") == attempts["accepted"]
    assert delta("adapter_send_duration_seconds_bucket", destination="tamin", outcome="accepted", le="+Inf") \
        == attempts["accepted"]
    for state, count in states.items():
        assert metric(after, "adapter_submissions", destination="tamin", state=state) == count
    assert metric(after, "adapter_events", status="invalid") == 1
    assert metric(after, "adapter_token_refreshes_total", destination="tamin") >= 1
    assert metric(after, "adapter_circuit_state", destination="tamin") == 0
    wait_until(lambda: metric(metric_values(running.get("/metrics").text), "adapter_broker_queue_depth") == 0,
               10, "the queue depth gauge to read 0")
    assert metric(after, "adapter_consumer_attached") == 1
    assert 0 <= metric(after, "adapter_heartbeat_age_seconds", loop="consumer") < 1.5
    assert ("adapter_oldest_pending_age_seconds", (("destination", "tamin"),)) not in after  # nothing open


def test_a_consumer_that_silently_stops_turns_readyz_red(running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    wait_until(lambda: running.get("/readyz").status_code == 200, 15, "ready")
    stuck, release = threading.Event(), threading.Event()
    real_drain = kombu.Connection.drain_events

    def drain_events(self: kombu.Connection, **kwargs: Any) -> Any:
        if stuck.is_set():  # kombu #131/#514: drain_events hangs, no error, the process stays up
            release.wait(30)
        return real_drain(self, **kwargs)

    monkeypatch.setattr(kombu.Connection, "drain_events", drain_events)
    stuck.set()
    try:
        wait_until(lambda: running.get("/readyz").status_code == 503, 10, "/readyz to turn red")
        body = running.get("/readyz").json()
        assert body["ready"] is False
        assert body["checks"]["consumer"]["ok"] is False and "stuck" in body["checks"]["consumer"]["why"]
        assert body["checks"]["database"]["ok"] and body["checks"]["dispatcher"]["ok"]
        assert running.get("/healthz").status_code == 200  # the process is up: only readiness sees it
    finally:
        stuck.clear()
        release.set()
    wait_until(lambda: running.get("/readyz").status_code == 200, 10, "/readyz green again")


def test_readyz_red_while_the_database_is_unreachable(running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    from adapter.ops import http_status

    wait_until(lambda: running.get("/readyz").status_code == 200, 15, "ready")

    def broken(_: Any) -> None:
        raise ConnectionRefusedError("connection refused")

    monkeypatch.setattr(http_status, "ping_database", broken)
    response = running.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == {"ok": False, "why": "ConnectionRefusedError: connection refused"}


def test_status_shows_a_declared_outage_and_outage_mode(running: Running) -> None:
    from adapter.outage import records

    with running.app.sessions() as session:
        records.start_outage(session, "tamin", reason="planned maintenance", actor="ops", detected=records.MANUAL)
        session.commit()
    tamin = running.get("/status").json()["health"]["tamin"]
    assert tamin["outage"]["detected"] == "manual" and tamin["outage_mode"] is True
    assert metric(metric_values(running.get("/metrics").text), "adapter_outage_open",
                  destination="tamin", detected="manual") == 1
    assert "manual since" in running.get("/").text
