"""How much the adapter reads from any one input, and the readers that hold to it.

Every file the adapter reads (config, mapping files, code and terminology tables, key and
secret files) and every message it consumes is read through this module, so a file that is
too big, a YAML "billion laughs" or a JSON nested a thousand levels deep is refused in bounded
time and memory with one line naming the file, the limit and the fix, instead of using up the
CPU or the memory of the machine. The limits are generous: real inputs are far below them.

Callers turn ``InputLimitError`` into their own report (``ConfigError``, ``MappingProblem``,
an ``invalid`` event); its text never holds the file's content, only its name and sizes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CONFIG_MAX_BYTES = 1 << 20
"""The config YAML file: 1 MB."""
MAPPING_MAX_BYTES = 2 << 20
"""One mapping file (YAML), also the SEPAS terminology manifest: 2 MB."""
TABLE_MAX_BYTES = 50 << 20
"""One code table or terminology table (CSV): 50 MB."""
TABLE_MAX_ROWS = 1_000_000
"""Rows of one code table or terminology table."""
KEY_FILE_MAX_BYTES = 4096
"""A key or secret file (Fernet key, patient key, password, client secret, public key): 4 KB."""
YAML_MAX_ALIASES = 100
"""Alias uses (``*name``) in one YAML document."""
YAML_MAX_NODES = 1_000_000
"""Nodes of one YAML document once its aliases are expanded (what a reader would walk)."""
MAX_NESTING_DEPTH = 64
"""Levels of nested mappings/sequences (YAML) or objects/arrays (JSON)."""
MESSAGE_MAX_BYTES = 1_000_000
"""One message body from the broker (the intake's limit since contract v1)."""


class InputLimitError(ValueError):
    """An input is beyond a limit: ``file`` (as shown), ``where`` inside it, ``problem`` and ``fix``."""

    def __init__(self, file: str, problem: str, fix: str, where: str = "(file)"):
        self.file, self.problem, self.fix, self.where = file, problem, fix, where
        super().__init__(f"{file}: {problem} -- fix: {fix}")

    @property
    def reason(self) -> str:
        """The problem and the fix without the file name (for reports that name the file apart)."""
        return f"{self.problem} -- fix: {self.fix}"


def _size(limit: int) -> str:
    if limit >= 1 << 20 and limit % (1 << 20) == 0:
        return f"{limit >> 20} MB"
    if limit >= 1024 and limit % 1024 == 0:
        return f"{limit >> 10} KB"
    return f"{limit} bytes"


def read_bounded_bytes(path: Path, max_bytes: int, what: str, shown: str | None = None) -> bytes:
    """At most ``max_bytes`` of ``path``; ``InputLimitError`` when it holds more. Reads one byte
    beyond the limit, never the whole file, so ``/dev/zero`` or a growing file is refused too.
    ``OSError`` (missing, unreadable) is left to the caller, which knows what to say."""
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InputLimitError(shown or str(path), f"larger than the {_size(max_bytes)} limit of a {what}",
                              f"make the {what} smaller (or split it); it should be far below the limit")
    return data


def read_bounded_text(path: Path, max_bytes: int, what: str, shown: str | None = None,
                      encoding: str = "utf-8") -> str:
    """``read_bounded_bytes`` decoded; ``UnicodeDecodeError`` is left to the caller."""
    return read_bounded_bytes(path, max_bytes, what, shown).decode(encoding)


def check_rows(count: int, file: str, what: str = "code table") -> None:
    """Refuse a table once it has more than ``TABLE_MAX_ROWS`` rows (call it as rows are read)."""
    if count > TABLE_MAX_ROWS:
        raise InputLimitError(file, f"more than {TABLE_MAX_ROWS:,} rows, the limit of a {what}",
                              f"split the {what} or remove rows that are not used", f"line {count}")


class BoundedSafeLoader(yaml.SafeLoader):
    """A ``SafeLoader`` that counts alias uses and nesting while it composes, then refuses a
    document whose aliases would expand beyond ``YAML_MAX_NODES`` -- before anything is built, so
    a "billion laughs" costs a few hundred nodes of work. ``shown`` names the file in errors."""

    shown = "<yaml>"

    def __init__(self, stream: str | bytes):
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def _limit(self, problem: str, fix: str) -> InputLimitError:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        return InputLimitError(self.shown, problem, fix, f"line {mark.line + 1}, column {mark.column + 1}")

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > YAML_MAX_ALIASES:
                raise self._limit(f"more than {YAML_MAX_ALIASES} alias uses (*name)",
                                  "write the values out instead of repeating them through aliases")
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_NESTING_DEPTH:
                raise self._limit(f"nested deeper than {MAX_NESTING_DEPTH} levels",
                                  "flatten the structure")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _Expansion(self.shown).measure(node, 1)
        return self.construct_document(node)


class _Expansion:
    """Size and depth of a composed YAML graph as if every alias were copied out (memoised per
    node, so shared nodes cost once); an alias to its own ancestor is refused."""

    def __init__(self, shown: str):
        self.shown = shown
        self.known: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, height)
        self.open: set[int] = set()

    def measure(self, node: yaml.Node, depth: int) -> tuple[int, int]:
        if id(node) in self.open:
            raise InputLimitError(self.shown, "an alias refers to a node that contains it",
                                  "remove the alias from inside its own anchor")
        nodes, height = self.known.get(id(node)) or self._walk(node, depth)
        if depth + height - 1 > MAX_NESTING_DEPTH:
            raise InputLimitError(self.shown, f"nested deeper than {MAX_NESTING_DEPTH} levels once its aliases "
                                  "are expanded", "flatten the structure or write the aliased values out")
        return nodes, height

    def _walk(self, node: yaml.Node, depth: int) -> tuple[int, int]:
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        self.open.add(id(node))
        nodes, height = 1, 1
        for child in children:
            child_nodes, child_height = self.measure(child, depth + 1)
            nodes, height = nodes + child_nodes, max(height, child_height + 1)
            if nodes > YAML_MAX_NODES:
                raise InputLimitError(self.shown, f"more than {YAML_MAX_NODES:,} values once its aliases are "
                                      "expanded (an alias bomb?)", "write the values out instead of nesting aliases")
        self.open.discard(id(node))
        self.known[id(node)] = (nodes, height)
        return nodes, height


def bounded_loader(shown: str, base: type[BoundedSafeLoader] = BoundedSafeLoader) -> type[BoundedSafeLoader]:
    """A loader class naming ``shown`` in its errors (``base`` lets a caller add constructors)."""
    return type("BoundedLoader", (base,), {"shown": shown})


def safe_load_yaml(text: str | bytes, shown: str, base: type[BoundedSafeLoader] = BoundedSafeLoader) -> Any:
    """``yaml.safe_load`` within the alias, size and depth limits; ``InputLimitError`` beyond them,
    ``yaml.YAMLError`` for bad syntax as before."""
    return yaml.load(text, Loader=bounded_loader(shown, base))  # noqa: S506 - a SafeLoader subclass


def json_depth_problem(document: Any) -> str | None:
    """Where ``document`` (parsed JSON) first goes deeper than ``MAX_NESTING_DEPTH`` levels of
    objects and arrays, as a dotted path of its keys; None when it does not. Iterative, so the
    check itself can not run out of stack."""
    stack: list[tuple[Any, int, tuple[str, ...]]] = [(document, 1, ())]
    while stack:
        node, depth, path = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        if depth > MAX_NESTING_DEPTH:
            return ".".join(path) or "$"
        items = node.items() if isinstance(node, dict) else enumerate(node)
        stack.extend((value, depth + 1, path + (str(key),)) for key, value in items)
    return None

