"""What the DAG files in ``dags/`` share: connections, variables, schedule, pool, retry
policy and deadline. The only module of ``adapter.reconcile`` that imports Airflow.

Configuration (nothing is hard-coded in a DAG):

* Connection ``adapter_db`` (``AIRFLOW_CONN_ADAPTER_DB``): the adapter's database, e.g.
  ``sqlite:////srv/adapter/var/adapter.db`` or
  ``postgresql+psycopg://adapter:SECRET@db:5432/adapter``; an ``extra``
  ``{"sqlalchemy_url": ...}`` wins over the URI parts.
* Connection ``tamin`` (``AIRFLOW_CONN_TAMIN``): ``https://CLIENT_ID:CLIENT_SECRET@host:port``;
  extras ``token_path``, ``lookup_path``, ``claim_status_path``, ``timeout_s``, ``base_url``.
* Connection ``ditas`` (``AIRFLOW_CONN_DITAS``, optional: without it the SEPAS part of
  ``reconcile_submissions`` is skipped): ``https://CLIENT_ID:CLIENT_SECRET@host:port`` with
  extras ``username``, ``password`` (the DITAS user), ``system_id``, ``pid``, and optionally
  ``token_path``, ``lookup_path``, ``timeout_s``, ``base_url``.
* Variables (all optional): ``adapter_reconcile_batch_size`` (100),
  ``adapter_billing_lookback_days`` (30), ``adapter_report_dir`` ($AIRFLOW_HOME/reports),
  ``adapter_fallback_max_age_hours`` (72).
* Environment read when the DAG file is parsed: ``ADAPTER_AIRFLOW_TIMEZONE``
  (``Asia/Tehran``: the days the intervals cover), ``ADAPTER_RECONCILE_DEADLINE`` (``07:00``:
  time of day after the interval by which reconciliation must be done),
  ``ADAPTER_AIRFLOW_ALERTS_FILE`` (optional JSON-lines file for missed deadlines).
* Pool ``tamin_api`` (create it: ``airflow pools set tamin_api 2 "Tamin API calls"``):
  every task that calls the insurer runs in it, so the API quota is shared.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import (AsyncCallback, BaseHook, CronDataIntervalTimetable, DeadlineAlert, DeadlineReference,
                         ExceptionRetryPolicy, RetryAction, RetryRule, Variable)

from adapter.reconcile.common import Interval
from adapter.reconcile.insurer import TaminEndpoint, connection_tls

if TYPE_CHECKING:
    from adapter.reconcile.sepas import DitasEndpoint

DB_CONN_ID = "adapter_db"
TAMIN_CONN_ID = "tamin"
DITAS_CONN_ID = "ditas"
POOL = "tamin_api"
TIMEZONE = os.environ.get("ADAPTER_AIRFLOW_TIMEZONE", "Asia/Tehran")
START_DATE = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
TAGS = ["adapter", "tamin"]


def daily_timetable() -> CronDataIntervalTimetable:
    """One run per local day, covering that day: ``data_interval`` = [00:00, 24:00) in TIMEZONE.
    (A trigger timetable would give empty intervals and break the partitioning.)"""
    return CronDataIntervalTimetable("0 0 * * *", timezone=TIMEZONE)


INSURER_RETRY_POLICY = ExceptionRetryPolicy(
    rules=[
        RetryRule(exception="adapter.reconcile.insurer.InsurerTransient", action=RetryAction.RETRY,
                  reason="insurer unreachable, overloaded (429/5xx) or answering a non-JSON page: retry later"),
        RetryRule(exception="adapter.reconcile.insurer.InsurerPermanent", action=RetryAction.FAIL,
                  reason="insurer refused the request (4xx, credentials): retrying cannot help, a person must look"),
    ],
    default=RetryAction.DEFAULT,
)

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "adapter",
    "retries": 4,
    "retry_delay": dt.timedelta(minutes=2),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": dt.timedelta(minutes=30),
}
INSURER_TASK_ARGS: dict[str, Any] = {"pool": POOL, "retry_policy": INSURER_RETRY_POLICY}


def reconcile_deadline(dag_id: str) -> DeadlineAlert:
    """Alert when the run has not finished by ADAPTER_RECONCILE_DEADLINE (local time) on the day
    after its interval. With the daily data-interval timetable the logical date is the
    interval's start, so the deadline is logical date + 1 day + HH:MM."""
    text = os.environ.get("ADAPTER_RECONCILE_DEADLINE", "07:00")
    hours, _, minutes = text.partition(":")
    after = dt.timedelta(days=1, hours=int(hours), minutes=int(minutes or 0))
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=after,
        callback=AsyncCallback("adapter.reconcile.alerts.deadline_missed",
                               kwargs={"dag_id": dag_id, "deadline": f"{text} {TIMEZONE} after the interval",
                                       "alerts_file": os.environ.get("ADAPTER_AIRFLOW_ALERTS_FILE")}),
        name=f"{dag_id}_finished_by_{text}",
    )


