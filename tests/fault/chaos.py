"""Helpers of the chaos test: a RabbitMQ node the test may restart, a publisher thread that
keeps publishing through broker restarts, and a look at the event queue.

RabbitMQ: by default the test starts its **own** node (``PrivateRabbit``: another node name,
port, data folder and config file, ~3 s to start) so restarting it cannot disturb other test
runs sharing the machine's broker. ``CHAOS_RABBIT=shared`` restarts the shared node's app
instead (``SharedRabbit``: ``rabbitmqctl stop_app`` / ``start_app``), which is always started
again in ``close()``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from glob import glob
from pathlib import Path

from kombu import Connection

from adapter.broker.connection import event_queue, publish_bodies
from adapter.config import BrokerConfig

RABBITMQ_SERVER = shutil.which("rabbitmq-server") or "/usr/sbin/rabbitmq-server"
RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ctl(node: str | None, *args: str, timeout: float = 60) -> None:
    command = [RABBITMQCTL, "-q", *(["-n", node] if node else []), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {(done.stderr or done.stdout).strip()[:500]}")


def _wait_port(port: int, up: bool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while port_open(port) != up:
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} still {'closed' if up else 'open'} after {timeout:.0f}s")
        time.sleep(0.1)


class PrivateRabbit:
    """A throw-away RabbitMQ node for this test only (needs root, as rabbitmqctl does)."""

    def __init__(self) -> None:
        self.name = f"chaos{secrets.token_hex(3)}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="chaos-rabbit-"))
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self.started = False

    def start(self) -> PrivateRabbit:
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        shutil.chown(self.dir, "rabbitmq", "rabbitmq")
        for child in self.dir.iterdir():
            shutil.chown(child, "rabbitmq", "rabbitmq")
        env = {**os.environ, "RABBITMQ_NODENAME": self.name, "RABBITMQ_NODE_PORT": str(self.port),
               "RABBITMQ_DIST_PORT": str(self.dist_port), "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
               "RABBITMQ_LOG_BASE": str(self.dir / "log"), "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
               "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins")}
        self.started = True
        subprocess.run([RABBITMQ_SERVER, "-detached"], env=env, check=True, timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, True, 60)
        return self

    def stop_app(self) -> None:
        _ctl(self.name, "stop_app")
        _wait_port(self.port, False, 30)

    def start_app(self) -> None:
        _ctl(self.name, "start_app")
        _wait_port(self.port, True, 60)

    def log_tail(self, lines: int = 30) -> str:
        """The node's own log (connections accepted and closed, boot steps), for a failure message."""
        logs = sorted((self.dir / "log").glob("*.log"), key=lambda path: path.stat().st_mtime)
        return "\n".join(logs[-1].read_text(errors="replace").splitlines()[-lines:]) if logs else ""

    def close(self) -> None:
        if self.started:
            with contextlib.suppress(Exception):
                _ctl(self.name, "shutdown", timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


class SharedRabbit:
    """The machine's RabbitMQ node: its app is stopped and started; ``close()`` makes sure it runs."""

    def __init__(self, url: str, port: int = 5672) -> None:
        self.url, self.port, self.name = url, port, None

    def start(self) -> SharedRabbit:
        return self

    def log_tail(self, lines: int = 30) -> str:
        return ""  # the shared node's log belongs to the machine

    def stop_app(self) -> None:
        _ctl(None, "stop_app")
        _wait_port(self.port, False, 30)

    def start_app(self) -> None:
        _ctl(None, "start_app")
        _wait_port(self.port, True, 60)

    def close(self) -> None:
        if not port_open(self.port):
            with contextlib.suppress(Exception):
                self.start_app()


def _pg_bin(name: str) -> str | None:
    found = sorted(glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class PrivatePostgres:
    """A throw-away PostgreSQL server for one test (initdb in a temp folder, trust auth, a free
    port), run as the ``postgres`` OS user when the test runs as root."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="store-faults-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *command: str) -> None:
        if self._user is not None:
            command = ("runuser", "-u", self._user, "--", *command)
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {(done.stderr or done.stdout).strip()[-500:]}")

    def start(self) -> PrivatePostgres:
        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise RuntimeError("initdb/pg_ctl not found under /usr/lib/postgresql/*/bin")
        self._pg_ctl = pg_ctl
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._run(initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.restart_up()
        return self

    def restart_up(self) -> None:
        self._run(self._pg_ctl, "-D", str(self.data), "-w", "-t", "60", "-l", str(self.dir / "server.log"),
                  "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir}", "start")

    def down(self) -> None:
        self._run(self._pg_ctl, "-D", str(self.data), "-w", "-t", "60", "-m", "fast", "stop")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.down()
        shutil.rmtree(self.dir, ignore_errors=True)


def queue_state(config: BrokerConfig) -> tuple[int, int]:
    """(ready messages, consumers) of the event queue; raises when the broker is unreachable."""
    with Connection(config.url, connect_timeout=3) as connection:
        connection.ensure_connection(max_retries=1)
        bound = event_queue(config)(connection.default_channel)
        _, ready, consumers = bound.queue_declare(passive=True)
        return int(ready), int(consumers)


class Publisher:
    """Publishes ``chunks`` one after the other in a thread, chunk ``i`` not before
    ``start + i * spacing_s``. A chunk that fails (broker restarting) is published again in full
    after a short wait: the adapter dedupes by event id, so a message that reaches the queue
    twice is a duplicate receipt, never a loss."""

    def __init__(self, config: BrokerConfig, chunks: list[list[bytes]], spacing_s: float) -> None:
        self.config, self.chunks, self.spacing_s = config, chunks, spacing_s
        self.published = 0  # messages confirmed by the broker (a re-sent chunk counts again)
        self.failures = 0
        self.errors: list[str] = []
        self.done_chunks = 0
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-publisher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()

    def join(self, timeout: float) -> bool:
        """True when every chunk was published."""
        self._thread.join(timeout)
        return not self._thread.is_alive() and self.done_chunks == len(self.chunks)

    def _run(self) -> None:
        started = time.monotonic()
        for number, chunk in enumerate(self.chunks):
            self._halt.wait(max(0.0, started + number * self.spacing_s - time.monotonic()))
            while not self._halt.is_set():
                try:
                    self.published += publish_bodies(self.config, chunk)
                    break
                except Exception as exc:  # broker down or restarting: wait and send the chunk again
                    self.failures += 1
                    if len(self.errors) < 20:
                        self.errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")
                    self._halt.wait(0.5)
            else:
                return
            self.done_chunks += 1
