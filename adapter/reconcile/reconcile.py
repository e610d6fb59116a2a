"""``reconcile_submissions``: compare what the insurer accepted from us with what it holds.

For each prescription (subject) with a submission first accepted in the run's data
interval, the adapter's view -- the create's ids, the items of the latest accepted edit,
whether a delete was accepted -- is compared with Tamin's lookups:

* by patient + tracking code: ``missing_at_insurer`` (no such head), ``deleted_at_insurer``
  (deleted there, no delete from us), ``not_deleted_at_insurer`` (we deleted it, it is
  live there), ``items_differ`` (other service codes or quantities);
* by patient + prescriber + day: live heads no submission of ours registered:
  ``unknown_at_ours`` (e.g. typed into the insurer's portal, or a lost duplicate).

Every accepted submission of the subject gets the subject's verdict, ``confirmed`` or
``discrepancy``: upserted into ``reconciliation_results`` and, while the submission is
``accepted``/``confirmed``/``discrepancy``, as its state (with an audit row). Billing states
are never moved back. Insurer calls happen before the one write transaction per batch, so
a failed call writes nothing and the retry starts clean.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from adapter.destinations.tamin.client import DESTINATION
from adapter.reconcile.common import Interval, accepted_in, move, upsert
from adapter.reconcile.insurer import TaminStatusClient
from adapter.reconcile.models import ReconciliationResult
from adapter.store.models import Submission
from adapter.store.states import ACCEPTED_FAMILY, RECONCILABLE

ACTOR = "airflow:reconcile_submissions"


def plan(sessions: sessionmaker[Session], interval: Interval, batch_size: int = 100) -> list[list[int]]:
    """Submission ids accepted in the interval, in batches that keep a subject together."""
    with sessions() as session:
        by_subject: dict[str, list[int]] = defaultdict(list)
        for sub in accepted_in(session, interval, destination=DESTINATION):
            by_subject[sub.subject_key or f"submission:{sub.id}"].append(sub.id)
    batches: list[list[int]] = []
    current: list[int] = []
    for ids in by_subject.values():
        if current and len(current) + len(ids) > batch_size:
            batches.append(current)
            current = []
        current.extend(ids)
    if current:
        batches.append(current)
    return batches


@dataclass
class Verdict:
    verdict: str  # confirmed | discrepancy
    kind: str
    head_id: str | None = None
    tracking_code: str | None = None
    difference: dict[str, Any] | None = None


@dataclass
class _Subject:
    key: str
    create: Submission | None
    items: list[Any] = field(default_factory=list)
    deleted: bool = False

    @property
    def ids(self) -> tuple[str | None, str | None]:
        result = (self.create.result or {}) if self.create else {}
        head, tracking = result.get("head_id"), result.get("tracking_code")
        return (str(head) if head is not None else None, str(tracking) if tracking is not None else None)

    @property
    def payload(self) -> dict[str, Any]:
        return (self.create.payload or {}) if self.create and isinstance(self.create.payload, dict) else {}


def _items_key(items: list[Any]) -> list[list[Any]]:
    def code(item: dict[str, Any]) -> str:
        srv = item.get("srvId")
        return str(srv.get("srvCode") if isinstance(srv, dict) else item.get("srvCode"))
    return sorted([code(i), int(i.get("srvQty") or 0)] for i in items if isinstance(i, dict))


def _subject(session: Session, subject_key: str) -> _Subject:
    """The adapter's view of one prescription: create ids, current items, deleted or not."""
    subs = list(session.scalars(select(Submission).where(
        Submission.destination == DESTINATION, Submission.subject_key == subject_key).order_by(Submission.id)))
    create = next((s for s in subs if s.operation == "create"), None)
    view = _Subject(subject_key, create)
    if create is not None and isinstance(create.payload, dict):
        view.items = create.payload.get("noteDetailEprscs") or []
    for sub in subs:
        if sub.state not in ACCEPTED_FAMILY:
            continue
        if sub.operation == "update" and isinstance(sub.payload, list):
            view.items = sub.payload
        elif sub.operation == "cancel":
            view.deleted = True
    return view


def _judge(view: _Subject, heads: list[dict[str, Any]]) -> Verdict:
    head_id, tracking = view.ids
    if view.create is None or view.create.state not in ACCEPTED_FAMILY or not tracking:
        return Verdict("discrepancy", "no_tracking_code", head_id, tracking,
                       {"why": "the subject has no accepted create with a tracking code"})
    head = next((h for h in heads if head_id is None or str(h.get("head_EPRSC_ID")) == head_id), None)
    if head is None:
        return Verdict("discrepancy", "missing_at_insurer", head_id, tracking,
                       {"why": "the insurer has no prescription with this tracking code"})
    status = head.get("status", "active")
    if status == "deleted" and not view.deleted:
        return Verdict("discrepancy", "deleted_at_insurer", head_id, tracking,
                       {"why": "deleted at the insurer, never deleted by the adapter"})
    if status != "deleted" and view.deleted:
        return Verdict("discrepancy", "not_deleted_at_insurer", head_id, tracking,
                       {"why": "the adapter's delete was accepted, the insurer still holds it live"})
    if not view.deleted:
        ours, theirs = _items_key(view.items), _items_key(head.get("items") or [])
        if ours != theirs:
            return Verdict("discrepancy", "items_differ", head_id, tracking, {
                "ours": ours, "insurer": theirs,
                "only_ours": [i for i in ours if i not in theirs], "only_insurer": [i for i in theirs if i not in ours]})
    return Verdict("confirmed", "match", head_id, tracking, None)


