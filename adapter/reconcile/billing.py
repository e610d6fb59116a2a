"""``billing_status``: the insurer's audit, payment and deduction status per claim.

A claim is a registered prescription: a ``create`` submission reconciliation confirmed
(or already billed). The run for data interval ``[start, end)`` asks about every claim
first accepted in ``[start - lookback, end)``: audits and payments lag registration by
days to weeks, and a bounded look-back keeps the partition a pure function of the
interval (no "now"). Answers are upserted into ``billing_statuses`` (one row per head id)
and ``billing_deductions`` (one row per deduction, with its reason); the submission moves
``confirmed`` -> ``billed`` / ``paid`` / ``deducted``.

Mapping of the insurer's ``auditStatus`` (sim-defined, docs/tamin-wire.md):
``submitted``/``under_audit`` -> ``billed``; ``audited`` -> ``billed``, or ``deducted`` with
deductions; ``paid`` -> ``paid``, or ``deducted`` with deductions; ``rejected`` -> ``deducted``
(the whole claim); ``cancelled`` (deleted prescription) and no answer (``not_found``) are
recorded but move nothing.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.orm import Session, sessionmaker

from adapter.destinations.tamin.client import DESTINATION
from adapter.reconcile.common import Interval, accepted_in, chunks, move, upsert
from adapter.reconcile.insurer import TaminStatusClient
from adapter.reconcile.models import BillingDeduction, BillingStatus
from adapter.store.models import Submission
from adapter.store.states import BILLABLE, BILLING_STATES

ACTOR = "airflow:billing_status"
CLAIM_STATES = BILLABLE
"""Submission states whose claim is asked about (reconciled and found at the insurer): ``states.BILLABLE``."""


def plan(sessions: sessionmaker[Session], interval: Interval, lookback_days: int = 30,
         batch_size: int = 100) -> list[list[int]]:
    since = interval.start - dt.timedelta(days=max(0, lookback_days))
    with sessions() as session:
        accepted = accepted_in(session, interval, operations=("create",), destination=DESTINATION, since=since)
        ids = [s.id for s in accepted if s.state in CLAIM_STATES]
    return chunks(ids, batch_size)


def state_of(claim: dict[str, Any] | None) -> str:
    if claim is None:
        return "not_found"
    status = str(claim.get("auditStatus") or "")
    if status == "cancelled":
        return "cancelled"
    if status == "rejected" or (claim.get("deductions") and status in ("audited", "paid")):
        return "deducted"
    if status == "paid":
        return "paid"
    return "billed"


def _amount(value: Any) -> int | None:
    return None if value is None else int(value)


def fetch_batch(sessions: sessionmaker[Session], client: TaminStatusClient, submission_ids: list[int],
                interval: Interval) -> dict[str, int]:
    with sessions() as session:
        subs = list(session.scalars(select(Submission).where(Submission.id.in_(submission_ids)).order_by(Submission.id)))
        asks = [(s.id, str((s.payload or {}).get("patient") or ""), str((s.result or {}).get("tracking_code") or ""))
                for s in subs]
    claims = {sid: (client.claim_status(patient, tracking) if patient and tracking else None)
              for sid, patient, tracking in asks}  # every insurer call before the write transaction
    counts: Counter[str] = Counter()
    stamp = {"interval_start": interval.start, "interval_end": interval.end, "run_id": interval.run_id}
    with sessions.begin() as session:
        for sub in session.scalars(select(Submission).where(Submission.id.in_(submission_ids)).order_by(Submission.id)):
            claim = claims.get(sub.id)
            state = state_of(claim)
            counts[state] += 1
            result = sub.result or {}
            head_id = str(result.get("head_id"))
            deductions = list((claim or {}).get("deductions") or [])
            deducted = sum(int(d.get("amount") or 0) for d in deductions)
            if claim and claim.get("auditStatus") == "rejected":
                deducted = int(claim.get("claimedAmount") or 0)
            values = {
                "tracking_code": str(result.get("tracking_code")), "submission_id": sub.id,
                "subject_key": sub.subject_key, "state": state,
                "audit_status": (claim or {}).get("auditStatus"), "bill_id": (claim or {}).get("billId"),
                "claimed_amount": _amount((claim or {}).get("claimedAmount")),
                "approved_amount": _amount((claim or {}).get("approvedAmount")),
                "paid_amount": _amount((claim or {}).get("paidAmount")),
                "deducted_amount": deducted if claim else None, "paid_date": (claim or {}).get("paidDate"),
            }
            key = {"destination": DESTINATION, "head_id": head_id}
            counts["row_" + upsert(session, BillingStatus, key, values, stamp)] += 1
            counts["deduction_rows_changed"] += _store_deductions(session, head_id, deductions, interval)
            if state in BILLING_STATES and sub.state in CLAIM_STATES and move(
                    session, sub, state, actor=ACTOR,
                    reason=f"billing {interval.run_id}: auditStatus {(claim or {}).get('auditStatus')}"):
                counts["state_moves"] += 1
    return dict(counts)


def _store_deductions(session: Session, head_id: str, deductions: list[dict[str, Any]], interval: Interval) -> int:
    """Upsert the claim's deductions; drop ones the insurer no longer reports. Rows changed."""
    changed = 0
    refs = []
    for item in deductions:
        ref = str(item.get("deductionId") or f"{item.get('srvCode')}:{item.get('reasonCode')}")
        refs.append(ref)
        values = {"srv_code": item.get("srvCode"), "amount": int(item.get("amount") or 0),
                  "reason_code": item.get("reasonCode"), "reason": item.get("reason")}
        key = {"destination": DESTINATION, "head_id": head_id, "deduction_ref": ref}
        existing = session.scalar(select(BillingDeduction).filter_by(**key))
        if existing is None:
            session.add(BillingDeduction(**key, **values, found_interval_start=interval.start, run_id=interval.run_id))
            changed += 1
        elif upsert(session, BillingDeduction, key, values, {"run_id": interval.run_id}) != "unchanged":
            changed += 1
    gone = delete(BillingDeduction).where(BillingDeduction.destination == DESTINATION,
                                          BillingDeduction.head_id == head_id,
                                          BillingDeduction.deduction_ref.not_in(refs))
    changed += cast(CursorResult[Any], session.execute(gone)).rowcount or 0  # a DELETE: execute is typed Result
    return changed


def deductions_found(sessions: sessionmaker[Session], interval: Interval) -> list[dict[str, Any]]:
    """Deductions first seen by the billing run of this interval, with their reasons."""
    with sessions() as session:
        rows = session.execute(
            select(BillingDeduction, BillingStatus.tracking_code, BillingStatus.bill_id)
            .join(BillingStatus, (BillingStatus.destination == BillingDeduction.destination)
                  & (BillingStatus.head_id == BillingDeduction.head_id), isouter=True)
            .where(BillingDeduction.found_interval_start >= interval.start,
                   BillingDeduction.found_interval_start < interval.end)
            .order_by(BillingDeduction.head_id, BillingDeduction.deduction_ref)).all()
    return [{"destination": d.destination, "head_id": d.head_id, "tracking_code": tracking, "bill_id": bill,
             "deduction": d.deduction_ref, "srv_code": d.srv_code, "amount": d.amount,
             "reason_code": d.reason_code, "reason": d.reason} for d, tracking, bill in rows]
