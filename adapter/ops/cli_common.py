"""What every ``adapter`` sub-command module shares: the consoles, the ``--config`` option,
loading the config or exiting with its problems, and JSON output.

Lives apart from ``adapter.ops.cli`` so the command modules (``cli_replay``, ``cli_outage``,
``cli_ops``, ``cli_alerts``) import it at the top instead of reaching back into the module
that registers them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperGroup

from adapter.config import AdapterConfig, ConfigError, load_config

console = Console()
err = Console(stderr=True)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", envvar="ADAPTER_CONFIG",
                                            help="config file (env ADAPTER_CONFIG)")]


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
