"""``adapter outage start|end|list`` and ``adapter paper``: the operator's side of outage mode.

Registered on the main ``adapter`` command by ``register(app)`` (called at the bottom of
``adapter/ops/cli.py``). The shared helpers come from ``adapter.ops.cli_common``.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from adapter.config import DEFAULT_CONFIG
from adapter.ops.cli_common import (ActorOption, ConfigOption, config_or_exit, console, err,
                                    operator_action, print_json, require_reason)
from adapter.ops.operator_audit import actor_name, current_who

DestinationOption = Annotated[str, typer.Option("--destination", "-d", help="the destination, e.g. tamin")]


def _actor(actor: str | None) -> str:
    """The name the outage row carries: ``--actor`` when given, else the OS user."""
    return actor_name(current_who(actor))


def _store(config: Path, writable: bool = False) -> tuple[Any, Any]:
    """The config and sessions; ``writable``: a store that takes no writes is a config error here,
    before the operator audit's row or the outage is written."""
    from adapter.app import open_store
    cfg = config_or_exit(config)
    _, sessions = open_store(cfg, writable=writable)
    return cfg, sessions


def _known_destinations(cfg: Any) -> list[str]:
    return sorted(name for name in type(cfg.destinations).model_fields if getattr(cfg.destinations, name, None) is not None)


def _check_destination(cfg: Any, destination: str) -> None:
    known = _known_destinations(cfg)
    if destination not in known:
        err.print(f"unknown destination {destination!r} -- fix: one of {', '.join(known)}")
        raise typer.Exit(2)


def start(destination: DestinationOption,
          reason: Annotated[Optional[str], typer.Option(
              "--reason", help="why (required; shown to operators, sent to the HIS, kept in the operator audit)")] = None,
          actor: ActorOption = None, config: ConfigOption = DEFAULT_CONFIG,
          json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Declare an outage: nothing is sent to the destination (not even probes) until it is ended;
    new prescriptions get paper-fallback records and the HIS is told to print the paper form."""
    from adapter.outage import records

    why = require_reason(reason, "outage start")
    cfg, sessions = _store(config, writable=True)
    _check_destination(cfg, destination)
    with operator_action(sessions, "outage start", {"destination": destination}, why, actor) as action, \
            sessions() as session:
        try:
            row = records.start_outage(session, destination, reason=why, actor=_actor(actor),
                                       detected=records.MANUAL)
            session.commit()
        except records.OutageError as exc:
            action.failed(str(exc))
            err.print(str(exc), markup=False)
            raise typer.Exit(1) from None
        data = records.outage_dict(row)
        action.done(f"outage {data['id']} started")
    if json_out:
        print_json(data)
    else:
        err.print(f"outage {data['id']} of {destination} started by {data['started_by']}: {data['reason']}",
                          markup=False)


def end(destination: DestinationOption,
        reason: Annotated[Optional[str], typer.Option(
            "--reason", help="why it is over (required; kept in the operator audit)")] = None,
        actor: ActorOption = None, config: ConfigOption = DEFAULT_CONFIG,
        json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """End the destination's open outage(s) -- declared and automatic: sending resumes (rate-limited),
    retries that waited out the outage become due now."""
    from adapter.outage import records
    from adapter.outage.control import pull_forward
    from adapter.store.types import utcnow

    why = require_reason(reason, "outage end")
    cfg, sessions = _store(config, writable=True)
    _check_destination(cfg, destination)
    with operator_action(sessions, "outage end", {"destination": destination}, why, actor) as action, \
            sessions() as session:
        now = utcnow()
        ended = records.end_outages(session, destination, actor=_actor(actor), reason=why, now=now)
        if not ended:
            action.failed(f"no open outage of {destination}")
            err.print(f"no open outage of {destination}")
            raise typer.Exit(1)
        if any(row.detected == records.CIRCUIT for row in ended):  # status must not show a stale open circuit
            records.save_circuit_state(session, destination, "closed", f"outage ended by {_actor(actor)}", None, now)
        due = pull_forward(session, destination, now)
        session.commit()
        data = [records.outage_dict(row) for row in ended]
        action.done(f"ended outage(s) {', '.join(str(item['id']) for item in data)}; {due} retries due now")
    if json_out:
        print_json(data)
        return
    for item in data:
        err.print(f"outage {item['id']} of {destination} ({item['detected']}) ended by {item['ended_by']} "
                          f"after {item['duration_s']}s", markup=False)
    err.print(f"{due} waiting retries are due now")


def list_(config: ConfigOption = DEFAULT_CONFIG,
          destination: Annotated[Optional[str], typer.Option("--destination", "-d")] = None,
          json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every outage: when, why, who started and ended it, how it was detected (circuit|manual)."""
    from rich.table import Table

    from adapter.outage import records

    _, sessions = _store(config)
    with sessions() as session:
        rows = records.list_outages(session, destination)
    if json_out:
        print_json(rows)
        return
    table = Table(title="Outages")
    for column in ("id", "destination", "detected", "start", "end", "duration_s", "started_by", "ended_by", "reason"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row["id"]), row["destination"], row["detected"], row["start"], row["end"] or "(open)",
                      str(row["duration_s"]), row["started_by"], row["ended_by"] or "",
                      row["reason"] + (f" / end: {row['end_reason']}" if row["end_reason"] else ""))
    console.print(table)


