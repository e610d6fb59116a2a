"""A TCP relay between the adapter and a server, for network faults no server can make itself:
``silence()`` makes the connections open at that moment go quiet in both directions -- no
bytes, no close, as when a firewall or NAT forgets a connection -- while new connections
relay normally. ``drop()`` closes every connection at once (a reset seen by both ends),
``trickle()`` passes the server's bytes on a few at a time (a slow, congested link)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit


@dataclass
class _Pair:
    client: socket.socket
    upstream: socket.socket
    silent: bool = False
    closed: bool = False


@dataclass
class TcpProxy:
    target_host: str
    target_port: int
    port: int = 0  # listening port, known after start()
    _listener: socket.socket | None = None
    _pairs: list[_Pair] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)
    trickle_bytes: int = 0  # > 0: server-to-client bytes are passed on this many at a time ...
    trickle_gap_s: float = 0.0  # ... with this pause between two pieces

    def start(self) -> TcpProxy:
        listener = socket.create_server(("127.0.0.1", self.port))  # 0: any free port
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, name="tcp-proxy-accept", daemon=True).start()
        return self

    def silence(self) -> int:
        """Silence every open connection; the number silenced."""
        with self._lock:
            open_pairs = [pair for pair in self._pairs if not pair.closed]
            for pair in open_pairs:
                pair.silent = True
        return len(open_pairs)

    def drop(self) -> int:
        """Close every connection, silent ones too (their ends see the close now); the number closed."""
        with self._lock:
            open_pairs = [pair for pair in self._pairs if not pair.closed]
            for pair in open_pairs:
                _close(pair)
        return len(open_pairs)

    def stall(self, seconds: float) -> int:
        """Silence every open connection for ``seconds``, then drop them: the number stalled."""
        count = self.silence()
        time.sleep(seconds)
        self.drop()
        return count

    def trickle(self, piece_bytes: int, gap_s: float) -> None:
        """From now on, pass server bytes ``piece_bytes`` at a time, ``gap_s`` apart (0 bytes: normal)."""
        self.trickle_bytes, self.trickle_gap_s = piece_bytes, gap_s

    def open_connections(self) -> int:
        with self._lock:
            return sum(not pair.closed and not pair.silent for pair in self._pairs)

    def close(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            for pair in self._pairs:
                _close(pair)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            try:
                upstream = socket.create_connection((self.target_host, self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:  # the server is down: the client sees a close, not a hang
                client.close()
                continue
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs = [known for known in self._pairs if not known.closed] + [pair]
            for source, sink, down in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._relay, args=(pair, source, sink, down), daemon=True).start()

    def _relay(self, pair: _Pair, source: socket.socket, sink: socket.socket, downstream: bool) -> None:
        """Copy ``source`` to ``sink``; once silent, swallow the bytes and never pass a close on."""
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                if not pair.silent:
                    _close(pair)
                return
            if pair.silent:
                continue
            try:
                self._send(sink, data, downstream)
            except OSError:
                _close(pair)
                return

    def _send(self, sink: socket.socket, data: bytes, downstream: bool) -> None:
        piece = self.trickle_bytes if downstream else 0
        if piece <= 0:
            sink.sendall(data)
            return
        for start in range(0, len(data), piece):
            sink.sendall(data[start:start + piece])
            time.sleep(self.trickle_gap_s)


def _close(pair: _Pair) -> None:
    pair.closed = True
    for sock in (pair.client, pair.upstream):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


@contextmanager
def amqp_relay(amqp_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """A relay in front of the broker of ``amqp_url``, and the same URL through it."""
    parts = urlsplit(amqp_url)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672) as relay:
        yield relay, urlunsplit(parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{relay.port}"))


@contextmanager
def url_relay(url: str, default_port: int) -> Iterator[tuple[TcpProxy, str]]:
    """A relay in front of the server of any ``scheme://user@host:port/...`` URL, and the URL through it."""
    parts = urlsplit(url)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or default_port) as relay:
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@127.0.0.1:{relay.port}" if user else f"127.0.0.1:{relay.port}"
        yield relay, urlunsplit(parts._replace(netloc=netloc))
