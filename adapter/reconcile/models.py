"""Tables of the Airflow side: reconciliation verdicts and the insurer's billing status.

Written only by ``adapter.reconcile`` (called from the DAGs in ``dags/``), always as
upserts keyed by natural keys, so re-running a DAG for the same data interval changes
nothing when the insurer's answers did not change. No column holds "now": each row says
which data interval (and run) last changed it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from adapter.store.models import Base


class ReconciliationResult(Base):
    """One verdict: a submission we hold (``item_key`` ``sub:<id>``) or a prescription only the
    insurer holds (``head:<head id>``, kind ``unknown_at_ours``)."""

    __tablename__ = "reconciliation_results"
    __table_args__ = (
        UniqueConstraint("destination", "item_key", name="uq_recon_destination_item"),
        Index("ix_recon_interval", "interval_start"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    destination: Mapped[str] = mapped_column(String(32))
    item_key: Mapped[str] = mapped_column(String(80))
    submission_id: Mapped[int | None] = mapped_column(Integer, index=True)
    subject_key: Mapped[str | None] = mapped_column(String(200))
    operation: Mapped[str | None] = mapped_column(String(32))
    head_id: Mapped[str | None] = mapped_column(String(64))
    tracking_code: Mapped[str | None] = mapped_column(String(64))
    verdict: Mapped[str] = mapped_column(String(16))  # confirmed | discrepancy
    kind: Mapped[str] = mapped_column(String(32))  # match | missing_at_insurer | items_differ | ...
    difference: Mapped[dict[str, Any] | None]
    interval_start: Mapped[dt.datetime]
    interval_end: Mapped[dt.datetime]
    run_id: Mapped[str] = mapped_column(String(250))


class BillingStatus(Base):
    """The insurer's audit/payment status of one claim (a registered prescription)."""

    __tablename__ = "billing_statuses"
    __table_args__ = (UniqueConstraint("destination", "head_id", name="uq_billing_destination_head"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    destination: Mapped[str] = mapped_column(String(32))
    head_id: Mapped[str] = mapped_column(String(64))
    tracking_code: Mapped[str | None] = mapped_column(String(64))
    submission_id: Mapped[int | None] = mapped_column(Integer, index=True)
    subject_key: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), index=True)  # billed | paid | deducted | not_found | cancelled
    audit_status: Mapped[str | None] = mapped_column(String(32))
    bill_id: Mapped[str | None] = mapped_column(String(64))
    claimed_amount: Mapped[int | None] = mapped_column(BigInteger)
    approved_amount: Mapped[int | None] = mapped_column(BigInteger)
    paid_amount: Mapped[int | None] = mapped_column(BigInteger)
    deducted_amount: Mapped[int | None] = mapped_column(BigInteger)
    paid_date: Mapped[str | None] = mapped_column(String(16))
    interval_start: Mapped[dt.datetime]
    interval_end: Mapped[dt.datetime]
    run_id: Mapped[str] = mapped_column(String(250))


class BillingDeduction(Base):
    """One deduction (کسورات) the insurer made on a claim, with its reason.
    ``found_interval_start`` is the billing run's data interval that first saw it (never updated)."""

    __tablename__ = "billing_deductions"
    __table_args__ = (
        UniqueConstraint("destination", "head_id", "deduction_ref", name="uq_deduction_destination_head_ref"),
        Index("ix_deductions_found", "found_interval_start"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    destination: Mapped[str] = mapped_column(String(32))
    head_id: Mapped[str] = mapped_column(String(64))
    deduction_ref: Mapped[str] = mapped_column(String(64))
    srv_code: Mapped[str | None] = mapped_column(String(32))
    amount: Mapped[int] = mapped_column(BigInteger)
    reason_code: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    found_interval_start: Mapped[dt.datetime]
    run_id: Mapped[str] = mapped_column(String(250))


class FallbackReview(Base):
    """What ``fallback_reconciliation`` made of one paper-fallback record (``fallback_records``,
    owned by the adapter): ``linked`` (accepted electronically, possibly late), ``paper_claim``
    (the electronic submission ended rejected/invalid/dead: claim on paper), ``flagged`` (older
    than the configured age and still without an electronic acceptance: claim on paper) or
    ``waiting`` (not accepted yet, not old enough). ``flagged_at`` is the data-interval end of
    the run that flagged it (never "now"); a later acceptance turns the review into ``linked``."""

    __tablename__ = "fallback_reviews"
    __table_args__ = (
        UniqueConstraint("fallback_no", name="uq_fallback_review_no"),
        Index("ix_fallback_reviews_interval", "interval_start"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fallback_no: Mapped[str] = mapped_column(String(80))
    fallback_id: Mapped[int] = mapped_column(Integer, index=True)
    destination: Mapped[str] = mapped_column(String(32))
    submission_id: Mapped[int | None] = mapped_column(Integer)
    record_created_at: Mapped[dt.datetime]
    verdict: Mapped[str] = mapped_column(String(16), index=True)  # linked | paper_claim | flagged | waiting
    submission_state: Mapped[str | None] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    flagged_at: Mapped[dt.datetime | None]
    max_age_hours: Mapped[int] = mapped_column(Integer)
    interval_start: Mapped[dt.datetime]
    interval_end: Mapped[dt.datetime]
    run_id: Mapped[str] = mapped_column(String(250))
