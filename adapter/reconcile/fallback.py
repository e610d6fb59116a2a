"""``fallback_reconciliation``: paper-fallback records against what the insurer accepted.

During an outage the adapter issues a paper-fallback record per prescription
(``fallback_records``, ``adapter/outage/records.py``) and normally settles it itself when the
electronic submission ends: ``linked`` (accepted, tracking code kept) or ``paper_claim``
(rejected/invalid/dead). This job checks that afterwards, one data interval per run, and
finds the records nobody settled:

* **linked** -- the submission was accepted (or reconciled/billed since): a record the adapter
  left ``issued`` is linked here, ``linked_at`` = the submission's first acceptance (audit
  trail), tracking code and head id from its result;
* **paper_claim** -- the submission ended rejected/invalid/dead (or the record was refused
  at intake): a record left ``issued`` becomes ``paper_claim``, ``claimed_at`` = when the
  submission reached that state;
* **flagged** -- still without an electronic acceptance ``max_age_hours`` (Variable
  ``adapter_fallback_max_age_hours``, default 72) after the paper was issued: the paper must
  be claimed. ``flagged_at`` = created_at + max age (never "now"). The adapter's record is
  not changed (the submission may still be accepted; then it is linked);
* **waiting** -- not accepted yet, not old enough.

A run reviews two partitions, both fixed by the interval: records **created** in it (link,
paper claim) and records that **turned max_age old** in it (created in
``[start - max_age, end - max_age)``: flag). Verdicts go to ``fallback_reviews`` (upsert by
fallback number, stamped with the interval only when something changed; a ``flagged``
review is never turned back into ``waiting``). Re-running an interval changes nothing.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, and_, select
from sqlalchemy.orm import Session, sessionmaker

from adapter.outage import records as fb
from adapter.reconcile.common import Interval, upsert
from adapter.reconcile.models import FallbackReview
from adapter.store.models import FallbackRecord, StateChange, Submission
from adapter.store.states import ACCEPTED_FAMILY, NEEDS_PERSON

ACTOR = "airflow:fallback_reconciliation"
FAILED = tuple(s.value for s in NEEDS_PERSON)
CLAIM_VERDICTS = ("paper_claim", "flagged")
CSV_COLUMNS = ("fallback_no", "destination", "facility_siam_id", "prescription_id", "outage_id", "created_at",
               "verdict", "submission_state", "flagged_at", "detail")


def _partition(session: Session, interval: Interval, max_age: dt.timedelta) -> list[FallbackRecord]:
    created = and_(FallbackRecord.created_at >= interval.start, FallbackRecord.created_at < interval.end)
    due = and_(FallbackRecord.created_at >= interval.start - max_age, FallbackRecord.created_at < interval.end - max_age)
    return list(session.scalars(select(FallbackRecord).where(or_(created, due)).order_by(FallbackRecord.id)))


def _first_time(session: Session, submission_id: int, states: tuple[str, ...]) -> dt.datetime | None:
    return session.scalar(select(func.min(StateChange.at)).where(
        StateChange.submission_id == submission_id, StateChange.to_state.in_(states)))


def review(sessions: sessionmaker[Session], interval: Interval, max_age_hours: int = 72) -> dict[str, Any]:
    """Link / mark / flag the interval's records in one transaction; counts for the log."""
    max_age = dt.timedelta(hours=max_age_hours)
    counts: Counter[str] = Counter()
    stamp = {"interval_start": interval.start, "interval_end": interval.end, "run_id": interval.run_id}
    with sessions.begin() as session:
        for record in _partition(session, interval, max_age):
            sub = session.get(Submission, record.submission_id)
            state = sub.state if sub is not None else None
            flagged_at: dt.datetime | None = None
            if sub is not None and state in ACCEPTED_FAMILY:
                verdict = "linked"
                accepted_at = _first_time(session, sub.id, ("accepted",)) or sub.updated_at
                detail = f"accepted {_hours(accepted_at - record.created_at)} after the paper was issued"
                if record.state != fb.LINKED:
                    result = sub.result or {}
                    record.state, record.linked_at = fb.LINKED, accepted_at
                    record.tracking_code = _text(result.get("tracking_code") or result.get("composition_uid"))
                    record.head_id = _text(result.get("head_id"))
                    record.claimed_at = record.claim_reason = None
                    counts["linked_now"] += 1
            elif state in FAILED or record.state == fb.PAPER_CLAIM or sub is None:
                verdict = "paper_claim"
                why = f"{state}: {sub.last_error}" if sub is not None else "submission missing"
                detail = record.claim_reason or why
                if record.state == fb.ISSUED:
                    record.state = fb.PAPER_CLAIM
                    record.claimed_at = (_first_time(session, sub.id, (state,)) if sub is not None and state else None) \
                        or record.created_at
                    record.claim_reason = why
                    detail = why
                    counts["paper_claim_now"] += 1
            else:
                overdue = record.created_at + max_age
                existing = session.scalar(select(FallbackReview).where(FallbackReview.fallback_no == record.fallback_no))
                if overdue <= interval.end or (existing is not None and existing.verdict == "flagged"):
                    verdict = "flagged"
                    flagged_at = existing.flagged_at if existing is not None and existing.flagged_at else overdue
                    detail = f"no electronic acceptance {max_age_hours} h after the paper was issued " \
                             f"(submission {state}): claim on paper"
                else:
                    verdict, detail = "waiting", f"submission {state}, not yet {max_age_hours} h old"
            counts[verdict] += 1
            values = {"fallback_id": record.id, "destination": record.destination, "submission_id": record.submission_id,
                      "record_created_at": record.created_at, "verdict": verdict, "submission_state": state,
                      "detail": detail, "flagged_at": flagged_at, "max_age_hours": max_age_hours}
            counts["row_" + upsert(session, FallbackReview, {"fallback_no": record.fallback_no}, values, stamp)] += 1
    return dict(sorted(counts.items()))


