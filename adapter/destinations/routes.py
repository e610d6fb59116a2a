"""Building a request from config: fill a route template, summarise a body for the attempt log.

Shared by every JSON destination. The summary holds a size and a hash, never the body: bodies
carry national codes and names."""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import quote


class RouteNotFillable(Exception):
    """A route template needs a value the call does not have (from the mapping or the store):
    a config or mapping fault, not something a retry fixes."""


def fill_route(template: str, values: dict[str, Any]) -> str:
    """``template`` with each ``{name}`` replaced by the URL-quoted value; None values count as missing."""
    try:
        return template.format_map({k: quote(str(v), safe="") for k, v in values.items() if v is not None})
    except (KeyError, ValueError) as exc:
        raise RouteNotFillable(f"route {template!r} needs {exc.args[0]!r}, which the mapping or the store did not "
                               "give this call") from None


def body_summary(body: Any) -> dict[str, Any]:
    if body is None:
        return {}
    raw = json.dumps(body, ensure_ascii=False, sort_keys=True).encode()
    return {"body_bytes": len(raw), "body_sha256": hashlib.sha256(raw).hexdigest()[:16]}
