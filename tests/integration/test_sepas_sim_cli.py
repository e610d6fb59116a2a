"""``adapter sim`` serves the DITAS/SEPAS simulator next to the Tamin one (``--ditas-port``),
prints its URL and key files, keeps its key pair across restarts, and ``--ditas-port 0`` leaves it off."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_sim(tmp_path: Path, ditas_port: int) -> tuple[subprocess.Popen, int]:
    tamin_port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "adapter", "sim", "--port", str(tamin_port), "--ditas-port", str(ditas_port),
         "--ditas-key-dir", str(tmp_path / "keys")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "300"})
    ports = [tamin_port] + ([ditas_port] if ditas_port else [])  # DITAS starts after Tamin: wait for both
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            for port in ports:
                httpx.get(f"http://127.0.0.1:{port}/_sim/stats", timeout=1)
            return process, tamin_port
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError("adapter sim did not start")


def stop(process: subprocess.Popen) -> str:
    process.terminate()
    out, _ = process.communicate(timeout=15)
    return out


def test_sim_serves_ditas_with_persistent_keys(tmp_path: Path) -> None:
    ditas_port = free_port()
    process, _ = run_sim(tmp_path, ditas_port)
    try:
        stats = httpx.get(f"http://127.0.0.1:{ditas_port}/_sim/stats", timeout=5).json()
        served_key = httpx.get(f"http://127.0.0.1:{ditas_port}/_sim/public-key", timeout=5).text
    finally:
        out = stop(process)
    assert stats["saves"] == 0 and stats["validations"] == 0
    assert f"DITAS/SEPAS simulator on http://127.0.0.1:{ditas_port}" in out
    public, private = tmp_path / "keys" / "moh-public.pem", tmp_path / "keys" / "moh-private.pem"
    assert str(public) in out and str(private) in out
    assert public.read_text() == served_key
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert "Logging error" not in out

    process, _ = run_sim(tmp_path, ditas_port)  # a restart keeps the pair the adapter was configured with
    try:
        again = httpx.get(f"http://127.0.0.1:{ditas_port}/_sim/public-key", timeout=5).text
    finally:
        stop(process)
    assert again == served_key


def test_ditas_port_zero_starts_only_tamin(tmp_path: Path) -> None:
    process, tamin_port = run_sim(tmp_path, 0)
    try:
        assert httpx.get(f"http://127.0.0.1:{tamin_port}/_sim/stats", timeout=5).status_code == 200
    finally:
        out = stop(process)
    assert "DITAS" not in out and not (tmp_path / "keys").exists()
