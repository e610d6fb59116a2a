"""JSON Schema of a mapping file, generated from the pydantic models (for editors: docs/mapping-schema.json)."""

from __future__ import annotations

from typing import Any

from adapter.mapping.document import TEMPLATE_MARK, MappingDocument, ValueSpec

_REF = {"$ref": "#/$defs/Template"}


def _link_templates(node: Any) -> Any:
    """Replace the template markers pydantic emitted with a $ref to the recursive Template definition."""
    if isinstance(node, dict):
        if node.get(TEMPLATE_MARK) is True:
            rest = {k: v for k, v in node.items() if k != TEMPLATE_MARK}
            return {**_REF, **rest}
        return {k: _link_templates(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_link_templates(v) for v in node]
    return node


def mapping_json_schema() -> dict[str, Any]:
    document = MappingDocument.model_json_schema(ref_template="#/$defs/{model}")
    spec = ValueSpec.model_json_schema(ref_template="#/$defs/{model}")
    defs: dict[str, Any] = {**document.pop("$defs", {}), **spec.pop("$defs", {})}
    spec["minProperties"] = 1
    defs["ValueSpec"] = spec
    defs["Template"] = {
        "description": "Output template: literal JSON, or a value spec (a mapping whose keys all start with $).",
        "anyOf": [
            {"$ref": "#/$defs/ValueSpec"},
            {"type": "object", "propertyNames": {"not": {"pattern": "^\\$"}}, "additionalProperties": _REF},
            {"type": "array", "items": _REF},
            {"type": ["string", "number", "integer", "boolean", "null"]},
        ],
    }
    return _link_templates({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **document,
        "$defs": dict(sorted(defs.items())),
    })
