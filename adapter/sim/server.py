"""Run a simulator app over real HTTP: in a background thread (tests) or blocking (CLI)."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn


class SimServer:
    """Uvicorn in a daemon thread. Port 0 picks a free port; ``base_url`` is valid after start().

    Also the runner of the status service (``adapter.ops.status_server.StatusServer`` overrides
    the backlog, the scheme, uvicorn's options and the server class)."""

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_level: str = "warning",
        start_timeout_s: float = 10.0,
        graceful_shutdown_s: float = 1.0,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.base_url = ""
        self._log_level = log_level
        self._start_timeout_s = start_timeout_s
        self._graceful_shutdown_s = graceful_shutdown_s
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    label = "simulator"  # in the error when the server does not come up

    def start(self) -> SimServer:
        if self._thread is not None:
            return self
        # Bind here, not in uvicorn, so the chosen port is known before the thread runs.
        bare_host = self.host.strip("[]")
        family = socket.AF_INET6 if ":" in bare_host else socket.AF_INET
        # proto must be IPPROTO_TCP: asyncio only sets TCP_NODELAY on such sockets, and
        # without it every keep-alive answer waits ~40 ms for a delayed ACK (Nagle).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bare_host, self.port))
        sock.listen(self._backlog())
        sock.setblocking(False)
        self._socket = sock
        self.port = sock.getsockname()[1]
        host = f"[{bare_host}]" if family == socket.AF_INET6 else self.host
        self.base_url = f"{self._scheme()}://{host}:{self.port}"
        config = uvicorn.Config(self.app, log_level=self._log_level, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=self._graceful_shutdown_s,  # type: ignore[arg-type]  # typed int; a wait_for timeout
                                **self._config_options())
        self._server = self._make_server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"{self._thread_prefix}-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.label} did not start on {self.base_url}")
            time.sleep(0.01)
        return self

    # -- what a server built on this one may change -------------------------------------------
    _thread_prefix = "sim"

    def _backlog(self) -> int:
        return 128

    def _scheme(self) -> str:
        return "http"

    def _config_options(self) -> dict[str, Any]:
        """More ``uvicorn.Config`` arguments."""
        return {}

    def _make_server(self, config: uvicorn.Config) -> uvicorn.Server:
        return uvicorn.Server(config)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=self._graceful_shutdown_s + 5.0)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_forever(app: Any, host: str, port: int) -> None:
    """Serve ``app`` until interrupted (the ``adapter sim`` command)."""
    uvicorn.run(app, host=host, port=port, log_level="info", lifespan="off")
