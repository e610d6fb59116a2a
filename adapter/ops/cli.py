"""The ``adapter`` command (typer). Each command is a thin shell over a module that does the work."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from adapter.config import DEFAULT_CONFIG, ConfigError
from adapter.ops.cli_common import (ActorOption, ConfigOption, ConfigProblemsGroup, ReasonOption, config_or_exit,
                                    console, err, fail_config, operator_action, print_json, require_reason)

# ConfigProblemsGroup: a ConfigError that escapes any command (a read-only store, ...) ends it
# as every configuration problem does: one line per problem, exit code 2
app = typer.Typer(help="HIS -> Tamin / DITAS integration adapter.", no_args_is_help=True, add_completion=False,
                  cls=ConfigProblemsGroup)
mapping_app = typer.Typer(help="Test and lint integrator mapping files.", no_args_is_help=True)
auth_app = typer.Typer(help="Credentials the adapter keeps (encrypted).", no_args_is_help=True)
app.add_typer(mapping_app, name="mapping")
app.add_typer(auth_app, name="auth")
@app.command()
def demo(
    json_out: Annotated[bool, typer.Option("--json", help="print the summary as one JSON object")] = False,
    patients: Annotated[int, typer.Option(help="sample patients (about 2.5 events each)")] = 90,
    workdir: Annotated[Path, typer.Option(help="where the demo's store and queue go (wiped first)")] = Path("var/demo"),
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Run sample events through the adapter on the embedded defaults, against the bundled simulator."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from adapter.ops.demo import run_demo
    from adapter.ops.logs import configure

    configure("WARNING", "console")
    try:
        if json_out:
            summary = run_demo(config, workdir, patients, notice=lambda text: err.print(text, markup=False))
        else:
            with Progress(TextColumn("[bold]events settled"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=err) as bar:
                task = bar.add_task("demo", total=None)
                summary = run_demo(config, workdir, patients,
                                   progress=lambda done, total: bar.update(task, completed=done, total=total),
                                   notice=lambda text: bar.console.print(text, markup=False))
    except ConfigError as exc:
        fail_config(exc)
    if json_out:
        print_json(summary)
    else:
        _print_summary(summary)
    raise typer.Exit(0 if summary["complete"] else 1)


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title="Submissions per destination and state")
    table.add_column("destination")
    table.add_column("state")
    table.add_column("count", justify="right")
    for destination, states in sorted(summary["by_destination"].items()):
        for state, count in sorted(states.items()):
            table.add_row(destination, state, str(count))
    for status, count in sorted(summary["event_status"].items()):
        table.add_row("(events)", status, str(count))
    console.print(table)
    console.print(_event_type_table(summary["by_event_type"]))
    keys = ("events", "accepted", "invalid", "rejected", "pending", "duplicates_at_destination", "duplicate_receipts")
    console.print("  ".join(f"{k}={summary[k]}" for k in keys))
    console.print(f"store: {summary['store']}  (inspect with: adapter status / adapter show <event-id>, "
                  "with ADAPTER__DATABASE__URL set to it)")


def _event_type_table(by_type: dict[str, dict[str, dict[str, int]]]) -> Table:
    table = Table(title="Submissions per event type and destination")
    table.add_column("event type")
    table.add_column("destination")
    table.add_column("states")
    for event_type, destinations in by_type.items():
        for destination, states in sorted(destinations.items()):
            table.add_row(event_type, destination, "  ".join(f"{k}={v}" for k, v in sorted(states.items())))
    return table


@app.command()
def run(
    config: ConfigOption = DEFAULT_CONFIG,
    until_idle: Annotated[bool, typer.Option("--until-idle", help="exit once nothing is queued or due")] = False,
    idle_horizon: Annotated[float, typer.Option(help="with --until-idle: retries due within this many seconds still count")] = 5.0,
) -> None:
    """Consume events from the broker and deliver them (until SIGTERM, or until idle)."""
    from adapter.app import build
    from adapter.ops.logs import configure
    from adapter.pipeline.runner import Runner
    from adapter.store.health import wait_until_reachable

    cfg = config_or_exit(config)
    configure(cfg.logging.level, cfg.logging.format)
    try:
        wait_until_reachable(cfg.database.url)  # a PostgreSQL server not up yet: wait, do not exit
        built = build(cfg)
    except ConfigError as exc:
        fail_config(exc)
    runner = Runner(built, until_idle=until_idle, idle_horizon_s=idle_horizon)
    runner.install_signal_handlers()
    try:
        stats = runner.run()
    finally:
        built.close()
    err.print(f"stopped: received={stats.received} stored={stats.stored} invalid={stats.invalid} "
              f"duplicates={stats.duplicates} conflicts={stats.conflicts} dispatched={stats.dispatched}")


def _sessions(config: Path) -> Any:
    from adapter.app import open_store
    _, sessions = open_store(config_or_exit(config))
    return sessions


@app.command()
def status(config: ConfigOption = DEFAULT_CONFIG,
           json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Counts per destination and state, and the age of the oldest pending submission."""
    from adapter.ops.status import status_report

    with _sessions(config)() as session:
        report = status_report(session)
    if json_out:
        print_json(report)
        return
    table = Table(title="Submissions")
    for column in ("destination", "state", "count"):
        table.add_column(column)
    for destination, states in sorted(report["destinations"].items()):
        for state, count in sorted(states.items()):
            table.add_row(destination, state, str(count))
    console.print(table)
    events = report["events"]
    console.print("events: " + ", ".join(f"{k}={v}" for k, v in events.items()))
    oldest = report["oldest_pending"]
    console.print(f"oldest pending: {oldest['age_seconds']}s (submission {oldest['submission_id']}, {oldest['state']})"
                  if oldest else "oldest pending: none")