# ----- used inside tasks (never at parse time) ---------------------------------------------
def interval_of(context: Any) -> Interval:
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None or end is None:
        raise ValueError("this DAG needs a data interval (manual runs: pass a logical date)")
    return Interval(start, end, str(context["run_id"]))


def adapter_db_url() -> str:
    conn = BaseHook.get_connection(DB_CONN_ID)
    return db_url_of(conn.conn_type, conn.host, conn.schema, conn.login, conn.password, conn.port, conn.extra_dejson)


def db_url_of(conn_type: str | None, host: str | None, schema: str | None, login: str | None, password: str | None,
              port: int | None, extra: dict[str, Any]) -> str:
    if extra.get("sqlalchemy_url"):
        return str(extra["sqlalchemy_url"])
    kind = (conn_type or "").lower()
    if kind == "sqlite":
        path = schema or host or ""
        if not path:
            raise ValueError("connection adapter_db: sqlite needs a path, e.g. sqlite:////srv/adapter/var/adapter.db")
        return f"sqlite:///{path}"
    if kind.startswith("postgres"):
        auth = quote(login or "", safe="") + (f":{quote(password, safe='')}" if password else "")
        return f"postgresql+psycopg://{auth}{'@' if auth else ''}{host or 'localhost'}:{port or 5432}/{schema or ''}"
    raise ValueError(f"connection adapter_db: unsupported type {conn_type!r} (use sqlite:// or postgresql://)")


def tamin_endpoint() -> TaminEndpoint:
    conn = BaseHook.get_connection(TAMIN_CONN_ID)
    extra = conn.extra_dejson
    scheme = "https" if (conn.conn_type or "").lower() == "https" else "http"
    base = extra.get("base_url") or f"{scheme}://{conn.host}{f':{conn.port}' if conn.port else ''}"
    paths = {k: extra[k] for k in ("token_path", "lookup_path", "claim_status_path") if extra.get(k)}
    return TaminEndpoint(base_url=base, client_id=conn.login or "", client_secret=conn.password or "",
                         timeout_s=float(extra.get("timeout_s", 30)), tls=connection_tls(extra), **paths)


def ditas_endpoint() -> "DitasEndpoint | None":
    """The DITAS endpoint from the Connection ``ditas``; ``None`` when it is not defined (SEPAS
    is not configured for this installation: the SEPAS reconciliation is skipped)."""
    from adapter.reconcile.sepas import DitasEndpoint

    try:
        conn = BaseHook.get_connection(DITAS_CONN_ID)
    except Exception as exc:  # AirflowNotFoundException (its module differs between the SDK and core)
        if "not defined" in str(exc) or type(exc).__name__ == "AirflowNotFoundException":
            return None
        raise
    extra = conn.extra_dejson
    missing = [k for k in ("username", "password", "system_id", "pid") if not extra.get(k)]
    if missing:
        raise ValueError(f"connection ditas: extras {missing} are required")
    scheme = "https" if (conn.conn_type or "").lower() == "https" else "http"
    base = extra.get("base_url") or f"{scheme}://{conn.host}{f':{conn.port}' if conn.port else ''}"
    paths = {k: extra[k] for k in ("token_path", "lookup_path") if extra.get(k)}
    return DitasEndpoint(base_url=base, client_id=conn.login or "", client_secret=conn.password or "",
                         username=str(extra["username"]), password=str(extra["password"]),
                         system_id=str(extra["system_id"]), pid=str(extra["pid"]),
                         timeout_s=float(extra.get("timeout_s", 30)), tls=connection_tls(extra), **paths)


def variable_int(key: str, default: int) -> int:
    return int(Variable.get(key, default=str(default)))


def report_dir() -> Path:
    default = Path(os.environ.get("AIRFLOW_HOME", str(Path.home() / "airflow"))) / "reports"
    return Path(Variable.get("adapter_report_dir", default=str(default)))


def zone() -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(TIMEZONE)
