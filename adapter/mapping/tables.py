"""Code tables: CSV files (UTF-8, header row) that translate HIS codes to destination codes."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from adapter.limits import TABLE_MAX_BYTES, InputLimitError, check_rows, read_bounded_text
from adapter.mapping.errors import MappingProblem


@dataclass(frozen=True)
class CodeTable:
    """A loaded CSV: ``rows`` maps each key-column value to the whole row (column -> text)."""

    file: Path
    key: str
    columns: tuple[str, ...]
    rows: dict[str, dict[str, str]] = field(default_factory=dict)

    def get(self, code: str) -> dict[str, str] | None:
        return self.rows.get(code)


def _rows(text: str, name: str) -> tuple[list[tuple[int, list[str]]] | None, list[MappingProblem]]:
    """The non-blank rows with their line numbers (None when unusable: bad CSV, or more than
    ``TABLE_MAX_ROWS`` rows) and the problem that made them so."""
    reader = csv.reader(io.StringIO(text))
    numbered: list[tuple[int, list[str]]] = []
    try:
        for cells in reader:
            if any(c.strip() for c in cells):
                numbered.append((reader.line_num, cells))
                check_rows(len(numbered) - 1, name)  # the header is not a row
    except csv.Error as exc:
        return None, [MappingProblem(name, f"line {reader.line_num}", f"not valid CSV: {exc}")]
    except InputLimitError as exc:
        return None, [MappingProblem(name, exc.where, exc.reason)]
    return numbered, []


def load_table(path: Path, key: str, display: str | None = None) -> tuple[CodeTable | None, list[MappingProblem]]:
    """Read ``path`` keyed by column ``key``; return the table (None if unusable) and every problem.

    Checked: file readable, header present, no empty or repeated column names, the key
    column exists, every row has as many cells as the header, keys are non-empty and unique.
    Cells are stripped of surrounding spaces; an empty cell means "no value".
    """
    name = display or str(path)
    problems: list[MappingProblem] = []
    try:
        text = read_bounded_text(path, TABLE_MAX_BYTES, "code table", name, encoding="utf-8-sig")
    except InputLimitError as exc:
        return None, [MappingProblem(name, exc.where, exc.reason)]
    except FileNotFoundError:
        return None, [MappingProblem(name, "(file)", "code table file not found")]
    except (OSError, UnicodeDecodeError) as exc:
        reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"cannot read: {exc.strerror or exc}"
        return None, [MappingProblem(name, "(file)", reason)]
    numbered, unusable = _rows(text, name)
    if numbered is None:
        return None, unusable
    if not numbered:
        return None, [MappingProblem(name, "line 1", "empty file: a header row is required")]
    header_line, header = numbered[0]
    columns = tuple(c.strip() for c in header)
    for index, column in enumerate(columns):
        if not column:
            problems.append(MappingProblem(name, f"line {header_line}", f"column {index + 1} of the header has no name"))
        elif column in columns[:index]:
            problems.append(MappingProblem(name, f"line {header_line}", f"column {column!r} appears twice in the header"))
    if key not in columns:
        problems.append(MappingProblem(name, f"line {header_line}", f"key column {key!r} not in the header (columns: {', '.join(columns)})"))
        return None, problems
    key_index = columns.index(key)
    rows: dict[str, dict[str, str]] = {}
    first_seen: dict[str, int] = {}
    for number, cells in numbered[1:]:
        if len(cells) != len(columns):
            problems.append(MappingProblem(name, f"line {number}", f"{len(cells)} cells, the header has {len(columns)}"))
            continue
        row = {column: cell.strip() for column, cell in zip(columns, cells)}
        code = row[key]
        if not code:
            problems.append(MappingProblem(name, f"line {number}", f"empty value in key column {key!r}"))
        elif code in rows:
            problems.append(MappingProblem(name, f"line {number}", f"duplicate key {code!r} in column {key!r} (first on line {first_seen[code]})"))
        else:
            rows[code] = row
            first_seen[code] = number
    return CodeTable(file=path, key=key, columns=columns, rows=rows), problems
