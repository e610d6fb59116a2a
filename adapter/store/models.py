"""Tables. One row per received event (inbox), per event x destination x operation
(submission), per HTTP exchange (attempt), and per state change (audit); outages, the
circuit state per destination, and the paper-fallback records issued during outages."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Table, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from adapter.store.at_rest import EncryptedJSON, EncryptedText
from adapter.store.types import UTCDateTime, utcnow


CLAIMABLE_STATES_SQL = "state IN ('pending', 'retry_wait')"
"""The partial index ``ix_submissions_claim`` covers these rows; the dispatcher's claim query uses
this very text, so SQLite and PostgreSQL both see that the index applies (migration 0007)."""


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class InboxEvent(Base):
    """Every message taken off the broker, valid or not; the event id is the dedupe key."""

    __tablename__ = "inbox_events"

    event_id: Mapped[str] = mapped_column(String(120), primary_key=True)
    event_type: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True)
    facility_siam_id: Mapped[str | None] = mapped_column(String(40))
    source_system: Mapped[str | None] = mapped_column(String(64))
    correlation_id: Mapped[str | None] = mapped_column(String(100))
    subject_key: Mapped[str | None] = mapped_column(String(200), index=True)
    patient_ref: Mapped[str | None] = mapped_column(String(64), index=True)
    occurred_at: Mapped[dt.datetime | None]
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    body: Mapped[str] = mapped_column(EncryptedText)
    problems: Mapped[list[Any] | None]
    duplicate_receipts: Mapped[int] = mapped_column(Integer, default=0)
    pruned_at: Mapped[dt.datetime | None]  # body replaced by a marker (adapter prune, retention.payload_days)
    # keyed digest of the body's canonical JSON (adapter.events.content); null on rows stored before it was kept
    content_digest: Mapped[str | None] = mapped_column(String(64))

    submissions: Mapped[list["Submission"]] = relationship(back_populates="event", order_by="Submission.id")


class Submission(Base):
    """One operation owed to one destination for one event."""

    __tablename__ = "submissions"
    __table_args__ = (
        UniqueConstraint("event_id", "destination", "operation", name="uq_submission_event_dest_op"),
        Index("ix_submissions_due", "state", "next_attempt_at"),
        Index("ix_submissions_subject", "destination", "subject_key"),
        Index("ix_submissions_claim", "destination", "next_attempt_at", "id",
              sqlite_where=text(CLAIMABLE_STATES_SQL), postgresql_where=text(CLAIMABLE_STATES_SQL)),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("inbox_events.event_id"))
    destination: Mapped[str] = mapped_column(String(32))
    operation: Mapped[str] = mapped_column(String(32))
    mapping: Mapped[str | None] = mapped_column(String(120))
    state: Mapped[str] = mapped_column(String(16))
    subject_key: Mapped[str | None] = mapped_column(String(200))
    after_key: Mapped[str | None] = mapped_column(String(200))
    principal: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(80), unique=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None]
    first_attempt_at: Mapped[dt.datetime | None]
    lease_until: Mapped[dt.datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(80))
    ambiguous: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_class: Mapped[str | None] = mapped_column(String(16))
    params: Mapped[dict[str, Any] | None] = mapped_column(EncryptedJSON)
    payload: Mapped[Any | None] = mapped_column(EncryptedJSON)
    result: Mapped[dict[str, Any] | None]
    his_ref: Mapped[dict[str, Any] | None]  # the HIS's ids its replies name (adapter.replies.make.his_ref)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    pruned_at: Mapped[dt.datetime | None]  # payload and attempt bodies removed (adapter prune)

    event: Mapped[InboxEvent] = relationship(back_populates="submissions")
    attempt_rows: Mapped[list["Attempt"]] = relationship(order_by="Attempt.id")


class Attempt(Base):
    """One exchange with a destination: what was asked (summarised) and what came back."""

    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime]
    duration_ms: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    request: Mapped[dict[str, Any]]
    response: Mapped[dict[str, Any]]


class StateChange(Base):
    """Audit: every state change of an event or a submission, with who and why."""

    __tablename__ = "state_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(120), index=True)
    submission_id: Mapped[int | None] = mapped_column(Integer, index=True)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)


class Visit(Base):
    """What eligibility returned for a visit (HID), so later prescriptions carry it."""

    __tablename__ = "visits"

    facility_siam_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    visit_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    destination: Mapped[str] = mapped_column(String(32), primary_key=True)
    hid: Mapped[str | None] = mapped_column(String(64))
    eligible: Mapped[bool | None] = mapped_column(Boolean)
    detail: Mapped[dict[str, Any] | None]
    checked_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class StoredRefreshToken(Base):
    """A prescriber's refresh token, encrypted (Fernet), rotated when the insurer sends a new one."""

    __tablename__ = "refresh_tokens"

    destination: Mapped[str] = mapped_column(String(32), primary_key=True)
    principal_ref: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_encrypted: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Outage(Base):
    """A period in which a destination was (or is) unusable: detected by the circuit breaker
    (``detected='circuit'``, started and ended by the adapter) or declared by an operator
    (``detected='manual'``). At most one open outage per destination and kind."""

    __tablename__ = "outages"
    __table_args__ = (
        Index("uq_outages_open", "destination", "detected", unique=True,
              sqlite_where=text("ended_at IS NULL"), postgresql_where=text("ended_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    destination: Mapped[str] = mapped_column(String(32), index=True)
    detected: Mapped[str] = mapped_column(String(16))  # circuit | manual
    reason: Mapped[str] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_by: Mapped[str] = mapped_column(String(64))
    ended_at: Mapped[dt.datetime | None]
    ended_by: Mapped[str | None] = mapped_column(String(64))
    end_reason: Mapped[str | None] = mapped_column(Text)


class CircuitStatus(Base):
    """The last known circuit state of a destination, written by the dispatcher on each change
    (the breaker itself lives in the dispatcher's memory)."""

    __tablename__ = "circuit_states"

    destination: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # closed | open | half_open
    since: Mapped[dt.datetime] = mapped_column(default=utcnow)
    reason: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(80))


class FallbackRecord(Base):
    """A paper prescription issued because the destination was in outage when the event came in.

    ``issued`` -> ``linked`` (the electronic submission was accepted later: tracking code kept)
    or ``paper_claim`` (it ended rejected/invalid/dead: the paper is the claim's evidence).
    ``reply_published_at`` is the outbox mark of the reply that told the HIS to print it."""

    __tablename__ = "fallback_records"
    __table_args__ = (UniqueConstraint("event_id", "destination", name="uq_fallback_event_dest"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fallback_no: Mapped[str] = mapped_column(String(80), unique=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("inbox_events.event_id"))
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), unique=True)
    destination: Mapped[str] = mapped_column(String(32))
    outage_id: Mapped[int | None] = mapped_column(ForeignKey("outages.id"))
    facility_siam_id: Mapped[str] = mapped_column(String(40))
    prescription_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), index=True)  # issued | linked | paper_claim
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    linked_at: Mapped[dt.datetime | None]
    tracking_code: Mapped[str | None] = mapped_column(String(64))
    head_id: Mapped[str | None] = mapped_column(String(64))
    claimed_at: Mapped[dt.datetime | None]
    claim_reason: Mapped[str | None] = mapped_column(Text)
    reply_published_at: Mapped[dt.datetime | None] = mapped_column(index=True)


