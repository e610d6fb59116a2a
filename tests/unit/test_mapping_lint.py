"""lint(root): every problem in every mapping file and code table, without stopping at the first."""

from __future__ import annotations

from pathlib import Path

from adapter.mapping import lint
from adapter.mapping.cli_support import mapping_lint

REPO = Path(__file__).resolve().parents[2]

HEAD = "mapping: {name}\nversion: 1\ndestination: demo\noperation: create\nevent_types: [prescription.created]\n"


def setup(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def texts(root: Path) -> list[str]:
    return [str(p) for p in lint(root)]


def test_shipped_mappings_are_clean() -> None:
    assert lint(REPO / "mappings") == []
    code, text = mapping_lint(REPO / "mappings")
    # counted, not fixed: several people add mappings and tables at once
    files, tables = len(list((REPO / "mappings").rglob("*.yaml"))), len(list((REPO / "mappings").rglob("*.csv")))
    assert files >= 11 and tables >= 31
    assert code == 0 and f"{files} mapping files, {tables} code tables, no problems" in text


def test_finds_every_kind_of_problem_in_one_run(tmp_path: Path) -> None:
    root = setup(tmp_path, {
        "demo/a_unknown_key.yaml": HEAD.format(name="a") + "body: {x: {$path: y, $tranform: int}}\n",
        "demo/b_unknown_transform.yaml": HEAD.format(name="b") + "body: {x: {$path: y, $transform: rot13}}\n",
        "demo/c_missing_table.yaml": HEAD.format(name="c")
        + "tables: {t: {file: codes/nope.csv, key: k}}\nbody: {x: {$path: y, $table: t, $column: v}}\n",
        "demo/d_missing_column.yaml": HEAD.format(name="d")
        + "tables: {t: {file: codes/ok.csv, key: k}}\nbody: {x: {$path: y, $table: t, $column: w}}\n",
        "demo/e_duplicate_key.yaml": HEAD.format(name="e")
        + "tables: {t: {file: codes/dup.csv, key: k}}\nbody: {x: {$path: y, $table: t, $column: v}}\n",
        "demo/f_bad_yaml.yaml": HEAD.format(name="f") + "body:\n  x: {$path: y\n",
        "demo/g_bad_event_type.yaml": HEAD.format(name="g").replace("prescription.created", "prescription.create")
        + "body: 1\n",
        "codes/ok.csv": "k,v\nA,1\n",
        "demo/codes/ok.csv": "k,v\nA,1\n",
        "demo/codes/dup.csv": "k,v\nA,1\nB,2\nA,3\n",
        "demo/codes/stray.csv": "code,v\nX,1\nX,2\n",
        "demo/h.yml": "mapping: h\n",
    })
    found = texts(root)
    demo = tmp_path / "demo"

    def has(prefix: str, *parts: str) -> bool:
        return any(t.startswith(prefix) and all(p in t for p in parts) for t in found)

    assert has(f"{demo}/a_unknown_key.yaml: body.x: unknown key '$tranform'")
    assert has(f"{demo}/b_unknown_transform.yaml: body.x: unknown transform 'rot13'")
    assert has(f"{demo}/c_missing_table.yaml: tables.t.file: code table file {demo}/codes/nope.csv not found")
    assert has(f"{demo}/d_missing_column.yaml: body.x: code table 't'", "has no column 'w' (columns: k, v)")
    assert has(f"{demo}/codes/dup.csv: line 4: duplicate key 'A' in column 'k' (first on line 2)")
    assert has(f"{demo}/f_bad_yaml.yaml: line 8, column 1: invalid YAML")
    assert has(f"{demo}/g_bad_event_type.yaml: event_types[0]: 'prescription.create' is not an event type")
    assert has(f"{demo}/codes/stray.csv: line 3: duplicate key 'X' in column 'code'")  # unused table: first column
    assert has(f"{demo}/h.yml: (file): ignored")
    assert len(found) == len(set(found))


def test_csv_structure_problems(tmp_path: Path) -> None:
    root = setup(tmp_path, {
        "demo/m.yaml": HEAD.format(name="m") + "tables:\n"
        "  a: {file: codes/a.csv, key: k}\n  b: {file: codes/b.csv, key: k}\n  c: {file: codes/c.csv, key: k}\n"
        "  d: {file: codes/a.csv, key: k, default: {v: '1', nope: '2'}}\n",
        "demo/codes/a.csv": "k,v\nA,1\nB\n,3\n",
        "demo/codes/b.csv": "",
        "demo/codes/c.csv": "key,v,v\nA,1,2\n",
    })
    found = texts(root)
    codes = tmp_path / "demo" / "codes"
    assert f"{codes}/a.csv: line 3: 1 cells, the header has 2" in found
    assert f"{codes}/a.csv: line 4: empty value in key column 'k'" in found
    assert f"{codes}/b.csv: line 1: empty file: a header row is required" in found
    assert f"{codes}/c.csv: line 1: column 'v' appears twice in the header" in found
    assert any(t.startswith(f"{codes}/c.csv: line 1: key column 'k' not in the header") for t in found)
    assert f"{tmp_path}/demo/m.yaml: tables.d.default: columns not in {codes}/a.csv: nope" in found


def test_lint_of_missing_root(tmp_path: Path) -> None:
    [problem] = lint(tmp_path / "nope")
    assert problem.reason == "mappings folder not found"
    code, text = mapping_lint(tmp_path / "nope")
    assert code == 1 and text.endswith("1 problem")
