"""Business rules of Tamin's SendEpresc and edit calls, with the Persian messages.

Texts come from the official guide's error list (research section 3.6); those marked
*sim-defined* are not documented and were written for the simulator.
"""

from __future__ import annotations

import re
from typing import Any

import jdatetime

from adapter.events.identity import national_code_problem
from adapter.sim.settings import TaminSimSettings, parse_jalali_compact

MSG_DATA_NULL = "خطا در اطلاعات ورودی data is null"
MSG_BAD_PATIENT = "کد ملی بیمار معتبر نمی باشد"
MSG_NOT_INSURED = "کد ملی در پایگاه هویتی بیمه شدگان سازمان تامین وجود ندارد"
MSG_COVERAGE_EXPIRED = "اعتبار دفترچه بیمه شده به پایان رسیده است"  # sim-defined
MSG_MOBILE_MISSING = "شماره تلفن همراه وارد نشده است"
MSG_MOBILE_BAD = "شماره تلفن همراه به درستی وارد نشده است"
MSG_DATE_BAD = "تاریخ به درستی وارد نشده است"
MSG_DATE_FUTURE = "تاریخ نسخه نمی تواند از تاریخ روز بزرگتر باشد"
MSG_DOCTOR_UNKNOWN = "پزشک با شماره نظام پزشکی مورد نظر یافت نشد"
MSG_DOCTOR_INACTIVE = "پزشک فعال نشده است"
MSG_DOCTOR_MISMATCH = "کدملی/ تلفن همراه پزشک معتبر نمی باشد"
MSG_TYPE_MISSING = "نوع نسخه انتخاب نشده است"
MSG_TYPE_BAD = "نوع نسخه بدرستی وارد نشده است"
MSG_VISIT_WITH_ITEMS = "امکان انتخاب خدمات با توجه به نوع نسخه ی انتخابی وجود ندارد"
MSG_ONLY_DRUGS = "با توجه به نوع نسخه ی انتخابی تنها امکان انتخاب دارو وجود دارد"
MSG_ONLY_PARACLINIC = "با توجه به نوع نسخه ی انتخابی تنها امکان انتخاب خدمات پاراکلینیک وجود دارد"
MSG_ONLY_SERVICES = "با توجه به نوع نسخه ی انتخابی تنها امکان انتخاب خدمات وجود دارد"
MSG_QTY = "تعداد خدمت باید بزرگتر از صفر باشد"
MSG_LAB_GROUP = "در صورت انتخاب آزمایشگاه، زیر گروه مربوطه باید انتخاب گردد"
MSG_DRUG_AMOUNT = "مقادیر مصرف صحیح وارد نشده است"
MSG_DRUG_INSTRUCTION = "زمان مصرف صحیح وارد نشده است"
MSG_NOT_FOUND = "نسخه یافت نشد"
MSG_EDIT_TWICE = "نسخه فقط یک بار قابل ویرایش است"  # sim-defined
MSG_EDIT_DISPENSED = "نسخه توسط مرکز ارائه دهنده خدمت دریافت شده و قابل ویرایش نیست"  # sim-defined
MSG_EDIT_TYPE = "امکان ویرایش نسخه ویزیت و خدمات وجود ندارد"  # sim-defined
MSG_DELETE_DAY = "حذف نسخه فقط در روز ثبت امکان پذیر است"
MSG_DELETE_DISPENSED = "نسخه توسط مرکز ارائه دهنده خدمت دریافت شده و قابل حذف نیست"  # sim-defined


def msg_unknown_service(code: str) -> str:
    return f"کد خدمت {code} تعریف نشده است"


def msg_duplicate(head_id: int, tracking_code: int) -> str:
    """The 304 answer; clients pull both numbers out of this text (research 3.5)."""
    return f"نسخه تکراری است. شناسه {head_id} کد رهگیری {tracking_code}"


ANONYMOUS_PATIENT = "UNKNOWN"
_MOBILE = re.compile(r"^09\d{9}$")
_FIDA = re.compile(r"^[0-9]{8,16}$")


class Rejection(Exception):
    """A business rule failed; ``message`` is the Persian ``error_Msg``."""

    def __init__(self, message: str, code: str = "400") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def patient_problem(patient: object, settings: TaminSimSettings) -> str | None:
    """The Persian reason a patient cannot be served, or ``None`` (anonymous is fine).

    A patient is a national code (a newborn's is the mother's), a FIDA id in the configured
    form (``fida_patient_prefix``), or ``UNKNOWN``; anything else is a bad national code."""
    if patient == ANONYMOUS_PATIENT:
        return None
    if not isinstance(patient, str) or not (national_code_problem(patient) is None or is_fida(patient, settings)):
        return MSG_BAD_PATIENT
    if patient in settings.unknown_patients:
        return MSG_NOT_INSURED
    if patient in settings.expired_patients:
        return MSG_COVERAGE_EXPIRED
    return None


def is_fida(patient: str, settings: TaminSimSettings) -> bool:
    """Whether ``patient`` is a foreign national's FIDA id in the form the simulator expects."""
    prefix = settings.fida_patient_prefix
    return patient.startswith(prefix) and bool(_FIDA.match(patient[len(prefix):]))


