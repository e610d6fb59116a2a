"""Randomized fault test: the real adapter (``python -m adapter run`` as a process) on RabbitMQ +
PostgreSQL against the Tamin simulator over HTTP, while a few thousand events flow in.

At least ``CHAOS_CYCLES`` (50) cycles, each one fault picked by a seeded RNG (``CHAOS_SEED``):

* ``kill``   -- kill -9 of the adapter at a random moment, then a restart;
* ``rabbit`` -- RabbitMQ restart (``rabbitmqctl stop_app`` / ``start_app``) under the running
  adapter, which must reconnect on its own;
* ``down``   -- insurer downtime (``down_for_s``: every call, token calls too, answers 503), which
  opens the circuit: new prescriptions get paper-fallback records, delivered later;
* ``token``  -- every access token revoked, and for a while new ones live ~1 s;
* ``storm``  -- for a few seconds, up to N calls answer 429 (sometimes 500/502/503 or a closed
  connection);
* ``drop``   -- the next N create/edit/delete calls are applied, then the answer is lost
  (the ambiguous path: look up before sending again);
* ``pgcut``  -- every connection of the adapter to PostgreSQL is closed by the relay in front of it;
* ``pgrestart`` -- the test's own PostgreSQL server (``initdb`` + ``pg_ctl``) is stopped for a
  moment and started again (without the binaries or the ``postgres`` OS user: a ``pgcut``);
* ``netstall`` -- the relay between adapter and broker goes quiet for a few seconds, then drops;
* ``trickle`` -- the relay in front of the insurer passes its answers a few bytes at a time, so
  some outlast the adapter's send deadline (an answer lost in effect, after the insurer applied it).

The adapter reaches PostgreSQL, RabbitMQ and the insurer through relays (``tests/support/tcp_proxy.py``);
the checks look at the servers directly.

Faults overlap (a downtime outlives its cycle, storm counters carry over). The seed fixes the
schedule (kinds, counts, durations, the moment of each kill), not thread timing, so two runs
with one seed are alike but not identical. ``CHAOS_SECONDS`` paces the fault phase (default
150 s: the whole test takes ~3-4 minutes on 2 cores); ``CHAOS_EVENTS`` events (default 3000)
are published in chunks over the first 80% of it.

Then the faults stop, the chaos adapter must drain the queue (proving it reconnected after
the last broker restart), is stopped with SIGTERM, and ``adapter run --until-idle`` finishes the
work. Checked: every published event has exactly one inbox row and is ``accepted`` with all its
submissions ``accepted`` (the only visible state), every paper-fallback record is linked, the
simulator received every create exactly once (0 duplicates) and holds exactly one prescription
per create submission, and the queue is empty. One summary line with the counts is printed.

RabbitMQ: the test starts its own node (``tests/fault/chaos.py``) so its restarts do not disturb
other test runs on the machine's broker; ``CHAOS_RABBIT=shared`` restarts the shared node's app
instead (started again in ``finally``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select

from adapter.config import BrokerConfig
from adapter.sim.registry import TaminRegistry
from adapter.sim.server import SimServer
from adapter.sim.settings import TaminSimSettings
from adapter.sim.tamin_app import create_tamin_app
from adapter.store.db import make_engine, make_sessionmaker, upgrade
from adapter.store.models import Attempt, FallbackRecord, InboxEvent, Submission
from tests.fault.chaos import (PrivatePostgres, PrivateRabbit, Publisher, SharedRabbit, free_port, port_open,
                               queue_state)
from tests.support import services as svc
from tests.support.tcp_proxy import TcpProxy, url_relay
from tests.support.stack import Stack, good_event_lines, status_json

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("CHAOS_SEED", "20261125"))
CYCLES = int(os.environ.get("CHAOS_CYCLES", "50"))
SECONDS = float(os.environ.get("CHAOS_SECONDS", "150"))
EVENTS = int(os.environ.get("CHAOS_EVENTS", "3000"))
RABBIT = os.environ.get("CHAOS_RABBIT", "private")

KINDS = ("kill", "rabbit", "down", "token", "storm", "drop", "pgcut", "pgrestart", "netstall", "trickle")
WEIGHTS = (3, 1, 1, 1, 1, 1, 1.5, 1, 1, 1)
CHUNK = 100
DRAIN_TIMEOUT_S = 240


def schedule(rng: random.Random, cycles: int) -> list[str]:
    """Every kind at least twice (when there is room), the rest drawn by weight, shuffled."""
    base = [kind for kind in KINDS for _ in range(2)][:cycles]
    plan = base + rng.choices(KINDS, WEIGHTS, k=cycles - len(base))
    rng.shuffle(plan)
    return plan


@pytest.fixture
def rabbit(request: pytest.FixtureRequest) -> Iterator[PrivateRabbit | SharedRabbit]:
    node: PrivateRabbit | SharedRabbit
    if RABBIT == "shared":
        node = SharedRabbit(request.getfixturevalue("amqp_url"), svc.AMQP_PORT)
    else:
        node = PrivateRabbit()
        try:
            node.start()
        except Exception as exc:  # not root, no rabbitmq-server: same rule as the service fixtures
            node.close()
            svc.unavailable(f"cannot start a private RabbitMQ node for the chaos test: {exc}")
    try:
        yield node
    finally:
        node.close()  # private: shut down and removed; shared: started again if it is down


@dataclass
class Relays:
    """The relays between the adapter and its servers (the checks reach the servers directly)."""

    store: TcpProxy
    broker: TcpProxy
    insurer: TcpProxy


@contextmanager
def private_store(pg_admin_url: str) -> Iterator[tuple[PrivatePostgres | None, str]]:
    """The chaos store: a PostgreSQL server of the test's own (it may restart it), else a fresh
    database on the shared server (``pgrestart`` then falls back to ``pgcut``)."""
    server = PrivatePostgres()
    try:
        server.start()
    except Exception:
        server.close()
        name = svc.unique_name()
        try:
            yield None, svc.create_database(pg_admin_url, name)
        finally:
            svc.drop_database(pg_admin_url, name)
        return
    try:
        yield server, server.url
    finally:
        server.close()


@contextmanager
def chaos_setup(workdir: Path, pg_admin_url: str, rabbit: PrivateRabbit | SharedRabbit,
                ) -> Iterator[tuple[Stack, Relays, PrivatePostgres | None]]:
    """The stack the chaos schedule runs on (the test and ``bench.soak`` alike)."""
    today = TaminRegistry().today().strftime("%Y%m%d")  # fixed: a run across midnight keeps same-day deletes
    with ExitStack() as scope:
        sim = scope.enter_context(SimServer(create_tamin_app(TaminSimSettings(today_override=today))))
        pg, db_url = scope.enter_context(private_store(pg_admin_url))
        store_relay, relayed_db = scope.enter_context(url_relay(db_url, 5432))
        broker_relay, relayed_amqp = scope.enter_context(url_relay(rabbit.url, 5672))
        insurer_relay, relayed_sim = scope.enter_context(url_relay(sim.base_url, 80))
        stack = Stack("chaos", workdir, db_url, rabbit.url, sim)
        stack.write_config(workers=8, lease_s=3, poll_interval_s=0.05, batch_size=50)
        _chaos_config(stack, relayed_db, relayed_amqp, relayed_sim)
        upgrade(db_url)
        yield stack, Relays(store_relay, broker_relay, insurer_relay), pg


def _chaos_config(stack: Stack, db_url: str, amqp_url: str, sim_url: str) -> None:
    """The adapter's config: every server through its relay, fast retries, a status port."""
    with stack.edited_config() as config:
        config["database"]["url"] = db_url
        # heartbeat 5 s: a connection left hanging by a restart is given up within 10 s (the tests wait 45)
        config["broker"].update(url=amqp_url, prefetch=50, reply_queue=f"his.replies.{uuid.uuid4().hex[:8]}",
                                heartbeat_s=5)
        config["status"] = {**config.get("status", {}), "enabled": True, "port": free_port()}
        tamin = config["destinations"]["tamin"]
        tamin["base_url"] = sim_url
        tamin["retry"].update(max_attempts=100_000, base_delay_s=0.2, max_delay_s=2, ttl_s=24 * 3600)
        tamin["circuit"] = {"window": 20, "min_calls": 10, "failure_rate": 0.5, "open_s": 2, "half_open_probes": 2}
        tamin["max_rps"] = None


