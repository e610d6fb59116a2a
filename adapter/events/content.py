"""Identity of an event's content: what makes a repeat of an event id "the same message".

The event id is the HIS's key, not a proof of sameness (architecture.md). Intake compares the
body of a repeat with what it stored by a **content digest**: an HMAC-SHA256 (under the patient
key, with its own purpose) of the body's canonical JSON -- keys sorted, no insignificant
whitespace, strings as parsed (``"\\u0645"`` and ``"م"`` are the same text). So a body the HIS
re-serialised (another key order, other spacing) is still identical; any difference in a value
(a digit, a date, an item) is a different body. A body that is not JSON, or repeats a key, is
compared by its bytes.

Keyed, not a bare sha256: the digest of a body with a national code and a birth date in it must
not be checkable against guesses by someone who reads the store.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

PURPOSE = b"adapter.events.content\x00"
_NOT_READ = object()


def canonical(document: Any) -> bytes:
    """The document as canonical JSON bytes (sorted keys, compact, UTF-8)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=True).encode("utf-8", "surrogatepass")


def content_digest(body: bytes, document: Any = _NOT_READ, *, key: bytes) -> str:
    """The digest intake stores and compares (64 hex characters). ``document``: the JSON value
    read from ``body`` when it was readable (absent: compare ``body``'s bytes)."""
    data = body if document is _NOT_READ else canonical(document)
    return hmac.new(key, PURPOSE + data, hashlib.sha256).hexdigest()


def stored_body_digest(body: str, *, key: bytes) -> str:
    """The digest of a body stored before digests were kept (its row has none): read as JSON
    when it is, else by its bytes -- the same rule as ``content_digest``."""
    raw = body.encode("utf-8", "surrogatepass")
    try:
        return content_digest(raw, json.loads(body), key=key)
    except (ValueError, RecursionError):
        return content_digest(raw, key=key)
