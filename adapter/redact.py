"""Patient identifiers and secrets out of anything shown or logged.

Three tools: ``redact_text`` for free text (insurer messages, exception strings), which
masks the secrets this process holds and digit runs shaped like national codes and Iranian
mobile numbers; ``redact_tree`` for structures in logs and alerts, which masks values under
keys known to hold PHI or secrets, then applies ``redact_text`` to every remaining string; and
``redact_shown`` for what ``adapter show`` prints of event bodies and payloads, which keeps only
the values under a positive list of keys (``SHOWN_KEYS``) and masks every other value.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

from adapter.events.digits import to_ascii_digits

_MOBILE = re.compile(r"(?<!\d)(?:\+98|0098|0)?9\d{9}(?!\d)")
_TEN_DIGITS = re.compile(r"(?<!\d)\d{10}(?!\d)")

SENSITIVE_KEYS = frozenset({
    "national_code", "value", "patient", "first_name", "last_name", "mobile", "docnationalcode",
    "docmobileno", "clientid", "patientnationalcode", "patient_national_code", "nationalcode",
    "access_token", "refresh_token", "client_secret", "password", "secret", "token", "authorization",
    "request_by", "doc_national_code", "birth_date", "audience", "name",
    # the SEPAS / Tamin payloads' spellings of the same (lower-cased)
    "firstname", "lastname", "birthdate", "mobilenumber", "patientnatcode", "patientmobileno", "patient_mobile",
    "insurednumber", "insured_number", "medicalrecordnumber", "medical_record_number",
})


# ``key: value`` / ``key=value`` / ``"key": "value"`` in free text (a JSON body or a query string
# inside an exception message, a form post in a traceback): the value is masked.
_TEXT_KEYS = ("national_?code", "patient_?national_?code", "doc_?national_?code", "first_?name", "last_?name",
              "mobile", "doc_?mobile_?no", "phone", "access_token", "refresh_token", "client_secret", "password",
              "passwd", "secret", "token", "authorization", "api_?key")
_KEY_VALUE = re.compile(r"(?i)(?P<key>[\"']?\b(?:" + "|".join(_TEXT_KEYS) + r")\b[\"']?\s*[:=]\s*)"
                        r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s,;&}\]\"']+)")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}")

SHORT_SECRET = 6
"""Secrets shorter than this are masked only as whole tokens (see ``register_secret``)."""
_secrets: set[str] = set()  # SHORT_SECRET characters or more: masked wherever they occur
_short_secrets: set[str] = set()
_short_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """A secret this process holds (client secret, password, status token): masked in text,
    whatever the key or format around it, whatever its length.

    The rule: a secret of ``SHORT_SECRET`` (6) characters or more is masked wherever it occurs,
    even inside a longer word. A shorter one is masked only as a whole token: where no word
    character (letter, digit or underscore, in any script) touches it on either side, e.g. in
    ``password=ab1``, ``ops:ab1@host``, ``"ab1"`` or ``(ab1).``, but not in ``xab1`` or
    ``ab12``. So a 1-character secret masks that character where it stands alone, never every
    occurrence of it in the logs. An empty or blank value registers nothing (masking it would
    blank every space)."""
    global _short_pattern
    if value is None or not value.strip():
        return
    value = to_ascii_digits(value)  # redact_text reads digits in ASCII
    if len(value) >= SHORT_SECRET:
        _secrets.add(value)
        return
    _short_secrets.add(value)
    alternatives = "|".join(re.escape(s) for s in sorted(_short_secrets, key=len, reverse=True))
    _short_pattern = re.compile(r"(?<!\w)(?:" + alternatives + r")(?!\w)")


def _mask_value(match: re.Match[str]) -> str:
    value = match.group("value")
    quote = value[0] if value[:1] in ("'", '"') else ""
    return match.group("key") + quote + "***" + quote


def redact_text(text: str) -> str:
    text = to_ascii_digits(text)
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    if _short_pattern is not None:
        text = _short_pattern.sub("***", text)
    text = _BEARER.sub(lambda m: m.group(1) + " ***", text)
    text = _KEY_VALUE.sub(_mask_value, text)
    text = _MOBILE.sub("09*********", text)
    return _TEN_DIGITS.sub("**********", text)


def mask(value: Any) -> str:
    """Keep only the shape: ``'0012345679'`` becomes ``'00******79'``."""
    text = str(value)
    if len(text) <= 4:
        return "*" * len(text)
    return text[:2] + "*" * (len(text) - 4) + text[-2:]


def redact_tree(value: Any, key: str | None = None) -> Any:
    if isinstance(value, dict):
        return {k: redact_tree(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_tree(v, key) for v in value]
    if key is not None and key.lower() in SENSITIVE_KEYS and value not in (None, ""):
        return mask(value) if not isinstance(value, (dict, list)) else redact_tree(value)
    if isinstance(value, str):
        return redact_text(value)
    return value


MASKED = "***"
"""What ``redact_shown`` puts in place of a value it may not show."""

_SHOWN = (
    # the event envelope and the HIS's own ids
    "event_id", "event_type", "schema_version", "occurred_at", "facility_siam_id", "source_system", "correlation_id",
    "visit_id", "prescription_id", "order_id", "dispense_id", "result_id", "bill_id", "request_id",
    "hisRequestId", "ePrescriptionID", "SerialNumber", "ward",
    # the insurer's and the facility's ids, and clinicians' council numbers (never a patient's id)
    "tracking_code", "trackingCode", "head_id", "hid", "siam_id", "siamId", "facility", "medical_council_no", "docId",
    "doc_id", "doC_MDID", "tecH_MDID",
    # kinds, states and codes
    "kind", "status", "state", "category", "admission_type", "box", "insurer", "instruction", "interpretation",
    "code", "codes", "diagnoses", "icd10", "irc", "ttac_codes", "barcodesList", "drugCode", "drugIrc", "srvCode",
    "srvType", "parGrpCode", "paR_TAREF_CODE", "partypecode", "prescTypeId", "drugAmntId", "drugInstId",
    "Coded_string", "Terminology_id", "Issuer", "Assigner", "Type", "xsi:type",
    # quantities and amounts
    "quantity", "unit", "unit_price", "amount", "total_charge", "basic_insurance", "insurer_share", "patient_share",
    "reference_range", "Magnitude", "Unit", "srvQty", "performedQty", "requesT_QTY", "requestedCount",
    "ServiceAmount", "phaDrugPrice",
    # dates and times of care (a birth date is never one of them)
    "prescribed_at", "requested_at", "completed_at", "cancelled_at", "dispensed_at", "reported_at",
    "specimen_collected_at", "admitted_at", "discharged_at", "diagnosed_at", "started_at", "ended_at", "closed_at",
    "expires_on", "start_on", "prescDate", "expireDate", "dateDo", "AdmissionDate", "AdmissionTime", "DischargeDate",
    "DischargeTime", "IssueDate", "IssueTime", "IssueDateTime", "ExpiryDate", "SpecimenDate", "SpecimenTime",
    "DateTimeResult", "DateDispense", "TimeDispense", "DiagnosisDate", "StartDate", "StartTime", "EndDate", "EndTime",
)


def _key_form(key: str) -> str:
    """``patient_national_code``, ``patientNationalCode`` and ``PATIENT-NATIONAL-CODE`` are one key."""
    return re.sub(r"[^0-9a-z]", "", key.lower())


SHOWN_KEYS = frozenset(_key_form(k) for k in _SHOWN)
"""The keys whose values ``adapter show`` prints: ids of the HIS, the insurer and clinicians, codes,
kinds and states, quantities and amounts, dates of care. A positive list: a key not on it (names,
national codes, birth dates, mobiles, insurance and record numbers, free text, display names, a
key added to a mapping later) has its value masked."""


def shown_key(key: str) -> bool:
    return _key_form(key) in SHOWN_KEYS


def redact_shown(value: Any, key: str | None = None) -> Any:
    """A body or payload as ``adapter show`` prints it: every leaf (a list's items count under the
    list's key) whose key is on ``SHOWN_KEYS`` is kept, strings after ``redact_text``; every other
    leaf becomes ``MASKED``, except null and "" (absent stays visibly absent)."""
    if isinstance(value, dict):
        return {k: redact_shown(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_shown(v, key) for v in value]
    if value is None or value == "":
        return value
    if key is None or not shown_key(key):
        return MASKED
    return redact_text(value) if isinstance(value, str) else value


def keyed_digest(text: str, key: bytes, purpose: str) -> str:
    """A short keyed digest of ``text`` for telling values apart without showing them: equal values
    give equal digests under one key, and without the key no digest can be checked against a
    guess. ``purpose`` separates uses of the same key (the digest of a national code is never a
    prefix of that patient's ``pseudonym``)."""
    return hmac.new(key, purpose.encode() + b"\x00" + text.encode("utf-8", "replace"), hashlib.sha256).hexdigest()[:8]


def pseudonym(identifier: str, key: bytes) -> str:
    """A stable, keyed, one-way reference for a patient id (groups events without storing it twice)."""
    return hmac.new(key, identifier.encode(), hashlib.sha256).hexdigest()[:32]
