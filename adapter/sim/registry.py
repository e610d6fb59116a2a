"""In-memory state of the Tamin simulator: tokens, prescriptions, receipts, counters.

Uvicorn serves requests from its own thread while tests read the counters from theirs,
so every public method takes one lock and returns copies, never live objects.

Two kinds of "key" are kept apart on purpose:

* the **content key** (patient + docId + prescDate + prescTypeId + items) is what the
  real Tamin uses to answer 304 "duplicate";
* the **submission key** (the ``X-Idempotency-Key`` header, else the content key) is what
  the simulator counts receipts by, so a test can prove the adapter never sent one
  submission twice, even when the content check would not notice.

A key received again after Tamin *refused* it (a business rejection: nothing was registered)
is not a duplicate: that is what a lookup-then-resend after a lost answer does, and Tamin
refuses it again. Such receipts are counted apart (``resent_after_refusal``); a key received
again after a receipt that was not refused is a ``duplicate``.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
import secrets
import threading
import time
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

import jdatetime

from adapter.sim import tamin_rules as rules
from adapter.sim.prices import unit_price
from adapter.sim.provider_registry import ProviderDesk, ProviderState, count_receipt
from adapter.sim.settings import TaminSimSettings, parse_jalali_compact

PROVIDER_ENDPOINTS = frozenset({"pharmacy_fetch", "pharmacy_submit", "pharmacy_confirm",
                                "para_fetch", "para_submit", "para_confirm"})
API_ENDPOINTS = frozenset({"eligibility", "create", "detail", "edit", "delete", "lookup", "claim_status"}) \
    | PROVIDER_ENDPOINTS
AUDIT_STATUSES = ("submitted", "under_audit", "audited", "paid", "rejected")
"""Claim audit/payment states the simulator reports (sim-defined, docs/tamin-wire.md)."""


@dataclass
class Claim:
    """The insurer's audit and payment record of one prescription (sim-defined)."""

    audit_status: str = "submitted"
    bill_id: str | None = None
    paid_date: str | None = None
    deductions: list[dict[str, Any]] = field(default_factory=list)
TOKEN_ENDPOINTS = frozenset({"token", "refresh", "acl_token"})


@dataclass
class Prescription:
    head_id: int
    tracking_code: int
    patient: str
    doc_id: str
    doc_national_code: str
    presc_date: str
    presc_type_id: int
    items: list[dict[str, Any]]
    registered_day: str
    """Solar Hijri ``YYYYMMDD`` (simulator calendar) of registration, for the delete rule."""
    submission_key: str
    status: str = "active"
    edited: bool = False
    dispensed: bool = False
    claim: Claim = field(default_factory=Claim)

    def content_key(self) -> str:
        return rules.content_key(
            {
                "patient": self.patient,
                "docId": self.doc_id,
                "prescDate": self.presc_date,
                "prescType": {"prescTypeId": self.presc_type_id},
                "noteDetailEprscs": self.items,
            }
        )

    def head(self) -> dict[str, Any]:
        """The sim-defined lookup shape of the contract doc."""
        return {
            "head_EPRSC_ID": self.head_id,
            "trackingCode": self.tracking_code,
            "prescDate": self.presc_date,
            "prescTypeId": self.presc_type_id,
            "docId": self.doc_id,
            "items": [
                {"srvCode": rules.item_srv_code(item), "srvQty": item.get("srvQty")} for item in self.items
            ],
            "status": self.status,
            "edited": self.edited,
        }

    def claim_status(self) -> dict[str, Any]:
        """The sim-defined claim-status shape of the contract doc."""
        claimed = sum(unit_price(rules.item_srv_code(i)) * int(i.get("srvQty") or 0) for i in self.items)
        deducted = sum(int(d.get("amount") or 0) for d in self.claim.deductions)
        status = "cancelled" if self.status == "deleted" else self.claim.audit_status
        decided = status in ("audited", "paid")
        approved = max(claimed - deducted, 0) if decided else None
        return {
            "head_EPRSC_ID": self.head_id,
            "trackingCode": self.tracking_code,
            "prescDate": self.presc_date,
            "auditStatus": status,
            "billId": self.claim.bill_id,
            "claimedAmount": claimed,
            "approvedAmount": approved,
            "paidAmount": approved if status == "paid" else 0,
            "paidDate": self.claim.paid_date if status == "paid" else None,
            "deductions": copy.deepcopy(self.claim.deductions),
        }

    def detail_items(self) -> list[dict[str, Any]]:
        out = []
        for item in self.items:
            row: dict[str, Any] = {
                "noteDetailsEprscId": item["noteDetailsEprscId"],
                "srvId": copy.deepcopy(item.get("srvId")),
                "srvQty": item.get("srvQty"),
                "srvRem": 0 if self.dispensed else item.get("srvQty"),
                "isOk": "1" if self.dispensed else "0",
                "readOnly": self.dispensed,
            }
            for key in ("timesAday", "drugInstruction", "dose", "repeat", "dateDo"):
                if key in item:
                    row[key] = copy.deepcopy(item[key])
            out.append(row)
        return out


