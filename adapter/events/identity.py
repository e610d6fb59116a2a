"""Patient identifiers of seed 002 section 7, and the national-code check digit."""

from __future__ import annotations

import re

from adapter.events.digits import to_ascii_digits

_TEN_DIGITS = re.compile(r"^[0-9]{10}$")


def national_code_problem(raw: str) -> str | None:
    """Why ``raw`` is not a valid Iranian national code, or ``None`` when it is.

    The code has ten digits; the last is a check digit over the first nine with
    weights 10..2, modulo 11 (remainder < 2: the check digit equals the remainder,
    otherwise it equals 11 - remainder). Codes of one repeated digit pass the
    arithmetic but are never issued, so they are refused too.
    """
    code = to_ascii_digits(raw.strip())
    if not _TEN_DIGITS.match(code):
        return "must be exactly 10 digits"
    if len(set(code)) == 1:
        return "a code of one repeated digit is never issued"
    total = sum(int(code[i]) * (10 - i) for i in range(9))
    remainder = total % 11
    expected = remainder if remainder < 2 else 11 - remainder
    if int(code[9]) != expected:
        return "check digit does not match"
    return None


def is_valid_national_code(raw: str) -> bool:
    return national_code_problem(raw) is None


def national_code_check_digit(first_nine: str) -> int:
    """The check digit that completes ``first_nine`` (used by sample generators and tests)."""
    total = sum(int(first_nine[i]) * (10 - i) for i in range(9))
    remainder = total % 11
    return remainder if remainder < 2 else 11 - remainder
