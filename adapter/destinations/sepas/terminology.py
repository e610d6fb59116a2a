"""Local terminology checks before anything is sent (seed 004; shared/domain.md).

Code tables live under ``mappings/sepas/terminology/``: one CSV per terminology
(``code,label``), named in ``terminology.yaml`` with its version, plus the **rules**: which
terminology is checked in which message and field, from which date (Solar Hijri in the
seed, converted with ``adapter.events.dates.parse_date``). A rule is enforced from its date
on (the date of sending, Tehran); ``from: null`` means always. Config may override a rule's
date by its id (``enforcement`` in the SEPAS config section).

Terminology ids compare case-insensitively (``thritaEHR.WardType`` = ``thritaEHR.wardType``).
A code outside its table is a ``TermProblem`` (field path, code, text) and the submission
becomes ``invalid``: no HTTP call is made.

Full tables: a hospital downloads them from MAXA (CSV) and imports them with
``python -m adapter.destinations.sepas.terminology import-maxa ...`` (``load_maxa_csv``).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from adapter.destinations.sepas.messages import iter_coded
from adapter.events.dates import DateProblem, parse_date
from adapter.limits import MAPPING_MAX_BYTES, TABLE_MAX_BYTES, check_rows, read_bounded_text, safe_load_yaml

MANIFEST = "terminology.yaml"


@dataclass(frozen=True)
class TermProblem:
    field: str
    code: str
    text: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "code": self.code, "text": self.text}

    def __str__(self) -> str:
        return f"{self.field}: [{self.code}] {self.text}"


@dataclass(frozen=True)
class CodeTable:
    terminology: str
    version: str
    file: Path
    codes: dict[str, str]  # normalised code -> label
    case_sensitive: bool = False

    def norm(self, code: str) -> str:
        code = str(code).strip()
        return code if self.case_sensitive else code.upper()

    def __contains__(self, code: object) -> bool:
        return self.norm(str(code)) in self.codes


@dataclass(frozen=True)
class Rule:
    id: str
    terminology: str
    messages: tuple[str, ...]  # ("*",) = every message
    fields: tuple[str, ...]  # element names; ("*",) = every coded field with this terminology
    enforced_from: dt.date | None
    source: str = ""

    def applies(self, message: str, field_name: str, terminology: str, today: dt.date) -> bool:
        return (terminology.casefold() == self.terminology.casefold()
                and ("*" in self.messages or message in self.messages)
                and ("*" in self.fields or field_name in self.fields)
                and (self.enforced_from is None or today >= self.enforced_from))


@dataclass
class Terminology:
    tables: dict[str, CodeTable] = field(default_factory=dict)  # casefolded id -> table
    rules: list[Rule] = field(default_factory=list)

    def table(self, terminology: str) -> CodeTable | None:
        return self.tables.get(terminology.casefold())

    def check(self, message: str, tree: Any, today: dt.date) -> list[TermProblem]:
        problems: list[TermProblem] = []
        for path, name, coded in iter_coded(tree):
            terminology = str(coded.get("Terminology_id") or "")
            code = str(coded.get("Coded_string") or "").strip()
            for rule in self.rules:
                if not rule.applies(message, name, terminology, today):
                    continue
                table = self.table(rule.terminology)
                if table is None:
                    problems.append(TermProblem(path, "TERMINOLOGY_TABLE_MISSING",
                                                f"rule {rule.id} checks {rule.terminology} but no table is loaded"))
                elif not code:
                    problems.append(TermProblem(path, "CODE_MISSING", f"{terminology} code is empty"))
                elif code not in table:
                    since = f" (checked since {rule.enforced_from.isoformat()}, {rule.source})" if rule.enforced_from else ""
                    problems.append(TermProblem(path, "CODE_NOT_IN_TERMINOLOGY",
                                                f"code {code!r} is not in {table.terminology} version {table.version}{since}"))
                break
        return problems


def read_table(path: Path, terminology: str, version: str, case_sensitive: bool = False) -> CodeTable:
    """A ``code,label`` CSV (UTF-8, header row), within ``adapter.limits``' size and rows."""
    text = read_bounded_text(path, TABLE_MAX_BYTES, "terminology table", encoding="utf-8-sig")
    rows = csv.DictReader(io.StringIO(text))
    if rows.fieldnames is None or "code" not in rows.fieldnames:
        raise ValueError(f"{path}: a terminology table needs a header with a 'code' column")
    table = CodeTable(terminology, version, path, {}, case_sensitive)
    for count, row in enumerate(rows, 1):
        check_rows(count, str(path), "terminology table")
        code = (row.get("code") or "").strip()
        if code:
            table.codes[table.norm(code)] = (row.get("label") or "").strip()
    return table


def _date(raw: Any, where: str) -> dt.date | None:
    if raw is None or raw == "":
        return None
    try:
        return parse_date(str(raw))
    except DateProblem as exc:
        raise ValueError(f"{where}: {exc}") from None


def _manifest(path: Path) -> Any:
    """``terminology.yaml`` within the limits of a mapping file (size, aliases, nesting)."""
    return safe_load_yaml(read_bounded_text(path, MAPPING_MAX_BYTES, "terminology manifest"), str(path)) or {}