@app.command()
def show(event_id: str, config: ConfigOption = DEFAULT_CONFIG,
         json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """One event's whole trail: the event (identifiers masked), submissions, attempts, state changes."""
    from adapter.ops.trail import event_trail

    with _sessions(config)() as session:
        trail = event_trail(session, event_id)
    if trail is None:
        err.print(f"no event with id {event_id!r}")
        raise typer.Exit(1)
    if json_out:
        print_json(trail)
        return
    _print_trail(trail)


def _print_trail(trail: dict[str, Any]) -> None:
    event = trail["event"]
    console.print(f"[bold]{event['event_id']}[/] {event['event_type']} status={event['status']} "
                  f"received={event['received_at']} duplicate_receipts={event['duplicate_receipts']}")
    for problem in event["problems"] or []:
        console.print(f"  problem: {problem['field']}: {problem['rule']} {problem.get('value', '')}", markup=False)
    console.print_json(json.dumps(event["body"], ensure_ascii=False))
    for version in event.get("versions") or []:  # other bodies received under this id (adapter.store.versions)
        console.print(f"\n[bold]version {version['id']}[/] {version['state']} received={version['received_at']} "
                      f"differs at: {', '.join(version['differs_at'] or ['(not JSON)'])}", highlight=False)
        console.print_json(json.dumps(version["body"], ensure_ascii=False))
    for sub in trail["submissions"]:
        console.print(f"\n[bold]submission {sub['id']}[/] {sub['destination']}/{sub['operation']} "
                      f"state={sub['state']} attempts={sub['attempts']} result={sub['result']}")
        if sub["last_error"]:
            console.print(f"  last error: {sub['last_error']}", markup=False)
        for attempt in sub["attempt_log"]:
            console.print(f"  attempt {attempt['number']} {attempt['started_at']} {attempt['duration_ms']}ms "
                          f"{attempt['outcome']} request={attempt['request']} response={attempt['response']}", markup=False)
        for change in sub["state_changes"]:
            console.print(f"  {change['at']} {change['from']} -> {change['to']} by {change['actor']}: {change['reason']}",
                          markup=False)


@app.command()
def publish(file: Annotated[Path, typer.Argument(help="JSON Lines: one event per line")],
            config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Put events on the configured broker (each line as one message, unchanged)."""
    from adapter.broker.connection import publish_bodies
    from adapter.broker.sqlite_transport import QueueFull
    from adapter.keys import payload_key_problems
    from adapter.store import at_rest

    cfg = config_or_exit(config)
    problems = payload_key_problems(cfg.secrets.payload_key_env, source=cfg.source_file)
    if problems:  # the embedded queue encrypts bodies with it
        err.print("\n".join(problems), markup=False)
        raise typer.Exit(2)
    at_rest.use_key_env(cfg.secrets.payload_key_env)
    lines = [line for line in file.read_bytes().splitlines() if line.strip()]
    try:
        count = publish_bodies(cfg.broker, lines)
    except QueueFull as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(1) from None
    err.print(f"published {count} messages to {cfg.broker.queue}")


@app.command()
def samples(out: Annotated[Path, typer.Option("--out", help="file to write (JSON Lines)")] = Path("samples.jsonl"),
            patients: int = 90,
            provider_side: Annotated[bool, typer.Option(
                "--provider-side/--prescribing-only",
                help="also the hospital pharmacy's, lab's, imaging's and billing's events")] = True) -> None:
    """Write the bundled sample events (dated today) for `adapter publish`."""
    import datetime as dt

    from adapter.samples.generate import generate

    generated = generate(dt.datetime.now(dt.timezone.utc), patients=patients, provider_side=provider_side)
    out.write_bytes(b"\n".join(generated.lines) + b"\n")
    err.print(f"wrote {len(generated.lines)} lines to {out}; simulator rejects patients: "
              f"--unknown-patient {' --unknown-patient '.join(sorted(generated.unknown_patients))}")


@app.command()
def sim(
    host: str = "127.0.0.1",
    port: int = 8089,
    latency_ms: Annotated[float, typer.Option(help="added to every API call")] = 0.0,
    token_ttl: Annotated[float, typer.Option(help="access-token lifetime in seconds")] = 3600.0,
    client_id: str = "adapter-test",
    client_secret: str = "adapter-test-secret",
    unknown_patient: Annotated[Optional[list[str]], typer.Option(help="national code the insurer does not know")] = None,
    expired_patient: Annotated[Optional[list[str]], typer.Option(help="national code whose coverage expired")] = None,
    fail_next: Annotated[int, typer.Option(help="answer the next N API calls with --fail-status")] = 0,
    fail_status: int = 503,
    ditas_port: Annotated[int, typer.Option(help="port of the DITAS/SEPAS simulator; 0 = do not start it")] = 8091,
    ditas_key_dir: Annotated[Path, typer.Option(help="where the DITAS simulator keeps its RSA key pair")] = Path(
        "var/ditas-sim"),
) -> None:
    """Run the Tamin simulator (and the DITAS/SEPAS simulator) on their own: a sandbox for a hospital's integrator."""
    import threading

    from adapter.sim.server import SimServer
    from adapter.sim.settings import TaminSimSettings
    from adapter.sim.tamin_app import create_tamin_app

    settings = TaminSimSettings(latency_ms=latency_ms, token_ttl_s=token_ttl, client_id=client_id,
                                client_secret=client_secret, unknown_patients=set(unknown_patient or []),
                                expired_patients=set(expired_patient or []), fail_next=fail_next, fail_status=fail_status)
    # both in server threads without uvicorn's access log: its formatter breaks on the
    # adapter's redacting log records (a traceback per request)
    servers = [SimServer(create_tamin_app(settings), host, port, log_level="info").start()]
    err.print(f"Tamin simulator on {servers[0].base_url} (stats: /_sim/stats)")
    if ditas_port:
        servers.append(_start_ditas_sim(host, ditas_port, ditas_key_dir))
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        for server in servers:
            server.stop()


def _start_ditas_sim(host: str, port: int, key_dir: Path) -> Any:
    """The DITAS simulator in a background thread; prints its URL and key files (``adapter sim``)."""
    from adapter.sim.ditas_app import create_ditas_app, sandbox_keys
    from adapter.sim.ditas_registry import DitasSimSettings
    from adapter.sim.server import SimServer

    keys = sandbox_keys(key_dir)
    defaults = DitasSimSettings()
    server = SimServer(create_ditas_app(DitasSimSettings(private_key_pem=keys.private_key_pem)), host, port,
                       log_level="info").start()
    err.print(f"DITAS/SEPAS simulator on {server.base_url} (stats: /_sim/stats; client {defaults.client_id}, "
              f"user {defaults.username}, any pid)")
    err.print(f"  Ministry public key (destinations.sepas.public_key_file): {keys.public_key_file}")
    err.print(f"  simulator private key (mode 600): {keys.private_key_file}")
    return server


@mapping_app.command("test")
def mapping_test(mapping_file: Path, event_file: Path) -> None:
    """Show the payload a mapping file makes of an event, or every problem (file, key, reason)."""
    from adapter.mapping.cli_support import mapping_test as run_test

    code, text = run_test(mapping_file, event_file)
    sys.stdout.write(text.rstrip("\n") + "\n")
    raise typer.Exit(code)


@mapping_app.command("lint")
def mapping_lint(root: Annotated[Path, typer.Option(help="the mappings folder")] = Path("mappings")) -> None:
    """Check every mapping file and code table."""
    from adapter.destinations import registry
    from adapter.mapping.cli_support import mapping_lint as run_lint

    code, text = run_lint(root, registry.operations())
    sys.stdout.write(text.rstrip("\n") + "\n")
    raise typer.Exit(code)


@app.command()
def schema(out: Annotated[Optional[Path], typer.Option(help="write to this file instead of stdout")] = None,
           replies: Annotated[bool, typer.Option(
               "--replies", help="the reply contract's schema (docs/reply-schema.json) instead of the events'")] = False,
           ) -> None:
    """The JSON Schema of event contract v1 (docs/event-schema.json), or with --replies of reply contract v1."""
    from adapter.events.contract import event_json_schema
    from adapter.replies.contract import reply_json_schema

    text = json.dumps(reply_json_schema() if replies else event_json_schema(), ensure_ascii=False, indent=2) + "\n"
    if out:
        out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


@app.command("db-upgrade")
def db_upgrade(config: ConfigOption = DEFAULT_CONFIG,
               reason: Annotated[Optional[str], typer.Option(
                   "--reason", help="why (optional: adapter run migrates at every start too)")] = None,
               actor: ActorOption = None) -> None:
    """Migrate the database schema to the newest version (adapter run does this too). Recorded in
    the operator audit once the schema (and so the audit's table) is there."""
    from adapter.ops.operator_audit import current_who
    from adapter.store import operator_actions
    from adapter.store.db import StoreUnusable, check_writable, make_engine, make_sessionmaker, upgrade

    cfg = config_or_exit(config)
    try:
        upgrade(cfg.database.url)
        engine = make_engine(cfg.database.url)
        try:
            check_writable(engine, cfg.database.url)
            operator_actions.record(make_sessionmaker(engine), current_who(actor), "db-upgrade", {},
                                    (reason or "").strip() or None, "schema is up to date")
        finally:
            engine.dispose()
    except StoreUnusable as exc:
        fail_config(exc.named(cfg.source_file))
    err.print("schema is up to date")


@auth_app.command("set-refresh-token")
def set_refresh_token(prescriber: Annotated[str, typer.Option(help="the prescriber's national code")],
                      reason: ReasonOption = None, actor: ActorOption = None,
                      config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Store a prescriber's Tamin refresh token (read from stdin), encrypted. Audited with the
    national code masked; the token is never recorded."""
    from adapter.app import open_store
    from adapter.destinations.tamin.client import DESTINATION
    from adapter.keys import load_key
    from adapter.redact import mask
    from adapter.store.refresh_tokens import DbRefreshTokenStore

    why = require_reason(reason, "auth set-refresh-token")
    cfg = config_or_exit(config)
    token = sys.stdin.readline().strip()
    if not token:
        err.print("no token on stdin")
        raise typer.Exit(2)
    _, sessions = open_store(cfg, writable=True)
    with operator_action(sessions, "auth set-refresh-token", {"destination": DESTINATION, "prescriber": mask(prescriber)},
                         why, actor) as action:
        key = load_key(cfg.secrets.token_key_env, cfg.secrets.token_key_file, source=cfg.source_file,
                       key_name="token_key")
        DbRefreshTokenStore(sessions, key, DESTINATION).put(prescriber, token)
        action.done("stored (encrypted)")
    err.print("stored (encrypted)")


from adapter.ops import cli_replay; cli_replay.register(app)  # noqa: E402,E702  adapter list / adapter replay


from adapter.ops import cli_outage; cli_outage.register(app)  # noqa: E402,E702  adapter outage / adapter paper


from adapter.ops import cli_ops; cli_ops.register(app)  # noqa: E402,E702  adapter prune / adapter config check
from adapter.ops import cli_alerts; cli_alerts.register(app)  # noqa: E402,E702  adapter alerts test
from adapter.ops import cli_replies; cli_replies.register(app)  # noqa: E402,E702  adapter replies list/resend/tail
from adapter.ops import cli_audit; cli_audit.register(app)  # noqa: E402,E702  adapter audit list


def main() -> None:
    app()
