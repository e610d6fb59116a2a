"""What every ``adapter`` sub-command module shares: the consoles, the ``--config`` option,
loading the config or exiting with its problems, JSON output, and the ``--reason`` / ``--actor``
options and operator audit of the commands that change state (``adapter.ops.operator_audit``).

Lives apart from ``adapter.ops.cli`` so the command modules (``cli_replay``, ``cli_outage``,
``cli_ops``, ``cli_alerts``) import it at the top instead of reaching back into the module
that registers them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from contextlib import AbstractContextManager
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup

from adapter.config import AdapterConfig, ConfigError, load_config
from adapter.ops.operator_audit import Action, audited, current_who

console = Console()
err = Console(stderr=True)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", envvar="ADAPTER_CONFIG",
                                            help="config file (env ADAPTER_CONFIG)")]
ReasonOption = Annotated[Optional[str], typer.Option(
    "--reason", help="why (required; kept in the operator audit, see adapter audit list)")]
ActorOption = Annotated[Optional[str], typer.Option(
    "--actor", help="who you say you are: kept as claimed, beside the OS user the command runs as "
                    "[default: the OS user]")]


def require_reason(reason: Optional[str], command: str) -> str:
    """The stripped ``--reason``, or exit 2 saying it is required (before anything is opened)."""
    if reason is None or not reason.strip():
        err.print(f'[bold red]error:[/] adapter {command}: --reason "..." is required (it goes into the '
                  "operator audit, see adapter audit list)", highlight=False)
        raise typer.Exit(2)
    return reason.strip()


def operator_action(sessions: Any, command: str, arguments: dict[str, Any], reason: Optional[str],
                    actor: Optional[str]) -> AbstractContextManager[Action]:
    """Audit a state-changing command as the OS user running it (``--actor`` kept as claimed)."""
    return audited(sessions, current_who(actor), command, arguments, reason)


def usage_error(message: str) -> typer.Exit:
    """Print ``message`` as an error; the exit (code 2) for the caller to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(2)


def open_config_store(path: Path, writable: bool = False) -> tuple[AdapterConfig, Any, Any]:
    """The config (or exit 2 with its problems), and the store it names: (config, engine, sessions).
    ``writable``: a command that changes state checks first that the store takes writes (a
    read-only store is the one-line config error, not a traceback half-way)."""
    from adapter.app import open_store

    config = config_or_exit(path)
    try:
        engine, sessions = open_store(config, writable=writable)
    except ConfigError as exc:
        fail_config(exc)
    return config, engine, sessions


def config_or_exit(path: Path) -> AdapterConfig:
    """The validated config, or exit 2 with one line per problem."""
    try:
        return load_config(path)
    except ConfigError as exc:
        fail_config(exc)


def fail_config(exc: ConfigError) -> NoReturn:
    err.print("[bold red]configuration problem[/] (nothing was started):")
    for line in exc.lines:  # never folded at the terminal's width: one problem, one line (grep, journald)
        err.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


class ConfigProblemsGroup(TyperGroup):
    """The ``adapter`` command group: a ``ConfigError`` that escapes any sub-command (the store
    found read-only while a command opens it, say) ends it as every configuration problem does,
    one line per problem and exit code 2, not a traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            fail_config(exc)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")
