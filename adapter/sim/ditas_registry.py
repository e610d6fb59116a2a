"""In-memory state of the DITAS/SEPAS simulator: tokens, records, receipts, counters, and
the server-side validation rules (the SEPAS validator's behaviour as the adapter expects it).

Like the Tamin registry, every public method takes one lock and returns copies.
Receipts are counted per submission key (``X-Idempotency-Key``, else the SHA-256 of the
decrypted XML), so ``duplicates`` proves the adapter never saved one submission twice.
"""

from __future__ import annotations

import copy
import datetime as dt
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jdatetime
import pydantic
from cryptography.hazmat.primitives import serialization

from adapter.destinations.sepas.crypto import generate_keypair, load_private_key, private_key_pem
from adapter.destinations.sepas.messages import MESSAGES, get_path
from adapter.destinations.sepas.terminology import Terminology, load_terminology

NODE = "NodeSim.behdasht.gov.ir"
DEFAULT_TERMINOLOGY = Path(__file__).resolve().parents[2] / "mappings" / "sepas" / "terminology"

# server-side mandatory fields per message (paths in the parsed tree); lists must be non-empty
COMMON_MANDATORY = ("Person.NationalCode", "Person.FirstName", "Person.LastName", "Person.Gender",
                    "MsgID.SystemID", "MsgID.HealthCareFacilityID")
MANDATORY: dict[str, tuple[str, ...]] = {
    "PatientBill": ("Composition.Admission.AdmissionDate", "Composition.Admission.AdmissionType",
                    "Composition.BillSummary.TotalCharge", "Composition.BillServices"),
    "MedicationPrescription": ("Composition.MedicationPrescriptions.Prescriber", "Composition.MedicationPrescriptions.IssueDate",
                               "Composition.MedicationPrescriptions.Orders"),
    "DispensedPrescription": ("Composition.DispensedPrescriptions.DateDispense",
                              "Composition.DispensedPrescriptions.MedicationDispensed"),
    "LabResult": ("Composition.LabResult",),
    "LabPrescription": ("Composition.ServicePrescriptions.IssueDateTime", "Composition.ServicePrescriptions.Orders"),
    "ImagingPrescription": ("Composition.ServicePrescriptions.IssueDateTime", "Composition.ServicePrescriptions.Orders"),
}
# rows of a list and their mandatory fields; "[]" in a path walks every element of that list
ROW_MANDATORY: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "PatientBill": (("Composition.BillServices", ("Service", "ServiceType", "TotalCharge")),),
    "MedicationPrescription": (("Composition.MedicationPrescriptions.Orders", ("ProductCode",)),),
    "DispensedPrescription": (("Composition.DispensedPrescriptions.MedicationDispensed", ("ProductCode", "TotalNumber")),),
    "LabPrescription": (("Composition.ServicePrescriptions.Orders", ("Service",)),),
    "ImagingPrescription": (("Composition.ServicePrescriptions.Orders", ("Service",)),),
    "LabResult": (("Composition.LabResult", ("DateTimeResult",)),
                  ("Composition.LabResult[].LaboratoryResultRow", ("TestName", "TestResult"))),
}


class DitasSimSettings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    client_id: str = "adapter-sim"
    client_secret: str = "adapter-sim-secret"
    username: str = "hospital-user"
    password: str = "hospital-password"
    token_ttl_s: float = 3600.0
    pids: set[str] | None = None
    """Accepted ``pid`` header values; ``None`` accepts any non-empty pid."""
    private_key_pem: str | None = None
    """The Ministry's private key (PEM). ``None``: a fresh pair is generated (see ``public_key_pem``)."""
    terminology_dir: str = str(DEFAULT_TERMINOLOGY)
    today_override: str | None = None
    """Solar Hijri ``YYYY/MM/DD`` used as today (future-date and enforcement checks)."""
    require_validation_first: bool = True
    """A save of a document never validated is answered with an ErrorMessage (seed 004)."""
    # faults
    fail_next: int = 0
    fail_status: int = 503
    fail_endpoints: set[str] | None = None
    drop_response_after_apply: int = 0


