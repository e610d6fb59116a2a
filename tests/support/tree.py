"""Walking a JSON event as nested dicts and lists: every leaf's path, and reading or writing one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Path_ = tuple[Any, ...]


def leaves(node: Any, path: Path_ = ()) -> Iterator[Path_]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from leaves(value, path + (index,))
    else:
        yield path


def get(node: Any, path: Path_) -> Any:
    for part in path:
        node = node[part]
    return node


def put(node: Any, path: Path_, value: Any) -> None:
    get(node, path[:-1])[path[-1]] = value
