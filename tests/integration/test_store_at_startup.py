"""``adapter run`` started while its PostgreSQL server cannot be reached waits for it (one line
logged, no exit) and goes to work when it comes; a database that does not exist is not waited for."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml

from adapter.store.health import wait_until_reachable
from tests.support.pipeline import EMBEDDED
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit((parts.scheme, f"{auth}127.0.0.1:{port}", parts.path, parts.query, parts.fragment))


def test_run_waits_for_a_postgresql_that_is_not_up_yet(pg_url: str, tmp_path: Path) -> None:
    port = _free_port()
    config = yaml.safe_load(EMBEDDED.read_text())
    config["database"] = {"url": _via(pg_url, port)}
    config["broker"] = {**config.get("broker", {}), "url": f"sqlite-queue:///{tmp_path / 'queue.db'}"}
    config["secrets"] = {**config.get("secrets", {}), "token_key_file": str(tmp_path / "token.key")}
    config["status"] = {"port": 0}
    config["mappings_root"] = str(EMBEDDED.parent.parent / "mappings")
    path = tmp_path / "adapter.yaml"
    path.write_text(yaml.safe_dump(config))
    log = open(tmp_path / "adapter.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "adapter", "run", "--until-idle", "--config", str(path)],
                               cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "cannot be reached" not in (tmp_path / "adapter.log").read_text():
            assert process.poll() is None, (tmp_path / "adapter.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "never said it is waiting for the store"
            time.sleep(0.2)
        time.sleep(2)
        assert process.poll() is None, "adapter run ended while the store was away"
        target = urlsplit(pg_url)
        with TcpProxy(target.hostname or "127.0.0.1", target.port or 5432, port=port):
            code = process.wait(timeout=120)  # the store came: it starts, finds nothing to do, stops
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    text = (tmp_path / "adapter.log").read_text()
    assert code == 0, text[-3000:]
    assert "reachable after" in text and "stopped:" in text


def test_a_database_that_does_not_exist_is_not_waited_for(pg_url: str) -> None:
    """The server answers and says no: the config's fault, left to opening the store to report."""
    parts = urlsplit(pg_url)
    missing = urlunsplit((parts.scheme, parts.netloc, "/no_such_database_here", parts.query, parts.fragment))
    slept: list[float] = []
    assert wait_until_reachable(missing, sleep=slept.append) == 0 and slept == []
    unreachable = _via(pg_url, _free_port())
    with pytest.raises(AssertionError, match="gave up"):
        wait_until_reachable(unreachable, sleep=lambda s: _give_up(slept, s))
    assert slept[:3] == [0.5, 1.0, 2.0]


def _give_up(slept: list[float], seconds: float) -> None:
    slept.append(seconds)
    if len(slept) >= 3:
        raise AssertionError("gave up (the store stayed unreachable)")
