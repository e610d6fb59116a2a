"""The Tamin simulator in its own process, so it never shares a GIL with what is measured.

``python -m bench.simproc --latency-ms 20`` prints its base URL on the first line of stdout and
serves until stdin closes or it gets SIGTERM. :class:`SimProcess` starts and drives one.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from typing import Any

import httpx


class SimProcess:
    def __init__(self, latency_ms: float, log_path: str | None = None, as_is: bool = False):
        self.latency_ms = latency_ms
        self.as_is = as_is
        self._log_path = log_path
        self._proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    def start(self) -> "SimProcess":
        log = open(self._log_path, "a") if self._log_path else subprocess.DEVNULL
        command = [sys.executable, "-m", "bench.simproc", "--latency-ms", str(self.latency_ms)]
        self._proc = subprocess.Popen(command + (["--as-is"] if self.as_is else []),
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("http"):
            self.stop()
            raise RuntimeError(f"simulator did not start (said {line!r})")
        self.base_url = line
        return self

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def reset(self) -> None:
        httpx.post(self.base_url + "/_sim/reset", timeout=30).raise_for_status()

    def faults(self, **patch: Any) -> None:
        httpx.post(self.base_url + "/_sim/faults", json=patch, timeout=30).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return httpx.get(self.base_url + "/_sim/stats", timeout=120).json()

    def stop(self) -> None:
        if self._proc is None:
            return
        try:
            if self._proc.stdin:
                self._proc.stdin.close()
            self._proc.terminate()
            self._proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def __enter__(self) -> "SimProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def index_duplicate_check() -> None:
    """Make the simulator's duplicate check O(prescriptions of the patient), same answers.

    ``TaminRegistry._live_duplicate`` computes ``content_key()`` of *every* stored prescription on
    each create, so the simulator's answer time grows with the number it holds (about +100 ms
    per create at 8,000): over a 20,000-event run the "fixed" latency is no longer fixed, and
    only the adapter pays for it (the baseline's bodies are refused before that check). Here,
    in the benchmark's simulator process only, the candidates are looked up by patient: the
    content key starts with the patient, so no other prescription can match. The index is
    rebuilt whenever the number of prescriptions differs from what it holds (forget, inject,
    reset), so it is never stale. ``--sim-as-is`` keeps the original.
    """
    from adapter.sim import registry as reg

    def by_patient(self: Any) -> dict[str, list[int]]:
        state = self._state
        index = getattr(state, "_bench_by_patient", None)
        if index is None or getattr(state, "_bench_indexed", -1) != len(state.prescriptions):
            index = {}
            for head_id, presc in state.prescriptions.items():
                index.setdefault(str(presc.patient), []).append(head_id)
            state._bench_by_patient, state._bench_indexed = index, len(state.prescriptions)
        return index

    original_store = reg.TaminRegistry._store

    def _store(self: Any, body: Any, submission: str, today: Any) -> Any:
        index = by_patient(self)
        presc = original_store(self, body, submission, today)
        index.setdefault(str(presc.patient), []).append(presc.head_id)
        self._state._bench_indexed = len(self._state.prescriptions)
        return presc

    def _live_duplicate(self: Any, body: dict[str, Any], content: str) -> Any:
        if body.get("patient") == reg.rules.ANONYMOUS_PATIENT and not self._settings.duplicate_check_anonymous:
            return None
        for head_id in by_patient(self).get(str(body.get("patient")), ()):
            presc = self._state.prescriptions.get(head_id)
            if presc is not None and presc.status == "active" and presc.content_key() == content:
                return presc
        return None

    reg.TaminRegistry._store = _store  # type: ignore[method-assign]
    reg.TaminRegistry._live_duplicate = _live_duplicate  # type: ignore[method-assign]


def _main() -> None:
    from adapter.sim.server import SimServer
    from adapter.sim.settings import TaminSimSettings
    from adapter.sim.tamin_app import create_tamin_app

    parser = argparse.ArgumentParser()
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--as-is", action="store_true", help="keep the simulator's linear duplicate check")
    args = parser.parse_args()
    if not args.as_is:
        index_duplicate_check()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with SimServer(create_tamin_app(TaminSimSettings(latency_ms=args.latency_ms))) as sim:
        print(sim.base_url, flush=True)
        threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
        done.wait()


if __name__ == "__main__":
    _main()
