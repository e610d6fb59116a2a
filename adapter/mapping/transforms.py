"""Named value transforms used by ``$transform`` in mapping files.

Each transform is one small function ``value -> value``. It raises ``TransformError``
with a reason that never contains the value (the value may be patient data).
Add a transform with ``@transform("name")``; the registry is ``TRANSFORMS``.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adapter.events.dates import DateProblem, parse_date, to_jalali_compact
from adapter.events.digits import to_ascii_digits
from adapter.events.identity import national_code_problem

Transform = Callable[[Any], Any]
TRANSFORMS: dict[str, Transform] = {}
_FIDA = re.compile(r"^[0-9]{8,16}$")


class TransformError(ValueError):
    """The value cannot be transformed; the message is safe to log (no value in it)."""


def transform(name: str) -> Callable[[Transform], Transform]:
    """Register ``func`` under ``name`` (a name can be registered once)."""

    def register(func: Transform) -> Transform:
        if name in TRANSFORMS:
            raise ValueError(f"transform {name!r} is already registered")
        TRANSFORMS[name] = func
        return func

    return register


def _tehran() -> dt.tzinfo:
    try:
        return ZoneInfo("Asia/Tehran")
    except ZoneInfoNotFoundError:  # no tz database: Iran has kept +03:30 all year since 2022
        return dt.timezone(dt.timedelta(hours=3, minutes=30))


def _text(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TransformError(f"{name}: expected text, got {type(value).__name__}")
    return str(value)


@transform("str")
def to_str(value: Any) -> str:
    """Any scalar to text (``20`` -> ``"20"``)."""
    if isinstance(value, (dict, list)):
        raise TransformError(f"str: expected a scalar, got {type(value).__name__}")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@transform("int")
def to_int(value: Any) -> int:
    """An integer or a text of digits (Persian digits allowed) to an integer."""
    if isinstance(value, bool):
        raise TransformError("int: expected a whole number, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", to_ascii_digits(value.strip())):
        return int(to_ascii_digits(value.strip()))
    raise TransformError(f"int: expected a whole number, got {type(value).__name__}")


@transform("upper")
def upper(value: Any) -> str:
    """Text to upper case."""
    return _text(value, "upper").upper()


@transform("ascii_digits")
def ascii_digits(value: Any) -> str:
    """Persian and Arabic-Indic digits to ASCII digits."""
    return to_ascii_digits(_text(value, "ascii_digits"))


@transform("jalali_date8")
def jalali_date8(value: Any) -> str:
    """ISO date, or ISO date-time with offset (read as the Tehran local date), to ``YYYYMMDD`` Solar Hijri.

    Jalali input (``1403/05/12``, ``14030512``) is accepted too.
    """
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        return to_jalali_compact(value)
    else:
        text = to_ascii_digits(_text(value, "jalali_date8").strip())
        if "T" not in text and " " not in text:
            try:
                return to_jalali_compact(parse_date(text))
            except DateProblem as exc:
                raise TransformError(f"jalali_date8: {exc}") from None
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise TransformError("jalali_date8: not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        raise TransformError("jalali_date8: a date-time needs its UTC offset to find the Tehran date")
    return to_jalali_compact(moment.astimezone(_tehran()).date())


_MOBILE = re.compile(r"^(?:\+98|0098|98|0)?(9\d{9})$")


@transform("mobile_ir")
def mobile_ir(value: Any) -> str:
    """Iranian mobile number in any usual spelling (+98, 0098, 98, 0 or none) to ``09xxxxxxxxx``."""
    text = re.sub(r"[\s\-()]", "", to_ascii_digits(_text(value, "mobile_ir")))
    match = _MOBILE.match(text)
    if not match:
        raise TransformError("mobile_ir: not an Iranian mobile number (09xxxxxxxxx)")
    return "0" + match.group(1)


@transform("national_code")
def national_code(value: Any) -> str:
    """Check an Iranian national code (ten digits, check digit) and return it with ASCII digits."""
    code = to_ascii_digits(_text(value, "national_code")).strip()
    problem = national_code_problem(code)
    if problem:
        raise TransformError(f"national_code: not a valid national code ({problem})")
    return code


FIDA_PREFIX = "FDA"
"""How Tamin is sent a foreign national's FIDA id: ``FDA`` + the id. Documented only for
foreign doctors' ``docNationalCode`` (research s.3.1); for patients it is a guess
(docs/tamin-wire.md), so ``patient_id_for_tamin_bare_fida`` sends the bare id instead."""


@transform("patient_id_for_tamin")
def patient_id_for_tamin(value: Any) -> str:
    """The event's ``patient.identity`` object ``{kind, value}`` to Tamin's ``patient`` field.

    national_code and mother_national_code (newborn: seed 002 s.7 note 3) send the code;
    fida sends ``FDA`` + the id; unidentified sends ``UNKNOWN`` (Tamin's anonymous patient;
    intake refuses it first unless ``destinations.tamin.accepts_unidentified_patients``).
    """
    return _patient_id(value, "patient_id_for_tamin", FIDA_PREFIX)


@transform("patient_id_for_tamin_bare_fida")
def patient_id_for_tamin_bare_fida(value: Any) -> str:
    """As ``patient_id_for_tamin``, but a FIDA id is sent as it is (no ``FDA`` prefix)."""
    return _patient_id(value, "patient_id_for_tamin_bare_fida", "")


def _patient_id(value: Any, name: str, fida_prefix: str) -> str:
    if not isinstance(value, dict) or "kind" not in value:
        raise TransformError(f"{name}: expected the patient.identity object {{kind, value}}")
    kind = value.get("kind")
    if kind == "unidentified":
        return "UNKNOWN"
    if kind not in ("national_code", "mother_national_code", "fida"):
        raise TransformError(f"{name}: unknown identity kind")
    raw = value.get("value")
    if not isinstance(raw, str) or not raw.strip():
        raise TransformError(f"{name}: {kind} identity without a value")
    code = to_ascii_digits(raw).strip()
    if kind == "fida":
        if not _FIDA.match(code):
            raise TransformError(f"{name}: a fida id is 8 to 16 digits")
        return fida_prefix + code
    problem = national_code_problem(code)
    if problem:
        raise TransformError(f"{name}: {kind} is not a valid national code ({problem})")
    return code


def apply_transforms(names: list[str], value: Any) -> Any:
    for name in names:
        value = TRANSFORMS[name](value)
    return value
