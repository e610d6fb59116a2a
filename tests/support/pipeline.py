"""Helpers for tests that run the adapter's pipeline against the Tamin simulator over HTTP.

* ``RecordingApp`` wraps the simulator's ASGI app and records, in one global order, when
  each request arrived and when its answer was finished (with the ``X-Idempotency-Key``),
  so a test can prove one call was answered before another was sent. It only observes.
* ``adapter_config`` builds a real config from ``config/embedded.yaml`` plus
  ``ADAPTER__...`` overrides, the way an operator would.
* ``drain`` runs the dispatcher until nothing can become due (or a deadline passes).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from adapter.app import App
from adapter.config import AdapterConfig, TaminConfig, load_config
from adapter.sim.registry import TaminRegistry

REPO = Path(__file__).resolve().parents[2]
EMBEDDED = REPO / "config" / "embedded.yaml"


class _RecordingSend:
    """Passes messages on; notes when the answer is complete (status 0 when the connection was
    closed under it). ``transport`` is exposed because the simulator closes connections through
    ``send.__self__.transport`` for its "drop the answer" fault."""

    def __init__(self, send: Any, on_end: Any):
        self._send, self._on_end = send, on_end
        self.transport = getattr(getattr(send, "__self__", None), "transport", None)
        self._status: int | None = None

    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            self._status = message["status"]
        if message["type"] != "http.response.body" or message.get("more_body", False):
            await self._send(message)
            return
        # noted before the last part goes out: once it is out the client may go on (and a test
        # read the log) before this thread runs again; amended if the connection closed meanwhile
        entry = self._on_end(0 if self._closing() else self._status)
        await self._send(message)
        if self._closing():
            entry["status"] = 0

    def _closing(self) -> bool:
        return self.transport is not None and self.transport.is_closing()


class RecordingApp:
    """ASGI middleware: ``log`` holds dicts ``{seq, phase: start|end, method, path, key, status}``."""

    def __init__(self, app: Any):
        self.app = app
        self.log: list[dict[str, Any]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()

    @property
    def state(self) -> Any:
        return self.app.state

    @property
    def registry(self) -> TaminRegistry:
        return self.app.state.registry

    def _note(self, **fields: Any) -> dict[str, Any]:
        with self._lock:
            entry = {"seq": next(self._seq), **fields}
            self.log.append(entry)
            return entry

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        base = {"method": scope["method"], "path": scope["path"], "key": headers.get("x-idempotency-key")}
        self._note(phase="start", **base)
        await self.app(scope, receive, _RecordingSend(send, lambda status: self._note(phase="end", status=status, **base)).send)

    def entries(self, phase: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self.log if e["phase"] == phase and not e["path"].startswith("/_sim/")]


def adapter_config(db_url: str, sim_url: str, tmp_path: Path, **overrides: Any) -> AdapterConfig:
    """``config/embedded.yaml`` + overrides; ``overrides`` keys use ``__`` between levels
    (``dispatch__lease_s=0.5``), values are YAML scalars as in the environment."""
    environ = {
        "ADAPTER__DATABASE__URL": db_url,
        "ADAPTER__DESTINATIONS__TAMIN__BASE_URL": sim_url,
        "ADAPTER__SECRETS__TOKEN_KEY_FILE": str(tmp_path / "token.key"),
        "ADAPTER__MAPPINGS_ROOT": str(REPO / "mappings"),
        "ADAPTER__DISPATCH__WAIT_DELAY_S": "0.05",
        "ADAPTER__DISPATCH__LEASE_S": "5",
        "ADAPTER__DISPATCH__AMBIGUOUS_GRACE_S": "0.2",
        "ADAPTER__DESTINATIONS__TAMIN__READ_TIMEOUT_S": "10",
        "ADAPTER__DESTINATIONS__TAMIN__RETRY__BASE_DELAY_S": "0.02",
        "ADAPTER__DESTINATIONS__TAMIN__RETRY__MAX_DELAY_S": "2",
        "ADAPTER__DESTINATIONS__TAMIN__RETRY__JITTER": "0",
    }
    if "max_rps" in TaminConfig.model_fields:  # outage mode's send-rate limit: off unless a test sets it
        environ["ADAPTER__DESTINATIONS__TAMIN__MAX_RPS"] = "null"
    for key, value in overrides.items():
        environ["ADAPTER__" + key.upper()] = value if isinstance(value, str) else json.dumps(value)
    return load_config(EMBEDDED, environ=environ)


def offline_app(folder: Path) -> Iterator[App]:
    """An app on a SQLite store in ``folder`` whose insurer is unreachable: for intake-only tests
    (a fixture's body: ``yield from offline_app(tmp)``; closed after)."""
    from adapter.app import build

    built = build(adapter_config(f"sqlite:///{folder / 'adapter.db'}", "http://127.0.0.1:9/unused", folder))
    yield built
    built.close()


def drain(app: App, timeout_s: float = 20.0, *, max_sleep_s: float = 0.05) -> int:
    """Run the dispatcher until nothing can become due; the number of submissions handled.

    Raises ``AssertionError`` when work is still due after ``timeout_s`` (a livelock)."""
    deadline = time.monotonic() + timeout_s
    handled = 0
    while True:
        handled += app.dispatcher.run_once()
        due_in = app.dispatcher.next_due_in()
        if due_in is None:
            return handled
        if time.monotonic() > deadline:
            raise AssertionError(f"dispatcher still has work after {timeout_s}s (next due in {due_in:.2f}s)")
        if due_in > 0:
            time.sleep(min(due_in, max_sleep_s))


def good_lines(lines: list[bytes]) -> list[bytes]:
    """The sample's good events (``evt-...``), in order, without the deliberate repeat."""
    out, seen = [], set()
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        event_id = event.get("event_id", "")
        if event_id.startswith("evt-") and event_id not in seen:
            seen.add(event_id)
            out.append(line)
    return out


def events_by_id(lines: list[bytes]) -> dict[str, dict[str, Any]]:
    return {json.loads(line)["event_id"]: json.loads(line) for line in good_lines(lines)}