@dataclass
class CreateRecord:
    """One SendEpresc call the simulator processed (whatever its outcome)."""

    submission_key: str
    content_key: str
    outcome: str  # "created" | "duplicate" | "rejected"
    head_id: int | None = None
    tracking_code: int | None = None
    error_code: str = ""
    error_msg: str = ""


@dataclass
class FaultPlan:
    """What the fault knobs decided for one request (counters already consumed)."""

    fail_status: int | None = None  # 0 = close the connection without answering
    retry_after_s: float | None = None
    html: bool = False
    hang_s: float = 0.0
    drop_after_apply: bool = False


@dataclass
class _Token:
    expires_at: float
    audience: str | None


@dataclass
class _State:
    access_tokens: dict[str, _Token] = field(default_factory=dict)
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # token -> audience
    prescriptions: dict[int, Prescription] = field(default_factory=dict)
    tracking_codes: set[int] = field(default_factory=set)
    next_head_id: int = 50_000_001
    next_item_id: int = 900_000_001
    creates: list[CreateRecord] = field(default_factory=list)
    receipts: dict[str, int] = field(default_factory=dict)  # submission key -> times received
    repeats: dict[str, int] = field(default_factory=dict)  # key -> receipts after one that was not refused
    resent_after_refusal: int = 0  # receipts of a key every earlier receipt of which was refused
    requests: list[dict[str, Any]] = field(default_factory=list)
    tokens_issued: int = 0
    rejections: int = 0
    edits: int = 0
    deletes: int = 0
    eligibility_checks: int = 0
    placeholder_patient_creates: int = 0  # SendEpresc calls for the anonymous UNKNOWN patient
    down_until: float = 0.0
    provider: ProviderState = field(default_factory=ProviderState)