@pytest.fixture
def chaos_env(tmp_path: Path, pg_admin_url: str,
              rabbit: PrivateRabbit | SharedRabbit) -> Iterator[tuple[Stack, Relays, PrivatePostgres | None]]:
    with chaos_setup(tmp_path, pg_admin_url, rabbit) as env:
        yield env


@pytest.fixture
def chaos_stack(chaos_env: tuple[Stack, Relays, PrivatePostgres | None]) -> Stack:
    return chaos_env[0]


class Chaos:
    """The fault phase: the running adapter process, the faults, and what happened."""

    def __init__(self, stack: Stack, rabbit: PrivateRabbit | SharedRabbit, broker: BrokerConfig,
                 rng: random.Random, pace_s: float, relays: Relays | None = None, pg: PrivatePostgres | None = None):
        self.stack, self.rabbit, self.broker, self.rng, self.pace = stack, rabbit, broker, rng, pace_s
        self.relays, self.pg = relays, pg
        self.process: subprocess.Popen[bytes] | None = None
        self.kinds: Counter[str] = Counter()
        self.kills = self.starts = self.rabbit_restarts = 0
        self.unexpected_exits: list[int] = []
        self.reconnects: list[float] = []  # seconds from broker back to a consumer on the queue
        self._reconnect_from: float | None = None
        self.recovery = Recovery(stack)
        self.trace: list[str] = []

    # -- the adapter process ------------------------------------------------------------------------
    def start(self) -> None:
        self.process = self.stack.start_adapter()
        self.starts += 1

    def check_alive(self) -> None:
        assert self.process is not None
        code = self.process.poll()
        if code is not None:  # it must never stop on its own, whatever the faults
            self.unexpected_exits.append(code)
            self.trace.append(f"adapter exited by itself with {code}")
            self.start()

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.kills += 1
        self._reconnect_from = None  # the new process connects afresh: not a reconnect
        self.start()

    def observe_reconnect(self) -> None:
        """Since the last broker restart: is the running adapter consuming again? (cheap, non-blocking)"""
        if self._reconnect_from is None:
            return
        try:
            _, consumers = queue_state(self.broker)
        except Exception:
            return
        if consumers:
            self.reconnects.append(time.monotonic() - self._reconnect_from)
            self._reconnect_from = None

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(0.5, left))
            self.observe_reconnect()
            self.recovery.observe()

    # -- one cycle ----------------------------------------------------------------------------------
    def cycle(self, kind: str) -> None:
        rng, pace, stack = self.rng, self.pace, self.stack
        self.check_alive()
        self.observe_reconnect()
        self.kinds[kind] += 1
        if kind in self.NETWORK:
            getattr(self, kind)()
        elif kind == "kill":
            at = rng.uniform(0, 2 * pace)
            self.trace.append(f"kill at +{at:.2f}s")
            self.sleep(at)
            self.kill()
        elif kind == "rabbit":
            gap = rng.uniform(0, 1.0)
            self.trace.append(f"rabbit restart, down {gap:.2f}s")
            if self._reconnect_from is not None:  # the last restart's reconnect was never seen
                self.trace.append("previous broker restart: no consumer seen before this one")
            self.rabbit.stop_app()
            time.sleep(gap)
            self.rabbit.start_app()
            self.rabbit_restarts += 1
            self._reconnect_from = time.monotonic()
            self.recovery.fault_ended(kind)
            self.sleep(rng.uniform(0, pace))
        elif kind == "down":
            down = rng.uniform(1, 3 * pace)
            self.trace.append(f"insurer down {down:.1f}s")
            stack.sim_faults(down_for_s=down)
            self.sleep(rng.uniform(0.5 * down, 1.5 * down))
        elif kind == "token":
            ttl = rng.choice([0.5, 1.0, 2.0])
            hold = rng.uniform(0.5, 2 * pace)
            self.trace.append(f"tokens revoked, ttl {ttl}s for {hold:.1f}s")
            stack.sim_faults(revoke_tokens=True, token_ttl_s=ttl)
            self.sleep(hold)
            stack.sim_faults(token_ttl_s=3600)
        elif kind == "storm":
            status = 429 if rng.random() < 0.75 else rng.choice([500, 502, 503, 0])
            count, hold = rng.randint(20, 150), rng.uniform(pace, 3 * pace)
            self.trace.append(f"storm {count} x {status} for {hold:.1f}s")
            stack.sim_faults(fail_next=count, fail_status=status, retry_after_s=1)
            self.sleep(hold)
            # bounded in time too: the storm opens the circuit, and the few probes of an open
            # circuit would otherwise take minutes to use up the count (no normal traffic meanwhile)
            stack.sim_faults(fail_next=0)
        elif kind == "drop":
            count = rng.randint(2, 12)
            self.trace.append(f"drop {count} answers")
            stack.sim_faults(drop_response_after_apply=count, drop_endpoints=["create", "edit", "delete"])
            self.sleep(rng.uniform(0, 2 * pace))
        else:  # pragma: no cover
            raise AssertionError(kind)
        if kind not in self.MARKS_OWN_END:
            self.recovery.fault_ended(kind)

    NETWORK = frozenset({"pgcut", "pgrestart", "netstall", "trickle"})
    MARKS_OWN_END = frozenset({"rabbit", "pgcut", "pgrestart", "netstall"})  # a calm spell follows the fault

    def pgcut(self) -> None:
        """The relay closes every store connection: idle ones in the pool and ones mid-transaction."""
        assert self.relays is not None
        self.trace.append(f"store connections cut: {self.relays.store.drop()}")
        self.recovery.fault_ended("pgcut")
        self.sleep(self.rng.uniform(0, self.pace))

    def pgrestart(self) -> None:
        """The store's server is stopped (fast: sessions ended) and started again after a moment."""
        if self.pg is None:
            self.trace.append("pgrestart without a private server: a cut instead")
            return self.pgcut()
        gap = self.rng.uniform(0, 2.0)
        self.trace.append(f"store restart, down {gap:.2f}s")
        self.pg.down()
        time.sleep(gap)
        self.pg.restart_up()
        self.recovery.fault_ended("pgrestart")
        self.sleep(self.rng.uniform(0, self.pace))

    def netstall(self) -> None:
        """The broker link goes quiet (no bytes, no close) for a few seconds, then drops."""
        assert self.relays is not None
        hold = self.rng.uniform(1.0, 6.0)
        stalled = self.relays.broker.stall(hold)
        self.trace.append(f"broker link stalled {hold:.1f}s then dropped ({stalled} connections)")
        self._reconnect_from = time.monotonic()
        self.recovery.fault_ended("netstall")
        self.sleep(self.rng.uniform(0, self.pace))

    def trickle(self) -> None:
        """The insurer's answers come a few bytes at a time: 16 bytes every 20-150 ms."""
        assert self.relays is not None
        gap, hold = self.rng.uniform(0.02, 0.15), self.rng.uniform(self.pace, 3 * self.pace)
        self.trace.append(f"insurer trickles 16 B / {gap * 1000:.0f} ms for {hold:.1f}s")
        self.relays.insurer.trickle(16, gap)
        self.sleep(hold)
        self.relays.insurer.trickle(0, 0.0)

    def calm(self) -> None:
        """Every fault off (counters, downtime, short tokens)."""
        self.stack.sim_faults(fail_next=0, drop_response_after_apply=0, hang_next=0, latency_ms=0,
                              token_ttl_s=3600, down_for_s=0)
        if not port_open(self.rabbit.port):
            self.rabbit.start_app()
        if self.relays is not None:
            self.relays.insurer.trickle(0, 0.0)
        if self.pg is not None and not port_open(self.pg.port):
            self.pg.restart_up()


