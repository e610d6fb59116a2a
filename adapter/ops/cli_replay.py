"""``adapter list`` and ``adapter replay``: find failed work and send it again.

Registered on the main ``adapter`` app by ``adapter.ops.cli`` (``cli_replay.register(app)``).
The shared helpers come from ``adapter.ops.cli_common``.
"""

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from adapter.config import DEFAULT_CONFIG
from adapter.destinations import registry
from adapter.ops.cli_common import (ConfigOption, config_or_exit, console, err, fail_config, open_config_store,
                                    operator_action, print_json, usage_error)
from adapter.ops.operator_audit import actor_name, current_who

StateOpt = Annotated[Optional[list[str]], typer.Option(
    "--state", help="submission state (repeatable: --state dead --state rejected)", show_default=False)]
DestinationOpt = Annotated[Optional[str], typer.Option("--destination", help="destination, e.g. tamin")]
TypeOpt = Annotated[Optional[str], typer.Option("--type", help="event type, e.g. prescription.created")]
OperationOpt = Annotated[Optional[str], typer.Option("--operation", help="operation, e.g. create, eligibility")]
SinceOpt = Annotated[Optional[str], typer.Option(
    "--since", help="last changed at or after: ISO datetime (UTC unless it has an offset) or 45m, 2h, 3d, 1w ago")]
