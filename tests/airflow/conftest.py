"""Airflow test setup: run these tests with the Airflow venv's pytest
(``scripts/test-airflow.sh``); with the adapter's venv (no Airflow) they are not collected.

A throw-away AIRFLOW_HOME per session, examples off, DAG folder = ``dags/``, the metadata
DB initialised with ``airflow db migrate`` and the ``tamin_api`` pool created. The
environment is set before the first ``import airflow`` (Airflow reads its config then).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_SPEC = importlib.util.find_spec("airflow")  # tests/ is on sys.path: tests/airflow is a namespace "airflow"
if _SPEC is None or _SPEC.origin is None:  # the adapter's own venv: nothing to test here
    collect_ignore_glob = ["*.py"]
else:
    _HOME = Path(os.environ.get("ADAPTER_TEST_AIRFLOW_HOME") or tempfile.mkdtemp(prefix="airflow-home-"))
    os.environ.update({
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(_HOME / "logs"),
        "ADAPTER_AIRFLOW_TIMEZONE": "Asia/Tehran",
    })
    os.environ.pop("AIRFLOW_CONN_ADAPTER_DB", None)
    os.environ.pop("AIRFLOW_CONN_TAMIN", None)
    _BIN = Path(sys.executable).parent

    def _airflow(*args: str) -> None:
        env = {**os.environ, "PATH": f"{_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        done = subprocess.run([str(_BIN / "airflow"), *args], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"airflow {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    if not (_HOME / ".migrated").exists():
        _airflow("db", "migrate")
        _airflow("pools", "set", "tamin_api", "2", "Tamin API calls (reconciliation, billing)")
        (_HOME / ".migrated").touch()
