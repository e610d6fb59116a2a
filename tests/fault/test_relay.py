"""The relay's network faults (``tests/support/tcp_proxy.py``) do what the chaos schedule relies on:
a stall passes nothing and then closes, a trickle passes every byte but slowly, a server that is
down is a close for the client rather than a hang. Plain sockets, no services."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.tcp_proxy import TcpProxy


@pytest.fixture
def echo() -> Iterator[int]:
    """A server that sends back what it receives: its port."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size and (piece := sock.recv(size - len(data))):
        data += piece
    return data


def test_a_stall_passes_nothing_then_closes(echo: int) -> None:
    with TcpProxy("127.0.0.1", echo) as relay, socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
        sock.sendall(b"ping")
        assert _read(sock, 4) == b"ping"
        stalling = threading.Thread(target=relay.stall, args=(1.0,))
        stalling.start()
        time.sleep(0.2)
        sock.sendall(b"lost")
        sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            sock.recv(4)  # quiet: no bytes and no close while stalled
        stalling.join(timeout=10)
        sock.settimeout(10)
        assert sock.recv(4) == b""  # then closed


def test_a_trickle_passes_every_byte_in_small_pieces(echo: int) -> None:
    body = bytes(range(256)) * 2
    with TcpProxy("127.0.0.1", echo) as relay, socket.create_connection(("127.0.0.1", relay.port), timeout=30) as sock:
        relay.trickle(16, 0.02)
        started = time.monotonic()
        sock.sendall(body)
        assert _read(sock, len(body)) == body
        # 32 pieces 20 ms apart: at least 0.6 s however fast the machine (an upper bound would not hold on CI)
        assert time.monotonic() - started >= 0.6


def test_a_server_that_is_down_is_a_close_for_the_client() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    with TcpProxy("127.0.0.1", port) as relay, socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
        assert sock.recv(1) == b""