@dataclass
class Record:
    composition_uid: str
    patient_uid: str
    message: str
    document_hash: str
    versions: int = 1
    message_uids: list[str] = field(default_factory=list)


@dataclass
class _State:
    tokens: dict[str, float] = field(default_factory=dict)
    refresh_tokens: set[str] = field(default_factory=set)
    tokens_issued: int = 0
    password_grants: int = 0
    refresh_grants: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    records: dict[str, Record] = field(default_factory=dict)  # composition uid -> record
    by_hash: dict[str, str] = field(default_factory=dict)  # document hash -> composition uid
    patients: dict[str, str] = field(default_factory=dict)  # national code -> patient uid
    receipts: dict[str, int] = field(default_factory=dict)
    validated: set[str] = field(default_factory=set)
    validations: int = 0
    validation_failures: int = 0
    saves: int = 0
    rejections: int = 0


@dataclass(frozen=True)
class FaultPlan:
    fail_status: int | None = None
    drop_after_apply: bool = False


class DitasRegistry:
    def __init__(self, settings: DitasSimSettings | None = None):
        self._lock = threading.Lock()
        self._settings = settings or DitasSimSettings()
        if self._settings.private_key_pem:
            self.private_key = load_private_key(self._settings.private_key_pem.encode())
            self.public_key_pem = self.private_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        else:
            self.private_key, self.public_key_pem = generate_keypair()
            self._settings = self._settings.model_copy(update={"private_key_pem": private_key_pem(self.private_key).decode()})
        self.terminology: Terminology = load_terminology(Path(self._settings.terminology_dir))
        self._state = _State()

    @property
    def settings(self) -> DitasSimSettings:
        with self._lock:
            return self._settings

    def update_settings(self, patch: dict[str, Any]) -> None:
        with self._lock:
            merged = {**self._settings.model_dump(), **patch}
            self._settings = DitasSimSettings.model_validate(merged)

    def reset(self) -> None:
        with self._lock:
            self._state = _State()

    def today(self) -> dt.date:
        override = self.settings.today_override
        if override:
            year, month, day = (int(p) for p in override.split("/"))
            return jdatetime.date(year, month, day).togregorian()
        return dt.datetime.now(dt.timezone(dt.timedelta(hours=3, minutes=30))).date()

    # ----- log / faults -------------------------------------------------------------------
    def record_request(self, endpoint: str, path: str, status: int) -> None:
        with self._lock:
            self._state.requests.append({"endpoint": endpoint, "path": path, "status": status, "at": time.time()})

    def request_log(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._state.requests)

    def plan_faults(self, endpoint: str) -> FaultPlan:
        with self._lock:
            s = self._settings
            if s.fail_next > 0 and (s.fail_endpoints is None or endpoint in s.fail_endpoints) and endpoint != "token":
                self._settings = s.model_copy(update={"fail_next": s.fail_next - 1})
                return FaultPlan(fail_status=s.fail_status)
            if endpoint == "save" and s.drop_response_after_apply > 0:
                self._settings = s.model_copy(update={"drop_response_after_apply": s.drop_response_after_apply - 1})
                return FaultPlan(drop_after_apply=True)
        return FaultPlan()

    # ----- tokens -------------------------------------------------------------------------
    def grant(self, kind: str, refresh_token: str | None = None) -> tuple[str, float, str] | None:
        with self._lock:
            if kind == "refresh":
                if refresh_token not in self._state.refresh_tokens:
                    return None
                self._state.refresh_tokens.discard(refresh_token)
                self._state.refresh_grants += 1
            else:
                self._state.password_grants += 1
            token, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
            ttl = self._settings.token_ttl_s
            self._state.tokens[token] = time.monotonic() + ttl
            self._state.refresh_tokens.add(refresh)
            self._state.tokens_issued += 1
            return token, ttl, refresh

    def token_valid(self, token: str) -> bool:
        with self._lock:
            expiry = self._state.tokens.get(token)
            return expiry is not None and time.monotonic() < expiry

    def revoke_tokens(self) -> None:
        with self._lock:
            self._state.tokens.clear()

    # ----- SEPAS ----------------------------------------------------------------------------
    def validate(self, message: str, tree: dict[str, Any], document_hash: str) -> list[dict[str, str]]:
        errors = problems_of(message, tree, self.terminology, self.today())
        with self._lock:
            self._state.validations += 1
            if errors:
                self._state.validation_failures += 1
            else:
                self._state.validated.add(document_hash)
        return errors

    def save(self, message: str, tree: dict[str, Any], document_hash: str, key: str) -> dict[str, Any]:
        errors = problems_of(message, tree, self.terminology, self.today())
        with self._lock:
            state = self._state
            state.saves += 1
            state.receipts[key] = state.receipts.get(key, 0) + 1
            if errors:
                state.rejections += 1
                return _result(error="; ".join(f"{e['ErrorCategorySource']}: {e['ErrorMessage']}" for e in errors))
            if self._settings.require_validation_first and document_hash not in state.validated:
                state.rejections += 1
                return _result(error="پیام پیش از ارسال اعتبارسنجی نشده است (validation service not called first)")
            national_code = str(get_path(tree, "Person.NationalCode") or "")
            patient_uid = state.patients.setdefault(national_code, f"{NODE}::{uuid.uuid4()}")
            given = str(get_path(tree, "MsgID.CompositionUID") or "")
            message_uid = str(uuid.uuid4())
            if given and given in state.records:
                record = state.records[given]
                record.versions += 1
                record.document_hash = document_hash
            else:
                record = Record(f"{NODE}::{uuid.uuid4()}", patient_uid, message, document_hash)
                state.records[record.composition_uid] = record
            record.message_uids.append(message_uid)
            state.by_hash[document_hash] = record.composition_uid
            return _result(message_uid=message_uid, composition_uid=record.composition_uid, patient_uid=patient_uid)

    def lookup(self, document_hash: str) -> dict[str, Any] | None:
        with self._lock:
            uid = self._state.by_hash.get(document_hash)
            if uid is None:
                return None
            record = self._state.records[uid]
            return _result(message_uid=record.message_uids[-1], composition_uid=uid, patient_uid=record.patient_uid)

    def forget(self, composition_uid: str) -> bool:
        """Drop a record (tests: a record SEPAS lost, for the reconciliation to find)."""
        with self._lock:
            record = self._state.records.pop(composition_uid, None)
            if record is None:
                return False
            self._state.by_hash = {h: uid for h, uid in self._state.by_hash.items() if uid != composition_uid}
            return True

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return [vars(copy.deepcopy(r)) for r in self._state.records.values()]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            state = self._state
            requests: dict[str, int] = {}
            for entry in state.requests:
                requests[entry["endpoint"]] = requests.get(entry["endpoint"], 0) + 1
            duplicate_keys = sorted(k for k, n in state.receipts.items() if n > 1)
            return {
                "requests": requests,
                "validations": state.validations,
                "validation_failures": state.validation_failures,
                "saves": state.saves,
                "submits": state.saves,
                "records": len(state.records),
                "rejections": state.rejections,
                "received_submissions": len(state.receipts),
                "duplicates": len(duplicate_keys),
                "duplicate_keys": duplicate_keys,
                "tokens_issued": state.tokens_issued,
                "password_grants": state.password_grants,
                "refresh_grants": state.refresh_grants,
            }


