"""Bodies of ``adapter mapping test <file> <event.json>`` and ``adapter mapping lint`` (no DB, no broker).

Each returns ``(exit code, text to print)``: 0 success, 1 problems found, 2 a file cannot be read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adapter.mapping.errors import MappingError
from adapter.mapping.lint import lint
from adapter.mapping.loader import OperationsOf, read_mapping


def mapping_test(mapping_file: Path, event_file: Path) -> tuple[int, str]:
    """Validate the event against contract v1, apply one mapping file to it, show the payload or every problem."""
    from adapter.events.parse import EventRejected, parse_event

    mapping_file, event_file = Path(mapping_file), Path(event_file)
    if not mapping_file.is_file():
        return 2, f"{mapping_file}: mapping file not found"
    try:
        raw = event_file.read_bytes()
    except OSError as exc:
        return 2, f"{event_file}: cannot read: {exc.strerror or exc}"
    mapping, problems = read_mapping(mapping_file)
    lines = [str(p) for p in problems]
    event: dict[str, Any] | None = None
    try:
        event = parse_event(raw).model_dump(mode="json")
    except EventRejected as exc:
        lines.extend(f"{event_file}: {problem} (event contract v1)" for problem in exc.problems)
    if mapping is not None and event is not None:
        try:
            payload = mapping.apply(event)
        except MappingError as exc:
            lines.extend(str(p) for p in exc.problems)
        else:
            return 0, json.dumps(payload.as_dict(), ensure_ascii=False, indent=2)
    return 1, "\n".join(lines)


def mapping_lint(root: Path, operations: OperationsOf | None = None) -> tuple[int, str]:
    """Lint every mapping file and code table under ``root`` (the mappings folder); ``operations``
    (destination -> its operations) checks each mapping's operation."""
    root = Path(root)
    problems = lint(root, operations)
    if problems:
        count = len(problems)
        return 1, "\n".join([*(str(p) for p in problems), f"{count} problem{'s' if count != 1 else ''}"])
    files = sorted(root.rglob("*.yaml"))
    tables = sorted(root.rglob("*.csv"))
    return 0, f"{root}: {len(files)} mapping files, {len(tables)} code tables, no problems"
