"""``lint(root)``: every problem in every mapping file and code table under the mappings folder."""

from __future__ import annotations

from pathlib import Path

from adapter.mapping.errors import MappingProblem
from adapter.mapping.loader import OperationsOf, TableCache, read_all
from adapter.mapping.tables import load_table


def _known_event_types() -> tuple[str, ...] | None:
    try:  # lint knows the event contract; the engine itself does not depend on it
        from adapter.events.contract import EVENT_TYPES
    except ImportError:  # pragma: no cover
        return None
    return EVENT_TYPES


def lint(root: Path, operations: OperationsOf | None = None) -> list[MappingProblem]:
    """All problems, in file order, without stopping at the first; an empty list means clean.
    ``operations``: destination -> its operations (the registry's), to check each mapping's."""
    root = Path(root)
    cache: TableCache = {}
    mappings, problems = read_all(root, None, cache, operations)
    if not root.is_dir():
        return problems
    known = _known_event_types()
    for mapping in mappings:
        for index, event_type in enumerate(mapping.event_types):
            if known is not None and event_type not in known:
                problems.append(MappingProblem(mapping.display, f"event_types[{index}]",
                                               f"{event_type!r} is not an event type of the contract (known: {', '.join(known)})"))
    for stray in sorted(root.rglob("*.yml")):
        problems.append(MappingProblem(str(stray), "(file)", "ignored: mapping files must end in .yaml"))
    used = {path for path, _ in cache}
    for csv_path in sorted(root.rglob("*.csv")):
        if csv_path.resolve() in used:
            continue
        with csv_path.open(encoding="utf-8-sig", errors="replace") as handle:
            first_column = handle.readline(4096).split(",")[0].strip()  # a header, not a whole file
        _, table_problems = load_table(csv_path, first_column or "(first column)", str(csv_path))
        problems.extend(table_problems)
    unique: list[MappingProblem] = []
    for problem in problems:
        if problem not in unique:
            unique.append(problem)
    return unique