class AlertState(Base):
    """What each alert channel was told about one alert condition (``adapter.ops.alerts``): kept
    so that a restart neither repeats a start alert nor forgets to send the resolve. A row exists
    while the condition is (or was last seen) active; ``notified_at`` is null until the start alert
    reached the channel. The row goes when the resolve alert did."""

    __tablename__ = "alert_states"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)  # e.g. circuit:tamin
    channel: Mapped[str] = mapped_column(String(80), primary_key=True)  # e.g. email, webhook:<hash>
    rule: Mapped[str] = mapped_column(String(32))
    destination: Mapped[str | None] = mapped_column(String(32))
    summary: Mapped[str] = mapped_column(Text)
    started_at: Mapped[dt.datetime]
    notified_at: Mapped[dt.datetime | None]
    notifications: Mapped[int] = mapped_column(Integer, default=0)


class RateBucket(Base):
    """A destination's ``max_rps`` token bucket, shared by the dispatcher processes of one
    PostgreSQL store (``adapter.outage.shared_bucket``; SQLite keeps it in memory)."""

    __tablename__ = "rate_buckets"

    destination: Mapped[str] = mapped_column(String(32), primary_key=True)
    tokens: Mapped[float]
    refilled_at: Mapped[dt.datetime]


class ReplyRow(Base):
    """One reply to the HIS (contract v1, ``adapter.replies``): the outbox. Written in the
    transaction of the state change that causes it, ``pending`` until the HIS's broker (or webhook)
    has it, then ``published``; ``dead`` when a webhook kept refusing it (an operator resends).
    Published in ``id`` order, so replies about one record leave in the order their causes happened."""

    __tablename__ = "replies"
    __table_args__ = (
        Index("ix_replies_unpublished", "id", sqlite_where=text("state = 'pending'"),
              postgresql_where=text("state = 'pending'")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    reply_id: Mapped[str] = mapped_column(String(40), unique=True)
    type: Mapped[str] = mapped_column(String(40), index=True)
    event_id: Mapped[str] = mapped_column(String(120), index=True)
    submission_id: Mapped[int | None] = mapped_column(Integer)
    facility_siam_id: Mapped[str | None] = mapped_column(String(40))
    body: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16), index=True)  # pending | published | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    published_at: Mapped[dt.datetime | None]