def paper_claims(sessions: sessionmaker[Session], interval: Interval, max_age_hours: int = 72) -> list[dict[str, Any]]:
    """The interval's records to claim on paper (verdict paper_claim or flagged)."""
    max_age = dt.timedelta(hours=max_age_hours)
    out: list[dict[str, Any]] = []
    with sessions() as session:
        for record in _partition(session, interval, max_age):
            row = session.scalar(select(FallbackReview).where(FallbackReview.fallback_no == record.fallback_no))
            if row is None or row.verdict not in CLAIM_VERDICTS:
                continue
            out.append({"fallback_no": record.fallback_no, "destination": record.destination,
                        "facility_siam_id": record.facility_siam_id, "prescription_id": record.prescription_id,
                        "outage_id": record.outage_id or "", "created_at": record.created_at.isoformat(),
                        "verdict": row.verdict, "submission_state": row.submission_state or "",
                        "flagged_at": row.flagged_at.isoformat() if row.flagged_at else "", "detail": row.detail or ""})
    return out


def write_paper_claims(sessions: sessionmaker[Session], interval: Interval, report_dir: str | Path,
                       max_age_hours: int = 72, timezone: str = "UTC") -> tuple[Path, list[dict[str, Any]], str]:
    """``<report_dir>/paper-claims-<day>.csv`` (atomically; a re-run writes the same file)."""
    rows = paper_claims(sessions, interval, max_age_hours)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    folder = Path(report_dir)
    folder.mkdir(parents=True, exist_ok=True)
    day = interval.start.astimezone(ZoneInfo(timezone)).date()
    path = folder / f"paper-claims-{day.isoformat()}.csv"
    tmp = path.with_suffix(".csv.tmp")
    tmp.write_text(out.getvalue(), encoding="utf-8")
    tmp.replace(path)
    return path, rows, out.getvalue()


def _hours(delta: dt.timedelta) -> str:
    return f"{max(delta.total_seconds(), 0) / 3600:.1f} h"


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