def _item_names(mappings_root: Path, destination: str) -> dict[str, str]:
    path = mappings_root / destination / "codes" / "services.csv"
    if not path.exists():
        return {}
    with open(path, encoding="utf-8", newline="") as handle:
        return {row["his_code"]: (row.get("description") or "").strip()
                for row in csv.DictReader(handle) if row.get("his_code") and (row.get("description") or "").strip()}


def paper(which: Annotated[str, typer.Argument(help="an event id or a fallback number (FB-...)")],
          out: Annotated[Optional[Path], typer.Option("--out", help="PDF file to write (default <fallback-no>.pdf)")] = None,
          config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Render the paper prescription (PDF) of a paper-fallback record, to print again or send."""
    from sqlalchemy import or_, select

    from adapter.store.models import FallbackRecord, InboxEvent, Visit

    cfg, sessions = _store(config)
    with sessions() as session:
        record = session.scalars(select(FallbackRecord).where(
            or_(FallbackRecord.fallback_no == which, FallbackRecord.event_id == which)).order_by(FallbackRecord.id)).first()
        if record is None:
            err.print(f"no paper-fallback record with fallback number or event id {which!r} "
                           "(records are issued only for prescriptions received during an outage)", markup=False)
            raise typer.Exit(1)
        inbox = session.get(InboxEvent, record.event_id)
        event = json.loads(inbox.body) if inbox is not None else None
        visit_id = ((event or {}).get("payload") or {}).get("visit_id")
        visit = session.get(Visit, (record.facility_siam_id, visit_id, record.destination)) if visit_id else None
        hid = visit.hid if visit is not None and visit.eligible else None
        fallback_no, destination, issued_at = record.fallback_no, record.destination, record.created_at
    if event is None:
        err.print(f"the event {record.event_id} of {fallback_no} is not in the store")
        raise typer.Exit(1)
    try:
        from adapter.fallback.paper import render_paper_prescription
    except ImportError as exc:
        err.print(f"the paper renderer is not available ({exc}) -- fix: install the adapter with its PDF dependencies")
        raise typer.Exit(2) from None
    try:
        pdf = render_paper_prescription(event, fallback_no, hid=hid, facility_name=None,
                                        item_names=_item_names(Path(cfg.mappings_root), destination),
                                        issued_at=issued_at)
    except Exception as exc:  # a missing font, an event the renderer refuses: say what, not a traceback
        err.print(f"could not render {fallback_no}: {type(exc).__name__}: {exc}", markup=False)
        raise typer.Exit(1) from None
    target = out or Path(f"{fallback_no}.pdf")
    target.write_bytes(pdf)
    sys.stderr.write(f"wrote {target} ({len(pdf)} bytes) for {fallback_no}, event {record.event_id}\n")


def register(app: typer.Typer) -> None:
    outage_app = typer.Typer(help="Outages of a destination: declare, end, list.", no_args_is_help=True)
    outage_app.command("start")(start)
    outage_app.command("end")(end)
    outage_app.command("list")(list_)
    app.add_typer(outage_app, name="outage")
    app.command("paper")(paper)
