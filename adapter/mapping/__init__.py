"""Declarative mapping engine: HIS event dicts -> destination payloads, driven by YAML files and CSV code tables.

See docs/mapping-guide.md. Typical use::

    mappings = load_mappings(Path("mappings"), ["tamin"])
    for mapping in mappings.for_event(event["event_type"], "tamin"):
        payload = mapping.apply(event)   # MappedPayload(params=..., body=...)
"""

from adapter.mapping.errors import MappingError, MappingProblem
from adapter.mapping.lint import lint
from adapter.mapping.loader import load_mapping_file, load_mappings
from adapter.mapping.model import MappedPayload, Mapping, MappingSet
from adapter.mapping.schema import mapping_json_schema
from adapter.mapping.transforms import TRANSFORMS, TransformError, transform

__all__ = [
    "MappingProblem",
    "MappingError",
    "MappedPayload",
    "Mapping",
    "MappingSet",
    "load_mappings",
    "load_mapping_file",
    "lint",
    "mapping_json_schema",
    "TRANSFORMS",
    "TransformError",
    "transform",
]
