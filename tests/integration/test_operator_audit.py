"""The operator audit (issue 16 item 9): every state-changing command needs ``--reason`` (exit 2
and nothing changed without one), and leaves one ``operator_actions`` row with the OS user the
process ran as (from its uid, not from ``USER``/``LOGNAME``), the ``--actor`` kept as claimed,
the command, its arguments masked, the reason and the result. ``adapter audit list`` shows them.
On SQLite and PostgreSQL (``db_url``)."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from typer.testing import CliRunner

from adapter.ops.cli import app as cli
from adapter.ops.operator_audit import audited, current_who
from adapter.store.db import make_engine, make_sessionmaker, upgrade
from adapter.store.models import OperatorAction, Outage, StoredRefreshToken
from tests.support.pipeline import EMBEDDED, REPO

OS_USER = pwd.getpwuid(os.getuid()).pw_name
NATIONAL_CODE = "0012345679"
TOKEN = "rt-very-secret-refresh-token-1234567890"


@pytest.fixture
def config(db_url: str, tmp_path: Path) -> Path:
    data = yaml.safe_load(EMBEDDED.read_text())
    data["database"]["url"] = db_url
    data["mappings_root"] = str(REPO / "mappings")
    data.setdefault("secrets", {})["token_key_file"] = str(tmp_path / "token.key")
    path = tmp_path / "adapter.yaml"
    path.write_text(yaml.safe_dump(data))
    upgrade(db_url)
    return path


def run(config: Path, *args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(cli, [*args, "--config", str(config)], input=stdin, env={"COLUMNS": "200"})


def actions(config: Path) -> list[dict[str, Any]]:
    done = run(config, "audit", "list", "--json")
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


def table_rows(db_url: str, model: Any) -> list[Any]:
    engine = make_engine(db_url)
    try:
        with make_sessionmaker(engine)() as session:
            return list(session.scalars(select(model)))
    finally:
        engine.dispose()


@pytest.mark.parametrize("args", [
    ("outage", "start", "-d", "tamin"),
    ("outage", "start", "-d", "tamin", "--reason", "   "),
    ("outage", "end", "-d", "tamin"),
    ("prune",),
    ("auth", "set-refresh-token", "--prescriber", NATIONAL_CODE),
    ("replay", "1"),
])
def test_a_state_changing_command_without_a_reason_exits_2_and_changes_nothing(config: Path, db_url: str,
                                                                                args: tuple[str, ...]) -> None:
    done = run(config, *args, stdin=TOKEN + "\n")
    assert done.exit_code == 2, done.output
    assert "--reason" in done.output and "required" in done.output
    assert table_rows(db_url, OperatorAction) == [] and table_rows(db_url, Outage) == []
    assert table_rows(db_url, StoredRefreshToken) == []


def test_outage_start_and_end_are_audited_as_the_os_user_with_the_actor_as_claimed(
        config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "mallory")  # what getpass would believe; the audit asks the uid
    monkeypatch.setenv("LOGNAME", "mallory")
    monkeypatch.delenv("SUDO_USER", raising=False)
    started = run(config, "outage", "start", "-d", "tamin", "--reason", "Tamin maintenance 10-12", "--actor", "alice")
    assert started.exit_code == 0, started.output
    ended = run(config, "outage", "end", "-d", "tamin", "--reason", "Tamin is back")
    assert ended.exit_code == 0, ended.output
    again = run(config, "outage", "end", "-d", "tamin", "--reason", "once more")
    assert again.exit_code == 1

    failed, end, start = actions(config)  # newest first
    assert (start["command"], start["result"], start["arguments"]) == ("outage start", "ok", {"destination": "tamin"})
    assert (start["os_user"], start["claimed_actor"], start["sudo_user"]) == (OS_USER, "alice", None)
    assert start["reason"] == "Tamin maintenance 10-12" and start["finished_at"] is not None
    assert (end["command"], end["result"], end["claimed_actor"], end["reason"]) == ("outage end", "ok", None,
                                                                                  "Tamin is back")
    assert end["os_user"] == OS_USER
    assert (failed["command"], failed["result"], failed["detail"]) == ("outage end", "failed", "no open outage of tamin")
    listed = json.loads(run(config, "outage", "list", "--json").stdout)
    assert listed[0]["started_by"] == "alice" and listed[0]["ended_by"] == OS_USER  # the outage rows keep their names


def test_sudo_user_is_recorded_beside_the_os_user(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUDO_USER", "bob")
    done = run(config, "outage", "start", "-d", "tamin", "--reason", "planned")
    assert done.exit_code == 0, done.output
    (row,) = actions(config)
    assert (row["os_user"], row["sudo_user"], row["claimed_actor"]) == (OS_USER, "bob", None)
    assert "bob" in json.loads(run(config, "outage", "list", "--json").stdout)[0]["started_by"]


def test_set_refresh_token_is_audited_without_the_token_or_the_national_code(config: Path, db_url: str) -> None:
    done = run(config, "auth", "set-refresh-token", "--prescriber", NATIONAL_CODE,
               "--reason", f"new token for Dr {NATIONAL_CODE}", "--actor", "it-desk", stdin=TOKEN + "\n")
    assert done.exit_code == 0, done.output
    assert len(table_rows(db_url, StoredRefreshToken)) == 1
    (row,) = actions(config)
    assert (row["command"], row["result"], row["claimed_actor"]) == ("auth set-refresh-token", "ok", "it-desk")
    assert row["arguments"] == {"destination": "tamin", "prescriber": "00******79"}
    stored = json.dumps([vars(r) for r in table_rows(db_url, OperatorAction)], default=str)
    assert NATIONAL_CODE not in stored and TOKEN not in stored and TOKEN not in done.output
    assert row["reason"] == "new token for Dr **********"


def test_prune_is_audited_and_its_dry_run_needs_no_reason(config: Path) -> None:
    dry = run(config, "prune", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert actions(config) == []
    done = run(config, "prune", "--reason", "monthly retention")
    assert done.exit_code == 0, done.output
    (row,) = actions(config)
    assert (row["command"], row["result"], row["reason"]) == ("prune", "ok", "monthly retention")
    assert set(row["arguments"]) == {"payload_days", "audit_days"} and row["detail"].startswith("pruned:")


def test_db_upgrade_is_recorded_and_the_list_filters_by_command(config: Path) -> None:
    assert run(config, "db-upgrade").exit_code == 0
    assert run(config, "outage", "start", "-d", "tamin", "--reason", "x").exit_code == 0
    assert [r["command"] for r in actions(config)] == ["outage start", "db-upgrade"]
    only = json.loads(run(config, "audit", "list", "--command", "outage", "--json").stdout)
    assert [r["command"] for r in only] == ["outage start"]
    table = run(config, "audit", "list")
    assert table.exit_code == 0 and 'outage start {"destination": "tamin"}' in table.stdout
    assert f"{OS_USER}, claims" not in table.stdout and "db-upgrade {}" in table.stdout


def test_the_started_row_is_committed_before_the_work_and_an_error_finishes_it_failed(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    try:
        with pytest.raises(RuntimeError):
            with audited(sessions, current_who("carol"), "replay", {"submission_ids": [1]}, "why") as action:
                with sessions() as other:  # another connection already sees the row
                    seen = other.get(OperatorAction, action.id)
                    assert seen is not None and seen.result == "started" and seen.finished_at is None
                raise RuntimeError(f"store said no for {NATIONAL_CODE}")
        with sessions() as session:
            row = session.get(OperatorAction, action.id)
            assert row is not None and row.result == "failed" and row.finished_at is not None
            assert row.detail == "RuntimeError: store said no for **********"
    finally:
        engine.dispose()
