"""Patient identifiers and secrets out of anything shown or logged.

Two tools: ``redact_text`` for free text (insurer messages, exception strings), which
masks digit runs shaped like national codes and Iranian mobile numbers; and
``redact_tree`` for structures, which masks values under keys known to hold PHI or
secrets, then applies ``redact_text`` to every remaining string.
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
})


# ``key: value`` / ``key=value`` / ``"key": "value"`` in free text (a JSON body or a query string
# inside an exception message, a form post in a traceback): the value is masked.
_TEXT_KEYS = ("national_?code", "patient_?national_?code", "doc_?national_?code", "first_?name", "last_?name",
              "mobile", "doc_?mobile_?no", "phone", "access_token", "refresh_token", "client_secret", "password",
              "passwd", "secret", "token", "authorization", "api_?key")
_KEY_VALUE = re.compile(r"(?i)(?P<key>[\"']?\b(?:" + "|".join(_TEXT_KEYS) + r")\b[\"']?\s*[:=]\s*)"
                        r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s,;&}\]\"']+)")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}")
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """A secret this process holds (client secret, password, status token): masked wherever it
    shows up in text, whatever the key or format around it."""
    if value and len(value) >= 6:
        _secrets.add(value)


def _mask_value(match: re.Match[str]) -> str:
    value = match.group("value")
    quote = value[0] if value[:1] in ("'", '"') else ""
    return match.group("key") + quote + "***" + quote


def redact_text(text: str) -> str:
    text = to_ascii_digits(text)
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
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


def pseudonym(identifier: str, key: bytes) -> str:
    """A stable, keyed, one-way reference for a patient id (groups events without storing it twice)."""
    return hmac.new(key, identifier.encode(), hashlib.sha256).hexdigest()[:32]
