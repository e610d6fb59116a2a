"""A TLS front for a plain HTTP test server, on Python's blocking ``ssl`` (OpenSSL) as an
insurer's web server would be: the handshake's failures are sent to the client as TLS alerts
(a refused or missing client certificate), then bytes are relayed to the server unchanged."""

from __future__ import annotations

import socket
import ssl
import threading
from types import TracebackType
from urllib.parse import urlsplit


class TlsFront:
    def __init__(self, context: ssl.SSLContext, upstream_url: str):
        parts = urlsplit(upstream_url)
        self._context, self._upstream = context, (parts.hostname or "127.0.0.1", parts.port or 80)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.base_url = f"https://127.0.0.1:{self.port}"
        self._stopping = False

    def __enter__(self) -> TlsFront:
        threading.Thread(target=self._accept, name="tls-front", daemon=True).start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stopping = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            tls = self._context.wrap_socket(conn, server_side=True)  # the handshake; an alert on failure
        except (OSError, ssl.SSLError):
            conn.close()
            return
        upstream = socket.create_connection(self._upstream, timeout=30)
        threading.Thread(target=_pump, args=(upstream, tls), daemon=True).start()
        _pump(tls, upstream)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.close()
            except OSError:
                pass
