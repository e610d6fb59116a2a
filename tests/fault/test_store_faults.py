"""The store fails under a running adapter (issue 16 item 2): ``adapter run`` as a real process must
keep running, report not ready on ``/readyz`` while the store is unavailable, and come back on its
own -- with the chaos test's end checks (``tests/fault/test_chaos.py``): every event stored once and
accepted, every submission accepted, 0 duplicates at the simulator.

* PostgreSQL, connection cuts: ``pg_terminate_backend`` of the adapter's connections, idle and
  while events flow, then a held outage (the database refuses new connections for a while), long
  enough for a message to fail more than ``POISON_AFTER`` times -- it must not be quarantined.
* PostgreSQL, a restart of a server the test starts itself (``initdb`` + ``pg_ctl`` on a free port).
* SQLite, a full disk: the store on a small tmpfs, filled up while events arrive, then freed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from adapter.config import BrokerConfig
from adapter.pipeline.runner import POISON_AFTER
from adapter.sim.registry import TaminRegistry
from adapter.sim.server import SimServer
from adapter.sim.settings import TaminSimSettings
from adapter.sim.tamin_app import create_tamin_app
from adapter.store.db import upgrade
from tests.fault.chaos import PrivatePostgres, Publisher, free_port, queue_state
from tests.fault.test_chaos import store_view, wait_until
from tests.integration.test_alerts import Webhook
from tests.support import services as svc
from tests.support.stack import Stack, good_event_lines

pytestmark = pytest.mark.integration

STORE_ERRORS = ("OperationalError", "InterfaceError", "AdminShutdown", "DiskFull")
HELD_OUTAGE_S = 8.0  # the consumer's back-off 0.5 + 1 + 2 + 4 s: more than POISON_AFTER tries of one message


class ReadyWatch:
    """Polls ``/readyz`` in a thread and keeps what it saw: whether the store check went red (with
    its reason), and the last answer."""

    def __init__(self, base_url: str):
        self._url = base_url + "/readyz"
        self._halt = threading.Event()
        self.red: list[dict[str, Any]] = []  # store checks seen not ok
        self.last: tuple[int, dict[str, Any]] | None = None
        self._thread = threading.Thread(target=self._run, name="readyz-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._halt.wait(0.1):
                try:
                    answer = client.get(self._url)
                except httpx.HTTPError:
                    continue
                body = answer.json()
                self.last = (answer.status_code, body)
                store = body.get("checks", {}).get("store", {})
                if answer.status_code == 503 and store.get("ok") is False:
                    self.red.append(store)

    def ready(self) -> bool:
        return self.last is not None and self.last[0] == 200

    def store_red_for(self) -> float:
        """How long the store check of the last answer has been red (0 when it is not)."""
        if self.last is None:
            return 0.0
        store = self.last[1].get("checks", {}).get("store", {})
        return float(store.get("unavailable_s") or 0.0) if store.get("ok") is False else 0.0

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(timeout=10)


def _stack(name: str, workdir: Path, db_url: str, broker_url: str, sim: SimServer) -> Stack:
    stack = Stack(name, workdir, db_url, broker_url, sim)
    stack.write_config(workers=8, lease_s=3, poll_interval_s=0.05, batch_size=50)
    with stack.edited_config() as config:
        config["status"] = {**config.get("status", {}), "enabled": True, "port": free_port()}
        config["broker"].update(prefetch=50)
        config["destinations"]["tamin"]["retry"].update(max_attempts=100_000, ttl_s=24 * 3600)
        config["destinations"]["tamin"]["max_rps"] = None
    return stack


def _status_url(stack: Stack) -> str:
    import yaml

    port = yaml.safe_load(stack.config_path.read_text())["status"]["port"]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def sim() -> Iterator[SimServer]:
    today = TaminRegistry().today().strftime("%Y%m%d")  # fixed: a run across midnight keeps same-day deletes
    with SimServer(create_tamin_app(TaminSimSettings(today_override=today))) as server:
        yield server


def end_checks(stack: Stack, event_ids: set[str]) -> None:
    """The chaos test's: each event stored once and accepted with all its submissions, no paper
    record left unlinked, the simulator got each create once and holds one prescription per create."""
    view, sim = store_view(stack.db_url), stack.sim_stats()
    ids = view["event_ids"]
    assert len(ids) == len(set(ids)) == len(event_ids) and set(ids) == event_ids, \
        f"inbox rows {len(ids)} (distinct {len(set(ids))}) for {len(event_ids)} events"
    assert view["visible"] == {"accepted": len(event_ids)}, f"events not accepted: {view['odd']}"
    assert set(view["submissions"]) == {"accepted"}, view["submissions"]
    assert set(view["fallbacks"]) <= {"linked"}, view["fallbacks"]
    assert sim["duplicates"] == 0, f"the insurer received a submission twice: {sim['duplicate_keys'][:5]}"
    assert sim["prescriptions"] == view["creates"] == sim["received_submissions"]


def wait_finished(stack: Stack, events: int, timeout: float) -> bool:
    def done() -> bool:
        store = stack.store()
        return store["events"] == events and set(store["states"]) == {"accepted"}
    return bool(wait_until(done, timeout=timeout, step=0.5))


def store_log_lines(stack: Stack) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """(outage lines, recovery lines, entries carrying a traceback of a store error) of the adapter's log."""
    entries = stack.log_entries()
    said = [str(e.get("event", "")) for e in entries]
    down = [line for line in said if line.startswith("store unavailable to the")]
    back = [line for line in said if line.startswith("store available again to the")]
    storms = [e for e in entries if any(name in str(e.get("exception", "")) for name in STORE_ERRORS)]
    return down, back, storms


