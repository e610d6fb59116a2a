"""Loaded mappings: ``Mapping.apply(event) -> MappedPayload``, and ``MappingSet`` to pick them by event type."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapter.mapping.document import MappingDocument
from adapter.mapping.errors import MappingError, MappingProblem
from adapter.mapping.template import OMIT, BoundTable, Condition, Evaluation, Node


@dataclass(frozen=True)
class MappedPayload:
    """What a destination client needs for one call: URL path values (``params``) and the JSON ``body``."""

    mapping: str
    destination: str
    operation: str
    params: dict[str, Any]
    body: Any

    def as_dict(self) -> dict[str, Any]:
        return {"mapping": self.mapping, "destination": self.destination, "operation": self.operation,
                "params": self.params, "body": self.body}


class Mapping:
    """One validated mapping file, ready to apply to event dicts (``event.model_dump(mode="json")``)."""

    def __init__(self, document: MappingDocument, source_file: Path, display: str,
                 tables: dict[str, BoundTable], params: dict[str, Node], body: Node | None,
                 when: Condition | None = None):
        self.document = document
        self.name = document.mapping
        self.version = document.version
        self.destination = document.destination
        self.operation = document.operation
        self.event_types: tuple[str, ...] = tuple(document.event_types)
        self.source_file = source_file
        self.display = display
        self.tables = tables
        self._params = params
        self._body = body
        self._when = when

    def routes(self, event: dict[str, Any]) -> bool:
        """Whether this mapping takes ``event``: its type is listed and the file's ``when`` holds."""
        if event.get("event_type") not in self.event_types:
            return False
        return self._when is None or self._when.holds(event, event)

    def __repr__(self) -> str:
        return f"Mapping({self.name!r}, {self.destination}/{self.operation}, {self.display})"

    def apply(self, event: dict[str, Any]) -> MappedPayload:
        """Map ``event``; raise ``MappingError`` listing every problem (never with patient values)."""
        if not isinstance(event, dict):
            raise MappingError([MappingProblem(self.display, "(event)", f"expected the event as a JSON object, got {type(event).__name__}")])
        event_type = event.get("event_type")
        if event_type not in self.event_types:
            shown = event_type if isinstance(event_type, str) and len(event_type) <= 64 else type(event_type).__name__
            raise MappingError([MappingProblem(self.display, "event_types",
                                               f"this mapping is for {', '.join(self.event_types)}, not {shown}")])
        run = Evaluation(self.display, event)
        params: dict[str, Any] = {}
        for name, node in self._params.items():
            value = run.evaluate(node, f"params.{name}", event, "")
            if value is not OMIT:
                params[name] = value
        body = run.run(self._body, "body") if self._body is not None else None
        if run.problems:
            raise MappingError(run.problems)
        return MappedPayload(self.name, self.destination, self.operation, params, body)


class MappingSet:
    """Every loaded mapping; ``for_event`` picks those for an event type (and destination)."""

    def __init__(self, mappings: list[Mapping]):
        self.mappings = list(mappings)
        self.destinations: set[str] = {m.destination for m in self.mappings}

    def for_event(self, event_type: str, destination: str | None = None) -> list[Mapping]:
        return [m for m in self.mappings
                if event_type in m.event_types and (destination is None or m.destination == destination)]

    def __len__(self) -> int:
        return len(self.mappings)

    def __iter__(self) -> Iterator[Mapping]:
        return iter(self.mappings)