def check_create(body: Any, settings: TaminSimSettings, today: jdatetime.date) -> None:
    """Raise :class:`Rejection` for the first broken rule of a SendEpresc body."""
    if not isinstance(body, dict) or not body:
        raise Rejection(MSG_DATA_NULL)
    problem = patient_problem(body.get("patient"), settings)
    if problem:
        raise Rejection(problem)
    mobile = body.get("mobile")
    if mobile is None or mobile == "":
        raise Rejection(MSG_MOBILE_MISSING)
    if not isinstance(mobile, str) or not _MOBILE.match(mobile):
        raise Rejection(MSG_MOBILE_BAD)
    presc_date = parse_jalali_compact(body.get("prescDate"))
    if presc_date is None:
        raise Rejection(MSG_DATE_BAD)
    if presc_date > today:
        raise Rejection(MSG_DATE_FUTURE)
    if body.get("expireDate") not in (None, "") and parse_jalali_compact(body["expireDate"]) is None:
        raise Rejection(MSG_DATE_BAD)
    _check_doctor(body, settings)
    presc_type_id = presc_type_of(body)
    if presc_type_id is None:
        raise Rejection(MSG_TYPE_MISSING)
    if presc_type_id not in settings.presc_types:
        raise Rejection(MSG_TYPE_BAD)
    items = body.get("noteDetailEprscs")
    if items is None:
        items = []
    check_items(items, presc_type_id, settings)


def presc_type_of(body: dict[str, Any]) -> int | None:
    """``prescType.prescTypeId`` as an int; -1 when present but not a number."""
    presc_type = body.get("prescType")
    if not isinstance(presc_type, dict) or presc_type.get("prescTypeId") in (None, ""):
        return None
    raw = presc_type["prescTypeId"]
    if isinstance(raw, bool):
        return -1
    try:
        return int(raw)
    except (TypeError, ValueError):
        return -1


def _check_doctor(body: dict[str, Any], settings: TaminSimSettings) -> None:
    doc_id = body.get("docId")
    if not isinstance(doc_id, str) or not doc_id:
        raise Rejection(MSG_DOCTOR_UNKNOWN)
    if settings.doctors is None:
        return
    doctor = settings.doctors.get(doc_id)
    if doctor is None:
        raise Rejection(MSG_DOCTOR_UNKNOWN)
    if not doctor.active:
        raise Rejection(MSG_DOCTOR_INACTIVE)
    if body.get("docNationalCode") != doctor.national_code or body.get("docMobileNo") != doctor.mobile:
        raise Rejection(MSG_DOCTOR_MISMATCH)


def check_items(items: Any, presc_type_id: int, settings: TaminSimSettings) -> None:
    """Raise :class:`Rejection` when the item list does not fit the prescription type."""
    if not isinstance(items, list):
        raise Rejection(MSG_DATA_NULL)
    allowed = settings.presc_types.get(presc_type_id, set())
    if not allowed:
        if items:
            raise Rejection(MSG_VISIT_WITH_ITEMS)
        return
    for item in items:
        if not isinstance(item, dict):
            raise Rejection(MSG_DATA_NULL)
        srv_type = item_srv_type(item)
        if srv_type not in allowed:
            raise Rejection(_wrong_type_message(allowed))
        code = item_srv_code(item)
        if not code or (settings.known_service_codes is not None and code not in settings.known_service_codes):
            raise Rejection(msg_unknown_service(code or ""))
        qty = item.get("srvQty")
        if isinstance(qty, bool) or not isinstance(qty, (int, float)) or qty <= 0:
            raise Rejection(MSG_QTY)
        if srv_type == "02" and not _nested(item, "srvId", "parTarefGrp", "parGrpCode"):
            raise Rejection(MSG_LAB_GROUP)
        if srv_type == "01":
            if _nested(item, "timesAday", "drugAmntId") in (None, ""):
                raise Rejection(MSG_DRUG_AMOUNT)
            if _nested(item, "drugInstruction", "drugInstId") in (None, ""):
                raise Rejection(MSG_DRUG_INSTRUCTION)


def _wrong_type_message(allowed: set[str]) -> str:
    if allowed == {"01"}:
        return MSG_ONLY_DRUGS
    if allowed <= {"02", "03", "04", "05", "06", "07"}:
        return MSG_ONLY_PARACLINIC
    return MSG_ONLY_SERVICES


def _nested(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def item_srv_code(item: dict[str, Any]) -> str | None:
    code = _nested(item, "srvId", "srvCode")
    return None if code is None else str(code)


def item_srv_type(item: dict[str, Any]) -> str | None:
    srv_type = _nested(item, "srvId", "srvType", "srvType")
    return None if srv_type is None else str(srv_type)


def content_key(body: Any) -> str:
    """Tamin's duplicate key: patient + docId + prescDate + prescTypeId + sorted (srvCode, qty)."""
    if not isinstance(body, dict):
        return "<no body>"
    items = body.get("noteDetailEprscs") or []
    pairs = sorted(
        f"{item_srv_code(item)}x{_qty_text(item.get('srvQty'))}" for item in items if isinstance(item, dict)
    )
    return "|".join(
        [
            str(body.get("patient")),
            str(body.get("docId")),
            str(body.get("prescDate")),
            str(presc_type_of(body)),
            ",".join(pairs),
        ]
    )


def _qty_text(qty: Any) -> str:
    if isinstance(qty, float) and qty.is_integer():
        return str(int(qty))
    return str(qty)