def load_terminology(folder: Path, enforcement: dict[str, str | None] | None = None) -> Terminology:
    """Read ``folder/terminology.yaml`` and its tables; ``enforcement`` overrides rule dates by id."""
    manifest_path = folder / MANIFEST
    manifest = _manifest(manifest_path)
    result = Terminology()
    for terminology, spec in (manifest.get("tables") or {}).items():
        table = read_table(folder / spec["file"], terminology, str(spec.get("version", "")),
                           bool(spec.get("case_sensitive", False)))
        result.tables[terminology.casefold()] = table
    overrides = dict(enforcement or {})
    for index, raw in enumerate(manifest.get("rules") or []):
        rule_id = str(raw.get("id") or f"rule{index + 1}")
        when = overrides.pop(rule_id, raw.get("from"))
        messages = raw.get("messages", ["*"])
        fields = raw.get("fields", ["*"])
        result.rules.append(Rule(rule_id, str(raw["terminology"]),
                                 tuple([messages] if isinstance(messages, str) else messages),
                                 tuple([fields] if isinstance(fields, str) else fields),
                                 _date(when, f"{manifest_path}: rules.{rule_id}.from"), str(raw.get("source", ""))))
    if overrides:
        raise ValueError(f"enforcement overrides name unknown rules: {', '.join(sorted(overrides))}")
    return result


# ----- MAXA import ----------------------------------------------------------------------
_CODE_COLUMNS = ("code", "Code", "CODE", "کد", "Coded_string", "ConceptCode", "ServiceCode", "LOINC_NUM", "eRxCode",
                 "IRC", "GenericCode")
_LABEL_COLUMNS = ("label", "Title", "title", "عنوان", "Name", "name", "Value", "Description", "ConceptName",
                  "LONG_COMMON_NAME", "FullName", "شرح")


def _pick(columns: Iterable[str], candidates: tuple[str, ...], what: str, explicit: str | None) -> str:
    columns = list(columns)
    if explicit:
        if explicit not in columns:
            raise ValueError(f"column {explicit!r} not in the file (columns: {', '.join(columns)})")
        return explicit
    for name in candidates:
        if name in columns:
            return name
    raise ValueError(f"no {what} column found (columns: {', '.join(columns)}); name it with --{what}-column")


def load_maxa_csv(source: Path, *, code_column: str | None = None, label_column: str | None = None,
                  delimiter: str | None = None) -> list[tuple[str, str]]:
    """Rows (code, label) of a CSV exported from MAXA; the code/label columns are found by name."""
    text = read_bounded_text(source, TABLE_MAX_BYTES, "MAXA table", encoding="utf-8-sig")
    dialect_delimiter = delimiter or (csv.Sniffer().sniff(text[:4096], delimiters=",;\t|").delimiter if text else ",")
    reader = csv.DictReader(io.StringIO(text), delimiter=dialect_delimiter)
    columns = reader.fieldnames or []
    code_name = _pick(columns, _CODE_COLUMNS, "code", code_column)
    label_name = _pick(columns, _LABEL_COLUMNS, "label", label_column) if (label_column or any(
        c in columns for c in _LABEL_COLUMNS)) else None
    seen: dict[str, str] = {}
    for count, row in enumerate(reader, 1):
        check_rows(count, str(source), "MAXA table")
        code = (row.get(code_name) or "").strip()
        if code and code not in seen:
            seen[code] = (row.get(label_name) or "").strip() if label_name else ""
    return sorted(seen.items())


def write_table(rows: list[tuple[str, str]], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["code", "label"])
        writer.writerows(rows)


def register_table(folder: Path, terminology: str, file_name: str, version: str) -> None:
    """Point ``terminology.yaml`` at a new table file (other entries and rules untouched)."""
    manifest_path = folder / MANIFEST
    manifest = _manifest(manifest_path)
    tables = manifest.setdefault("tables", {})
    existing = next((k for k in tables if k.casefold() == terminology.casefold()), terminology)
    tables[existing] = {**tables.get(existing, {}), "file": file_name, "version": version}
    manifest_path.write_text(yaml.safe_dump(manifest, allow_unicode=True, sort_keys=False), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapter.destinations.sepas.terminology",
                                     description="SEPAS terminology tables")
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import-maxa", help="import a full table downloaded from MAXA (CSV)")
    imp.add_argument("csv", type=Path)
    imp.add_argument("--terminology", required=True, help="e.g. ICD10, LNC, RVU3, IRC, eRx")
    imp.add_argument("--version", required=True, help="the MAXA version or download date, e.g. 1403-05")
    imp.add_argument("--folder", type=Path, default=Path("mappings/sepas/terminology"))
    imp.add_argument("--code-column")
    imp.add_argument("--label-column")
    chk = sub.add_parser("list", help="show the loaded tables and rules")
    chk.add_argument("--folder", type=Path, default=Path("mappings/sepas/terminology"))
    args = parser.parse_args(argv)
    if args.command == "import-maxa":
        rows = load_maxa_csv(args.csv, code_column=args.code_column, label_column=args.label_column)
        file_name = f"{args.terminology.lower().replace('.', '_')}.{args.version}.csv"
        write_table(rows, args.folder / file_name)
        register_table(args.folder, args.terminology, file_name, args.version)
        print(f"{len(rows)} codes -> {args.folder / file_name}; {MANIFEST} updated")
        return 0
    loaded = load_terminology(args.folder)
    for table in loaded.tables.values():
        print(f"{table.terminology:32} {table.version:24} {len(table.codes):6} codes  {table.file.name}")
    for rule in loaded.rules:
        print(f"{rule.id:28} {rule.terminology:24} from {rule.enforced_from or 'always'}  "
              f"{','.join(rule.messages)} / {','.join(rule.fields)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