def _known_head(session: Session, head_id: str) -> bool:
    """Did any create of ours register this head id?"""
    found = session.scalar(select(func.count()).select_from(Submission).where(
        Submission.destination == DESTINATION, Submission.operation == "create",
        Submission.result["head_id"].as_string() == head_id))
    return bool(found)


def reconcile_batch(sessions: sessionmaker[Session], client: TaminStatusClient, submission_ids: list[int],
                    interval: Interval) -> dict[str, int]:
    """Look the batch's subjects up at the insurer, then upsert verdicts and states in one transaction."""
    with sessions() as session:
        subs = list(session.scalars(select(Submission).where(Submission.id.in_(submission_ids))))
        subject_keys = sorted({s.subject_key for s in subs if s.subject_key})
        views = {key: _subject(session, key) for key in subject_keys}
    # -- insurer calls (no transaction open) --
    verdicts: dict[str, Verdict] = {}
    day_heads: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for key, view in views.items():
        patient = str(view.payload.get("patient") or "")
        _, tracking = view.ids
        heads = client.lookup_tracking(patient, tracking) if patient and tracking else []
        verdicts[key] = _judge(view, heads)
        day = (patient, str(view.payload.get("docId") or ""), str(view.payload.get("prescDate") or ""))
        if all(day) and day not in day_heads:
            day_heads[day] = client.lookup_day(*day)
    for attempt in (1, 2):
        try:
            return _write(sessions, submission_ids, views, verdicts, day_heads, interval)
        except IntegrityError:  # a parallel batch inserted the same unknown head first: the retry updates it
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _write(sessions: sessionmaker[Session], submission_ids: list[int], views: dict[str, _Subject],
           verdicts: dict[str, Verdict], day_heads: dict[tuple[str, str, str], list[dict[str, Any]]],
           interval: Interval) -> dict[str, int]:
    counts: Counter[str] = Counter()
    stamp = {"interval_start": interval.start, "interval_end": interval.end, "run_id": interval.run_id}
    with sessions.begin() as session:
        ours = {v.ids[0] for v in views.values() if v.ids[0]}
        for sub in session.scalars(select(Submission).where(Submission.id.in_(submission_ids)).order_by(Submission.id)):
            verdict = verdicts.get(sub.subject_key or "") or Verdict("discrepancy", "no_subject", None, None,
                                                                      {"why": "submission without a subject key"})
            counts[f"{verdict.verdict}"] += 1
            values = {"submission_id": sub.id, "subject_key": sub.subject_key, "operation": sub.operation,
                      "head_id": verdict.head_id, "tracking_code": verdict.tracking_code, "verdict": verdict.verdict,
                      "kind": verdict.kind, "difference": verdict.difference}
            key = {"destination": DESTINATION, "item_key": f"sub:{sub.id}"}
            counts["row_" + upsert(session, ReconciliationResult, key, values, stamp)] += 1
            if sub.state in RECONCILABLE and move(session, sub, verdict.verdict, actor=ACTOR,
                                                  reason=f"reconciliation {interval.run_id}: {verdict.kind}"):
                counts["state_moves"] += 1
        for (_, doc_id, presc_date), heads in sorted(day_heads.items()):
            for head in heads:
                head_id = str(head.get("head_EPRSC_ID"))
                if head_id in ours or _known_head(session, head_id):
                    continue
                counts["unknown_at_ours"] += 1
                values = {"submission_id": None, "subject_key": None, "operation": None, "head_id": head_id,
                          "tracking_code": str(head.get("trackingCode")), "verdict": "discrepancy",
                          "kind": "unknown_at_ours",
                          "difference": {"why": "live at the insurer, registered by no submission of this adapter",
                                         "docId": doc_id, "prescDate": presc_date,
                                         "prescTypeId": head.get("prescTypeId"),
                                         "insurer_items": _items_key(head.get("items") or [])}}
                key = {"destination": DESTINATION, "item_key": f"head:{head_id}"}
                counts["row_" + upsert(session, ReconciliationResult, key, values, stamp)] += 1
    return dict(counts)


def summary(sessions: sessionmaker[Session], interval: Interval) -> dict[str, Any]:
    """Counts and the discrepancies of this interval's partition (for the task log and XCom)."""
    with sessions() as session:
        rows = list(session.scalars(select(ReconciliationResult).where(
            ReconciliationResult.interval_start == interval.start).order_by(ReconciliationResult.id)))
    kinds = Counter(f"{r.verdict}:{r.kind}" for r in rows)
    discrepancies = [{"item": r.item_key, "subject": r.subject_key, "operation": r.operation, "head_id": r.head_id,
                      "tracking_code": r.tracking_code, "kind": r.kind} for r in rows if r.verdict == "discrepancy"]
    return {"interval": interval.to_json(), "rows": len(rows), "by_kind": dict(sorted(kinds.items())),
            "discrepancies": discrepancies}
