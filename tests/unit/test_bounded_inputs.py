"""Bounded inputs (issue 16): every file the adapter reads and every message it consumes is read
within the limits of ``adapter.limits``; beyond them, one line names the file, the limit and the
fix, from ``config check``, ``mapping lint`` and start-up alike, without expanding what was sent."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from typer.testing import CliRunner

from adapter import limits
from adapter.app import App
from adapter.config import ConfigError, load_config, read_secret
from adapter.keys import load_key
from adapter.mapping import lint
from adapter.mapping.loader import read_mapping
from adapter.mapping.tables import load_table
from adapter.ops.cli import app as cli
from adapter.pipeline.intake import Received
from adapter.store.models import InboxEvent
from tests.support.pipeline import EMBEDDED, REPO, offline_app

SAMPLE = REPO / "docs" / "sample-prescription-created.json"
HEAD = "mapping: bomb\nversion: 1\ndestination: demo\noperation: create\nevent_types: [prescription.created]\n"


def billion_laughs() -> str:
    """Nine levels of nine aliases each: a few hundred bytes that expand to 9**9 strings."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


def doubling_bomb() -> str:
    """Two aliases per level, fifty levels: within the alias count of a classic bomb's reach, 2**50 values."""
    lines = ["d0: &d0 [x, x]"] + [f"d{i}: &d{i} [*d{i - 1}, *d{i - 1}]" for i in range(1, 50)]
    return "\n".join(lines) + "\n"


def oversized(path: Path, limit: int) -> Path:
    path.write_bytes(b"#" * (limit + 1))
    return path


# -- config ------------------------------------------------------------------------------------

@pytest.mark.parametrize("bomb", [billion_laughs, doubling_bomb])
def test_an_alias_bomb_as_config_is_one_clear_error(tmp_path: Path, bomb: Any) -> None:
    path = tmp_path / "adapter.yaml"
    path.write_text(bomb())
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    [line] = caught.value.lines
    assert line.startswith(f"{path}: ") and " -- fix: " in line
    assert "alias" in line


def test_an_alias_bomb_in_an_environment_override_is_refused(tmp_path: Path) -> None:
    bomb = "[&a [x], " + ", ".join(["*a"] * (limits.YAML_MAX_ALIASES + 1)) + "]"
    with pytest.raises(ConfigError) as caught:
        load_config(EMBEDDED, environ={"ADAPTER__STATUS__PORT": bomb})
    assert "environment ADAPTER__STATUS__PORT" in caught.value.lines[0]
    assert f"more than {limits.YAML_MAX_ALIASES} alias uses" in caught.value.lines[0]


def test_an_oversized_config_is_refused_naming_file_and_limit(tmp_path: Path) -> None:
    path = oversized(tmp_path / "adapter.yaml", limits.CONFIG_MAX_BYTES)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.lines == [f"{path}: (file): larger than the 1 MB limit of a config file -- fix: make the "
                                  "config file smaller (or split it); it should be far below the limit"]