class TaminRegistry(ProviderDesk):
    """Thread-safe state and behaviour of one simulated Tamin service (prescribing here;
    dispensing and paraclinic in ``ProviderDesk``)."""

    def __init__(self, settings: TaminSimSettings | None = None) -> None:
        self._lock = threading.RLock()
        self._initial = (settings or TaminSimSettings()).model_copy(deep=True)
        self._settings = self._initial.model_copy(deep=True)
        self._state = _State()
        self._random = random.Random()

    # ----- settings and faults ------------------------------------------------------
    @property
    def settings(self) -> TaminSimSettings:
        """A copy of the current settings."""
        with self._lock:
            return self._settings.model_copy(deep=True)

    def update_settings(self, patch: dict[str, Any]) -> TaminSimSettings:
        """Apply a partial update (validated as a whole); raises ``pydantic.ValidationError``."""
        with self._lock:
            merged = {**self._settings.model_dump(), **patch}
            self._settings = TaminSimSettings.model_validate(merged)
            return self._settings.model_copy(deep=True)

    def go_down(self, seconds: float) -> None:
        """Every API and token call answers 503 for ``seconds`` (a downtime window)."""
        with self._lock:
            self._state.down_until = time.monotonic() + seconds

    def reset(self) -> None:
        """Forget every prescription, token and counter and restore the initial settings."""
        with self._lock:
            self._settings = self._initial.model_copy(deep=True)
            self._state = _State()

    def plan_faults(self, endpoint: str) -> FaultPlan:
        """Decide (and consume) the faults for one request to ``endpoint``."""
        with self._lock:
            s = self._settings
            plan = FaultPlan(html=s.fail_body == "html")
            remaining = self._state.down_until - time.monotonic()
            if remaining > 0:
                plan.fail_status, plan.retry_after_s = 503, remaining
                return plan
            targets = s.fail_endpoints if s.fail_endpoints is not None else API_ENDPOINTS
            if s.fail_next > 0 and endpoint in targets:
                s.fail_next -= 1
                plan.fail_status, plan.retry_after_s = s.fail_status, s.retry_after_s
                return plan
            if s.hang_next > 0 and endpoint in API_ENDPOINTS:
                s.hang_next -= 1
                plan.hang_s = s.hang_s
            if s.drop_response_after_apply > 0 and endpoint in s.drop_endpoints:
                s.drop_response_after_apply -= 1
                plan.drop_after_apply = True
            return plan

    # ----- clock -------------------------------------------------------------------------
    def today(self, override: str | None = None) -> jdatetime.date:
        """The simulator's Solar Hijri "today": header override, setting, else the wall clock."""
        with self._lock:
            setting, timezone = self._settings.today_override, self._settings.timezone
        for candidate in (override, setting):
            parsed = parse_jalali_compact(candidate) if candidate else None
            if parsed is not None:
                return parsed
        try:
            zone: dt.tzinfo = zoneinfo.ZoneInfo(timezone)
        except zoneinfo.ZoneInfoNotFoundError:  # no tz database: Iran has used +03:30 since 2022
            zone = dt.timezone(dt.timedelta(hours=3, minutes=30))
        return jdatetime.date.fromgregorian(date=dt.datetime.now(zone).date())

    # ----- requests ------------------------------------------------------------------
    def record_request(self, endpoint: str, method: str, path: str, status: int) -> None:
        """``status`` 0 means the connection was closed without an answer."""
        with self._lock:
            self._state.requests.append(
                {"endpoint": endpoint, "method": method, "path": path, "status": status, "at": time.time()}
            )

    def request_log(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._state.requests)

    # ----- tokens --------------------------------------------------------------------
    def issue_access_token(self, audience: str | None = None) -> tuple[str, float]:
        with self._lock:
            ttl = self._settings.token_ttl_s
            token = secrets.token_urlsafe(32)
            self._state.access_tokens[token] = _Token(time.monotonic() + ttl, audience)
            self._state.tokens_issued += 1
            return token, ttl

    def access_token_valid(self, token: str) -> bool:
        with self._lock:
            entry = self._state.access_tokens.get(token)
            if entry is None:
                return False
            if time.monotonic() >= entry.expires_at:
                del self._state.access_tokens[token]
                return False
            return True

    def token_audience(self, token: str) -> str | None:
        """Whom a valid token was issued to (``None`` when unknown or expired; "" for no audience)."""
        with self._lock:
            if not self.access_token_valid(token):
                return None
            return self._state.access_tokens[token].audience or ""

    def revoke_access_tokens(self) -> None:
        """Every access token stops working (as after a Tamin-side session purge)."""
        with self._lock:
            self._state.access_tokens.clear()

    def issue_refresh_token(self, audience: str) -> str:
        """A doctor's refresh token, as the PKCE login would hand out."""
        with self._lock:
            token = secrets.token_urlsafe(32)
            self._state.refresh_tokens[token] = audience
            return token

    def refresh(self, refresh_token: str, audience: str | None) -> tuple[str, float, str] | None:
        """(access token, ttl, refresh token to use next) or ``None`` for an invalid grant."""
        with self._lock:
            owner = self._state.refresh_tokens.get(refresh_token)
            if owner is None or (audience and audience != owner):
                return None
            access, ttl = self.issue_access_token(owner)
            if not self._settings.rotate_refresh_tokens:
                return access, ttl, refresh_token
            del self._state.refresh_tokens[refresh_token]
            return access, ttl, self.issue_refresh_token(owner)

    # ----- eligibility -----------------------------------------------------------------
    def eligibility(self, patient: str) -> dict[str, Any]:
        with self._lock:
            self._state.eligibility_checks += 1
            problem = rules.patient_problem(patient, self._settings)
            if patient == rules.ANONYMOUS_PATIENT:
                problem = rules.MSG_BAD_PATIENT
            if problem:
                return {"hasDeserve": False, "hid": None, "insuranceType": None, "errMsg": problem}
            return {
                "hasDeserve": True,
                # sim-defined: an opaque id per eligibility check (one HID per visit), never the national code
                "hid": f"HID-{secrets.token_hex(6).upper()}",
                "insuranceType": "تامین اجتماعی",
                "errMsg": "",
            }

    # ----- create ---------------------------------------------------------------------
    def create(self, body: Any, idempotency_key: str | None, today: jdatetime.date) -> CreateRecord:
        """Process one SendEpresc call: count the receipt, validate, detect duplicates, store."""
        with self._lock:
            content = rules.content_key(body)
            submission = idempotency_key or content
            if isinstance(body, dict) and body.get("patient") == rules.ANONYMOUS_PATIENT:
                self._state.placeholder_patient_creates += 1
            if isinstance(body, dict) and body:
                self._state.resent_after_refusal += count_receipt(self._state.receipts, self._state.repeats,
                                                                  submission)
            record = CreateRecord(submission_key=submission, content_key=content, outcome="rejected")
            try:
                rules.check_create(body, self._settings, today)
            except rules.Rejection as rejection:
                record.error_code, record.error_msg = rejection.code, rejection.message
                self._state.rejections += 1
                self._state.creates.append(record)
                return record
            self._state.repeats.setdefault(submission, 0)  # not refused: any later receipt is a duplicate
            existing = self._live_duplicate(body, content)
            if existing is not None:
                record.outcome = "duplicate"
                record.head_id, record.tracking_code = existing.head_id, existing.tracking_code
                record.error_code = "304"
                record.error_msg = rules.msg_duplicate(existing.head_id, existing.tracking_code)
                self._state.creates.append(record)
                return record
            presc = self._store(body, submission, today)
            record.outcome = "created"
            record.head_id, record.tracking_code = presc.head_id, presc.tracking_code
            self._state.creates.append(record)
            return record

    def _live_duplicate(self, body: dict[str, Any], content: str) -> Prescription | None:
        if body.get("patient") == rules.ANONYMOUS_PATIENT and not self._settings.duplicate_check_anonymous:
            return None
        for presc in self._state.prescriptions.values():
            if presc.status == "active" and presc.content_key() == content:
                return presc
        return None

    def _store(self, body: dict[str, Any], submission: str, today: jdatetime.date) -> Prescription:
        state = self._state
        head_id = state.next_head_id
        state.next_head_id += 1
        tracking = self._random.randint(100_000, 999_999)
        while tracking in state.tracking_codes:
            tracking = self._random.randint(100_000, 99_999_999)
        state.tracking_codes.add(tracking)
        presc = Prescription(
            head_id=head_id,
            tracking_code=tracking,
            patient=body["patient"],
            doc_id=body["docId"],
            doc_national_code=str(body.get("docNationalCode") or ""),
            presc_date=body["prescDate"],
            presc_type_id=rules.presc_type_of(body) or 0,
            items=self._number_items(body.get("noteDetailEprscs") or [], {}),
            registered_day=today.strftime("%Y%m%d"),
            submission_key=submission,
        )
        state.prescriptions[head_id] = presc
        return presc

    def _number_items(self, items: list[dict[str, Any]], keep: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
        """Copy items, keeping a known ``noteDetailsEprscId`` and numbering the new ones."""
        out = []
        for item in items:
            row = copy.deepcopy(item)
            if row.get("noteDetailsEprscId") not in keep:
                row["noteDetailsEprscId"] = self._state.next_item_id
                self._state.next_item_id += 1
            out.append(row)
        return out

    # ----- detail, edit, delete, lookup ------------------------------------------------------
    def _find(self, head_id: int, doc_id: str, doc_nc: str | None) -> Prescription | None:
        """A live prescription, visible only to the doctor who registered it."""
        presc = self._state.prescriptions.get(head_id)
        if presc is None or presc.status != "active" or presc.doc_id != doc_id:
            return None
        if doc_nc is not None and presc.doc_national_code and doc_nc != presc.doc_national_code:
            return None
        return presc

    def detail(self, head_id: int, doc_id: str, doc_nc: str | None = None) -> list[dict[str, Any]] | None:
        with self._lock:
            presc = self._find(head_id, doc_id, doc_nc)
            return None if presc is None else presc.detail_items()

    def edit(self, head_id: int, doc_id: str, doc_nc: str | None, items: Any) -> rules.Rejection | None:
        """Replace the item list once; the refusal, or ``None`` on success.

        Visit prescriptions (no items allowed) and service prescriptions (srvType 17/21)
        cannot be edited (research section 5).
        """
        with self._lock:
            presc = self._find(head_id, doc_id, doc_nc)
            if presc is None:
                return rules.Rejection(rules.MSG_NOT_FOUND, "404")
            allowed = self._settings.presc_types.get(presc.presc_type_id, set())
            if not allowed or allowed & {"17", "21"}:
                return rules.Rejection(rules.MSG_EDIT_TYPE, "409")
            if presc.edited:
                return rules.Rejection(rules.MSG_EDIT_TWICE, "409")
            if presc.dispensed:
                return rules.Rejection(rules.MSG_EDIT_DISPENSED, "409")
            try:
                rules.check_items(items, presc.presc_type_id, self._settings)
            except rules.Rejection as rejection:
                return rejection
            keep = {item["noteDetailsEprscId"]: item for item in presc.items}
            presc.items = self._number_items(items, keep)
            presc.edited = True
            self._state.edits += 1
            return None

    def delete(
        self, head_id: int, doc_id: str, doc_nc: str | None, today: jdatetime.date
    ) -> rules.Rejection | None:
        """Delete a live prescription; only on its registration day (simulator calendar)."""
        with self._lock:
            presc = self._find(head_id, doc_id, doc_nc)
            if presc is None:
                return rules.Rejection(rules.MSG_NOT_FOUND, "404")
            if presc.registered_day != today.strftime("%Y%m%d"):
                return rules.Rejection(rules.MSG_DELETE_DAY, "410")
            if presc.dispensed:
                return rules.Rejection(rules.MSG_DELETE_DISPENSED, "409")
            presc.status = "deleted"
            self._state.deletes += 1
            return None

    def dispense(self, head_id: int) -> bool:
        """Mark a prescription as acted on by a pharmacy (``isOk`` "1"): no more edits."""
        with self._lock:
            presc = self._state.prescriptions.get(head_id)
            if presc is None:
                return False
            presc.dispensed = True
            return True

    def lookup_by_tracking(self, patient: str, tracking_code: int) -> list[dict[str, Any]]:
        with self._lock:
            return [
                p.head()
                for p in self._state.prescriptions.values()
                if p.patient == patient and p.tracking_code == tracking_code
            ]

    def lookup_by_day(self, patient: str, doc_id: str, presc_date: str) -> list[dict[str, Any]]:
        with self._lock:
            return [
                p.head()
                for p in self._state.prescriptions.values()
                if p.status == "active" and p.patient == patient and p.doc_id == doc_id and p.presc_date == presc_date
            ]

    # ----- claims (audit, payment, deductions; sim-defined) ------------------------------
    def claim_status(self, patient: str, tracking_code: int) -> dict[str, Any] | None:
        with self._lock:
            for p in self._state.prescriptions.values():
                if p.patient == patient and p.tracking_code == tracking_code:
                    return p.claim_status()
            return None

    def set_claim(self, head_id: int, patch: dict[str, Any]) -> dict[str, Any] | None:
        """Admin: set a claim's ``auditStatus``, ``billId``, ``paidDate`` and/or ``deductions``
        (each ``{srvCode, amount, reasonCode, reason}``; ``deductionId`` is numbered when absent)."""
        with self._lock:
            presc = self._state.prescriptions.get(head_id)
            if presc is None:
                return None
            self._patch_claim(presc, patch)
            return presc.claim_status()

    def settle_claims(self, patch: dict[str, Any]) -> int:
        """Admin: apply ``patch`` (as :meth:`set_claim`, without deductions) to every live claim
        still ``submitted``; the number changed."""
        with self._lock:
            changed = 0
            for presc in self._state.prescriptions.values():
                if presc.status == "active" and presc.claim.audit_status == "submitted":
                    self._patch_claim(presc, {k: v for k, v in patch.items() if k != "deductions"})
                    changed += 1
            return changed

    def _patch_claim(self, presc: Prescription, patch: dict[str, Any]) -> None:
        status = patch.get("auditStatus", presc.claim.audit_status)
        if status not in AUDIT_STATUSES:
            raise ValueError(f"auditStatus must be one of {', '.join(AUDIT_STATUSES)}")
        presc.claim.audit_status = status
        if "billId" in patch:
            presc.claim.bill_id = patch["billId"]
        elif presc.claim.bill_id is None and status != "submitted":
            presc.claim.bill_id = f"B-{presc.presc_date}-{presc.head_id}"
        if "paidDate" in patch:
            presc.claim.paid_date = patch["paidDate"]
        elif status == "paid" and presc.claim.paid_date is None:
            presc.claim.paid_date = presc.presc_date
        if "deductions" in patch:
            rows = []
            for number, item in enumerate(patch["deductions"] or [], start=1):
                if not isinstance(item, dict) or int(item.get("amount") or 0) <= 0:
                    raise ValueError("each deduction needs a positive amount")
                rows.append({"deductionId": item.get("deductionId") or f"D{presc.head_id}-{number}",
                             "srvCode": item.get("srvCode"), "amount": int(item["amount"]),
                             "reasonCode": str(item.get("reasonCode") or ""), "reason": str(item.get("reason") or "")})
            presc.claim.deductions = rows

    # ----- admin: seed discrepancies ------------------------------------------------------
    def alter_prescription(self, head_id: int, patch: dict[str, Any]) -> dict[str, Any] | None:
        """Admin: change a registered prescription behind the adapter's back: ``items``
        (``[{srvCode, srvQty}]``) and/or ``status`` (``active``/``deleted``)."""
        with self._lock:
            presc = self._state.prescriptions.get(head_id)
            if presc is None:
                return None
            if "items" in patch:
                presc.items = self._number_items(
                    [{"srvId": {"srvCode": str(i["srvCode"])}, "srvQty": i["srvQty"]} for i in patch["items"]], {})
            if "status" in patch:
                if patch["status"] not in ("active", "deleted"):
                    raise ValueError("status must be active or deleted")
                presc.status = patch["status"]
            return presc.head()

    def forget_prescription(self, head_id: int) -> bool:
        """Admin: the insurer loses a prescription entirely (lookups no longer find it)."""
        with self._lock:
            return self._state.prescriptions.pop(head_id, None) is not None

    def inject_prescription(self, head: dict[str, Any], today: jdatetime.date) -> dict[str, Any]:
        """Admin: a prescription the adapter never sent (e.g. typed in Tamin's own portal):
        ``{patient, docId, prescDate, prescTypeId, items: [{srvCode, srvQty, srvType?}], docNationalCode?}``."""
        body = {"patient": str(head["patient"]), "docId": str(head["docId"]), "prescDate": str(head["prescDate"]),
                "docNationalCode": head.get("docNationalCode"), "prescType": {"prescTypeId": int(head["prescTypeId"])},
                "noteDetailEprscs": [{"srvId": _srv_id(i), "srvQty": i["srvQty"]} for i in head.get("items") or []]}
        with self._lock:
            presc = self._store(body, f"injected:{len(self._state.prescriptions)}", today)
            return presc.head()

    # ----- reporting -----------------------------------------------------------------
    def prescriptions(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{**p.head(), "patient": p.patient} for p in self._state.prescriptions.values()]

    def create_records(self) -> list[CreateRecord]:
        with self._lock:
            return copy.deepcopy(self._state.creates)

    def stats(self) -> dict[str, Any]:
        """The ``GET /_sim/stats`` document (keys described in docs/tamin-wire.md)."""
        with self._lock:
            state = self._state
            requests: dict[str, int] = {}
            responses: dict[str, int] = {}
            for entry in state.requests:
                requests[entry["endpoint"]] = requests.get(entry["endpoint"], 0) + 1
                label = f"{entry['endpoint']} {entry['status']}"
                responses[label] = responses.get(label, 0) + 1
            provider = self.provider_stats()
            duplicate_keys = sorted([key for key, n in state.repeats.items() if n > 0]
                                    + provider["duplicate_submit_keys"])
            return {
                "requests": requests,
                "responses": responses,
                "prescriptions": len(state.prescriptions),
                "active_prescriptions": sum(p.status == "active" for p in state.prescriptions.values()),
                "create_calls": len(state.creates),
                "received_submissions": len(state.receipts),
                "duplicates": len(duplicate_keys),
                "duplicate_keys": duplicate_keys,
                "resent_after_refusal": state.resent_after_refusal + provider["resent_after_refusal"],
                "duplicate_answers": sum(r.outcome == "duplicate" for r in state.creates),
                "tokens_issued": state.tokens_issued,
                "rejections": state.rejections,
                "edits": state.edits,
                "deletes": state.deletes,
                "eligibility_checks": state.eligibility_checks,
                "placeholder_patient_creates": state.placeholder_patient_creates,
                "provider": provider,
            }


def _srv_id(item: dict[str, Any]) -> dict[str, Any]:
    srv: dict[str, Any] = {"srvCode": str(item["srvCode"])}
    if item.get("srvType"):
        srv["srvType"] = {"srvType": str(item["srvType"])}
    return srv
