"""The mapping file as data: pydantic models for the YAML document and for value specs.

A mapping file is validated in two steps: ``MappingDocument`` checks the top level
(unknown keys are errors), then ``template.compile_template`` walks ``params`` and
``body`` and validates each value spec with ``ValueSpec``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

# replaced by a $ref to the recursive Template definition in schema.mapping_json_schema()
TEMPLATE_MARK = "x-mapping-template"
TemplateField = Annotated[Any, WithJsonSchema({TEMPLATE_MARK: True})]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=False)


class TableDecl(_Strict):
    """A code table: a CSV file (relative to the mapping file), its key column, and what an unknown code gives."""

    file: Annotated[str, Field(min_length=1, description="CSV path relative to the mapping file")]
    key: Annotated[str, Field(min_length=1, description="the column holding the HIS code")]
    default: Annotated[
        Literal["error"] | dict[str, str | int | None],
        Field(description="'error': an unknown code is a mapping error; or a row (column -> value) used for unknown codes"),
    ] = "error"


class Condition(_Strict):
    """``$when``: emit the value only when the value at ``path`` equals ``equals`` or is one of ``in``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    path: Annotated[str, Field(min_length=1, description="dotted event path (relative inside $each; $root. for the event root)")]
    equals: Any = None
    in_: Annotated[list[Any] | None, Field(alias="in")] = None


class ValueSpec(_Strict):
    """A dict whose keys start with ``$``: computes one output value from the event."""

    model_config = ConfigDict(extra="forbid", populate_by_name=False, title="ValueSpec")

    path: Annotated[str | None, Field(alias="$path", min_length=1, description="dotted path into the event")] = None
    const: Annotated[Any, Field(alias="$const", description="a constant value")] = None
    table: Annotated[str | None, Field(alias="$table", description="code table name (see tables)")] = None
    column: Annotated[str | None, Field(alias="$column", description="column of the code table to output")] = None
    transform: Annotated[str | list[str] | None, Field(alias="$transform", description="transform name or list of names, applied in order")] = None
    optional: Annotated[bool, Field(alias="$optional", description="omit the key when the value is missing or null")] = False
    default: Annotated[Any, Field(alias="$default", description="output used as-is when the value is missing or null")] = None
    when: Annotated[Condition | None, Field(alias="$when", description="emit only when the condition holds")] = None
    each: Annotated[str | None, Field(alias="$each", min_length=1, description="path to a list; $item is applied to each element")] = None
    item: Annotated[TemplateField, Field(alias="$item", description="template for each element of $each")] = None


class MappingDocument(_Strict):
    """One mapping file: which events it maps, for which destination call, and how."""

    model_config = ConfigDict(extra="forbid", title="Mapping file")

    mapping: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="mapping name, unique per destination")]
    version: Annotated[int | str, Field(description="version of this mapping file, chosen by its author")]
    destination: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]*$", description="destination name, e.g. tamin")]
    operation: Annotated[str, Field(pattern=r"^[a-z][a-z_]*$", description=(
        "the destination call this mapping feeds: one of the operations its destination's plugin names "
        "(tamin: eligibility, create, update, cancel; tamin_paraclinic: create, confirm; ...)"))]
    event_types: Annotated[list[Annotated[str, Field(pattern=r"^[a-z_]+(\.[a-z_]+)+$")]], Field(min_length=1, description="event types this mapping applies to")]
    description: str | None = None
    when: Annotated[Condition | None, Field(
        description="route only events for which this holds (path from the event root), e.g. one prescription kind")] = None
    tables: dict[str, TableDecl] = Field(default_factory=dict)
    params: Annotated[dict[str, TemplateField], Field(description="values the HTTP client puts into the URL path")] = Field(default_factory=dict)
    body: Annotated[TemplateField, Field(description="JSON body template; absent or null for calls without a body")] = None
