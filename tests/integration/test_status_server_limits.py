"""The status service's server over real sockets: slow headers are cut, the connection cap
holds (so its file descriptors are bounded), normal requests go on meanwhile, and HTTPS works
with a certificate made here while plain HTTP to the TLS port does not.

Timeouts are small so the tests are quick; every wait is bounded generously (a loaded machine
only makes them slower, never wrong): what is asserted is that a connection *is* closed long
before the socket's own timeout, and that the server's count of open connections never passes
the cap."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from adapter.ops.status_server import ConnectionLimits, StatusServer
from tests.support.certs import Certs, make_certs

WAIT_S = 30.0
"""The longest any closing may take here: far above every timeout the server is given."""


async def _hello(_: object) -> PlainTextResponse:
    return PlainTextResponse("up\n")


APP = Starlette(routes=[Route("/healthz", _hello)])


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "certs")


def serve(limits: ConnectionLimits, tls: ssl.SSLContext | None = None) -> StatusServer:
    return StatusServer(APP, "127.0.0.1", 0, limits, tls).start()


@pytest.fixture
def servers() -> Iterator[list[StatusServer]]:
    started: list[StatusServer] = []
    yield started
    for server in started:
        server.stop()


def connect(server: StatusServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Reads until the server closes (True) or the socket's timeout passes (False)."""
    try:
        while sock.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def wait_until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_slowloris_connections_are_closed_after_the_header_timeout_while_requests_go_on(
        servers: list[StatusServer]) -> None:
    server = serve(ConnectionLimits(max_connections=16, header_timeout_s=1.0, idle_timeout_s=5.0))
    servers.append(server)
    slow = [connect(server) for _ in range(5)]
    for sock in slow:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # a partial request, then nothing
    wait_until(lambda: server.open_connections == 5, "the five slow connections were not all accepted")
    answer = httpx.get(server.base_url + "/healthz", timeout=WAIT_S)  # a normal request meanwhile
    assert answer.status_code == 200 and answer.text == "up\n"
    for sock in slow:
        assert closed_by_server(sock), "a slowloris connection was still open long after the header timeout"
        sock.close()
    wait_until(lambda: server.open_connections == 0, "closed connections were not given back")


def test_dribbling_one_byte_at_a_time_does_not_extend_the_header_timeout(servers: list[StatusServer]) -> None:
    server = serve(ConnectionLimits(max_connections=4, header_timeout_s=1.0, idle_timeout_s=5.0))
    servers.append(server)
    sock = connect(server)
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 400
    started = time.monotonic()
    cut = False
    for byte in request:  # 400+ bytes at 0.1 s each: 40 s, far past the 1 s header timeout
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            cut = True
            break
        time.sleep(0.1)
    assert cut or closed_by_server(sock)
    assert time.monotonic() - started < WAIT_S
    sock.close()


def test_a_kept_alive_connection_is_closed_when_idle(servers: list[StatusServer]) -> None:
    server = serve(ConnectionLimits(max_connections=4, header_timeout_s=5.0, idle_timeout_s=0.5))
    servers.append(server)
    sock = connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"200 OK" in sock.recv(4096)
    assert closed_by_server(sock)  # no second request: closed after the idle timeout
    sock.close()


def test_connections_beyond_the_cap_are_closed_at_once_and_the_count_never_passes_it(
        servers: list[StatusServer]) -> None:
    # a header timeout far longer than the socket's: a closed connection can only be the cap's doing
    server = serve(ConnectionLimits(max_connections=3, header_timeout_s=120.0, idle_timeout_s=120.0))
    servers.append(server)
    held = [connect(server) for _ in range(3)]
    wait_until(lambda: server.open_connections == 3, "the three connections were not accepted")
    extra = [connect(server) for _ in range(5)]
    for sock in extra:
        assert closed_by_server(sock), "a connection beyond the cap was kept open"
        sock.close()
    assert server.open_connections == 3
    with pytest.raises(httpx.TransportError):  # a full service refuses, it does not queue
        httpx.get(server.base_url + "/healthz", timeout=WAIT_S)
    held.pop().close()
    wait_until(lambda: server.open_connections == 2, "a closed connection did not give its place back")
    assert httpx.get(server.base_url + "/healthz", timeout=WAIT_S).status_code == 200
    for sock in held:
        sock.close()


def test_https_with_a_test_certificate_works_and_plain_http_to_the_tls_port_fails(
        certs: Certs, servers: list[StatusServer]) -> None:
    tls = certs.server_context()
    server = serve(ConnectionLimits(max_connections=8, header_timeout_s=2.0, idle_timeout_s=2.0), tls)
    servers.append(server)
    assert server.base_url.startswith("https://")
    answer = httpx.get(server.base_url + "/healthz", verify=ssl.create_default_context(cafile=str(certs.ca)),
                       timeout=WAIT_S)
    assert answer.status_code == 200 and answer.text == "up\n"
    plain = server.base_url.replace("https://", "http://")
    with pytest.raises(httpx.TransportError):
        httpx.get(plain + "/healthz", timeout=WAIT_S)
    with pytest.raises(httpx.ConnectError):  # and a client that does not trust the CA refuses it
        httpx.get(server.base_url + "/healthz", verify=ssl.create_default_context(cafile=str(certs.other_ca)),
                  timeout=WAIT_S)
    wait_until(lambda: server.open_connections == 0, "failed handshakes did not give their places back")


def test_a_silent_connection_to_the_tls_port_is_closed_after_the_header_timeout(
        certs: Certs, servers: list[StatusServer]) -> None:
    server = serve(ConnectionLimits(max_connections=2, header_timeout_s=1.0, idle_timeout_s=5.0),
                   certs.server_context())
    servers.append(server)
    silent = [connect(server) for _ in range(2)]  # no ClientHello: the handshake never starts
    wait_until(lambda: server.open_connections == 2, "the silent connections were not accepted")
    beyond = connect(server)
    assert closed_by_server(beyond)  # the cap counts handshakes too
    beyond.close()
    for sock in silent:
        assert closed_by_server(sock)
        sock.close()
    wait_until(lambda: server.open_connections == 0, "timed-out handshakes did not give their places back")
    answer = httpx.get(server.base_url + "/healthz", verify=ssl.create_default_context(cafile=str(certs.ca)),
                       timeout=WAIT_S)
    assert answer.status_code == 200