def test_a_config_nested_too_deeply_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "adapter.yaml"
    path.write_text("a: " + "[" * 200 + "]" * 200 + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert f"nested deeper than {limits.MAX_NESTING_DEPTH} levels" in caught.value.lines[0]


def test_config_check_on_a_too_big_config_prints_one_line_and_fails(tmp_path: Path) -> None:
    path = oversized(tmp_path / "adapter.yaml", limits.CONFIG_MAX_BYTES)
    result = CliRunner().invoke(cli, ["config", "check", "--config", str(path)], env={"ADAPTER_CONFIG": None})
    assert result.exit_code != 0
    matching = [line for line in result.output.splitlines() if "limit" in line]
    assert matching == [f"{path}: (file): larger than the 1 MB limit of a config file -- fix: make the config file "
                        "smaller (or split it); it should be far below the limit"]


def test_run_refuses_a_too_big_config_with_the_config_problem_lines(tmp_path: Path) -> None:
    path = oversized(tmp_path / "adapter.yaml", limits.CONFIG_MAX_BYTES)
    result = CliRunner().invoke(cli, ["run", "--config", str(path)], env={"ADAPTER_CONFIG": None})
    assert result.exit_code == 2
    assert "configuration problem" in result.output and "1 MB limit of a config file" in result.output


def test_a_shipped_config_still_loads() -> None:
    assert load_config(EMBEDDED, environ={}).source_file == str(EMBEDDED)


# -- mappings and code tables ------------------------------------------------------------------

@pytest.mark.parametrize("bomb", [billion_laughs, doubling_bomb])
def test_an_alias_bomb_as_a_mapping_file_is_one_problem(tmp_path: Path, bomb: Any) -> None:
    path = tmp_path / "demo" / "bomb.yaml"
    path.parent.mkdir()
    path.write_text(HEAD + "params:\n" + "".join(f"  {line}\n" for line in bomb().splitlines()))
    mapping, problems = read_mapping(path)
    assert mapping is None
    assert len(problems) == 1 and problems[0].file == str(path)
    assert "alias" in problems[0].reason and " -- fix: " in problems[0].reason
    assert [str(p) for p in lint(tmp_path)] == [str(problems[0])]  # mapping lint says the same


def test_an_oversized_mapping_file_is_refused(tmp_path: Path) -> None:
    path = oversized(tmp_path / "big.yaml", limits.MAPPING_MAX_BYTES)
    _, problems = read_mapping(path)
    assert [str(p) for p in problems] == [f"{path}: (file): larger than the 2 MB limit of a mapping file -- fix: "
                                          "make the mapping file smaller (or split it); it should be far below the limit"]


def test_an_oversized_code_table_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "codes.csv"
    path.write_text("his_code,code\n" + "a,b\n" * 20)
    monkeypatch.setattr("adapter.mapping.tables.TABLE_MAX_BYTES", 64)
    table, problems = load_table(path, "his_code")
    assert table is None
    assert "larger than the 64 bytes limit of a code table" in str(problems[0]) and str(path) in str(problems[0])


def test_a_code_table_with_too_many_rows_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "codes.csv"
    path.write_text("his_code,code\n" + "".join(f"a{i},b\n" for i in range(11)))
    monkeypatch.setattr(limits, "TABLE_MAX_ROWS", 10)
    table, problems = load_table(path, "his_code")
    assert table is None
    assert [str(p) for p in problems] == [f"{path}: line 11: more than 10 rows, the limit of a code table -- fix: "
                                          "split the code table or remove rows that are not used"]


def test_the_shipped_mappings_are_within_the_limits() -> None:
    assert lint(REPO / "mappings") == []


# -- key and secret files ----------------------------------------------------------------------

def private(path: Path) -> Path:
    os.chmod(path, 0o600)
    return path


def test_an_oversized_key_file_is_refused(tmp_path: Path) -> None:
    path = private(oversized(tmp_path / "token.key", limits.KEY_FILE_MAX_BYTES))
    with pytest.raises(ConfigError) as caught:
        load_key("NO_SUCH_VARIABLE_SET", str(path), source="c.yaml", key_name="token_key", environ={})
    assert caught.value.lines == [f"c.yaml: secrets.token_key_file: {path}: larger than the 4 KB limit of a key file "
                                  "-- fix: make the key file smaller (or split it); it should be far below the limit"]


def test_an_oversized_secret_file_is_refused(tmp_path: Path) -> None:
    path = private(oversized(tmp_path / "secret", limits.KEY_FILE_MAX_BYTES))
    with pytest.raises(ConfigError) as caught:
        read_secret(None, str(path), None, what="status.token", source="c.yaml")
    [line] = caught.value.lines
    assert line.startswith(f"c.yaml: status.token_file: {path}: larger than the 4 KB limit")


# -- messages ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    yield from offline_app(tmp_path_factory.mktemp("bounded"))


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"k": value}
    return value


def test_a_deeply_nested_event_is_invalid_with_a_specific_reason(app: App) -> None:
    event = json.loads(SAMPLE.read_text(encoding="utf-8"))
    event["event_id"] = "bounded-deep-1"
    event["payload"]["patient"]["first_name"] = nested(100)  # far below the interpreter's own limit
    result = app.intake.receive(json.dumps(event).encode())
    assert result.outcome is Received.invalid
    assert result.event_id == "bounded-deep-1"
    assert f"more than {limits.MAX_NESTING_DEPTH} levels" in result.reason
    with app.sessions() as session:
        row = session.scalar(select(InboxEvent).where(InboxEvent.event_id == "bounded-deep-1"))
        assert row is not None and row.status == "invalid"
        assert row.problems[0]["field"].startswith("payload.patient.first_name.k")


def test_yaml_limits_do_not_refuse_ordinary_aliases() -> None:
    text = "base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\nlist: [*b, *b]\n"
    assert limits.safe_load_yaml(text, "t.yaml") == yaml.safe_load(text)
