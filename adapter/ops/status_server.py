"""Serving the status app over HTTP/1.1 (uvicorn's h11 protocol) behind a gate on every connection.

The gate is what a plain uvicorn lacks for a service reachable from the hospital network:

* a **connection cap** (``status.max_connections``): a connection accepted beyond it is closed
  at once, before any TLS handshake, so the service never holds more than the cap (plus its
  listening socket) of the process's file descriptors -- those stay free for delivery (the
  insurer connections, the database, the broker);
* a **header timeout** (``status.header_timeout_s``): a new connection has that long for its TLS
  handshake and its first request's line and headers, a kept-alive one that long from the first
  byte of its next request; a slower one (slowloris) is closed;
* an **idle timeout** (``status.idle_timeout_s``): a kept-alive connection with no new request;
* **TLS** (``status.tls_cert_file`` / ``tls_key_file``), done here per connection (``start_tls``)
  so handshakes count against the cap and the header timeout too.

Everything runs on the server's one event loop, in a daemon thread: no locks are needed.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from adapter.sim.server import SimServer


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 32
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 5.0


class _GatedServer(uvicorn.Server):
    """uvicorn's server with its listening sockets served through ``_Gate``s."""

    def __init__(self, config: uvicorn.Config, limits: ConnectionLimits, tls: ssl.SSLContext | None):
        super().__init__(config)
        self.limits, self.tls = limits, tls
        self.open_connections = 0
        self.refused = 0

    def admit(self) -> bool:
        if self.open_connections >= self.limits.max_connections:
            self.refused += 1
            return False
        self.open_connections += 1
        return True

    def release(self) -> None:
        self.open_connections -= 1

    def http_protocol(self, loop: asyncio.AbstractEventLoop) -> H11Protocol:
        return H11Protocol(config=self.config, server_state=self.server_state, app_state=self.lifespan.state,
                           _loop=loop)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """As uvicorn's, for the sockets ``StatusServer`` bound, without its own TLS (the gate's)."""
        assert sockets, "StatusServer binds the socket"
        await self.lifespan.startup()
        loop = asyncio.get_running_loop()
        self.servers = [await loop.create_server(lambda: _Gate(self, loop), sock=sock,
                                                 backlog=self.config.backlog) for sock in sockets]
        self.started = True


class _Gate(asyncio.Protocol):
    """One connection: admitted or closed, timed, TLS-wrapped, then handed to an ``H11Protocol``."""

    def __init__(self, server: _GatedServer, loop: asyncio.AbstractEventLoop):
        self._server, self._loop = server, loop
        self._raw: asyncio.Transport | None = None
        self._http: H11Protocol | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._admitted = False
        self._handshake: asyncio.Task[None] | None = None
        self._early = bytearray()

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # a TCP connection
        self._raw = transport
        if not self._server.admit():
            transport.abort()  # the descriptor is given back now, not after a timeout
            return
        self._admitted = True
        self._arm()
        tls = self._server.tls
        if tls is None:
            self._open(transport)
        else:
            transport.pause_reading()  # the ClientHello is for the TLS layer, not for us
            self._handshake = self._loop.create_task(self._start_tls(transport, tls))

    def data_received(self, data: bytes) -> None:
        if self._http is None:  # TLS: a request may come with the handshake's end, before ``_open``
            self._early += data
            return
        self._http.data_received(data)
        if self._http.conn.their_state is h11.IDLE:
            if self._timer is None:
                self._arm()  # the first bytes of a request: its headers have header_timeout_s
        else:
            self._disarm()  # line and headers are in

    def eof_received(self) -> bool | None:
        if self._http is not None:
            self._http.eof_received()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._release()
        if self._http is not None:
            http, self._http = self._http, None
            http.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._http is not None:
            self._http.pause_writing()

    def resume_writing(self) -> None:
        if self._http is not None:
            self._http.resume_writing()

    # -- the gate's own ------------------------------------------------------------------------
    def _open(self, transport: asyncio.BaseTransport) -> None:
        self._http = self._server.http_protocol(self._loop)
        self._http.connection_made(transport)  # type: ignore[arg-type]  # a Transport at run time
        if self._early:
            early, self._early = bytes(self._early), bytearray()
            self.data_received(early)

    async def _start_tls(self, raw: asyncio.Transport, tls: ssl.SSLContext) -> None:
        try:
            wrapped = await self._loop.start_tls(raw, self, tls, server_side=True,
                                                 ssl_handshake_timeout=self._server.limits.header_timeout_s)
        except (OSError, asyncio.TimeoutError, ConnectionError):  # ssl.SSLError is an OSError
            raw.abort()
            self._release()
            return
        if wrapped is None or raw.is_closing():
            self._release()
            return
        self._open(wrapped)

    def _arm(self) -> None:
        self._disarm()
        self._timer = self._loop.call_later(self._server.limits.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self) -> None:
        self._timer = None
        if self._raw is not None:
            self._raw.abort()

    def _release(self) -> None:
        """Give the connection's place back, once (a failed handshake may report twice)."""
        if self._admitted:
            self._admitted = False
            self._server.release()


class StatusServer(SimServer):
    """The gated server in a daemon thread (the thread, socket and start/stop are ``SimServer``'s).
    Port 0 picks a free port; ``base_url`` is valid after start()."""

    label = "the status service"
    _thread_prefix = "status"

    def __init__(self, app: Any, host: str, port: int, limits: ConnectionLimits,
                 tls: ssl.SSLContext | None = None, start_timeout_s: float = 10.0):
        super().__init__(app, host, port, start_timeout_s=start_timeout_s, graceful_shutdown_s=1.0)
        self.limits, self.tls = limits, tls

    @property
    def open_connections(self) -> int:
        server = self._server
        return server.open_connections if isinstance(server, _GatedServer) else 0

    def _backlog(self) -> int:
        return min(128, self.limits.max_connections * 2)

    def _scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    def _config_options(self) -> dict[str, Any]:
        return {"http": "h11", "timeout_keep_alive": self.limits.idle_timeout_s}

    def _make_server(self, config: uvicorn.Config) -> uvicorn.Server:
        return _GatedServer(config, self.limits, self.tls)