def _result(*, error: str = "", message_uid: str = "", composition_uid: str = "", patient_uid: str = "") -> dict[str, Any]:
    return {"MessageUID": message_uid, "ErrorMessage": error, "CompositionUID": composition_uid,
            "patientUID": patient_uid}


def _problem(field_path: str, code: str, text: str) -> dict[str, str]:
    return {"MessageID": "", "ErrorMessage": text, "NormalizedErrorMessage": text, "ErrorCategoryType": code,
            "ErrorCategoryCritical": "true", "ErrorCategorySource": field_path, "ErrorDescription": text,
            "ErrorSolution": ""}


def _missing(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _date_problem(node: dict[str, Any], today: dt.date) -> str | None:
    try:
        day = jdatetime.date(int(node["Year"]), int(node["Month"]), int(node["Day"])).togregorian()
    except (KeyError, TypeError, ValueError):
        return "not a valid Solar Hijri date (Year/Month/Day)"
    if day > today + dt.timedelta(days=1):
        return "date is in the future"
    if day.year < 1900:
        return "date is before 1900"
    return None


def _walk_dates(tree: Any, path: str, today: dt.date, out: list[dict[str, str]]) -> None:
    if isinstance(tree, dict):
        if "Year" in tree or "Month" in tree or "Day" in tree:
            problem = _date_problem(tree, today)
            if problem and not path.endswith(("ExpiryDate", "InsuranceExpirationDate", "EndDate")):
                out.append(_problem(path, "DATE", problem))
            return
        for key, value in tree.items():
            _walk_dates(value, f"{path}.{key}" if path else key, today, out)
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            _walk_dates(value, f"{path}[{index}]", today, out)


def _rows(tree: Any, list_path: str) -> list[tuple[str, Any]]:
    """(path with indices, element) of every element of ``list_path``; ``a[].b`` walks each ``a``."""
    head, _, rest = list_path.partition("[].")
    found = get_path(tree, head)
    items = list(enumerate(found)) if isinstance(found, list) else []
    if not rest:
        return [(f"{head}[{i}]", row) for i, row in items]
    return [(f"{head}[{i}].{where}", row) for i, outer in items for where, row in _rows(outer, rest)]


def _walk_quantities(tree: Any, path: str, out: list[dict[str, str]]) -> None:
    """DO_QUANTITY.Magnitude is a double: text that is not a number is an error (server-side only)."""
    if isinstance(tree, dict):
        magnitude = tree.get("Magnitude")
        if isinstance(magnitude, str):
            try:
                float(magnitude)
            except ValueError:
                out.append(_problem(f"{path}.Magnitude", "NOT_A_NUMBER", "DO_QUANTITY Magnitude is not a number"))
        for key, value in tree.items():
            if key != "Magnitude":
                _walk_quantities(value, f"{path}.{key}" if path else key, out)
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            _walk_quantities(value, f"{path}[{index}]", out)


def problems_of(message: str, tree: dict[str, Any], terminology: Terminology, today: dt.date) -> list[dict[str, str]]:
    """The validator: mandatory fields, dates, terminology codes (as ValidationResultVO items)."""
    out: list[dict[str, str]] = []
    if message not in MESSAGES:
        return [_problem("ContentType", "CONTENT_TYPE", f"unknown message {message}")]
    for path in COMMON_MANDATORY + MANDATORY.get(message, ()):
        if _missing(get_path(tree, path)):
            out.append(_problem(path, "MANDATORY", "mandatory field is missing"))
    for list_path, fields in ROW_MANDATORY.get(message, ()):
        for where, row in _rows(tree, list_path):
            for name in fields:
                if not isinstance(row, dict) or _missing(row.get(name)):
                    out.append(_problem(f"{where}.{name}", "MANDATORY", "mandatory field is missing"))
    _walk_dates(tree, "", today, out)
    _walk_quantities(tree, "", out)
    for problem in terminology.check(message, tree, today):
        out.append(_problem(problem.field, "TERMINOLOGY", problem.text))
    return out
