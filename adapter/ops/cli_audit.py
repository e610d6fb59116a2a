"""``adapter audit list``: who ran which state-changing command, as which OS user, why, and how it
ended (the ``operator_actions`` rows ``adapter.ops.operator_audit`` writes).

Registered on the main ``adapter`` command by ``adapter.ops.cli`` (``cli_audit.register(app)``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from adapter.config import DEFAULT_CONFIG
from adapter.ops.cli_common import ConfigOption, config_or_exit, console, err, print_json


def register(app: typer.Typer) -> None:
    audit_app = typer.Typer(help="The operator audit: every state-changing command, who ran it and why.",
                            no_args_is_help=True)
    audit_app.command("list")(list_command)
    app.add_typer(audit_app, name="audit")


def list_command(
    command: Annotated[Optional[str], typer.Option(
        "--command", help="only this command or group, e.g. 'outage end', outage, replay, prune")] = None,
    since: Annotated[Optional[str], typer.Option(
        "--since", help="started at or after: ISO datetime (UTC unless it has an offset) or 45m, 2h, 3d, 1w ago")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="at most this many rows (newest first)")] = 50,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Operator actions, newest first: when, OS user (and sudo caller), the --actor claimed, the
    command and its arguments (masked), the reason, and the result (started, ok, failed)."""
    from adapter.app import open_store
    from adapter.ops.inspect import FilterError, parse_when
    from adapter.store.operator_actions import list_actions

    try:
        since_at = parse_when(since) if since else None
    except FilterError as exc:
        err.print(f"[bold red]error:[/] --since: {exc}", highlight=False)
        raise typer.Exit(2) from None
    engine, sessions = open_store(config_or_exit(config))
    try:
        with sessions() as session:
            rows = list_actions(session, command=command.strip() if command else None, since=since_at, limit=limit)
    finally:
        engine.dispose()
    if json_out:
        print_json(rows)
    else:
        console.print(_table(rows))


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Operator actions")
    for column in ("id", "started (UTC)", "who", "command", "reason", "result"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(str(row["id"]), (row["started_at"] or "")[:19].replace("T", " "), Text(_who(row)),
                      Text(f"{row['command']} {json.dumps(row['arguments'], ensure_ascii=False)}"),
                      Text(row["reason"] or ""), Text(row["result"] + (f": {row['detail']}" if row["detail"] else "")))
    return table


def _who(row: dict[str, Any]) -> str:
    """``root (sudo by bob), claims alice``: the OS user first, what was only claimed last."""
    text = row["os_user"] + (f" (sudo by {row['sudo_user']})" if row["sudo_user"] else "")
    return text + (f", claims {row['claimed_actor']}" if row["claimed_actor"] else "")
