"""``scripts/python-env.sh`` (sourced by scripts/demo.sh, test.sh, airflow-venv.sh and .ci/run):
a Python older than pyproject.toml's requires-python stops with a message naming both versions
and the fix; a Python without venv/ensurepip gets its ``python3.X-venv`` from apt-get when
root, and a message naming the package otherwise. Run with fake ``python3``, ``apt-get`` and
``id`` on PATH, so nothing is installed."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REQUIRED = re.search(r'requires-python\s*=\s*">=\s*([0-9.]+)"', (REPO / "pyproject.toml").read_text()).group(1)  # type: ignore[union-attr]

FAKE_PYTHON = """#!/bin/sh
# answers the few questions python-env.sh asks
case "$*" in
  *'import ensurepip'*) [ -f "$FAKE_DIR/venv-installed" ] && exit 0; echo "No module named 'ensurepip'" >&2; exit 1;;
  *'%d.%d.%d'*) echo "$FAKE_VERSION";;
  *'[:2]'*) echo "$FAKE_VERSION" | cut -d. -f1,2;;
  '-m venv --clear '*) mkdir -p "$4/bin"; echo "$4" > "$FAKE_DIR/venv-made";;
  *) exit 3;;
esac
"""
FAKE_APT = """#!/bin/sh
echo "$*" >> "$FAKE_DIR/apt-calls"
case "$*" in *install*) touch "$FAKE_DIR/venv-installed";; esac
"""


def fake_tool(folder: Path, name: str, text: str) -> None:
    path = folder / name
    path.write_text(text)
    path.chmod(0o755)


def run_script(tmp_path: Path, call: str, version: str, uid: int = 0) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake_tool(bin_dir, "python3", FAKE_PYTHON)
    fake_tool(bin_dir, "apt-get", FAKE_APT)
    fake_tool(bin_dir, "id", f"#!/bin/sh\necho {uid}\n")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_DIR": str(tmp_path), "FAKE_VERSION": version,
           "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(["bash", "-c", f"source scripts/python-env.sh && {call}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_an_old_python_stops_with_both_versions_and_the_fix(tmp_path: Path) -> None:
    done = run_script(tmp_path, "require_python python3 demo.sh", "3.9.2")
    assert done.returncode == 1
    assert f"demo.sh: python3 is Python 3.9.2; the adapter needs Python {REQUIRED} or newer" in done.stderr
    assert f"PYTHON=python{REQUIRED}" in done.stderr


def test_a_new_enough_python_passes(tmp_path: Path) -> None:
    assert run_script(tmp_path, "require_python python3 demo.sh", REQUIRED + ".0").returncode == 0
    assert run_script(tmp_path, "require_python python3 demo.sh", "4.0.1").returncode == 0


def test_a_missing_python_is_named(tmp_path: Path) -> None:
    done = run_script(tmp_path, "require_python python3.99 test.sh", "3.12.1")
    assert done.returncode == 1 and "test.sh: python3.99 not found" in done.stderr


def test_an_old_python_makes_no_venv(tmp_path: Path) -> None:
    done = run_script(tmp_path, f'ensure_venv python3 "{tmp_path / "venv"}" .ci/run', "3.9.2")
    assert done.returncode == 1 and "needs Python" in done.stderr
    assert not (tmp_path / "venv-made").exists() and not (tmp_path / "apt-calls").exists()


def test_as_root_a_missing_venv_module_is_installed_with_apt_get(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    done = run_script(tmp_path, f'ensure_venv python3 "{venv}" test.sh', "3.12.1", uid=0)
    assert done.returncode == 0, done.stderr
    assert "installing python3.12-venv with apt-get" in done.stderr
    assert "install -y -qq python3.12-venv" in (tmp_path / "apt-calls").read_text()
    assert (tmp_path / "venv-made").read_text().strip() == str(venv)


def test_not_root_a_missing_venv_module_names_the_package_to_install(tmp_path: Path) -> None:
    done = run_script(tmp_path, f'ensure_venv python3 "{tmp_path / "venv"}" demo.sh', "3.12.1", uid=1000)
    assert done.returncode == 1
    assert "demo.sh: python3 3.12 has no venv/ensurepip module" in done.stderr
    assert "apt-get install python3.12-venv" in done.stderr
    assert not (tmp_path / "apt-calls").exists() and not (tmp_path / "venv-made").exists()
