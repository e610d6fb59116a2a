"""Summarise a py-spy ``--format raw --gil`` recording (collapsed stacks, one ``a;b;c count`` a line):
inclusive and self share of the samples per function, and per area (library) of the leaf frame."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
AREAS = (("sqlalchemy", "SQLAlchemy (ORM, core, dialect)"), ("sqlite3", "sqlite3 driver"), ("psycopg", "psycopg"),
         ("httpx", "httpx"), ("httpcore", "httpcore"), ("h11", "h11"), ("kombu", "kombu"), ("amqp", "amqp"),
         ("adapter/broker", "adapter embedded queue"), ("adapter/pipeline", "adapter pipeline"),
         ("adapter/destinations", "adapter destinations"), ("adapter/outage", "adapter outage control"),
         ("adapter/events", "adapter event parsing"), ("adapter/mapping", "adapter mapping"),
         ("adapter/ops", "adapter ops (logs, metrics, status)"), ("adapter/store", "adapter store"),
         ("structlog", "structlog"), ("logging", "logging"), ("pydantic", "pydantic"), ("json", "json"),
         ("prometheus_client", "prometheus_client"), ("jsonschema", "jsonschema"), ("threading", "threading"),
         ("concurrent", "concurrent.futures"), ("socket", "socket"), ("ssl", "ssl"))


def _name(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip(), ""
    path = m.group("file")
    short = path.split("site-packages/")[-1].split("/work/main/")[-1]
    return f"{m.group('func')} ({short})", path


def _area(path: str) -> str:
    for needle, label in AREAS:
        if f"/{needle}" in path or path.startswith(needle):
            return label
    return "other (stdlib, interpreter)"


def summarise(path: Path, top: int = 25) -> dict[str, Any]:
    inclusive: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_name(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        for name in {n for n, _ in frames}:
            inclusive[name] += count
        self_[frames[-1][0]] += count
        # the area is the innermost frame from a known library (so C-level waits count for their caller)
        area = next((a for a in (_area(p) for _, p in reversed(frames)) if not a.startswith("other")),
                    "other (stdlib, interpreter)")
        areas[area] += count

    def pct(c: int) -> float:
        return round(100.0 * c / total, 1) if total else 0.0

    return {"samples": total, "mode": "py-spy record --gil --rate 100 (samples only the thread holding the GIL)",
            "areas_pct": {k: pct(v) for k, v in areas.most_common()},
            "top_inclusive_pct": [{"function": k, "pct": pct(v)} for k, v in inclusive.most_common(top)],
            "top_self_pct": [{"function": k, "pct": pct(v)} for k, v in self_.most_common(top)]}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(summarise(Path(sys.argv[1])), indent=2))
