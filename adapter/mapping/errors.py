"""Problems found in a mapping: always the file, the key inside it, and the reason.

Reasons never carry patient data: event values are named by their path only. The one
exception is an HIS code that was looked up in a code table (item, dose and kind codes
are not patient data), which is shown so the integrator can add it to the table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MappingProblem:
    """One problem: ``file`` (mapping file or code table), ``key`` (where inside it), ``reason``."""

    file: str
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.reason}"


class MappingError(Exception):
    """A mapping could not be loaded or applied; ``problems`` lists every reason found."""

    def __init__(self, problems: list[MappingProblem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "mapping error")