UntilOpt = Annotated[Optional[str], typer.Option("--until", help="last changed at or before (same forms as --since)")]
ErrorOpt = Annotated[Optional[str], typer.Option("--error", help="text in the last error (case-insensitive)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]

_ERROR_WIDTH = 60


def register(app: typer.Typer) -> None:
    app.command("list")(list_command)
    app.command("replay")(replay_command)



def _filters(state: Optional[list[str]], destination: Optional[str], event_type: Optional[str],
             operation: Optional[str], since: Optional[str], until: Optional[str], error: Optional[str]) -> Any:
    from adapter.ops.inspect import FilterError, make_filters

    try:
        return make_filters(states=state, destination=destination, event_type=event_type, operation=operation,
                            since=since, until=until, error=error)
    except FilterError as exc:
        raise usage_error(str(exc)) from None



def _cell(text: Optional[str], width: Optional[int] = None) -> Text:
    text = text or ""
    if width and len(text) > width:
        text = text[: width - 1] + "…"
    return Text(text)  # never markup: errors and ids come from outside


def _table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("event", overflow="fold")  # ids are copied from here: wrap, never cut
    table.add_column("type", overflow="fold")
    table.add_column("destination/operation", overflow="fold")
    table.add_column("state", no_wrap=True)
    table.add_column("attempts", justify="right", no_wrap=True)
    table.add_column("updated_at (UTC)", no_wrap=True)
    table.add_column("last_error", ratio=2)  # already cut to _ERROR_WIDTH characters
    for row in rows:
        table.add_row(str(row["id"]), _cell(row["event_id"]), _cell(row["event_type"]),
                      _cell(f"{row['destination']}/{row['operation']}"), _cell(row["state"]), str(row["attempts"]),
                      _cell((row["updated_at"] or "")[:19].replace("T", " ")),
                      _cell((row["last_error"] or "").replace("\n", " "), _ERROR_WIDTH))
    return table


def list_command(
    state: StateOpt = None,
    destination: DestinationOpt = None,
    event_type: TypeOpt = None,
    operation: OperationOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    error: ErrorOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="at most this many rows (newest change first)")] = 50,
    json_out: JsonOpt = False,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Submissions matching the filters (identifiers masked in errors), most recently changed first."""
    from sqlalchemy import func

    from adapter.ops.inspect import list_submissions, matching
    from adapter.store.models import Submission

    filters = _filters(state, destination, event_type, operation, since, until, error)
    _, engine, sessions = open_config_store(config)
    try:
        with sessions() as session:
            rows = list_submissions(session, filters, limit)
            total = session.scalar(matching(filters, func.count(Submission.id))) if len(rows) >= limit else len(rows)
    finally:
        engine.dispose()
    if json_out:
        print_json(rows)
    else:
        console.print(_table(rows, "Submissions"))
    if total and total > len(rows):
        err.print(f"showing {len(rows)} of {total} matching; raise --limit or narrow the filters")


def replay_command(
    submission_ids: Annotated[Optional[list[str]], typer.Argument(
        help="submission ids to replay (or use --filter)", show_default=False)] = None,
    use_filter: Annotated[bool, typer.Option("--filter", help="replay what the filter options match")] = False,
    state: StateOpt = None,
    destination: DestinationOpt = None,
    event_type: TypeOpt = None,
    operation: OperationOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    error: ErrorOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="rows per transaction")] = 100,
    max_rows: Annotated[int, typer.Option("--max", min=1, help="with --filter: replay at most this many")] = 1000,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show what would be replayed; change nothing")] = False,
    remap: Annotated[bool, typer.Option("--remap", help="rebuild the payload from the stored event with the "
                                                        "current mapping files")] = False,
    reason: Annotated[Optional[str], typer.Option("--reason", help="why (recorded in the audit trail); "
                                                                   "required unless --dry-run")] = None,
    actor: Annotated[Optional[str], typer.Option("--actor", help="who you say you are, for the audit trail: kept "
                                                                 "as claimed beside the OS user [default: the OS user]")] = None,
    conflict: Annotated[Optional[str], typer.Option(
        "--conflict", metavar="EVENT_ID", help="make the event's newest conflicting version (a different body "
                                               "under its id, see adapter show) the event, if nothing can be sent twice")] = None,
    json_out: JsonOpt = False,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Move rejected, invalid or dead submissions back to pending (audited), by id or by filter;
    or, with --conflict EVENT_ID, replay an event's conflicting version as the event.

    Exit code 0 when every requested replay happened, 1 when some were skipped (or the conflict
    was refused), 2 on bad arguments.
    """
    from adapter.config import ConfigError
    from adapter.ops.replay import Replayer, ReplayArgumentError

    if conflict is not None:
        if submission_ids or use_filter or remap:
            raise usage_error("--conflict EVENT_ID takes no submission ids, --filter or --remap")
        _replay_conflict(conflict, reason, actor, dry_run, json_out, config)
        return
    ids = _ids(submission_ids or [])
    filter_given = any((state, destination, event_type, operation, since, until, error))
    if use_filter and ids:
        raise usage_error("give submission ids or --filter, not both")
    if not use_filter and not ids:
        raise usage_error("give one or more submission ids, or --filter with filter options")
    if filter_given and not use_filter:
        raise usage_error("filter options (--state, --destination, --type, --operation, --since, --until, --error) "
                   "need --filter")
    if not dry_run and not (reason and reason.strip()):
        raise usage_error('--reason "..." is required (it goes into the audit trail), unless --dry-run')
    filters = _filters(state, destination, event_type, operation, since, until, error) if use_filter else None

    cfg, engine, sessions = open_config_store(config, writable=not dry_run)
    try:
        mappings = None
        if remap:
            from adapter.app import load_checked_mappings
            try:
                mappings = load_checked_mappings(cfg)
            except ConfigError as exc:
                fail_config(exc)
        audit: Any = nullcontext(None) if dry_run else operator_action(
            sessions, "replay", _audit_arguments(ids, filters, remap, max_rows), reason, actor)
        with audit as action:
            try:
                replayer = Replayer(sessions, actor=actor_name(current_who(actor)), reason=reason, mappings=mappings,
                                    dry_run=dry_run, batch_size=batch_size,
                                    screens=registry.screens(cfg) if remap else None)
                matched = None
                if filters is not None:
                    ids, matched = replayer.candidates(filters, max_rows)
                report = _with_progress(lambda progress: replayer.replay_ids(ids, progress, matched=matched),
                                        show=filters is not None or len(ids) > batch_size,
                                        label="checking" if dry_run else "replaying")
            except ReplayArgumentError as exc:
                if action is not None:
                    action.failed(str(exc))
                raise usage_error(str(exc)) from None
            if action is not None:
                _audit_outcome(action, report)
        if json_out:
            print_json(report.as_json())
        else:
            _print_report(sessions, report)
    finally:
        engine.dispose()
    if report.over_max:
        err.print(f"[yellow]--max {max_rows} reached:[/] {report.over_max} more matching submission(s) were not "
                  "looked at; run again (or raise --max) to continue")
    raise typer.Exit(1 if report.skipped else 0)


def _replay_conflict(event_id: str, reason: Optional[str], actor: Optional[str], dry_run: bool, json_out: bool,
                     config: Path) -> None:
    """``adapter replay --conflict``: ``adapter.pipeline.supersede`` does it; audited as a replay."""
    from adapter.app import build
    from adapter.config import ConfigError
    from adapter.ops.replay import actor_name as replay_actor
    from adapter.pipeline.supersede import ConflictRefused, replay_conflict

    if not (reason and reason.strip()):
        raise usage_error('--reason "..." is required (it goes into the audit trail)')
    cfg = config_or_exit(config)
    try:
        app = build(cfg)
    except ConfigError as exc:
        fail_config(exc)
    try:
        audit: Any = nullcontext(None) if dry_run else operator_action(
            app.sessions, "replay", {"conflict": event_id}, reason, actor)
        with audit as action:
            try:
                done = replay_conflict(app.sessions, app.intake, event_id, reason=reason, dry_run=dry_run,
                                       actor=replay_actor(actor_name(current_who(actor))))
            except ConflictRefused as exc:
                if action is not None:
                    action.failed(str(exc))
                err.print(Text(f"refused: {exc}"))
                raise typer.Exit(1) from None
            if action is not None:
                action.done(f"replayed version {done.version_id} of {event_id}: {done.from_status} -> {done.to_status}")
    finally:
        app.close()
    if json_out:
        print_json(done.as_json())
        return
    verb = "would replay" if dry_run else "replayed"
    console.print(Text(f"{verb} version {done.version_id} of {event_id} as the event: "
                       f"{done.from_status} -> {done.to_status}"))
    for sub in done.submissions:
        console.print(Text(f"  submission {sub['id']} {sub['destination']}/{sub['operation']}: "
                           f"{sub['from'] or '(new)'} -> {sub['to']}"))


def _ids(values: list[str]) -> list[int]:
    ids: list[int] = []
    for value in values:
        for part in value.replace(",", " ").split():
            if not part.isdigit():
                raise usage_error(f"{part!r} is not a submission id (a number, as shown by adapter list)")
            ids.append(int(part))
    return ids


_AUDITED_IDS = 50  # a longer list of ids is kept as its first ones and a count


def _audit_arguments(ids: list[int], filters: Any, remap: bool, max_rows: int) -> dict[str, Any]:
    """What the operator asked for, for the operator audit (filter text is masked by the store)."""
    if filters is None:
        return {"submission_ids": ids[:_AUDITED_IDS], "count": len(ids), "remap": remap}
    from dataclasses import asdict

    chosen = {name: value for name, value in asdict(filters).items() if value not in (None, ())}
    return {"filter": {name: (value.isoformat() if hasattr(value, "isoformat") else value)
                       for name, value in chosen.items()}, "remap": remap, "max": max_rows}


def _audit_outcome(action: Any, report: Any) -> None:
    replayed = list(report.replayed)
    shown = ", ".join(str(i) for i in replayed[:_AUDITED_IDS]) + (" ..." if len(replayed) > _AUDITED_IDS else "")
    detail = f"replayed {len(replayed)} ({shown or 'none'}); skipped {len(report.skipped)}"
    if replayed or not report.skipped:
        action.done(detail)
    else:
        action.failed(detail)


def _with_progress(work: Any, *, show: bool, label: str) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


    if not show:
        return work(None)
    with Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err) as bar:
        task = bar.add_task("replay", total=None)
        return work(lambda done, total: bar.update(task, completed=done, total=total))


def _print_report(sessions: Any, report: Any) -> None:
    from sqlalchemy import select

    from adapter.ops.inspect import row_dict
    from adapter.store.models import InboxEvent, Submission

    if report.dry_run and report.replayed:
        with sessions() as session:
            found = session.execute(select(Submission, InboxEvent.event_type)
                                    .join(InboxEvent, InboxEvent.event_id == Submission.event_id)
                                    .where(Submission.id.in_(report.replayed)).order_by(Submission.id)).all()
        console.print(_table([row_dict(sub, event_type) for sub, event_type in found], "Would be replayed (dry run)"))
    verb = "would replay" if report.dry_run else "replayed"
    console.print(f"{verb} {len(report.replayed)} submission(s) to pending; skipped {len(report.skipped)}",
                  highlight=False)
    for skipped in report.skipped:
        console.print(Text(f"  skipped {skipped.id} ({skipped.state or 'not found'}): {skipped.reason}"))
