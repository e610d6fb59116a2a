"""``python -m bench``: run the scenarios, print a table, write every figure to a JSON file.

Each scenario gets a fresh backend (files, or a fresh vhost + database) and a freshly reset
simulator, which runs in its own process with a fixed latency for the API calls.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import events as gen, profile as prof
from bench.adapter_proc import (REPO, AdapterProcess, ProcessGroup, adapter_cli, effective_config, read_rss_cpu,
                                write_config)
from bench.backends import Backend, backend
from bench.simproc import SimProcess
from bench.store import Store, latency_figures, percentiles

console = Console(stderr=True)
TARGETS = {"throughput_ratio": 0.7, "throughput_eps_sqlite_2cores": 1000, "p99_added_ms": 15.0,
           "drain_fraction": 0.95, "rss_mb": 200, "his_answer_s": 30}


# -- helpers -------------------------------------------------------------------------------------
def publish(b: Backend, bodies: Any) -> dict[str, Any]:
    from adapter.broker.connection import publish_bodies
    from adapter.config import BrokerConfig

    t0 = time.monotonic()
    count = publish_bodies(BrokerConfig(url=b.broker_url, queue=b.queue), bodies)
    elapsed = time.monotonic() - t0
    return {"published": count, "elapsed_s": round(elapsed, 2), "per_s": round(count / elapsed, 1) if elapsed else None}


def wait_settled(store: Store, proc: AdapterProcess | ProcessGroup, expected: int, timeout_s: float, every_s: float = 1.0,
                 label: str = "") -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    last_print = 0.0
    while True:
        progress = store.progress()
        if progress["events"] >= expected and progress["open"] == 0:
            return progress
        if not proc.alive():
            raise RuntimeError(f"the adapter exited:\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not settled in {timeout_s:.0f}s: {progress}")
        if time.monotonic() - last_print > 15:
            console.log(f"  {label} stored {progress['events']}/{expected}, open {progress['open']}")
            last_print = time.monotonic()
        time.sleep(every_s)


class SimCpu:
    """CPU seconds the simulator process spends over a scenario, per request it answered: the
    simulator shares this machine's cores with what is measured, so the share it takes bounds
    what is left (see ``cpu_ceiling``)."""

    def __init__(self, sim: SimProcess):
        self._sim = sim
        self._cpu0 = self._cpu()
        self._requests0 = self._requests()

    def _cpu(self) -> float:
        got = read_rss_cpu(self._sim.pid)
        return got[1] if got else 0.0

    def _requests(self) -> int:
        return sum((self._sim.stats().get("requests") or {}).values())

    def figures(self, events: int) -> dict[str, Any]:
        cpu_s = self._cpu() - self._cpu0
        requests = self._requests() - self._requests0
        return {"cpu_s": round(cpu_s, 2), "requests": requests,
                "cpu_ms_per_request": round(cpu_s * 1000 / requests, 3) if requests else None,
                "cpu_ms_per_event": round(cpu_s * 1000 / events, 3) if events else None}


def cpu_ceiling(cores: int, sim_ms_per_event: float | None, baseline: dict[str, Any] | None,
                throughput: dict[str, Any] | None, target_eps: float, processes: int = 1) -> dict[str, Any] | None:
    """The most events/s the CPU allows on this machine, from the CPU each side spent per event.

    All processes share ``cores``: a loop needing ``a`` ms of its own CPU and ``s`` ms of the
    simulator's per event cannot pass ``cores * 1000 / (a + s)`` events/s; and one Python
    interpreter runs its Python code on one core at a time, so not past ``1000 / a`` either
    (a little more in practice: SQLite and socket waits release the GIL; ``processes`` adapter
    processes: ``processes * 1000 / a``). ``adapter_budget_ms``
    is the adapter CPU per event that ``target_eps`` would leave room for."""
    if not sim_ms_per_event:
        return None
    out: dict[str, Any] = {"cores": cores, "simulator_cpu_ms_per_event": sim_ms_per_event,
                           "target_eps": target_eps,
                           "adapter_budget_ms_per_event_for_target": round(cores * 1000 / target_eps - sim_ms_per_event, 3)}
    for name, run, interpreters in (("bare", baseline, 1), ("adapter", throughput, processes)):
        own = (run or {}).get("cpu_ms_per_event")
        if own:
            out[name] = {"cpu_ms_per_event": own, "all_cores_eps": round(cores * 1000 / (own + sim_ms_per_event), 1),
                         "interpreters": interpreters, "interpreters_eps": round(interpreters * 1000 / own, 1)}
    return out


def seconds(a: dt.datetime | None, b: dt.datetime | None) -> float | None:
    return None if a is None or b is None else (b - a).total_seconds()


def pg_rabbit_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        from bench.backends import _libpq, _pg_admin
        import psycopg

        with psycopg.connect(_libpq(_pg_admin()), connect_timeout=5) as conn:
            out["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
    except Exception as exc:
        out["postgresql"] = f"unknown ({type(exc).__name__})"
    try:
        done = subprocess.run(["rabbitmqctl", "-q", "version"], capture_output=True, text=True, timeout=60)
        out["rabbitmq"] = done.stdout.strip() or "unknown"
    except Exception as exc:
        out["rabbitmq"] = f"unknown ({type(exc).__name__})"
    return out


def machine(kinds: list[str]) -> dict[str, Any]:
    import importlib.metadata as md
    import sqlite3

    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        mem = next(line.split(":", 1)[1].strip() for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    except (OSError, StopIteration):
        pass
    versions = {name: md.version(name) for name in ("kombu", "SQLAlchemy", "httpx", "uvicorn", "starlette",
                                                    "psycopg", "amqp", "pydantic", "structlog")
                if _has(md, name)}
    versions.update(python=platform.python_version(), sqlite=sqlite3.sqlite_version)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "adapter", "config", "mappings"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    info = {"cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)), "cpu_model": model,
            "memory": mem, "kernel": platform.release(), "versions": versions, "git_commit": commit,
            "adapter_tree_dirty": bool(dirty), "dirty_files": dirty.splitlines()[:30]}
    if "rabbitmq-postgres" in kinds:
        info["versions"].update(pg_rabbit_versions())
    return info


def _has(md: Any, name: str) -> bool:
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


def loadavg() -> list[float]:
    try:
        return [float(x) for x in open("/proc/loadavg").read().split()[:3]]
    except OSError:
        return []


# -- scenarios -----------------------------------------------------------------------------------
def run_baseline(kind: str, work: Path, sim: SimProcess, bodies: list[bytes], workers: int) -> dict[str, Any]:
    sim.reset()
    with backend(kind, work / "baseline") as b:
        pub = publish(b, bodies)
        load0 = loadavg()
        sim_cpu = SimCpu(sim)
        done = subprocess.run([sys.executable, "-m", "bench.baseline", "--broker", b.broker_url, "--queue", b.queue,
                               "--db", b.db_url, "--sim", sim.base_url, "--workers", str(workers),
                               "--count", str(len(bodies))], cwd=REPO, capture_output=True, text=True,
                              timeout=7200)
        if done.returncode != 0:
            raise RuntimeError(f"baseline failed: {done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(publish=pub, workers=workers, simulator_cpu=sim_cpu.figures(len(bodies)), loadavg_before=load0,
                  loadavg_after=loadavg())
    return result


def run_throughput(kind: str, work: Path, sim: SimProcess, bodies: list[bytes], sim_latency_ms: float,
                   workers: int | None, profile: bool, processes: int = 1) -> dict[str, Any]:
    sim.reset()
    with backend(kind, work / "throughput") as b:
        config = write_config(b, sim.base_url, max_rps=None, workers=workers, answer_deadline=False)
        adapter_cli(config, "db-upgrade")
        pub = publish(b, bodies)
        store = Store(b.db_url)
        load0 = loadavg()
        profile_path = b.workdir / "py-spy.raw.txt" if profile else None
        sim_cpu = SimCpu(sim)
        proc = ProcessGroup(config, processes, profile=profile_path)
        try:
            settled = wait_settled(store, proc, len(bodies), timeout_s=max(600, len(bodies) / 20), label="throughput")
            wall = time.monotonic() - proc.started
        finally:
            code = proc.stop()
        window = store.window()
        span = seconds(window["first_received"], window["last_final"])
        states = store.states()
        rows = store.latency_rows()
        store.close()
        sim_stats = sim.stats()
        sim_figures = sim_cpu.figures(len(bodies))
        cpu = proc.summary()
        result = {
            "events": len(bodies), "processes": processes, "settled": settled, "states": states, "exit_code": code,
            "span_s": round(span, 3) if span else None,
            "events_per_s": round(len(bodies) / span, 1) if span else None,
            "submissions_per_s": round(sum(states.values()) / span, 1) if span else None,
            "wall_s_incl_startup": round(wall, 2),
            "intake_span_s": round(seconds(window["first_received"], window["last_received"]) or 0, 3),
            "cpu_s": cpu.get("cpu_s"),
            "cpu_ms_per_event": round(cpu["cpu_s"] * 1000 / len(bodies), 3) if cpu.get("cpu_s") else None,
            "rss": cpu, "publish": pub, "config": effective_config(config),
            "latency_under_saturation": latency_figures(rows, sim_latency_ms),
            "simulator": {k: sim_stats.get(k) for k in ("requests", "duplicates", "rejections", "create_calls")},
            "simulator_cpu": sim_figures,
            "loadavg_before": load0, "loadavg_after": loadavg(),
        }
        if profile_path is not None and profile_path.exists():
            result["profile"] = prof.summarise(profile_path)
            result["profile"]["raw_file"] = str(profile_path)
        return result


def stamped_now(body: bytes) -> bytes:
    """The event as the HIS would send it at this moment (``occurred_at`` now): the HIS answer is timed from it."""
    event = json.loads(body)
    event["occurred_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
    return json.dumps(event, ensure_ascii=False).encode()


def run_latency(kind: str, work: Path, sim: SimProcess, rate: float, duration_s: float, sim_latency_ms: float,
                workers: int | None, outage: bool = False) -> dict[str, Any]:
    """Open loop: events published at a fixed rate (well below capacity) while the adapter runs.
    ``outage``: with an outage of tamin declared first, so every prescription's answer is its paper."""
    sim.reset()
    count = int(rate * duration_s)
    bodies = gen.events(count, tag="o" if outage else "l", seed=9300 if outage else 9100)
    with backend(kind, work / ("latency-outage" if outage else "latency")) as b:
        config = write_config(b, sim.base_url, max_rps=None, workers=workers)
        adapter_cli(config, "db-upgrade")
        if outage:
            adapter_cli(config, "outage", "start", "--destination", "tamin", "--reason", "benchmark: answers in outage")
        store = Store(b.db_url)
        proc = AdapterProcess(config)
        try:
            time.sleep(3.0)  # started, consumer attached
            from adapter.broker.connection import producer

            t0 = time.monotonic()
            with producer(adapter_proc_broker(b)) as sender:
                for i, body in enumerate(bodies):
                    due = t0 + i / rate
                    pause = due - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    sender.publish(stamped_now(body), content_type="application/json", content_encoding="binary",
                                   delivery_mode=2)
            achieved = count / (time.monotonic() - t0)
            if outage:
                wait_answered(store, count)
            else:
                wait_settled(store, proc, count, timeout_s=600, label="latency")
        finally:
            code = proc.stop()
        rows = store.latency_rows()
        states = store.states()
        answers = store.his_answer_ms()
        store.close()
    figures = {} if outage else latency_figures(rows, sim_latency_ms)
    return {"events": count, "target_rate_per_s": rate, "achieved_publish_rate_per_s": round(achieved, 1),
            "duration_s": duration_s, "states": states, "exit_code": code, "config": effective_config(config),
            "rss": proc.sampler.summary(), "his_answer_ms": percentiles(answers), **figures}


