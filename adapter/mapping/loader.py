"""Read mapping files (YAML) and their code tables into ``Mapping`` objects, collecting every problem."""

from __future__ import annotations

from pathlib import Path
from collections.abc import Iterable, Sequence
from collections.abc import Mapping as Mapping_
from typing import Any

import yaml
from pydantic import ValidationError

from adapter.limits import MAPPING_MAX_BYTES, BoundedSafeLoader, InputLimitError, read_bounded_text, safe_load_yaml
from adapter.mapping.document import MappingDocument
from adapter.mapping.errors import MappingError, MappingProblem
from adapter.mapping.model import Mapping, MappingSet
from adapter.mapping.tables import CodeTable, load_table
from adapter.mapping.template import BoundTable, Compiler

OperationsOf = Mapping_[str, Sequence[str]]
"""destination -> the operations its mappings may name"""

TableCache = dict[tuple[Path, str], tuple[CodeTable | None, list[MappingProblem]]]


class _Loader(BoundedSafeLoader):
    """safe_load (within ``adapter.limits``) that refuses a key repeated in one mapping (YAML
    would silently keep the last)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (first on line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path, display: str) -> tuple[Any, list[MappingProblem]]:
    try:
        text = read_bounded_text(path, MAPPING_MAX_BYTES, "mapping file", display)
    except InputLimitError as exc:
        return None, [MappingProblem(display, exc.where, exc.reason)]
    except FileNotFoundError:
        return None, [MappingProblem(display, "(file)", "mapping file not found")]
    except (OSError, UnicodeDecodeError) as exc:
        reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"cannot read: {exc.strerror or exc}"
        return None, [MappingProblem(display, "(file)", reason)]
    try:
        return safe_load_yaml(text, display, _Loader), []
    except InputLimitError as exc:
        return None, [MappingProblem(display, exc.where, exc.reason)]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        reason = " ".join(p for p in (exc.context, exc.problem) if p)
        return None, [MappingProblem(display, where, f"invalid YAML: {reason}")]
    except yaml.YAMLError as exc:
        return None, [MappingProblem(display, "(yaml)", f"invalid YAML: {exc}")]


def _document_problems(error: ValidationError, display: str) -> list[MappingProblem]:
    problems: list[MappingProblem] = []
    seen: set[tuple[str, str]] = set()
    for item in error.errors(include_url=False):
        loc = [str(p) for p in item["loc"]]
        # drop pydantic's union branch labels such as "literal['error']" or "dict[str,...]"
        loc = [p for p in loc if "[" not in p and "'" not in p]
        key = ".".join(loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            reason = "unknown key"
        elif item["type"] == "missing":
            reason = "required key missing"
        elif key.startswith("tables.") and key.endswith(".default"):
            reason = "must be 'error' or a row of column: value"
        else:
            reason = item["msg"]
        if (key, reason) not in seen:
            seen.add((key, reason))
            problems.append(MappingProblem(display, key, reason))
    return problems


def _bind_tables(document: MappingDocument, base: Path, display: str, cache: TableCache) -> tuple[dict[str, BoundTable], list[MappingProblem]]:
    bound: dict[str, BoundTable] = {}
    problems: list[MappingProblem] = []
    for name, decl in document.tables.items():
        csv_path = base / decl.file
        csv_display = str(Path(display).parent / decl.file)
        if not csv_path.is_file():
            problems.append(MappingProblem(display, f"tables.{name}.file", f"code table file {csv_display} not found"))
            bound[name] = BoundTable(name, decl, csv_display, None)
            continue
        cache_key = (csv_path.resolve(), decl.key)
        if cache_key not in cache:
            cache[cache_key] = load_table(csv_path, decl.key, csv_display)
        table, table_problems = cache[cache_key]
        problems.extend(table_problems)
        if table is None:
            problems.append(MappingProblem(display, f"tables.{name}", f"code table {csv_display} could not be loaded (see its problems)"))
        if table is not None and isinstance(decl.default, dict):
            unknown = [c for c in decl.default if c not in table.columns]
            if unknown:
                problems.append(MappingProblem(display, f"tables.{name}.default",
                                               f"columns not in {csv_display}: {', '.join(unknown)}"))
        bound[name] = BoundTable(name, decl, csv_display, table)
    return bound, problems


def read_mapping(path: Path, display: str | None = None, cache: TableCache | None = None) -> tuple[Mapping | None, list[MappingProblem]]:
    """Load one mapping file; return it (None when unusable) and every problem found."""
    shown = display or str(path)
    raw, problems = read_yaml(path, shown)
    if problems:
        return None, problems
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else f"a {type(raw).__name__}"
        return None, [MappingProblem(shown, "(top level)", f"a mapping file is a YAML mapping (key: value), got {got}")]
    try:
        document = MappingDocument.model_validate(raw)
    except ValidationError as exc:
        return None, _document_problems(exc, shown)
    tables, problems = _bind_tables(document, path.parent, shown, cache if cache is not None else {})
    compiler = Compiler(shown, tables)
    params = {name: compiler.compile(value, f"params.{name}") for name, value in document.params.items()}
    body = compiler.compile(document.body, "body") if document.body is not None else None
    when = compiler.condition(document.when, "when") if document.when is not None else None
    problems.extend(compiler.problems)
    if problems:
        return None, problems
    return Mapping(document, path, shown, tables, params, body, when), []


def load_mapping_file(path: Path) -> Mapping:
    """Load one mapping file (code tables relative to it); raise ``MappingError`` with every problem."""
    mapping, problems = read_mapping(Path(path))
    if problems or mapping is None:
        raise MappingError(problems)
    return mapping


def _destination_dirs(root: Path, destinations: Iterable[str] | None) -> tuple[list[Path], list[MappingProblem]]:
    if not root.is_dir():
        return [], [MappingProblem(str(root), "(folder)", "mappings folder not found")]
    if destinations is None:
        return sorted(d for d in root.iterdir() if d.is_dir() and any(d.glob("*.yaml"))), []
    folders, problems = [], []
    for name in destinations:
        folder = root / name
        if not folder.is_dir():
            problems.append(MappingProblem(str(folder), "(folder)", f"no mapping folder for destination {name!r}"))
        elif not any(folder.glob("*.yaml")):
            problems.append(MappingProblem(str(folder), "(folder)", f"no *.yaml mapping files for destination {name!r}"))
        else:
            folders.append(folder)
    return folders, problems


def read_all(root: Path, destinations: Iterable[str] | None = None, cache: TableCache | None = None,
             operations: OperationsOf | None = None) -> tuple[list[Mapping], list[MappingProblem]]:
    """Every mapping under ``root/<destination>/*.yaml`` and every problem (nothing raised).

    ``operations`` (destination -> the operations it has, from the destination registry) checks
    each mapping's ``operation``; a destination it does not name is not checked."""
    root = Path(root)
    folders, problems = _destination_dirs(root, destinations)
    cache = cache if cache is not None else {}
    mappings: list[Mapping] = []
    for folder in folders:
        names: dict[str, str] = {}
        for path in sorted(folder.glob("*.yaml")):
            mapping, file_problems = read_mapping(path, str(path), cache)
            problems.extend(file_problems)
            if mapping is None:
                continue
            if mapping.destination != folder.name:
                problems.append(MappingProblem(str(path), "destination",
                                               f"{mapping.destination!r} does not match its folder {folder.name!r}"))
                continue
            if mapping.name in names:
                problems.append(MappingProblem(str(path), "mapping", f"name {mapping.name!r} already used by {names[mapping.name]}"))
                continue
            known = (operations or {}).get(mapping.destination)
            if known is not None and mapping.operation not in known:
                problems.append(MappingProblem(str(path), "operation", f"{mapping.operation!r} is not an operation of "
                                               f"{mapping.destination} (known: {', '.join(known)})"))
                continue
            names[mapping.name] = str(path)
            mappings.append(mapping)
    return mappings, problems


def load_mappings(root: Path, destinations: Iterable[str] | None = None,
                  operations: OperationsOf | None = None) -> MappingSet:
    """Load every ``*.yaml`` under ``root/<destination>/`` (all destinations when None).

    Raises ``MappingError`` listing every problem in every file.
    """
    mappings, problems = read_all(root, destinations, operations=operations)
    if problems:
        raise MappingError(problems)
    return MappingSet(mappings)
