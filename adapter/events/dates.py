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


# -- sanity window for the dates of clinical events (issue 16 item 13) ------------------------
# A date that reads correctly can still be a typo or the wrong calendar read as the other
# (1329 vs 1950, 2090 for 2009). The contract refuses the dates of clinical events outside:
#
# * before ``CLINICAL_DATE_FLOOR``: no system this adapter sends to (Tamin's e-prescription,
#   SEPAS/DITAS) holds anything older; the envelope's ``occurred_at`` too;
# * a moment (``prescribed_at``, ``admitted_at``, ``dispensed_at``, ... every date-time in a
#   payload) more than ``MOMENT_MAX_DAYS_AHEAD`` after the event's own ``occurred_at`` or now,
#   whichever is later: it has happened when the HIS reports it; the margin covers clock skew
#   and a wrong UTC offset;
# * a planned date (``expires_on``, an item's ``start_on``) more than
#   ``PLANNED_MAX_DAYS_AHEAD`` after ``occurred_at``: repeat prescriptions run for months;
# * ``occurred_at`` more than ``OCCURRED_AT_MAX_DAYS_AHEAD`` after now (the payload's dates are
#   then judged against now).
#
# There is no lower bound relative to now or to ``occurred_at``: an event read again by a
# replay months later, or a bill of a long stay, stays valid. Birth dates have no window.
CLINICAL_DATE_FLOOR = dt.date(2010, 1, 1)
MOMENT_MAX_DAYS_AHEAD = 1
PLANNED_MAX_DAYS_AHEAD = 366
OCCURRED_AT_MAX_DAYS_AHEAD = 1


def window_problem(value: dt.date, reference: dt.datetime | None, days_ahead: int) -> str | None:
    """Why a clinical date (or date-time) is outside its sanity window, or None.

    ``reference`` is the event's ``occurred_at``; None means now. The limit runs from the later
    of the two, so an event stamped early (a bill closed weeks after the visit it is stamped
    with) or read again by a replay months later is not refused, and 2090 still is. A date-only
    value is compared with that moment's calendar day in its own offset."""
    day = value.date() if isinstance(value, dt.datetime) else value
    early = day < CLINICAL_DATE_FLOOR
    if not early:
        now = dt.datetime.now(dt.timezone.utc)
        limit = max(reference, now) if reference is not None else now
        limit += dt.timedelta(days=days_ahead)
        if not (value > limit if isinstance(value, dt.datetime) else value > limit.date()):
            return None  # the common case: no message is built
    anchor = "the event's occurred_at or now, whichever is later" if reference is not None else "now"
    days = f"{days_ahead} day" + ("" if days_ahead == 1 else "s")
    window = f"the window is {CLINICAL_DATE_FLOOR} to {days} after {anchor}"
    return f"before {CLINICAL_DATE_FLOOR} ({window})" if early else f"more than {days} after {anchor} ({window})"


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