class Recovery:
    """How long the adapter takes to deliver again after each fault: from the fault's end until
    ``/readyz`` answers 200 and the insurer has answered a further call with 200. A fault whose
    recovery is not seen before the next one ends is measured from its own end all the same."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.readyz = f"http://127.0.0.1:{yaml.safe_load(stack.config_path.read_text())['status']['port']}/readyz"
        self.pending: list[tuple[str, float, int]] = []  # kind, fault end, 200 answers then
        self.longest: dict[str, float] = {}

    def _ok_answers(self) -> int:
        return sum(n for label, n in self.stack.sim_stats()["responses"].items() if label.endswith(" 200"))

    def fault_ended(self, kind: str) -> None:
        try:
            self.pending.append((kind, time.monotonic(), self._ok_answers()))
        except Exception:  # the simulator does not fail; a slow answer is not worth a cycle
            pass

    def observe(self) -> None:
        if not self.pending:
            return
        try:
            ready = httpx.get(self.readyz, timeout=2).status_code == 200
            answers = self._ok_answers() if ready else 0
        except Exception:
            return
        now, still = time.monotonic(), []
        for kind, ended, before in self.pending:
            if ready and answers > before:
                self.longest[kind] = max(self.longest.get(kind, 0.0), now - ended)
            else:
                still.append((kind, ended, before))
        self.pending = still


def wait_until(check: Any, timeout: float, step: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except Exception:
            value = None
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def store_view(db_url: str) -> dict[str, Any]:
    """Per event: its inbox rows and the one visible state of the event with its submissions."""
    engine = make_engine(db_url)
    try:
        with make_sessionmaker(engine)() as session:
            events = list(session.execute(select(InboxEvent.event_id, InboxEvent.status)))
            subs = list(session.execute(select(Submission.event_id, Submission.operation, Submission.state)))
            fallbacks = Counter(session.scalars(select(FallbackRecord.state)))
    finally:
        engine.dispose()
    by_event: dict[str, list[str]] = {}
    for event_id, _, state in subs:
        by_event.setdefault(event_id, []).append(state)
    visible: Counter[str] = Counter()
    odd: list[str] = []
    for event_id, status in events:
        states = set(by_event.get(event_id, []))
        view = status if status != "accepted" else ("accepted" if states == {"accepted"} else "+".join(sorted(states)))
        visible[view] += 1
        if view != "accepted" and len(odd) < 10:
            odd.append(f"{event_id}: {status} {sorted(states)}")
    return {"event_ids": [e for e, _ in events], "visible": visible, "odd": odd,
            "submissions": Counter(state for _, _, state in subs),
            "creates": sum(1 for _, op, _ in subs if op == "create"),
            "by_operation": Counter(op for _, op, _ in subs), "fallbacks": fallbacks}


@dataclass
class ChaosRun:
    """What one run of the schedule left: the summary line and what the end checks look at."""

    summary: dict[str, Any]
    problems: list[str]
    view: dict[str, Any]
    sim: dict[str, Any]
    queue_left: int
    report: dict[str, Any]
    chaos: Chaos
    event_ids: set[str]


def run_chaos(env: tuple[Stack, Relays, PrivatePostgres | None], rabbit: PrivateRabbit | SharedRabbit, seed: int,
              cycles: int, seconds: float, events: int) -> ChaosRun:
    """The schedule of ``cycles`` faults over ``seconds`` while ``events`` events flow in, then the
    drain; problems met on the way are kept in the result, not raised (``bench.soak`` counts them)."""
    stack, relays, pg = env
    rng = random.Random(seed)
    config = yaml.safe_load(stack.config_path.read_text())
    broker = BrokerConfig.model_validate({**config["broker"], "url": rabbit.url})  # straight, not relayed
    lines = good_event_lines(events)
    event_ids = {json.loads(line)["event_id"] for line in lines}
    chunks = [lines[i:i + CHUNK] for i in range(0, len(lines), CHUNK)]
    plan = schedule(rng, cycles)
    pace = seconds / max(1, cycles)
    publisher = Publisher(broker, chunks, spacing_s=0.8 * seconds / max(1, len(chunks)))
    chaos = Chaos(stack, rabbit, broker, rng, pace, relays, pg)
    timings: dict[str, float] = {}
    problems: list[str] = []
    summary: dict[str, Any] = {}
    started = time.monotonic()
    try:
        publisher.start()
        chaos.start()
        for kind in plan:
            chaos.cycle(kind)
        chaos.check_alive()
        timings["faults"] = time.monotonic() - started

        # -- calm: every chunk out, then the chaos adapter must drain the queue itself ----------------
        chaos.calm()
        if not publisher.join(timeout=120):
            problems.append(f"publisher did not finish: {publisher.done_chunks}/{len(chunks)} chunks")
        mark = time.monotonic()
        drained = wait_until(lambda: queue_state(broker) == (0, 1), timeout=90)
        timings["queue_drained_by_chaos_adapter"] = time.monotonic() - mark
        if not drained:
            problems.append(f"the running adapter did not drain the queue within 90 s after the faults "
                            f"(queue ready/consumers: {_safe(lambda: queue_state(broker))})")
        chaos.observe_reconnect()
        assert chaos.process is not None
        chaos.process.send_signal(signal.SIGTERM)
        code = chaos.process.wait(timeout=60)
        if code != 0:
            problems.append(f"SIGTERM: the adapter exited with {code}")

        # -- drain what is left, then look -------------------------------------------------------------
        mark = time.monotonic()
        done = stack.adapter("run", "--until-idle", timeout=DRAIN_TIMEOUT_S)
        timings["until_idle"] = time.monotonic() - mark
        if done.returncode != 0:
            problems.append(f"adapter run --until-idle exited with {done.returncode}")
        view, sim = store_view(stack.db_url), stack.sim_stats()
        ready, _ = queue_state(broker)
        report = status_json(stack)
        timings["total"] = time.monotonic() - started
        summary = {
            "seed": seed, "cycles": len(plan), "kinds": dict(chaos.kinds), "events": len(event_ids),
            "inbox_rows": len(view["event_ids"]), "visible": dict(view["visible"]),
            "submissions": dict(view["submissions"]), "operations": dict(view["by_operation"]),
            "fallbacks": dict(view["fallbacks"]), "sim_duplicates": sim["duplicates"],
            "sim_prescriptions": sim["prescriptions"], "sim_received": sim["received_submissions"],
            "sim_create_calls": sim["create_calls"], "sim_duplicate_answers": sim["duplicate_answers"],
            "sim_responses": {k: v for k, v in sim["responses"].items() if not k.endswith(" 200")},
            "kills": chaos.kills, "adapter_starts": chaos.starts, "rabbit_restarts": chaos.rabbit_restarts,
            "reconnect_s": [round(s, 1) for s in chaos.reconnects], "unexpected_exits": chaos.unexpected_exits,
            "published": publisher.published, "publish_retries": publisher.failures, "queue_left": ready,
            "timings_s": {k: round(v, 1) for k, v in timings.items()},
            "longest_recovery_s": {k: round(v, 1) for k, v in sorted(chaos.recovery.longest.items())},
            "recovery_unseen": sorted({kind for kind, _, _ in chaos.recovery.pending}),
        }
        print("CHAOS SUMMARY " + json.dumps(summary, sort_keys=True))
        (stack.workdir / "chaos-summary.json").write_text(json.dumps({**summary, "trace": chaos.trace}, indent=1))
        return ChaosRun(summary, problems, view, sim, ready, report, chaos, event_ids)

    finally:
        publisher.stop()
        if chaos.process is not None and chaos.process.poll() is None:
            chaos.process.kill()
            chaos.process.wait(timeout=30)
        if not summary:
            print(f"CHAOS ABORTED seed={seed} kinds={dict(chaos.kinds)} kills={chaos.kills} "
                  f"rabbit_restarts={chaos.rabbit_restarts} trace_tail={chaos.trace[-5:]}")


def check_chaos(run: ChaosRun, cycles: int) -> None:
    """The end checks: nothing lost, nothing twice, nothing left, the adapter never stopped by itself."""
    view, sim, ready, report, chaos, event_ids, problems, summary = (
        run.view, run.sim, run.queue_left, run.report, run.chaos, run.event_ids, run.problems, run.summary)
    ids = view["event_ids"]
    assert len(ids) == len(set(ids)) == len(event_ids) and set(ids) == event_ids, \
        f"inbox rows {len(ids)} (distinct {len(set(ids))}) for {len(event_ids)} events; " \
        f"missing {sorted(event_ids - set(ids))[:5]}"
    assert view["visible"] == {"accepted": len(event_ids)}, f"events not accepted: {view['odd']}"
    assert set(view["submissions"]) == {"accepted"}, view["submissions"]
    assert set(view["fallbacks"]) <= {"linked"}, f"paper-fallback records not linked: {view['fallbacks']}"
    assert sim["duplicates"] == 0, f"the insurer received a submission twice: {sim['duplicate_keys'][:5]}"
    assert sim["prescriptions"] == view["creates"] == sim["received_submissions"], summary
    assert ready == 0, f"{ready} messages left in the queue"
    assert report["destinations"]["tamin"] == {"accepted": sum(view["submissions"].values())}, report
    assert report["oldest_pending"] is None, report
    assert not chaos.unexpected_exits, f"the adapter stopped by itself: exit codes {chaos.unexpected_exits}"
    assert chaos.kinds.total() >= min(cycles, 50) and all(chaos.kinds[k] for k in KINDS), chaos.kinds
    assert not problems, problems


def test_chaos_nothing_lost_nothing_twice(chaos_env: tuple[Stack, Relays, PrivatePostgres | None],
                                          rabbit: PrivateRabbit | SharedRabbit) -> None:
    check_chaos(run_chaos(chaos_env, rabbit, SEED, CYCLES, SECONDS, EVENTS), CYCLES)


def attempt_lines(db_url: str) -> list[str]:
    engine = make_engine(db_url)
    try:
        with make_sessionmaker(engine)() as session:
            rows = session.execute(select(Attempt.submission_id, Attempt.number, Attempt.started_at, Attempt.duration_ms,
                                          Attempt.outcome, Attempt.response).order_by(Attempt.id))
            return [f"{sid}#{n} {at:%H:%M:%S.%f} {ms}ms {outcome} {response}" for sid, n, at, ms, outcome, response in rows]
    finally:
        engine.dispose()


def _safe(call: Any) -> Any:
    try:
        return call()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


# -- bugs the chaos runs showed, pinned down deterministically -------------------------------------------


def test_consumer_reconnects_promptly_after_each_of_several_broker_restarts(
        chaos_stack: Stack, rabbit: PrivateRabbit | SharedRabbit) -> None:
    stack = chaos_stack
    broker = BrokerConfig.model_validate(yaml.safe_load(stack.config_path.read_text())["broker"])
    process = stack.start_adapter()
    latencies: list[float] = []
    try:
        assert wait_until(lambda: queue_state(broker)[1] == 1, timeout=30), stack.log_tail()
        for _ in range(5):
            rabbit.stop_app()
            time.sleep(0.5)
            rabbit.start_app()
            back = time.monotonic()
            attached = wait_until(lambda: queue_state(broker)[1] == 1, timeout=45, step=0.1)
            assert attached, stuck_report(stack, process, rabbit)
            latencies.append(round(time.monotonic() - back, 1))
        print(f"reconnect after each broker restart (s): {latencies}")
        assert process.poll() is None, stack.log_tail()
        assert max(latencies) < 5, f"reconnect latencies grow: {latencies}\n{stack.log_tail()}"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def stuck_report(stack: Stack, process: subprocess.Popen[bytes], rabbit: PrivateRabbit | SharedRabbit) -> str:
    """Where a consumer that did not come back is: the adapter's threads (SIGUSR1 makes it write
    their stacks into its log), its log, and the broker node's log."""
    if process.poll() is None:
        process.send_signal(signal.SIGUSR1)
        time.sleep(1)
    return f"--- adapter log\n{stack.log_tail(120)}\n--- broker node log\n{rabbit.log_tail()}"


