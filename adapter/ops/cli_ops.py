"""``adapter prune`` and ``adapter config check`` (issue 7), registered on the main command.

Registering also installs the log redaction for every ``adapter`` command
(``adapter.ops.logs.install_redaction``): whatever a command logs is masked.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from adapter.config import DEFAULT_CONFIG, AdapterConfig, ConfigError, load_config
from adapter.ops.cli_common import ActorOption, ConfigOption, operator_action, require_reason
from adapter.replies.checks import reply_problems



def config_problems(path: Path, environ: dict[str, str] | None = None) -> tuple[list[str], AdapterConfig | None]:
    """Every problem of the config file and what it points at: the file itself (keys, values,
    environment overrides), every mapping of the enabled destinations, SEPAS terminology and
    public key when SEPAS is enabled, the secrets it names, the destinations' TLS files and plain
    http:// URLs to insurers, and the status service's exposure and TLS files.
    Each line names the file, the key and the fix."""
    try:
        config = load_config(path, environ=environ)
    except ConfigError as exc:
        return list(exc.lines), None
    from adapter.app import load_checked_mappings

    problems: list[str] = []
    source = config.source_file
    root = Path(config.mappings_root)
    if not root.is_dir():
        problems.append(f"{source}: mappings_root: {root} is not a folder -- fix: point it at the mappings folder")
    else:
        for destination in _enabled_or_none(config):
            if not (root / destination).is_dir():
                problems.append(f"{source}: mappings_root: {root / destination} is missing -- fix: add the "
                                f"{destination} mapping files or disable destinations.{destination}")
        try:
            load_checked_mappings(config)
        except ConfigError as exc:
            problems += exc.lines
    problems += _destination_problems(config)
    from adapter.destinations.transport import plain_http_problems, tls_problems

    problems += plain_http_problems(config) + tls_problems(config)
    from adapter.ops.http_status import resolve_auth, resolve_serving

    for resolve in (resolve_auth, resolve_serving):
        try:
            resolve(config)
        except ConfigError as exc:
            problems += exc.lines
    from adapter.ops.alerts.notify import check_alert_channels

    try:
        check_alert_channels(config, environ)
    except ConfigError as exc:
        problems += exc.lines
    problems += _key_problems(config, environ)
    problems += reply_problems(config)
    return _unique(problems), config


def _key_problems(config: AdapterConfig, environ: dict[str, str] | None) -> list[str]:
    """The local keys (patient key, refresh-token key, payload key): missing, empty or unreadable
    ones. Nothing is created: a key file that does not exist yet is made by ``adapter run``. The
    refresh-token key is needed only for doctor_refresh; an empty one is reported all the same."""
    from adapter.keys import key_problems, patient_key_file, payload_key_problems

    secrets, source = config.secrets, config.source_file
    refresh = config.destinations.tamin.auth.mode == "doctor_refresh"
    return (key_problems(secrets.patient_ref_key_env, patient_key_file(secrets), source=source,
                         key_name="patient_ref_key", environ=environ)
            + key_problems(secrets.token_key_env, secrets.token_key_file, source=source, key_name="token_key",
                           environ=environ, required=refresh)
            + payload_key_problems(secrets.payload_key_env, source=source, environ=environ,
                                   required=secrets.payload_key_required))


def config_warnings(config: AdapterConfig, environ: dict[str, str] | None = None) -> list[str]:
    """What works but should not stay so: a PostgreSQL (production) store that would keep patient
    data in clear, one key serving two purposes."""
    import os

    from adapter.keys import shared_key_warning

    secrets, source = config.secrets, config.source_file
    warnings: list[str] = []
    if config.database.url.startswith("postgresql") and not secrets.payload_key_required \
            and not (os.environ if environ is None else environ).get(secrets.payload_key_env):
        warnings.append(f"{source}: secrets.payload_key_required: a PostgreSQL store without the payload key keeps "
                        f"event bodies and payloads (patient data) in clear -- fix: set {secrets.payload_key_env} "
                        "to a Fernet key and secrets.payload_key_required: true")
    shared = shared_key_warning(secrets, source=source, environ=environ)
    return warnings + ([shared] if shared else [])


def _enabled_or_none(config: AdapterConfig) -> list[str]:
    """The enabled destinations' names; none when the destinations section has problems (reported apart)."""
    from adapter.app import enabled_destinations

    try:
        return enabled_destinations(config)
    except ConfigError:
        return []


def _unique(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))


def _destination_problems(config: AdapterConfig) -> list[str]:
    """What each enabled destination's plugin finds (its secrets, files, keys)."""
    from adapter.destinations import registry

    try:
        enabled = registry.configured(config)
    except ConfigError as exc:
        return list(exc.lines)
    return [line for item in enabled for line in item.plugin.problems(item.section, config)]


def register(app: typer.Typer) -> None:
    from adapter.ops.logs import install_redaction

    install_redaction()
    config_app = typer.Typer(help="Check the configuration.", no_args_is_help=True)
    app.add_typer(config_app, name="config")

    @config_app.command("check")
    def config_check(config: ConfigOption = DEFAULT_CONFIG) -> None:
        """Validate the config, every mapping, SEPAS terminology (when enabled) and the secrets it names;
        print each problem with file, key and fix. Exit 0 when clean, 1 otherwise."""
        problems, cfg = config_problems(config)
        for line in problems:
            sys.stdout.write(line + "\n")
        for line in config_warnings(cfg) if cfg is not None else []:
            sys.stdout.write(f"warning: {line}\n")
        if problems:
            count = len(problems)
            sys.stdout.write(f"{count} problem{'s' if count != 1 else ''} in {config}\n")
            raise typer.Exit(1)
        assert cfg is not None
        from adapter.app import enabled_destinations

        sys.stdout.write(f"{config}: no problems (destinations: {', '.join(enabled_destinations(cfg)) or 'none'}; "
                         f"status service {'on ' + cfg.status.host + ':' + str(cfg.status.port) if cfg.status.enabled else 'off'})\n")

    @app.command("prune")
    def prune_command(
        config: ConfigOption = DEFAULT_CONFIG,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="only count what would be removed")] = False,
        json_out: Annotated[bool, typer.Option("--json")] = False,
        reason: Annotated[Optional[str], typer.Option(
            "--reason", help="why (required unless --dry-run; kept in the operator audit)")] = None,
        actor: ActorOption = None,
    ) -> None:
        """Remove payload bodies and audit detail of finished work older than retention.payload_days /
        retention.audit_days. Unfinished submissions and their events are never touched."""
        from adapter.app import open_store
        from adapter.ops.prune import prune

        why = None if dry_run else require_reason(reason, "prune")
        try:
            cfg = load_config(config)
        except ConfigError as exc:
            sys.stderr.write("configuration problem (nothing was changed):\n" + "\n".join(f"  {l}" for l in exc.lines) + "\n")
            raise typer.Exit(2) from None
        engine, sessions = open_store(cfg, writable=not dry_run)
        try:
            if dry_run:
                report = prune(sessions, cfg.retention, dry_run=True)
            else:
                retention = {"payload_days": cfg.retention.payload_days, "audit_days": cfg.retention.audit_days}
                with operator_action(sessions, "prune", retention, why, actor) as action:
                    report = prune(sessions, cfg.retention, dry_run=False)
                    action.done(report.summary())
        finally:
            engine.dispose()
        if json_out:
            sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
        else:
            sys.stdout.write(report.summary() + "\n")