def wait_answered(store: Store, events: int, timeout_s: float = 300) -> None:
    """Every event stored and every reply published (an outage: nothing settles, papers are the answers)."""
    deadline = time.monotonic() + timeout_s
    while store.progress()["events"] < events or store.answers_pending():
        if time.monotonic() > deadline:
            raise RuntimeError(f"answers not all published in {timeout_s:.0f}s: {store.progress()}")
        time.sleep(0.5)


def adapter_proc_broker(b: Backend) -> Any:
    from adapter.config import BrokerConfig

    return BrokerConfig(url=b.broker_url, queue=b.queue)


def run_drain(kind: str, work: Path, sim: SimProcess, size: int, rps: float, workers: int | None,
              processes: int = 1) -> dict[str, Any]:
    """A declared outage while ``size`` events arrive; then it ends and the backlog drains at ``max_rps``
    (with several processes on PostgreSQL: at ``max_rps`` together, the bucket being shared)."""
    from sqlalchemy import select

    from adapter.store.models import Outage, StateChange

    sim.reset()
    bodies = gen.events(size, tag="d", seed=12000)
    with backend(kind, work / "drain") as b:
        config = write_config(b, sim.base_url, max_rps=rps, workers=workers)
        adapter_cli(config, "outage", "start", "-d", "tamin", "--reason", "bench: backlog drain", "--actor", "bench")
        store = Store(b.db_url)
        proc = ProcessGroup(config, processes, every_s=1.0)
        try:
            pub = publish(b, bodies)  # while the adapter stores them (outage: nothing is sent)
            deadline = time.monotonic() + max(900, size / 20)
            while store.progress()["events"] < size:
                if not proc.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"backlog not stored: {store.progress()}\n{proc.log_tail()}")
                time.sleep(1.0)
            sent_during_outage = sum(sim.stats().get("requests", {}).get(k, 0)
                                     for k in ("create", "edit", "delete", "eligibility"))
            backlog = store.progress()["open"]
            fill_rss = proc.summary()
            adapter_cli(config, "outage", "end", "-d", "tamin", "--reason", "bench: insurer back", "--actor", "bench")
            wait_settled(store, proc, size, timeout_s=max(900, 3 * size / rps), every_s=2.0, label="drain")
        finally:
            code = proc.stop()
        with store.sessions() as s:
            ended = s.scalar(select(Outage.ended_at).where(Outage.ended_at.is_not(None)).order_by(Outage.id.desc()))
            finals = sorted(at for (at,) in s.execute(
                select(StateChange.at).where(StateChange.to_state.in_(("accepted", "rejected", "invalid", "dead")),
                                             StateChange.submission_id.is_not(None), StateChange.at >= ended)))
        states = store.states()
        window = store.window()
        store.close()
    drain_s = seconds(ended, finals[-1]) if finals else None
    achieved = len(finals) / drain_s if drain_s else None
    steady = None
    if len(finals) > 100:
        lo, hi = finals[len(finals) // 10], finals[len(finals) * 9 // 10]
        span = (hi - lo).total_seconds()
        steady = round((len(finals) * 9 // 10 - len(finals) // 10) / span, 1) if span > 0 else None
    burst = rps  # the bucket starts full: one second's worth
    ideal_s = max(0.0, (len(finals) - burst) / rps)
    return {"size": size, "backlog_submissions": backlog, "sent_during_outage": sent_during_outage,
            "max_rps": rps, "publish": pub, "fill_s": round(seconds(window["first_received"], window["last_received"]) or 0, 1),
            "fill_events_per_s": round(size / (seconds(window["first_received"], window["last_received"]) or 1), 1),
            "drain_s": round(drain_s, 2) if drain_s else None, "sent_after_outage": len(finals),
            "achieved_rps": round(achieved, 1) if achieved else None,
            "fraction_of_allowed": round(achieved / rps, 3) if achieved else None,
            "steady_rps_p10_p90": steady, "steady_fraction": round(steady / rps, 3) if steady else None,
            "ideal_drain_s_with_initial_burst": round(ideal_s, 2), "states": states, "exit_code": code,
            "config": effective_config(config), "processes": processes, "rss_during_fill": fill_rss,
            "rss": proc.summary()}


DRAIN_STEADY_MAX = 1.05  # above this the insurer saw more than max_rps (not just the first second's burst)


def drain_kept(drain: dict[str, Any]) -> bool:
    """The drain used the allowance (>= the target fraction) and kept under it (steady rate)."""
    steady = drain.get("steady_fraction")
    return (drain.get("fraction_of_allowed") or 0) >= TARGETS["drain_fraction"] and \
        (steady is None or steady <= DRAIN_STEADY_MAX)


def run_long(kind: str, work: Path, sim: SimProcess, count: int, workers: int | None,
             backlog: int = 20_000) -> dict[str, Any]:
    """``count`` events streamed in through one adapter process, the work in hand (in the queue
    or stored and not yet final) kept under ``backlog``, so the run is a steady state and not a
    queue that grows; RSS sampled every 2 s with the number of events stored at that moment."""
    from adapter.broker.connection import producer

    sim.reset()
    with backend(kind, work / "long") as b:
        config = write_config(b, sim.base_url, max_rps=None, workers=workers, answer_deadline=False)
        adapter_cli(config, "db-upgrade")
        store = Store(b.db_url)
        latest = {"events": 0, "open": 0}
        proc = AdapterProcess(config, every_s=2.0, progress=lambda: latest["events"])
        published = 0
        try:
            stream = gen.event_stream(count, tag="m", seed=20000)
            with producer(adapter_proc_broker(b)) as sender:
                for body in stream:
                    sender.publish(body, content_type="application/json", content_encoding="binary", delivery_mode=2)
                    published += 1
                    if published % 2000 == 0:
                        while True:
                            latest.update(store.progress())
                            if published - latest["events"] + latest["open"] < backlog:
                                break
                            if not proc.alive():
                                raise RuntimeError(proc.log_tail())
                            time.sleep(1.0)
                        if published % 50_000 == 0:
                            console.log(f"  long: published {published}, stored {latest['events']}")
            while True:
                latest.update(store.progress())
                if latest["events"] >= count and latest["open"] == 0:
                    break
                if not proc.alive():
                    raise RuntimeError(proc.log_tail())
                time.sleep(2.0)
        finally:
            code = proc.stop()
        window = store.window()
        states = store.states()
        store.close()
    span = seconds(window["first_received"], window["last_final"])
    rss = proc.sampler.summary(points=200)
    return {"events": count, "states": states, "exit_code": code, "span_s": round(span or 0, 1),
            "events_per_s": round(count / span, 1) if span else None, "rss": rss, **rss_trend(proc.sampler.samples)}


def rss_trend(samples: list[tuple[float, int, float, Any]]) -> dict[str, Any]:
    """Least-squares slope of RSS against events stored, after the first 10% (warm-up)."""
    points = [(p, r / 2**20) for _, r, _, p in samples if isinstance(p, int) and p > 0]
    points = points[len(points) // 10:]
    if len(points) < 5:
        return {}
    n = len(points)
    mx = sum(p for p, _ in points) / n
    my = sum(r for _, r in points) / n
    sxx = sum((p - mx) ** 2 for p, _ in points)
    slope = sum((p - mx) * (r - my) for p, r in points) / sxx if sxx else 0.0
    return {"rss_slope_mb_per_100k_events": round(slope * 100_000, 2)}


# -- report --------------------------------------------------------------------------------------
def verdict(ok: bool | None) -> str:
    return "[green]met[/]" if ok else ("[red]not met[/]" if ok is not None else "-")


def ceiling_text(ceiling: dict[str, Any]) -> str:
    parts = [f"{name} <= {min(c['all_cores_eps'], c['interpreters_eps'])} ev/s"
             for name in ("bare", "adapter") if (c := ceiling.get(name))]
    return ", ".join(parts)


def table(results: dict[str, Any]) -> Table:
    t = Table(title=f"adapter benchmark ({results['parameters']['mode']}; {results['machine']['cores']} cores)")
    for col in ("backend", "measure", "value", "target", "verdict"):
        t.add_column(col)
    for kind, r in results["backends"].items():
        base, thr, lat, drain, long = (r.get(k) for k in ("baseline", "throughput", "latency", "drain", "long"))
        if base:
            t.add_row(kind, f"bare pipeline ({base['workers']} workers)", f"{base['events_per_s']} ev/s "
                      f"({base['cpu_ms_per_event']} ms CPU/ev)", "", "")
        if thr:
            procs = thr.get("processes", 1)
            t.add_row(kind, "adapter throughput" + (f" ({procs} processes)" if procs > 1 else ""),
                      f"{thr['events_per_s']} ev/s ({thr['cpu_ms_per_event']} ms CPU/ev)",
                      f">= {TARGETS['throughput_eps_sqlite_2cores']} ev/s" if kind == "embedded" else "",
                      verdict(thr["events_per_s"] >= TARGETS["throughput_eps_sqlite_2cores"]) if kind == "embedded"
                      else "")
            if base:
                ratio = r["throughput_ratio"]
                t.add_row(kind, "adapter / bare", f"{ratio:.2f}x", f">= {TARGETS['throughput_ratio']}x",
                          verdict(ratio >= TARGETS["throughput_ratio"]))
            ceiling = r.get("cpu_ceiling")
            if ceiling:
                t.add_row(kind, f"CPU ceiling on {ceiling['cores']} cores (simulator "
                          f"{ceiling['simulator_cpu_ms_per_event']} ms CPU/ev)", ceiling_text(ceiling),
                          f"{ceiling['target_eps']:.0f} ev/s leaves the adapter "
                          f"{ceiling['adapter_budget_ms_per_event_for_target']} ms CPU/ev", "")
            sat = thr["latency_under_saturation"]["added_ms"]
            t.add_row(kind, "added latency, saturated (all queued)", f"p50 {sat['p50']} / p99 {sat['p99']} ms", "", "")
            t.add_row(kind, "peak RSS (throughput run)", f"{thr['rss'].get('peak_rss_mb')} MB",
                      f"<= {TARGETS['rss_mb']} MB", verdict(thr["rss"].get("peak_rss_mb", 1e9) <= TARGETS["rss_mb"]))
        if lat:
            a = lat["added_ms"]
            t.add_row(kind, f"added latency @ {lat['target_rate_per_s']:.0f} ev/s",
                      f"p50 {a['p50']} / p95 {a['p95']} / p99 {a['p99']} ms", f"p99 <= {TARGETS['p99_added_ms']} ms",
                      verdict(a["p99"] is not None and a["p99"] <= TARGETS["p99_added_ms"]))
        for run, label in ((lat, "normal"), (r.get("latency_outage"), "declared outage: paper")):
            if run and run.get("his_answer_ms", {}).get("n"):
                h = run["his_answer_ms"]
                t.add_row(kind, f"HIS answer, occurred_at -> reply ({label})",
                          f"p50 {h['p50']} / p99 {h['p99']} ms (n {h['n']})",
                          f"<= {TARGETS['his_answer_s']} s", verdict(h["p99"] <= TARGETS["his_answer_s"] * 1000))
        if drain:
            procs = drain.get("processes", 1)
            t.add_row(kind, f"drain {drain['sent_after_outage']} @ max_rps {drain['max_rps']:.0f}"
                      + (f" ({procs} processes)" if procs > 1 else ""),
                      f"{drain['drain_s']} s, {drain['achieved_rps']}/s = {drain['fraction_of_allowed']:.1%} "
                      f"(steady {drain['steady_fraction'] or 0:.1%})",
                      f">= {TARGETS['drain_fraction']:.0%}, steady <= {DRAIN_STEADY_MAX:.0%}", verdict(drain_kept(drain)))
            t.add_row(kind, "peak RSS (drain run)", f"{drain['rss'].get('peak_rss_mb')} MB", f"<= {TARGETS['rss_mb']} MB",
                      verdict(drain["rss"].get("peak_rss_mb", 1e9) <= TARGETS["rss_mb"]))
        if long:
            rss = long["rss"]
            t.add_row(kind, f"RSS over {long['events']} events", f"peak {rss['peak_rss_mb']} MB, early "
                      f"{rss['rss_early_mb']} -> late {rss['rss_late_mb']} MB, slope "
                      f"{long.get('rss_slope_mb_per_100k_events')} MB/100k ev", f"flat, <= {TARGETS['rss_mb']} MB",
                      verdict(rss["peak_rss_mb"] <= TARGETS["rss_mb"]))
    return t


# -- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=20_000, help="events for the baseline and throughput runs")
    p.add_argument("--latency-ms", type=float, default=20.0, help="the simulator's fixed latency per API call")
    p.add_argument("--workers", type=int, default=None,
                   help="dispatch.workers for the adapter and threads for the baseline (default: the config's, 8)")
    p.add_argument("--latency-rate", type=float, default=20.0, help="events/s published in the latency run")
    p.add_argument("--latency-seconds", type=float, default=60.0, help="length of the latency run")
    p.add_argument("--drain-size", type=int, default=100_000, help="events queued during the outage")
    p.add_argument("--drain-rps", type=float, default=None,
                   help="max_rps while draining (default: config/embedded.yaml's tamin.max_rps)")
    p.add_argument("--long", action="store_true", help="also the memory run: --long-events through one process")
    p.add_argument("--long-events", type=int, default=1_000_000)
    p.add_argument("--quick", action="store_true", help="small sizes (about a minute): 1,000 events, 1,000 drain, 10 s latency")
    p.add_argument("--rabbitmq-postgres", action="store_true", help="also on RabbitMQ + PostgreSQL (fresh vhost and database)")
    p.add_argument("--only-rabbitmq-postgres", action="store_true", help="only on RabbitMQ + PostgreSQL")
    p.add_argument("--scenarios", default="baseline,throughput,latency,drain",
                   help="comma list of baseline,throughput,latency,drain (long is --long)")
    p.add_argument("--processes", type=int, default=1,
                   help="adapter processes in the throughput and drain runs (RabbitMQ + PostgreSQL only: they share "
                        "the queue, the store and max_rps); the bare loop then runs workers x processes threads")
    p.add_argument("--profile", action="store_true", help="py-spy record (--gil) the adapter during the throughput run")
    p.add_argument("--sim-as-is", action="store_true",
                   help="keep the simulator's linear duplicate check (its answer time then grows with N; see docs)")
    p.add_argument("--workdir", type=Path, default=REPO / "var" / "bench")
    p.add_argument("--json", type=Path, default=None, help="where to write the JSON (default: WORKDIR/bench-<time>.json)")
    args = p.parse_args(argv)
    import signal

    def _terminate(*_: object) -> None:  # SIGTERM: unwind, so the adapter, py-spy and the simulator are stopped
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, _terminate)
    if args.quick:
        args.events, args.drain_size, args.latency_seconds = 1_000, 1_000, 10.0
        args.long_events = min(args.long_events, 20_000)
    import yaml

    default_rps = yaml.safe_load((REPO / "config" / "embedded.yaml").read_text())["destinations"]["tamin"].get("max_rps")
    drain_rps = args.drain_rps or default_rps or 200.0
    kinds = ["rabbitmq-postgres"] if args.only_rabbitmq_postgres else \
        ["embedded"] + (["rabbitmq-postgres"] if args.rabbitmq_postgres else [])
    scenarios = {s.strip() for s in args.scenarios.split(",") if s.strip()}
    if args.processes < 1 or (args.processes > 1 and "embedded" in kinds):
        p.error("--processes above 1 needs PostgreSQL and RabbitMQ: add --only-rabbitmq-postgres")
    from adapter.config import load_config

    workers = args.workers or load_config(REPO / "config" / "embedded.yaml", {}).dispatch.workers
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_path = args.json or args.workdir / f"bench-{stamp}.json"
    args.workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "started_at": stamp, "machine": machine(kinds), "targets": TARGETS, "loadavg_start": loadavg(),
        "parameters": {"mode": "quick" if args.quick else "default", "events": args.events,
                       "sim_latency_ms": args.latency_ms, "workers": workers, "workers_overridden": bool(args.workers),
                       "latency_rate": args.latency_rate, "latency_seconds": args.latency_seconds,
                       "drain_size": args.drain_size, "drain_rps": drain_rps, "long": args.long,
                       "long_events": args.long_events if args.long else None, "scenarios": sorted(scenarios),
                       "backends": kinds, "profile": args.profile, "processes": args.processes,
                       "sim_duplicate_check": "as-is (linear)" if args.sim_as_is else "indexed by patient (bench only)"},
        "backends": {},
    }
    console.log(f"generating {args.events} events")
    bodies = gen.events(args.events)
    t_start = time.monotonic()
    with SimProcess(args.latency_ms, log_path=str(args.workdir / "sim.log"), as_is=args.sim_as_is) as sim:
        results["parameters"]["sim_url"] = sim.base_url
        for kind in kinds:
            work = args.workdir / kind
            r: dict[str, Any] = {}
            results["backends"][kind] = r

            def step(name: str, fn: Any) -> None:
                console.log(f"[{kind}] {name} ...")
                t0 = time.monotonic()
                try:
                    r[name] = fn()
                except Exception as exc:  # keep what was measured; report the failure
                    console.log(f"[red][{kind}] {name} failed: {exc}")
                    r[name] = None
                    r.setdefault("errors", {})[name] = str(exc)[-4000:]
                console.log(f"[{kind}] {name} done in {time.monotonic() - t0:.0f}s")
                out_path.write_text(json.dumps(results, indent=2, default=str))

            if "baseline" in scenarios:
                step("baseline", lambda: run_baseline(kind, work, sim, bodies, workers * args.processes))
            if "throughput" in scenarios:
                step("throughput", lambda: run_throughput(kind, work, sim, bodies, args.latency_ms, args.workers,
                                                          args.profile, args.processes))
            if r.get("baseline") and r.get("throughput"):
                r["throughput_ratio"] = round(r["throughput"]["events_per_s"] / r["baseline"]["events_per_s"], 3)
                r["little_law_ceiling_eps"] = round(workers * args.processes / (args.latency_ms / 1000.0), 1) \
                    if args.latency_ms else None
            if r.get("throughput") or r.get("baseline"):
                sim_ms = ((r.get("throughput") or r.get("baseline") or {}).get("simulator_cpu") or {}).get("cpu_ms_per_event")
                r["cpu_ceiling"] = cpu_ceiling(len(os.sched_getaffinity(0)), sim_ms, r.get("baseline"),
                                               r.get("throughput"), TARGETS["throughput_eps_sqlite_2cores"],
                                               args.processes)
            if "latency" in scenarios:
                step("latency", lambda: run_latency(kind, work, sim, args.latency_rate, args.latency_seconds,
                                                    args.latency_ms, args.workers))
            if "latency" in scenarios or "latency_outage" in scenarios:
                step("latency_outage", lambda: run_latency(kind, work, sim, args.latency_rate,
                                                           min(args.latency_seconds, 20.0), args.latency_ms,
                                                           args.workers, outage=True))
            if "drain" in scenarios:
                step("drain", lambda: run_drain(kind, work, sim, args.drain_size, drain_rps, args.workers,
                                                args.processes))
            if args.long:
                step("long", lambda: run_long(kind, work, sim, args.long_events, args.workers))
    results["elapsed_s"] = round(time.monotonic() - t_start, 1)
    results["loadavg_end"] = loadavg()
    out_path.write_text(json.dumps(results, indent=2, default=str))
    Console().print(table(results))
    console.print(f"JSON: {out_path}")
    return 1 if any(r.get("errors") for r in results["backends"].values()) else 0
