"""The adapter as the real thing: ``python -m adapter run`` in its own process, with a config
written from ``config/embedded.yaml`` (only paths, URLs and the scenario's knobs changed), its
RSS and CPU time sampled while it runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.backends import Backend

REPO = Path(__file__).resolve().parents[1]


def write_config(backend: Backend, sim_url: str, *, max_rps: float | None, workers: int | None = None,
                 batch_size: int | None = None, poll_interval_s: float | None = None,
                 answer_deadline: bool = True) -> Path:
    """``answer_deadline=False``: ``fallback.answer_within_s: 0``. A backlog published all at once
    is, by construction, a queue of prescriptions older than the answer deadline: with it on, most
    of them get paper (right for a hospital, and measured by the latency runs), and the run
    measures the paper path instead of the pipeline."""
    from adapter.config import AdapterConfig

    config = yaml.safe_load((REPO / "config" / "embedded.yaml").read_text())
    config["database"]["url"] = backend.db_url
    config["broker"].update(url=backend.broker_url, queue=backend.queue)
    config["mappings_root"] = str(REPO / "mappings")
    config["destinations"]["tamin"]["base_url"] = sim_url
    config["destinations"]["tamin"]["max_rps"] = max_rps
    dispatch = config.setdefault("dispatch", {})
    for key, value in (("workers", workers), ("batch_size", batch_size), ("poll_interval_s", poll_interval_s)):
        if value is not None:
            dispatch[key] = value
    config["secrets"] = {"token_key_file": str(backend.workdir / "token.key")}
    if not answer_deadline:
        config.setdefault("fallback", {})["answer_within_s"] = 0
    if "status" in AdapterConfig.model_fields:  # the status service stays on, on any free port
        config["status"] = {"port": 0}
    path = backend.workdir / "adapter.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def effective_config(path: Path) -> dict[str, Any]:
    from adapter.config import load_config

    cfg = load_config(path, {})
    tamin = cfg.destinations.tamin
    return {"dispatch": cfg.dispatch.model_dump(), "broker_prefetch": cfg.broker.prefetch,
            "max_rps": tamin.max_rps, "max_burst": tamin.max_burst, "logging": cfg.logging.model_dump(),
            "answer_within_s": cfg.fallback.answer_within_s}


def adapter_cli(config: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTER")}
    return subprocess.run([sys.executable, "-m", "adapter", *args, "--config", str(config)], cwd=config.parent,
                          capture_output=True, text=True, timeout=timeout, env=env, check=True)


def read_rss_cpu(pid: int) -> tuple[int, float] | None:
    """(VmRSS bytes, user+system CPU seconds) of ``pid`` from /proc; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return rss, (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, StopIteration, IndexError, ValueError):
        return None


@dataclass
class Sampler:
    """VmRSS and CPU time of one process every ``every_s`` seconds (``samples``: t, rss, cpu, extra)."""

    pid: int
    every_s: float = 0.5
    progress: Any = None  # a callable giving a number to record with each sample (e.g. events settled)
    samples: list[tuple[float, int, float, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            got = read_rss_cpu(self.pid)
            if got is None:
                return
            extra = None
            if self.progress is not None:
                try:
                    extra = self.progress()
                except Exception:
                    extra = None
            self.samples.append((round(time.monotonic() - self._t0, 2), got[0], got[1], extra))
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def summary(self, points: int = 120) -> dict[str, Any]:
        if not self.samples:
            return {}
        rss = [s[1] for s in self.samples]
        step = max(1, len(self.samples) // points)
        series = [{"t_s": t, "rss_mb": round(r / 2**20, 1), "cpu_s": round(c, 2), "progress": p}
                  for t, r, c, p in self.samples[::step]]
        n = len(rss)
        first, last = rss[n // 10: max(n // 10 + 1, n * 3 // 10)], rss[n * 7 // 10:]
        return {"peak_rss_mb": round(max(rss) / 2**20, 1),
                "rss_early_mb": round(sum(first) / len(first) / 2**20, 1) if first else None,
                "rss_late_mb": round(sum(last) / len(last) / 2**20, 1) if last else None,
                "cpu_s": round(self.samples[-1][2], 2), "samples": n, "series": series}


class AdapterProcess:
    def __init__(self, config: Path, *, profile: Path | None = None, progress: Any = None, every_s: float = 0.5,
                 log_name: str = "adapter.log"):
        self.config = config
        self.log = config.parent / log_name
        env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTER")}
        self.proc = subprocess.Popen([sys.executable, "-m", "adapter", "run", "--config", str(config)],
                                     cwd=config.parent, stdout=open(self.log, "a"), stderr=subprocess.STDOUT, env=env)
        self.started = time.monotonic()
        self.sampler = Sampler(self.proc.pid, every_s=every_s, progress=progress)
        self.profiler: subprocess.Popen[bytes] | None = None
        if profile is not None:
            self.profiler = subprocess.Popen(
                [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(self.proc.pid), "--rate", "100",
                 "--format", "raw", *os.environ.get("BENCH_PYSPY_MODE", "--gil").split(), "--nonblocking", "--output", str(profile)],
                stdout=open(config.parent / "py-spy.log", "a"), stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.profiler is not None and self.profiler.poll() is None:
            self.profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                self.profiler.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.profiler.kill()
        self.sampler.stop()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


class ProcessGroup:
    """Several ``adapter run`` processes on one config (PostgreSQL + RabbitMQ: they share the
    queue as competing consumers and the store through ``SKIP LOCKED`` claims), watched as one:
    alive while all are, CPU summed, RSS per process."""

    def __init__(self, config: Path, count: int, *, profile: Path | None = None, every_s: float = 0.5):
        self.procs = [AdapterProcess(config, profile=profile if i == 0 else None, every_s=every_s,
                                     log_name="adapter.log" if count == 1 else f"adapter-{i + 1}.log")
                      for i in range(count)]
        self.started = self.procs[0].started

    def alive(self) -> bool:
        return all(p.alive() for p in self.procs)

    def stop(self) -> int:
        codes = [p.stop() for p in self.procs]
        return next((c for c in codes if c), 0)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(f"--- {p.log.name}\n{p.log_tail(lines)}" for p in self.procs)

    def summary(self) -> dict[str, Any]:
        """One process: its sampler's summary. Several: CPU summed, the largest peak RSS, and each one's."""
        if len(self.procs) == 1:
            return self.procs[0].sampler.summary()
        each = [p.sampler.summary() for p in self.procs]
        return {"processes": len(each), "cpu_s": round(sum(e.get("cpu_s", 0.0) for e in each), 2),
                "peak_rss_mb": max((e.get("peak_rss_mb", 0.0) for e in each), default=None),
                "per_process": each}