class OperatorAction(Base):
    """One state-changing ``adapter`` command an operator ran (``adapter audit list``). Written
    before the command changes anything (``result='started'``), then finished as ``ok`` or
    ``failed``; a row left ``started`` is a command that died half-way. Who: ``os_user`` is the
    account the process ran as (from its uid, not from the environment), ``sudo_user`` the
    caller sudo names (``SUDO_USER``), ``claimed_actor`` what ``--actor`` said (never checked).
    Arguments, reason and detail are stored masked: no token, secret or national code."""

    __tablename__ = "operator_actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    finished_at: Mapped[dt.datetime | None]
    os_user: Mapped[str] = mapped_column(String(64))
    sudo_user: Mapped[str | None] = mapped_column(String(64))
    claimed_actor: Mapped[str | None] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255))
    command: Mapped[str] = mapped_column(String(64), index=True)
    arguments: Mapped[dict[str, Any]]
    reason: Mapped[str | None] = mapped_column(Text)
    result: Mapped[str] = mapped_column(String(16))  # started | ok | failed
    detail: Mapped[str | None] = mapped_column(Text)


class EventVersion(Base):
    """A body received under a known event id that is not the body stored for it (``adapter.store.versions``).

    ``conflict``: a different body, kept for an operator (``adapter show``, ``adapter replay
    --conflict``); ``replayed``: an operator made it the event's body; ``superseded``: a body the
    event had before a replayed version replaced it (kept, so a late redelivery of it is a
    duplicate, not a new conflict). One row per event and content digest."""

    __tablename__ = "event_versions"
    __table_args__ = (UniqueConstraint("event_id", "content_digest", name="uq_event_versions_digest"),
                      Index("ix_event_versions_state", "state"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("inbox_events.event_id"))
    content_digest: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(EncryptedText)
    state: Mapped[str] = mapped_column(String(16))  # conflict | replayed | superseded
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[dt.datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(64))
    resolve_reason: Mapped[str | None] = mapped_column(Text)


def table_of(model: type[Base]) -> Table:
    """A model's Core table, for the hot paths that skip the ORM (SQLAlchemy types ``__table__``
    as the wider ``FromClause``; a declarative model's is always a ``Table``)."""
    return cast(Table, model.__table__)
