"""Templates: compile the YAML ``params``/``body`` into nodes (collecting problems), then evaluate.

Plain scalars, lists and dicts are literal output. A dict whose keys start with ``$``
is a value spec (see ``document.ValueSpec``). Evaluation never puts an event value
into a problem's text, only its path (table codes excepted, see ``errors``).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Union

from pydantic import ValidationError

from adapter.mapping.document import TableDecl, ValueSpec
from adapter.mapping.errors import MappingProblem
from adapter.mapping.paths import MISSING, EventPath, parse_path
from adapter.mapping.tables import CodeTable
from adapter.mapping.transforms import TRANSFORMS, TransformError

SPEC_KEYS = tuple(f.alias for f in ValueSpec.model_fields.values() if f.alias)


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


OMIT: Any = _Omit()  # "leave this key / element out"

# a code looked up from these parts of the event, or shaped like a national code or phone
# number, is not shown in messages: it could identify a person
_PERSONAL_PATH = re.compile(r"(^|\.)(patient|prescriber|attending|identity)(\.|\[|$)")
_PERSONAL_SHAPE = re.compile(r"^\+?\d{10,14}$")


def shown_code(code: str, where: str) -> str:
    """The code as it may appear in a message (HIS item codes are not patient data)."""
    if _PERSONAL_PATH.search(where) or _PERSONAL_SHAPE.match(code):
        return "(not shown: may identify a person)"
    return repr(code if len(code) <= 64 else code[:64] + "...")


@dataclass(frozen=True)
class BoundTable:
    """A table declared in the mapping file, with its CSV loaded (``table`` None when it failed to load)."""

    name: str
    decl: TableDecl
    display: str  # the CSV path as shown in messages
    table: CodeTable | None


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class DictNode:
    items: tuple[tuple[str, "Node"], ...]


@dataclass(frozen=True)
class ListNode:
    items: tuple["Node", ...]


@dataclass(frozen=True)
class Condition:
    path: EventPath
    equals: Any = MISSING
    one_of: tuple[Any, ...] | None = None

    def holds(self, root: Any, current: Any) -> bool:
        value = self.path.resolve(root, current)
        if value is MISSING:
            value = None
        if self.one_of is not None:
            return value in self.one_of
        return bool(value == self.equals)


@dataclass(frozen=True)
class SpecNode:
    path: EventPath | None = None
    has_const: bool = False
    const: Any = None
    table: BoundTable | None = None
    column: str | None = None
    transforms: tuple[str, ...] = ()
    optional: bool = False
    has_default: bool = False
    default: Any = None
    when: Condition | None = None
    each: EventPath | None = None
    item: "Node | None" = None


Node = Union[Literal, DictNode, ListNode, SpecNode]


# ---------------------------------------------------------------- compile


@dataclass
class Compiler:
    file: str
    tables: dict[str, BoundTable]
    problems: list[MappingProblem] = field(default_factory=list)

    def problem(self, key: str, reason: str) -> None:
        self.problems.append(MappingProblem(self.file, key, reason))

    def condition(self, when: Any, key: str) -> Condition | None:
        """Compile a ``{path, equals | in}`` condition (a ``$when``, or a mapping's top-level ``when``)."""
        given = when.model_fields_set
        if ("equals" in given) == ("in_" in given):
            self.problem(key, "needs exactly one of equals, in")
        path = self._path(when.path, f"{key}.path")
        if path is None:
            return None
        return Condition(path, when.equals if "equals" in given else MISSING,
                         tuple(when.in_) if when.in_ is not None else None)

    def compile(self, raw: Any, key: str) -> Node:
        if isinstance(raw, dict):
            spec_keys = [k for k in raw if isinstance(k, str) and k.startswith("$")]
            if spec_keys:
                plain = [str(k) for k in raw if k not in spec_keys]
                if plain:
                    self.problem(key, f"mixes $-keys ({', '.join(spec_keys)}) with plain keys ({', '.join(plain)}); "
                                      "a value spec has only $-keys")
                    return Literal(None)
                return self._spec(raw, key)
            items: list[tuple[str, Node]] = []
            for name, value in raw.items():
                if not isinstance(name, str):
                    self.problem(f"{key}.{name}", f"output keys must be text, got {type(name).__name__} (quote it)")
                    continue
                items.append((name, self.compile(value, f"{key}.{name}")))
            return DictNode(tuple(items))
        if isinstance(raw, list):
            return ListNode(tuple(self.compile(value, f"{key}[{i}]") for i, value in enumerate(raw)))
        if raw is None or isinstance(raw, (str, int, float, bool)):
            return Literal(raw)
        self.problem(key, f"{type(raw).__name__} is not a JSON value (dates must be quoted text)")
        return Literal(None)

    def _path(self, text: str, key: str) -> EventPath | None:
        path, reason = parse_path(text)
        if reason:
            self.problem(key, reason)
        return path

    def _spec(self, raw: dict[str, Any], key: str) -> Node:
        try:
            spec = ValueSpec.model_validate(raw)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                loc = [str(p) for p in error["loc"]]
                if error["type"] == "extra_forbidden" and len(loc) == 1:
                    self.problem(key, f"unknown key {loc[0]!r} in a value spec (known: {', '.join(SPEC_KEYS)})")
                elif error["type"] == "extra_forbidden":
                    self.problem(f"{key}.{'.'.join(loc)}", "unknown key")
                else:
                    self.problem(f"{key}.{'.'.join(loc)}", error["msg"])
            return Literal(None)
        given = spec.model_fields_set
        before = len(self.problems)
        sources = [alias for name, alias in (("path", "$path"), ("const", "$const"), ("each", "$each")) if name in given]
        if len(sources) != 1:
            self.problem(key, "a value spec needs exactly one of $path, $const, $each"
                              + (f" (has {', '.join(sources)})" if sources else ""))
        if ("each" in given) != ("item" in given):
            self.problem(key, "$each and $item go together")
        if ("table" in given) != ("column" in given):
            self.problem(key, "$table and $column go together")
        if "each" in given and ("table" in given or "transform" in given):
            self.problem(key, "$each takes no $table or $transform (put them inside $item)")
        if "optional" in given and "default" in given:
            self.problem(key, "$optional and $default together: $default already covers a missing value")
        bound: BoundTable | None = None
        if spec.table is not None:
            bound = self.tables.get(spec.table)
            if bound is None:
                declared = ", ".join(self.tables) or "none"
                self.problem(key, f"unknown code table {spec.table!r} (declared in tables: {declared})")
            elif bound.table is not None and spec.column is not None and spec.column not in bound.table.columns:
                self.problem(key, f"code table {spec.table!r} ({bound.display}) has no column {spec.column!r} "
                                  f"(columns: {', '.join(bound.table.columns)})")
        names = [spec.transform] if isinstance(spec.transform, str) else list(spec.transform or [])
        for name in names:
            if name not in TRANSFORMS:
                self.problem(key, f"unknown transform {name!r} (known: {', '.join(sorted(TRANSFORMS))})")
        path = self._path(spec.path, f"{key}.$path") if spec.path is not None else None
        each = self._path(spec.each, f"{key}.$each") if spec.each is not None else None
        condition = self.condition(spec.when, f"{key}.$when") if spec.when is not None else None
        item = self.compile(spec.item, f"{key}[*]") if "item" in given else None
        if len(self.problems) > before:
            return Literal(None)
        return SpecNode(path=path, has_const="const" in given, const=spec.const, table=bound, column=spec.column,
                        transforms=tuple(names), optional=spec.optional, has_default="default" in given,
                        default=spec.default, when=condition, each=each, item=item)


# ---------------------------------------------------------------- evaluate


@dataclass
class Evaluation:
    """State of one ``apply``: the event, the file for messages, and the problems found so far."""

    file: str
    root: Any
    problems: list[MappingProblem] = field(default_factory=list)
    _unmapped: set[tuple[str, str]] = field(default_factory=set)  # (table, event path) already reported

    def problem(self, key: str, reason: str) -> Any:
        self.problems.append(MappingProblem(self.file, key, reason))
        return OMIT

    def run(self, node: Node, key: str, top: bool = True) -> Any:
        """Evaluate ``node`` against the event root; OMIT at the top becomes None (or {} for a dict)."""
        value = self.evaluate(node, key, self.root, "", top=top)
        if value is OMIT:
            return {} if isinstance(node, DictNode) else None
        return value

    def evaluate(self, node: Node, key: str, current: Any, location: str, top: bool = False) -> Any:
        if isinstance(node, Literal):
            return copy.deepcopy(node.value)  # callers may change the payload; the template must not change
        if isinstance(node, ListNode):
            values = [self.evaluate(child, f"{key}[{i}]", current, location) for i, child in enumerate(node.items)]
            return [v for v in values if v is not OMIT]
        if isinstance(node, DictNode):
            out = {}
            for name, child in node.items:
                value = self.evaluate(child, f"{key}.{name}", current, location)
                if value is not OMIT:
                    out[name] = value
            # a nested object whose every key was left out is left out too
            return OMIT if node.items and not out and not top else out
        return self._spec(node, key, current, location)

    def _missing(self, spec: SpecNode, key: str, what: str) -> Any:
        if spec.has_default:
            return copy.deepcopy(spec.default)
        if spec.optional:
            return OMIT
        return self.problem(key, f"required value missing: {what}")

    def _spec(self, spec: SpecNode, key: str, current: Any, location: str) -> Any:
        if spec.when is not None and not spec.when.holds(self.root, current):
            return OMIT
        if spec.each is not None:
            return self._each(spec, key, current, location)
        if spec.has_const:
            value, where = copy.deepcopy(spec.const), "$const"
        else:
            assert spec.path is not None
            value, where = spec.path.resolve(self.root, current), spec.path.describe(location)
        if value is MISSING or value is None:
            return self._missing(spec, key, f"event path {where} is absent or null")
        if spec.table is not None:
            value = self._lookup(spec, key, value, where)
            if value is OMIT or value is MISSING:
                return value if value is OMIT else self._missing(
                    spec, key, f"code table {spec.table.name!r} ({spec.table.display}) has no value in column {spec.column!r} for this code")
        for name in spec.transforms:
            try:
                value = TRANSFORMS[name](value)
            except TransformError as exc:
                return self.problem(key, f"{exc} (event path {where})")
            except Exception as exc:  # a transform bug: never show its message, it may hold the value
                return self.problem(key, f"transform {name!r} failed with {type(exc).__name__} (event path {where})")
        return value

    def _lookup(self, spec: SpecNode, key: str, value: Any, where: str) -> Any:
        bound = spec.table
        assert bound is not None and spec.column is not None
        if isinstance(value, (dict, list)):
            return self.problem(key, f"a code table key must be a single value, event path {where} holds a {type(value).__name__}")
        if bound.table is None:
            return self.problem(key, f"code table {bound.name!r} ({bound.display}) could not be loaded")
        code = str(value).lower() if isinstance(value, bool) else str(value)
        row: dict[str, Any] | None = bound.table.get(code)
        if row is None:
            default = bound.decl.default
            if default == "error":
                if (bound.name, where) in self._unmapped:  # one problem per code, not one per column used
                    return OMIT
                self._unmapped.add((bound.name, where))
                return self.problem(key, f"code {shown_code(code, where)} (event path {where}) is not in code table {bound.name!r} "
                                         f"({bound.display}, key column {bound.decl.key!r}) and the table's default is error")
            row = default
        cell = row.get(spec.column)
        return MISSING if cell is None or cell == "" else cell

    def _each(self, spec: SpecNode, key: str, current: Any, location: str) -> Any:
        assert spec.each is not None and spec.item is not None
        items = spec.each.resolve(self.root, current)
        where = spec.each.describe(location)
        if items is MISSING or items is None:
            return self._missing(spec, key, f"event path {where} is absent or null")
        if not isinstance(items, list):
            return self.problem(key, f"$each needs a list, event path {where} holds a {type(items).__name__}")
        out = []
        for index, element in enumerate(items):
            value = self.evaluate(spec.item, f"{key}[{index}]", element, f"{where}[{index}]")
            if value is not OMIT:
                out.append(value)
        return out
