"""``adapter replies list | resend | tail``: what the HIS was told, sending it again, watching it live.

Registered on the main ``adapter`` app by ``adapter.ops.cli`` (``cli_replies.register(app)``).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from adapter.config import DEFAULT_CONFIG, AdapterConfig
from adapter.ops.cli_common import (ActorOption, ConfigOption, ReasonOption, config_or_exit, console, err,
                                    open_config_store, operator_action, print_json, require_reason, usage_error)

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
EventOpt = Annotated[Optional[str], typer.Option("--event", help="only the replies about this event id")]
StateOpt = Annotated[Optional[str], typer.Option("--state", help="pending, published or dead")]
TypeOpt = Annotated[Optional[str], typer.Option("--type", help="reply type, e.g. prescription.rejected")]


def register(app: typer.Typer) -> None:
    replies_app = typer.Typer(help="Replies to the HIS (reply contract v1, docs/replies.md).", no_args_is_help=True)
    app.add_typer(replies_app, name="replies")
    replies_app.command("list")(list_command)
    replies_app.command("resend")(resend_command)
    replies_app.command("tail")(tail_command)




def _query(event: Optional[str], state: Optional[str], reply_type: Optional[str]) -> Any:
    from sqlalchemy import select

    from adapter.replies.rows import STATES
    from adapter.store.models import ReplyRow

    if state is not None and state not in STATES:
        raise usage_error(f"--state {state!r}: use one of {', '.join(STATES)}")
    query = select(ReplyRow)
    if event:
        query = query.where(ReplyRow.event_id == event)
    if state:
        query = query.where(ReplyRow.state == state)
    if reply_type:
        query = query.where(ReplyRow.type == reply_type)
    return query


def _row_dict(row: Any) -> dict[str, Any]:
    return {"reply_id": row.reply_id, "type": row.type, "event_id": row.event_id, "state": row.state,
            "attempts": row.attempts, "created_at": row.created_at.isoformat(),
            "published_at": row.published_at.isoformat() if row.published_at else None,
            "last_error": row.last_error, "reply": row.body}


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Replies to the HIS")
    table.add_column("reply_id", overflow="fold")
    table.add_column("type", overflow="fold")
    table.add_column("event", overflow="fold")
    table.add_column("state", no_wrap=True)
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("what", ratio=2)
    for row in rows:
        body = row["reply"]
        what = body.get("tracking_code") or body.get("fallback_no") or body.get("insurer_code") or body.get("detail") \
            or "; ".join(p.get("rule", "") for p in body.get("problems", [])) or ""
        table.add_row(Text(row["reply_id"]), Text(row["type"]), Text(row["event_id"]), Text(row["state"]),
                      Text(row["created_at"][:19].replace("T", " ")), Text(str(what)[:80]))
    return table


def list_command(event: EventOpt = None, state: StateOpt = None, reply_type: TypeOpt = None,
                 limit: Annotated[int, typer.Option("--limit", min=1, help="at most this many (newest first)")] = 50,
                 json_out: JsonOpt = False, config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Replies written for the HIS, newest first, with their delivery state."""
    from adapter.store.models import ReplyRow

    query = _query(event, state, reply_type).order_by(ReplyRow.id.desc()).limit(limit)
    _, engine, sessions = open_config_store(config)
    try:
        with sessions() as session:
            rows = [_row_dict(row) for row in session.scalars(query)]
    finally:
        engine.dispose()
    if json_out:
        print_json(rows)
    else:
        console.print(_table(rows))


