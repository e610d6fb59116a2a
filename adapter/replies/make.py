"""Making replies: which outcome becomes which reply (contract v1), and its row in the outbox.

Replies are written by whoever writes the state change that causes them, in the same transaction
(intake: a contract or mapping failure, a paper issued; the dispatcher: a submission settled;
``adapter.outage.records``: a paper linked or left for a paper claim). This module holds no session:
it turns what those writers know into the reply body and the ``replies`` row; ``adapter.replies.rows``
inserts them.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from adapter.replies.contract import CONFLICT_TYPE, LEGACY_PAPER_TYPE, REPLY_TYPES, validate_reply
from adapter.replies.glosses import gloss
from adapter.store.models import FallbackRecord
from adapter.store.states import State

HIS_ID_KEYS = ("prescription_id", "visit_id", "dispense_id", "order_id", "result_id")
"""The HIS's own ids a reply names, read from the event's payload."""

_ACCEPTED_TYPE = {
    ("prescription", "create"): "prescription.registered",
    ("prescription", "update"): "prescription.updated",
    ("prescription", "cancel"): "prescription.cancelled",
    ("dispense", "create"): "dispense.registered",
    ("paraclinic", "create"): "paraclinic.registered",
    ("paraclinic", "confirm"): "paraclinic.confirmed",
}
_FAMILY_OF_EVENT = {"visit.admitted": "eligibility", "prescription.created": "prescription",
                    "prescription.updated": "prescription", "prescription.cancelled": "prescription",
                    "dispense.completed": "dispense", "paraclinic.requested": "paraclinic",
                    "paraclinic.completed": "paraclinic"}
GATEWAY_DESTINATIONS = frozenset({"sepas"})
"""Destinations whose every registration is a ``sepas.*`` reply (the national health record)."""


@dataclass(frozen=True)
class ReplyRules:
    """Which reply types are written (``replies.types``: shell patterns, e.g. ``prescription.*``)."""

    enabled: bool = True
    types: tuple[str, ...] = ("*",)
    legacy_paper_type: bool = False

    def wants(self, reply_type: str) -> bool:
        return self.enabled and any(fnmatch.fnmatchcase(reply_type, pattern) for pattern in self.types)

    def unknown_patterns(self) -> list[str]:
        """Patterns that match no reply type (a typo in the config)."""
        return [p for p in self.types if not any(fnmatch.fnmatchcase(t, p) for t in REPLY_TYPES)]


def his_ref(event: Mapping[str, Any]) -> dict[str, Any]:
    """What a reply about this event names of it: its type, facility and the HIS's own ids."""
    payload = event.get("payload") if isinstance(event.get("payload"), dict) else {}
    assert isinstance(payload, dict)
    ref: dict[str, Any] = {"event_type": event.get("event_type"), "facility_siam_id": event.get("facility_siam_id")}
    for key in HIS_ID_KEYS:
        value = payload.get(key)
        if key == "prescription_id" and value is None and isinstance(payload.get("prescription"), dict):
            value = payload["prescription"].get("prescription_id")  # a dispense names the prescription it serves
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            ref[key] = str(value)
    return ref


def family(event_type: str | None, destination: str | None) -> str:
    if destination in GATEWAY_DESTINATIONS:
        return "sepas"
    return _FAMILY_OF_EVENT.get(event_type or "", "event")


def _text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _envelope(reply_type: str, event_id: str, ref: Mapping[str, Any], destination: str | None,
              at: dt.datetime) -> dict[str, Any]:
    body: dict[str, Any] = {"schema_version": "1", "reply_id": uuid.uuid4().hex, "type": reply_type,
                            "at": at.isoformat(), "event_id": event_id, "event_type": ref.get("event_type"),
                            "facility_siam_id": ref.get("facility_siam_id"), "destination": destination}
    body.update({key: ref[key] for key in HIS_ID_KEYS if ref.get(key) is not None})
    return body


@dataclass(frozen=True)
class Settled:
    """A submission's new state, as the dispatcher (or a replay) wrote it."""

    event_id: str
    submission_id: int
    destination: str
    operation: str
    state: str
    ref: Mapping[str, Any]
    result: Mapping[str, Any]
    last_error: str | None
    last_error_class: str | None
    attempts: int


def settled_reply(settled: Settled, at: dt.datetime) -> dict[str, Any] | None:
    """The reply a settled submission gets (None: no reply, e.g. a retry is due)."""
    kind = family(settled.ref.get("event_type"), settled.destination)
    if settled.state == State.accepted.value:
        return _done(settled, kind, at)
    if settled.state == State.rejected.value:
        return _rejected(settled, kind, at)
    if settled.state == State.invalid.value:
        return invalid_submission_reply(settled, at)
    if settled.state == State.dead.value:
        body = _envelope(f"{kind}.dead", settled.event_id, settled.ref, settled.destination, at)
        body.update(attempts=settled.attempts, last_error_class=settled.last_error_class,
                    detail=(settled.last_error or "given up after its retries")[:1000])
        return body
    return None


