"""``daily_report``: what happened in one data interval, as a CSV file and as log lines.

Sections (column ``section``):

* ``submissions`` -- submissions received in the interval, per destination and current state;
* ``reconciliation`` -- verdicts of the interval's reconciliation run, per kind;
* ``discrepancy`` -- one line per discrepancy (ids, kind; no patient data);
* ``billing`` -- billing rows the interval's billing run wrote, per state, with amounts;
* ``deduction`` -- one line per deduction first seen in the interval, with its reason;
* ``outage`` -- one line per outage that overlapped the interval (key ``circuit``/``manual``;
  detail: start, end or ``open``, ``duration_s`` (whole outage, ``open`` while it lasts),
  ``inside_s`` (seconds of it inside the interval), who, why). An open outage counts up to the interval end (no "now");
* ``fallback`` -- paper-fallback records issued in the interval, per destination and state
  (``issued``/``linked``/``paper_claim``);
* ``fallback_review`` -- verdicts of the interval's ``fallback_reconciliation`` run
  (``linked``/``paper_claim``/``flagged``/``waiting``).

The file is
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
from adapter.reconcile.models import BillingStatus, FallbackReview, ReconciliationResult
from adapter.store.models import FallbackRecord, Outage, Submission

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
        rows += [_row("billing", dest, state, n, amount=int(paid or 0), detail=f"deducted={int(ded or 0)}")
                 for dest, state, n, paid, ded in billing]
        rows += _outages(session, interval)
        fallbacks = session.execute(
            select(FallbackRecord.destination, FallbackRecord.state, func.count())
            .where(FallbackRecord.created_at >= interval.start, FallbackRecord.created_at < interval.end)
            .group_by(FallbackRecord.destination, FallbackRecord.state)
            .order_by(FallbackRecord.destination, FallbackRecord.state)).all()
        rows += [_row("fallback", dest, state, n) for dest, state, n in fallbacks]
        reviews = session.execute(
            select(FallbackReview.destination, FallbackReview.verdict, func.count())
            .where(FallbackReview.interval_start == interval.start)
            .group_by(FallbackReview.destination, FallbackReview.verdict)
            .order_by(FallbackReview.destination, FallbackReview.verdict)).all()
        rows += [_row("fallback_review", dest, verdict, n) for dest, verdict, n in reviews]
    for d in deductions_found(sessions, interval):
        rows.append(_row("deduction", d["destination"], d["reason_code"] or "-", 1, amount=d["amount"],
                         detail=f"head={d['head_id']} tracking={d['tracking_code']} bill={d['bill_id'] or '-'} "
                                f"service={d['srv_code'] or '-'} reason={d['reason'] or '-'}"))
    return rows


def _outages(session: Session, interval: Interval) -> list[dict[str, Any]]:
    """Outages overlapping the interval; seconds inside it (an open one up to the interval end)."""
    found = session.scalars(select(Outage).where(
        Outage.started_at < interval.end, (Outage.ended_at.is_(None)) | (Outage.ended_at > interval.start))
        .order_by(Outage.started_at, Outage.id))
    rows: list[dict[str, Any]] = []
    for o in found:
        inside = (min(o.ended_at or interval.end, interval.end) - max(o.started_at, interval.start)).total_seconds()
        whole = f"{(o.ended_at - o.started_at).total_seconds():.0f}" if o.ended_at else "open"
        detail = f"id={o.id} start={o.started_at.isoformat()} end={o.ended_at.isoformat() if o.ended_at else 'open'} " \
                 f"duration_s={whole} inside_s={max(inside, 0):.0f} started_by={o.started_by} ended_by={o.ended_by or '-'} reason={o.reason}"
        rows.append(_row("outage", o.destination, o.detected, 1, detail=detail))
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
