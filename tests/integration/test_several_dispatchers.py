"""Several `adapter run` processes on one RabbitMQ queue and one PostgreSQL store, as hospital
IT scales out: they share the intake (competing consumers) and the sends (claims take rows with
`SKIP LOCKED` and a lease), and the insurer still gets every prescription exactly once --
also when one of them is killed mid-send and the other takes its abandoned sends over.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapter.sim.server import SimServer
from adapter.sim.settings import TaminSimSettings
from adapter.sim.tamin_app import create_tamin_app
from tests.support import services as svc
from tests.support.stack import (Stack, assert_all_accepted_once, assert_rate, good_event_lines, wait_all_final,
                                 wait_consumers)

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(tmp_path: Path, pg_admin_url: str, amqp_url: str) -> Iterator[Stack]:
    with SimServer(create_tamin_app(TaminSimSettings())) as sim:
        name = svc.unique_name()
        built = Stack("rabbitmq+postgresql", tmp_path, svc.create_database(pg_admin_url, name), amqp_url, sim)
        built.write_config()
        with built.edited_config() as config:
            config["status"] = {"port": 0}  # two processes on one host: each its own free port
        try:
            yield built
        finally:
            svc.drop_database(pg_admin_url, name)


def start(stack: Stack, label: str, *args: str) -> subprocess.Popen[bytes]:
    """One `adapter run` process, logging to its own file."""
    return stack.start_adapter(*args, log_name=f"adapter-{label}.log")


def attempts_logged(stack: Stack, label: str) -> int:
    """Exchanges with the insurer that process ``label`` recorded (its JSON "attempt" log lines)."""
    return sum(entry.get("event") == "attempt" for entry in stack.log_entries(f"adapter-{label}.log"))


def log_tails(stack: Stack, *labels: str) -> str:
    return "\n".join(f"--- {label}\n" + "\n".join(
        (stack.workdir / f"adapter-{label}.log").read_text(errors="replace").splitlines()[-20:]) for label in labels)


def test_two_processes_share_the_work_and_send_each_prescription_once(stack: Stack) -> None:
    stack.sim_faults(latency_ms=10)
    first, second = start(stack, "a"), start(stack, "b")
    try:
        wait_consumers(stack, 2)  # both attached before any event: neither can finish alone
        stack.publish(good_event_lines(800))
        wait_all_final(stack, 800, timeout=180)
        for process in (first, second):
            process.send_signal(signal.SIGTERM)
        codes = first.wait(timeout=120), second.wait(timeout=120)
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.kill()
    assert codes == (0, 0), log_tails(stack, "a", "b")
    assert_all_accepted_once(stack, 800)
    sent = attempts_logged(stack, "a"), attempts_logged(stack, "b")
    assert min(sent) > 0, f"one process sent nothing ({sent})"
    assert sum(sent) == sum(stack.sim_stats()["requests"].get(k, 0)
                            for k in ("eligibility", "create", "edit", "delete"))


def test_one_of_two_killed_mid_send_the_other_finishes_without_a_second_prescription(stack: Stack) -> None:
    stack.sim_faults(latency_ms=40)  # sends in flight when the kill comes
    victim, survivor = start(stack, "victim"), start(stack, "survivor")
    try:
        wait_consumers(stack, 2)
        stack.publish(good_event_lines(600))
        stack.wait_for_sim("create_calls", 40)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        assert attempts_logged(stack, "victim") > 0, "the victim sent nothing before the kill: nothing was tested"
        stack.sim_faults(latency_ms=0)
        # the survivor alone: the victim's unacked messages come back to it from RabbitMQ, and
        # the victim's leased sends are looked up once the lease and the grace have passed
        wait_all_final(stack, 600, timeout=180)
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(timeout=120) == 0, log_tails(stack, "survivor")
    finally:
        for process in (victim, survivor):
            if process.poll() is None:
                process.kill()
    assert_all_accepted_once(stack, 600)


def test_two_processes_keep_to_one_max_rps_together(stack: Stack) -> None:
    """max_rps is the insurer's allowance, not each process's: on PostgreSQL the bucket is shared."""
    with stack.edited_config() as config:
        config["destinations"]["tamin"].update(max_rps=10, max_burst=2)
    first, second = start(stack, "a"), start(stack, "b")
    try:
        wait_consumers(stack, 2)
        stack.publish(good_event_lines(80))
        wait_all_final(stack, 80, timeout=120)
    finally:
        for process in (first, second):
            process.send_signal(signal.SIGTERM)
        for process in (first, second):
            process.wait(timeout=60)
    assert min(attempts_logged(stack, "a"), attempts_logged(stack, "b")) > 0, "one process sent nothing"
    sent = [r for r in stack.sim.app.state.registry.request_log() if r["endpoint"] != "token"]
    assert len(sent) >= 60
    assert_rate(sent, 10, 2)  # two in-memory buckets would let through about 20 a second


def test_processes_starting_together_on_a_new_database_all_come_up(pg_admin_url: str) -> None:
    """Each `adapter run` brings the schema up to date at start; started together on an empty
    database, they take turns instead of failing on each other's half-made tables."""
    name = svc.unique_name()
    url = svc.create_database(pg_admin_url, name)
    try:
        code = f"from adapter.store.db import upgrade; upgrade({url!r})"
        starters = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
                    for _ in range(4)]
        results = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in starters]
        assert [c for c, _ in results] == [0, 0, 0, 0], "\n".join(err[-1500:] for _, err in results)
    finally:
        svc.drop_database(pg_admin_url, name)
