"""Dotted event paths: ``payload.patient.mobile``, ``payload.items.0.code``, ``$root.payload.kind``, ``.``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ROOT = "$root"


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class EventPath:
    """A parsed path. ``from_root``: starts at the event root even inside ``$each``."""

    text: str
    from_root: bool
    segments: tuple[str, ...]

    def resolve(self, root: Any, current: Any) -> Any:
        """The value at this path, or ``MISSING`` (a null counts as present here; callers decide)."""
        value = root if self.from_root else current
        for segment in self.segments:
            if isinstance(value, dict):
                if segment not in value:
                    return MISSING
                value = value[segment]
            elif isinstance(value, list) and segment.isdigit():
                index = int(segment)
                if index >= len(value):
                    return MISSING
                value = value[index]
            else:
                return MISSING
        return value

    def describe(self, location: str) -> str:
        """The path as an event location, e.g. ``payload.items[0].dose`` (for messages)."""
        base = "" if self.from_root else location
        parts = [base] if base else []
        for segment in self.segments:
            if segment.isdigit():
                parts[-1:] = [f"{parts[-1] if parts else ''}[{segment}]"]
            else:
                parts.append(segment)
        return ".".join(parts) or "(the event)"


def parse_path(text: str) -> tuple[EventPath | None, str | None]:
    """Parse ``text``; return the path, or ``None`` and the reason it is not a valid path."""
    stripped = text.strip()
    if stripped in (".", ""):
        return (EventPath(text, False, ()), None) if stripped == "." else (None, "empty path")
    segments = stripped.split(".")
    from_root = segments[0] == ROOT
    if from_root:
        segments = segments[1:]
    if any(not s.strip() or s != s.strip() for s in segments):
        return None, f"path {text!r} has an empty segment or spaces around a dot"
    if any(s.startswith("$") for s in segments):
        return None, f"path {text!r}: only the first segment may be {ROOT}"
    return EventPath(text, from_root, tuple(segments)), None