def _with_grace(stack: Stack, seconds: float) -> None:
    with stack.edited_config() as config:
        config["dispatch"]["ambiguous_grace_s"] = seconds


def test_a_create_the_insurer_applies_after_the_client_timed_out_is_not_sent_twice(chaos_stack: Stack) -> None:
    stack = chaos_stack
    visit, prescription = good_event_lines(2)
    stack.publish([visit])
    assert stack.adapter("run", "--until-idle").returncode == 0, stack.log_tail()
    assert stack.store()["states"] == {"accepted": 1}
    hang_s = 8.0  # longer than the send deadline (lease 3 s less margin: 2.4 s)
    _with_grace(stack, 10.0)  # the insurer's longest processing time, as an operator would set it
    stack.sim_faults(hang_next=1, hang_s=hang_s)
    stack.publish([prescription])
    assert stack.adapter("run", "--until-idle", "--idle-horizon", "15").returncode == 0, stack.log_tail()
    time.sleep(hang_s + 1)  # the held request arrived before the run ended: it is applied by now
    sim, store = stack.sim_stats(), stack.store()
    print("attempts: " + "; ".join(attempt_lines(stack.db_url)))
    print(f"create calls {sim['create_calls']}, duplicate answers {sim['duplicate_answers']}, "
          f"duplicates {sim['duplicates']}, store {store['states']}")
    assert store["states"] == {"accepted": 2}
    assert sim["prescriptions"] == 1
    assert sim["duplicates"] == 0, f"the insurer received the create {sim['create_calls']} times"
