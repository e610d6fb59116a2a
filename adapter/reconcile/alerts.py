"""Deadline alert callback: reconciliation did not finish by the configured time.

Runs in the Airflow **triggerer** (an ``AsyncCallback``), so it must stay importable there
and quick. It logs an ERROR line operators' log shipping can alert on and, when
``alerts_file`` is given (``ADAPTER_AIRFLOW_ALERTS_FILE``), appends one JSON line to it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("adapter.reconcile.alerts")


def _describe(context: Any) -> dict[str, Any]:
    if not isinstance(context, dict):
        return {}
    run = context.get("dag_run")
    info = {key: context.get(key) for key in ("dag_id", "run_id", "deadline") if context.get(key) is not None}
    if isinstance(run, dict):
        info.update({k: run.get(k) for k in ("dag_id", "run_id", "logical_date") if run.get(k) is not None})
    elif run is not None:
        info.update({k: getattr(run, k) for k in ("dag_id", "run_id") if getattr(run, k, None) is not None})
    return {k: str(v) for k, v in info.items()}


async def deadline_missed(dag_id: str = "", deadline: str = "", alerts_file: str | None = None,
                          context: Any = None, **_: Any) -> dict[str, Any]:
    event = {"alert": "deadline_missed", "dag_id": dag_id, "deadline": deadline, **_describe(context)}
    log.error("DEADLINE MISSED: %s has not finished by %s (%s)", dag_id, deadline, json.dumps(event, sort_keys=True))
    if alerts_file:
        path = Path(alerts_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(event, sort_keys=True) + "\n")
    return event