def _done(settled: Settled, kind: str, at: dt.datetime) -> dict[str, Any]:
    result = settled.result
    if kind == "eligibility":
        body = _envelope("eligibility.result", settled.event_id, settled.ref, settled.destination, at)
        body.update(covered=True, hid=_text(result.get("hid")), insurance_type=_text(result.get("insurance_type")))
        return body
    reply_type = "sepas.saved" if kind == "sepas" else _ACCEPTED_TYPE.get((kind, settled.operation),
                                                                          f"{kind}.registered")
    if reply_type not in REPLY_TYPES:
        reply_type = "prescription.registered" if kind == "prescription" else "event.registered"
    body = _envelope(reply_type, settled.event_id, settled.ref, settled.destination, at)
    known = ("tracking_code", "head_id")
    others = {k: str(v) for k, v in result.items()
              if k not in known and k.endswith(("_id", "_code", "_uid")) and isinstance(v, (str, int))
              and k != "error_code"}
    messages = [str(m) for m in result.get("messages", []) if m] if isinstance(result.get("messages"), list) else []
    body.update(tracking_code=_text(result.get("tracking_code")), head_id=_text(result.get("head_id")),
                insurer_ids=others, messages=messages)
    return body


def _rejected(settled: Settled, kind: str, at: dt.datetime) -> dict[str, Any]:
    result = settled.result
    message = _text(result.get("error_message")) or _text(result.get("insurer_message"))
    if kind == "eligibility" and result.get("eligible") is False:
        body = _envelope("eligibility.result", settled.event_id, settled.ref, settled.destination, at)
        body.update(covered=False, reason=message or settled.last_error)
        return body
    code = _text(result.get("error_code"))
    body = _envelope(f"{kind}.rejected", settled.event_id, settled.ref, settled.destination, at)
    body.update(insurer_code=code, insurer_message=message, gloss=gloss(settled.destination, code),
                detail=(settled.last_error or "refused by the insurer")[:1000])
    return body


def invalid_submission_reply(settled: Settled, at: dt.datetime) -> dict[str, Any]:
    """A submission that cannot be sent: its mapping failed, a rule refused it, or the destination did."""
    kind = family(settled.ref.get("event_type"), settled.destination)
    stage = {"mapping": "mapping", "not_covered": "coverage"}.get(settled.last_error_class or "", "destination")
    body = _envelope(f"{kind}.invalid", settled.event_id, settled.ref, settled.destination, at)
    problems = (_problems_of_text(settled.last_error, settled.last_error_class) if stage == "mapping"
                else [{"path": "$", "rule": (settled.last_error or settled.last_error_class or "not sendable")[:500]}])
    body.update(stage=stage, problems=problems)
    return body


def _problems_of_text(text: str | None, rule_class: str | None) -> list[dict[str, str]]:
    """A submission's ``last_error`` ("file:key: message; ...") as problems (already masked)."""
    problems = []
    for part in (text or "").split("; "):
        part = part.strip()
        if not part:
            continue
        path, _, rule = part.rpartition(": ")
        problems.append({"path": path or (rule_class or "$"), "rule": rule[:500]})
    return problems or [{"path": "$", "rule": rule_class or "not sendable"}]


def invalid_event_reply(event_id: str, event_type: str | None, facility: str | None,
                        problems: Iterable[Mapping[str, Any]], at: dt.datetime) -> dict[str, Any]:
    """An event that failed the contract (its problems are already masked by the parser)."""
    ref = {"event_type": event_type, "facility_siam_id": facility}
    body = _envelope(f"{family(event_type, None)}.invalid", event_id, ref, None, at)
    body.update(stage="contract", problems=[_contract_problem(p) for p in problems] or [{"path": "$", "rule": "invalid"}])
    return body


def _contract_problem(problem: Mapping[str, Any]) -> dict[str, str]:
    """A parser problem (field, rule, masked value) as a reply problem: the value stays out (the HIS has it)."""
    return {"path": str(problem.get("field") or problem.get("path") or "$"), "rule": str(problem.get("rule") or "")[:500]}


def paper_reply(record: FallbackRecord, ref: Mapping[str, Any], at: dt.datetime,
                legacy_type: bool = False) -> dict[str, Any]:
    """The reply for a paper-fallback record in the state it has now: ``paper_fallback.issued`` /
    ``.linked`` / ``.paper_claim``."""
    reply_type = f"paper_fallback.{record.state}"
    if record.state == "issued" and legacy_type:
        reply_type = LEGACY_PAPER_TYPE
    body = _envelope(reply_type, record.event_id, ref, record.destination, at)
    body["fallback_no"] = record.fallback_no
    if record.state == "issued":
        body.update(reason=record.reason, issued_at=record.created_at.isoformat())
    elif record.state == "linked":
        body.update(tracking_code=record.tracking_code, head_id=record.head_id)
    else:
        body.update(reason=record.claim_reason)
    return body


def reply_row(body: dict[str, Any], submission_id: int | None, at: dt.datetime) -> dict[str, Any]:
    """The outbox row of a reply (its body checked against the contract first)."""
    checked = validate_reply(body)
    return dict(reply_id=checked["reply_id"], type=checked["type"], event_id=checked["event_id"],
                submission_id=submission_id, facility_siam_id=checked.get("facility_siam_id"), body=checked,
                state="pending", attempts=0, created_at=at)


def conflict_reply(event_id: str, held: Mapping[str, Any], version_id: int, at: dt.datetime) -> dict[str, Any]:
    """The HIS sent a different body under a known event id (``held``: that body, parsed; may be
    empty when it does not parse): it is kept for an operator, not applied."""
    body = _envelope(CONFLICT_TYPE, event_id, his_ref(held), None, at)
    body.update(version_id=version_id, detail=(
        "a different body under an event id already stored: held for an operator, not sent to any insurer; "
        "send a correction as a new event with its own event_id"))
    return body