def resend_command(
    reply_ids: Annotated[Optional[list[str]], typer.Argument(help="reply ids to send again")] = None,
    state: StateOpt = None, reply_type: TypeOpt = None, event: EventOpt = None,
    reason: ReasonOption = None, actor: ActorOption = None, config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Send replies again, with their same reply_id (the HIS drops one it had). Give ids, or filters
    (--state dead, --type, --event). Audited; --reason is required."""
    from adapter.replies.rows import resend
    from adapter.store.models import ReplyRow

    why = require_reason(reason, "replies resend")
    if not reply_ids and not (state or reply_type or event):
        raise usage_error("give reply ids, or a filter (--state dead, --type ..., --event ...)")
    _, engine, sessions = open_config_store(config, writable=True)
    try:
        arguments = {"reply_ids": reply_ids or [], "state": state, "type": reply_type, "event": event}
        with operator_action(sessions, "replies resend", arguments, why, actor) as action:
            with sessions() as session:
                ids = list(reply_ids or []) or [r.reply_id for r in session.scalars(
                    _query(event, state, reply_type).order_by(ReplyRow.id))]
                found = resend(session, ids)
                session.commit()
            action.done(f"{len(found)} replies queued again")
    finally:
        engine.dispose()
    missing = sorted(set(reply_ids or []) - set(found))
    console.print(f"{len(found)} replies queued to send again")
    if missing:
        err.print(f"not found: {', '.join(missing)}", highlight=False)
        raise typer.Exit(1)


def tail_command(
    count: Annotated[Optional[int], typer.Option("--count", min=1, help="stop after this many replies")] = None,
    timeout_s: Annotated[Optional[float], typer.Option("--timeout", help="stop after this many seconds")] = None,
    facility: Annotated[Optional[str], typer.Option(
        "--facility", help="with a per-facility replies.routing_key: the facility to watch")] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Print replies as they reach the HIS, one JSON object per line, without taking them from the
    HIS: on RabbitMQ from a private copy queue bound beside the reply queue; on the embedded queue
    (one reader only) by following the replies as the outbox publishes them."""
    from adapter.broker.connection import is_embedded

    cfg = config_or_exit(config)
    stop_at = time.monotonic() + timeout_s if timeout_s else None
    printed = 0

    def show(body: dict[str, Any]) -> bool:
        nonlocal printed
        sys.stdout.write(json.dumps(body, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        printed += 1
        return count is not None and printed >= count

    def expired() -> bool:
        return stop_at is not None and time.monotonic() >= stop_at

    if is_embedded(cfg.broker.url) or cfg.replies.sink == "webhook":
        _tail_store(cfg, show, expired)
    else:
        _tail_amqp(cfg, facility, show, expired)


def _tail_store(cfg: AdapterConfig, show: Any, expired: Any) -> None:
    from sqlalchemy import func, select

    from adapter.app import open_store
    from adapter.store.models import ReplyRow

    engine, sessions = open_store(cfg)
    try:
        with sessions() as session:
            seen = session.scalar(select(func.max(ReplyRow.id))) or 0
        published: set[int] = set()
        while not expired():
            with sessions() as session:
                rows = list(session.scalars(select(ReplyRow).where(ReplyRow.id > seen, ReplyRow.state == "published")
                                            .order_by(ReplyRow.id).limit(500)))
                waiting = session.scalar(select(func.min(ReplyRow.id)).where(ReplyRow.id > seen,
                                                                              ReplyRow.state == "pending"))
            for row in rows:
                if row.id in published:
                    continue
                published.add(row.id)
                if show(row.body):
                    return
            # advance past what is out, never past a reply still waiting (it is shown when it goes)
            top = max((r.id for r in rows), default=seen)
            seen = min(top, waiting - 1) if waiting is not None else top
            published = {i for i in published if i > seen}
            time.sleep(0.2)
    finally:
        engine.dispose()


def _tail_amqp(cfg: AdapterConfig, facility: Optional[str], show: Any, expired: Any) -> None:
    from kombu import Connection, Exchange, Queue

    from adapter.replies.sinks import routing_key

    key = routing_key(cfg.replies, cfg.broker, facility)
    copy = Queue("", exchange=Exchange(cfg.broker.exchange, type="direct", durable=True), routing_key=key,
                 exclusive=True, auto_delete=True, durable=False)
    with Connection(cfg.broker.url) as connection:
        queue = copy(connection.default_channel)
        queue.declare()
        while not expired():
            message = queue.get(no_ack=True)
            if message is None:
                time.sleep(0.1)
                continue
            if show(json.loads(message.body)):
                return
