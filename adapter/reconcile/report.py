"""``daily_report``: what happened in one data interval, as a CSV file and as log lines.

Sections (column ``section``):

* ``submissions`` -- submissions received in the interval, per destination and current state;
* ``reconciliation`` -- verdicts of the interval's reconciliation run, per kind;
* ``discrepancy`` -- one line per discrepancy (ids, kind; no patient data);
* ``billing`` -- billing rows the interval's billing run wrote, per state, with amounts;
* ``deduction`` -- one line per deduction first seen in the interval, with its reason.

Outages join when their tables exist (issue 5). The file is
``<report_dir>/adapter-report-<interval start date>.csv``, overwritten by a re-run (the
same interval gives the same file as long as the store did not change).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from zoneinfo import ZoneInfo
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from adapter.reconcile.billing import deductions_found
from adapter.reconcile.common import Interval
from adapter.reconcile.models import BillingStatus, ReconciliationResult
from adapter.store.models import Submission

COLUMNS = ("section", "destination", "key", "count", "amount", "detail")


def collect(sessions: sessionmaker[Session], interval: Interval) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with sessions() as session:
        states = session.execute(
            select(Submission.destination, Submission.state, func.count())
            .where(Submission.created_at >= interval.start, Submission.created_at < interval.end)
            .group_by(Submission.destination, Submission.state)
            .order_by(Submission.destination, Submission.state)).all()
        rows += [_row("submissions", dest, state, n) for dest, state, n in states]
        recon = session.execute(
            select(ReconciliationResult.destination, ReconciliationResult.verdict, ReconciliationResult.kind, func.count())
            .where(ReconciliationResult.interval_start == interval.start)
            .group_by(ReconciliationResult.destination, ReconciliationResult.verdict, ReconciliationResult.kind)
            .order_by(ReconciliationResult.destination, ReconciliationResult.verdict, ReconciliationResult.kind)).all()
        rows += [_row("reconciliation", dest, f"{verdict}:{kind}", n) for dest, verdict, kind, n in recon]
        for r in session.scalars(select(ReconciliationResult).where(
                ReconciliationResult.interval_start == interval.start, ReconciliationResult.verdict == "discrepancy")
                .order_by(ReconciliationResult.item_key)):
            detail = f"subject={r.subject_key or '-'} operation={r.operation or '-'} head={r.head_id or '-'} " \
                     f"tracking={r.tracking_code or '-'}"
            rows.append(_row("discrepancy", r.destination, r.kind, 1, detail=detail))
        billing = session.execute(
            select(BillingStatus.destination, BillingStatus.state, func.count(),
                   func.coalesce(func.sum(BillingStatus.paid_amount), 0),
                   func.coalesce(func.sum(BillingStatus.deducted_amount), 0))
            .where(BillingStatus.interval_start == interval.start)
            .group_by(BillingStatus.destination, BillingStatus.state)
            .order_by(BillingStatus.destination, BillingStatus.state)).all()
        rows += [_row("billing", dest, state, n, amount=int(paid), detail=f"deducted={int(ded)}")
                 for dest, state, n, paid, ded in billing]
    for d in deductions_found(sessions, interval):
        rows.append(_row("deduction", d["destination"], d["reason_code"] or "-", 1, amount=d["amount"],
                         detail=f"head={d['head_id']} tracking={d['tracking_code']} bill={d['bill_id'] or '-'} "
                                f"service={d['srv_code'] or '-'} reason={d['reason'] or '-'}"))
    return rows


def _row(section: str, destination: str, key: str, count: int, amount: int | None = None,
         detail: str = "") -> dict[str, Any]:
    return {"section": section, "destination": destination, "key": key, "count": int(count),
            "amount": "" if amount is None else int(amount), "detail": detail}


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write(sessions: sessionmaker[Session], interval: Interval, report_dir: str | Path,
          timezone: str = "UTC") -> tuple[Path, str]:
    """Write the interval's CSV (atomically) and return its path and text. The file is named
    by the interval's first day in ``timezone`` (the DAGs' schedule time zone)."""
    text = to_csv(collect(sessions, interval))
    folder = Path(report_dir)
    folder.mkdir(parents=True, exist_ok=True)
    day = interval.start.astimezone(ZoneInfo(timezone)).date()
    path = folder / f"adapter-report-{day.isoformat()}.csv"
    tmp = path.with_suffix(".csv.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path, text
