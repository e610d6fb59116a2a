"""Dates in either calendar, converted and validated, never guessed.

Accepted spellings (Persian/Arabic digits allowed):

* Gregorian: ``YYYY-MM-DD`` (ISO 8601), year 1800..2199.
* Solar Hijri (Jalali): ``YYYY/MM/DD`` or ``YYYYMMDD``, year 1200..1599.

The two year ranges cannot overlap, so the calendar is read from the text, not guessed;
anything else (a Jalali year written with dashes, a two-digit year, 1403/12/30 in a
non-leap year) is refused with the reason. Conversion uses ``jdatetime``.
"""

from __future__ import annotations

import datetime as dt
import re

import jdatetime

from adapter.events.digits import to_ascii_digits

_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_JALALI_SLASH = re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})$")
_JALALI_COMPACT = re.compile(r"^(\d{4})(\d{2})(\d{2})$")


class DateProblem(ValueError):
    """A date that cannot be read without guessing."""


def parse_date(raw: str) -> dt.date:
    """Read a Gregorian or Solar Hijri date and return it as a Gregorian ``date``."""
    text = to_ascii_digits(raw.strip())
    iso = _ISO.match(text)
    if iso:
        year, month, day = (int(g) for g in iso.groups())
        if not 1800 <= year <= 2199:
            raise DateProblem("a YYYY-MM-DD date must be Gregorian (year 1800-2199)")
        try:
            return dt.date(year, month, day)
        except ValueError as exc:
            raise DateProblem(f"no such Gregorian date: {exc}") from None
    jalali = _JALALI_SLASH.match(text) or _JALALI_COMPACT.match(text)
    if jalali:
        year, month, day = (int(g) for g in jalali.groups())
        if not 1200 <= year <= 1599:
            raise DateProblem("a YYYY/MM/DD or YYYYMMDD date must be Solar Hijri (year 1200-1599)")
        try:
            return jdatetime.date(year, month, day).togregorian()
        except ValueError as exc:
            raise DateProblem(f"no such Solar Hijri date: {exc}") from None
    raise DateProblem("expected YYYY-MM-DD (Gregorian) or YYYY/MM/DD, YYYYMMDD (Solar Hijri)")


def to_jalali_compact(day: dt.date) -> str:
    """Gregorian date to the 8-digit Solar Hijri form Tamin uses (``14030512``)."""
    return jdatetime.date.fromgregorian(date=day).strftime("%Y%m%d")


def to_jalali_slash(day: dt.date) -> str:
    return jdatetime.date.fromgregorian(date=day).strftime("%Y/%m/%d")