def recovered(stack: Stack, process: subprocess.Popen[bytes], watch: ReadyWatch, events: int) -> None:
    """The recovery every store fault must end in: ``/readyz`` green again, every event accepted,
    the process still the one started (it never exited), and a clean stop on SIGTERM."""
    assert wait_until(watch.ready, timeout=90), f"/readyz: {watch.last}\n{stack.log_tail()}"
    assert wait_finished(stack, events, timeout=180), f"{stack.store()}\n{stack.log_tail()}"
    assert process.poll() is None, stack.log_tail()
    assert stop(process) == 0, stack.log_tail()


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=90)


# -- PostgreSQL: connection cuts and a held outage ---------------------------------------------------

def _admin(admin_url: str, sql: str, *args: Any) -> list[Any]:
    with psycopg.connect(svc.libpq_url(admin_url), autocommit=True, connect_timeout=5) as connection:
        cursor = connection.execute(sql, args or None)
        return cursor.fetchall() if cursor.description else []


def cut_connections(admin_url: str, database: str) -> int:
    """``pg_terminate_backend`` of every connection to ``database`` (the adapter's): how many."""
    return len(_admin(admin_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = %s AND pid <> pg_backend_pid()", database))


def allow_connections(admin_url: str, database: str, allow: bool) -> None:
    _admin(admin_url, f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {"true" if allow else "false"}')


@pytest.fixture
def webhook() -> Iterator[tuple[Webhook, str]]:
    receiver = Webhook()
    with SimServer(receiver.app) as server:  # a generic "uvicorn in a thread" runner
        yield receiver, server.base_url + "/hooks/adapter"


@pytest.fixture
def pg_stack(tmp_path: Path, pg_admin_url: str, amqp_url: str, sim: SimServer,
             webhook: tuple[Webhook, str]) -> Iterator[tuple[Stack, str]]:
    name = svc.unique_name()
    stack = _stack("pg-cuts", tmp_path, svc.create_database(pg_admin_url, name), amqp_url, sim)
    with stack.edited_config() as config:  # the store alert after 3 s, looked at every second
        config["alerts"] = {"enabled": True, "evaluate_every_s": 1, "webhooks": [{"url": webhook[1]}],
                            "rules": {"store_unavailable_s": 3}}
    upgrade(stack.db_url)
    try:
        yield stack, name
    finally:
        with contextlib.suppress(Exception):
            allow_connections(pg_admin_url, name, True)
        svc.drop_database(pg_admin_url, name)


def store_alerts(receiver: Webhook) -> list[str]:
    return [body["status"] for body in receiver.bodies() if body["key"] == "store_unavailable"]


def test_postgres_connection_cuts_and_an_outage_do_not_stop_the_run(pg_stack: tuple[Stack, str], pg_admin_url: str,
                                                                    webhook: tuple[Webhook, str]) -> None:
    stack, database = pg_stack
    broker = BrokerConfig(url=stack.broker_url, queue=stack.queue)
    lines = good_event_lines(500)
    event_ids = {json.loads(line)["event_id"] for line in lines}
    during_load, during_outage = lines[:400], lines[400:]
    process = stack.start_adapter()
    watch = ReadyWatch(_status_url(stack))
    publisher: Publisher | None = None
    try:
        assert wait_until(watch.ready, timeout=60), stack.log_tail()
        for _ in range(3):  # idle: the pool holds connections the server ended
            assert cut_connections(pg_admin_url, database) > 0
            time.sleep(1.0)
            assert process.poll() is None, stack.log_tail()

        publisher = Publisher(broker, [during_load[i:i + 50] for i in range(0, len(during_load), 50)], spacing_s=0.4)
        publisher.start()
        cuts = 0
        while not publisher.join(timeout=0.3) or cuts < 10:  # under load: claims, settles and intake cut mid-way
            cuts += cut_connections(pg_admin_url, database) > 0
            assert process.poll() is None, stack.log_tail()
        assert cuts >= 10

        allow_connections(pg_admin_url, database, False)  # held: every new connection refused
        cut_connections(pg_admin_url, database)
        outage_publisher = Publisher(broker, [during_outage], spacing_s=0)
        outage_publisher.start()
        assert outage_publisher.join(timeout=60), outage_publisher.errors
        assert wait_until(lambda: watch.store_red_for() >= HELD_OUTAGE_S, timeout=90), \
            f"/readyz: {watch.last}\n{stack.log_tail()}"
        assert process.poll() is None, stack.log_tail()
        assert wait_until(lambda: store_alerts(webhook[0])[-1:] == ["firing"], timeout=30), webhook[0].bodies()
        allow_connections(pg_admin_url, database, True)

        assert wait_until(lambda: store_alerts(webhook[0])[-1:] == ["resolved"], timeout=120), webhook[0].bodies()
        recovered(stack, process, watch, len(event_ids))
        assert queue_state(broker)[0] == 0
    finally:
        watch.stop()
        if publisher is not None:
            publisher.stop()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)

    assert any("store unavailable since" in red.get("why", "") for red in watch.red), watch.red[:3]
    end_checks(stack, event_ids)
    down, back, storms = store_log_lines(stack)
    assert any("to the consumer" in line for line in down) and any("to the dispatcher" in line for line in down)
    consumer_back = [line for line in back if "to the consumer" in line]
    tries = max(int(line.rsplit("(", 1)[1].split()[0]) for line in consumer_back)
    assert tries > POISON_AFTER, consumer_back  # the outage outlasted the poison count: still nothing invalid
    assert not storms, f"{len(storms)} log entries carry a store error's traceback: {storms[:2]}"


# -- PostgreSQL: a restart of the server ------------------------------------------------------------

@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
    except Exception as exc:  # no PostgreSQL binaries, no postgres user: as the service fixtures
        server.close()
        svc.unavailable(f"cannot start a private PostgreSQL server: {exc}")
    try:
        yield server
    finally:
        server.close()


def test_a_postgres_restart_under_a_running_adapter(tmp_path: Path, private_pg: PrivatePostgres, amqp_url: str,
                                                     sim: SimServer) -> None:
    stack = _stack("pg-restart", tmp_path, private_pg.url, amqp_url, sim)
    upgrade(stack.db_url)
    broker = BrokerConfig(url=stack.broker_url, queue=stack.queue)
    lines = good_event_lines(200)
    event_ids = {json.loads(line)["event_id"] for line in lines}
    process = stack.start_adapter()
    watch = ReadyWatch(_status_url(stack))
    try:
        assert wait_until(watch.ready, timeout=60), stack.log_tail()
        publisher = Publisher(broker, [lines[i:i + 50] for i in range(0, len(lines), 50)], spacing_s=0.5)
        publisher.start()
        for _ in range(2):  # down while events arrive, held until /readyz says so, then up again
            time.sleep(0.7)
            private_pg.down()
            assert wait_until(lambda: watch.store_red_for() > 0, timeout=60), f"/readyz: {watch.last}"
            assert process.poll() is None, stack.log_tail()
            private_pg.restart_up()
        assert publisher.join(timeout=60), publisher.errors
        recovered(stack, process, watch, len(event_ids))
    finally:
        watch.stop()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    end_checks(stack, event_ids)
    assert any("store unavailable since" in red.get("why", "") for red in watch.red)


# -- SQLite: a full disk ----------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MB tmpfs for the store (root only, as the chaos test's broker node)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        svc.unavailable(f"cannot mount a tmpfs for the disk-full test: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """A file that takes every free byte of ``folder``'s file system."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as out:
        for size in (1 << 20, 4096, 1):
            block = b"\0" * size
            try:
                while True:
                    out.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


def test_a_full_disk_under_sqlite_does_not_stop_the_run(tmp_path: Path, small_disk: Path, sim: SimServer) -> None:
    stack = _stack("disk-full", tmp_path, f"sqlite:///{small_disk / 'adapter.db'}",
                   f"sqlite-queue:///{tmp_path / 'queue.db'}", sim)
    lines = good_event_lines(300)
    event_ids = {json.loads(line)["event_id"] for line in lines}
    first, sending, later = lines[:50], lines[50:200], lines[200:]
    upgrade(stack.db_url)
    process = stack.start_adapter()
    watch = ReadyWatch(_status_url(stack))
    try:
        assert wait_until(watch.ready, timeout=60), stack.log_tail()
        stack.publish(first)
        assert wait_finished(stack, len(first), timeout=120), stack.log_tail()
        stack.sim_faults(latency_ms=300)  # slow answers: sends are in flight and claims due when the disk fills
        stack.publish(sending)
        stack.wait_for_sim("received_submissions", stack.sim_stats()["received_submissions"] + 10)
        filler = fill(small_disk)
        stack.publish(later)  # the queue is on another disk: the events wait there
        assert wait_until(lambda: watch.store_red_for() >= HELD_OUTAGE_S, timeout=120), \
            f"/readyz: {watch.last}\n{stack.log_tail()}"
        assert process.poll() is None, stack.log_tail()
        filler.unlink()
        stack.sim_faults(latency_ms=0)
        recovered(stack, process, watch, len(event_ids))
    finally:
        watch.stop()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    assert any("database or disk is full" in red.get("why", "") for red in watch.red), watch.red[:3]
    end_checks(stack, event_ids)
    down, _, storms = store_log_lines(stack)
    assert any("to the dispatcher" in line for line in down), down  # the claims' and settles' commits failed
    assert not storms, f"{len(storms)} log entries carry a store error's traceback: {storms[:2]}"
