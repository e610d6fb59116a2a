"""Logging: structlog JSON lines (or console), stdlib loggers routed through the same chain,
and a redaction step on every record that no caller can skip.

Redaction happens twice:

* ``install_redaction`` replaces the stdlib log-record factory, so **every** record this process
  creates -- stdlib or structlog, whichever handler later receives it (ours, uvicorn's own,
  pytest's) -- is already masked: the message is formatted and masked once, an exception
  traceback is formatted, masked and kept as ``exc_text`` (the live ``exc_info`` with its frame
  values is dropped), stack info likewise. ``adapter.app.build``, ``configure`` and the CLI
  install it.
* ``configure``'s formatter runs ``redact_tree`` on the final event dict again (keys known to
  hold identifiers or secrets are masked even when their values look harmless).
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

from adapter.redact import redact_text, redact_tree

_HANDLER_MARK = "_adapter_log_handler"


def _redact(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    return redact_tree(event_dict)


def _redact_record(record: logging.LogRecord) -> None:
    if isinstance(record.msg, dict):  # a structlog event dict on its way to ProcessorFormatter
        record.msg = redact_tree(record.msg)
        if record.args:
            record.args = redact_tree(list(record.args)) if isinstance(record.args, tuple) else redact_tree(record.args)
    else:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what there is
            message = f"{record.msg} {record.args!r}"
        record.msg = redact_text(message)
        record.args = ()
    if record.exc_info and record.exc_info[0] is not None:
        record.exc_text = redact_text("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        record.exc_info = None
    elif record.exc_text:
        record.exc_text = redact_text(record.exc_text)
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)


def install_redaction() -> None:
    """Mask every log record at creation (idempotent)."""
    base = logging.getLogRecordFactory()
    if getattr(base, "_adapter_redaction", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        try:
            _redact_record(record)
        except Exception:  # never let a log call fail, never let an unmasked record through
            record.msg, record.args, record.exc_info, record.exc_text = "<log record withheld: redaction failed>", (), None, None
        return record

    setattr(factory, "_adapter_redaction", True)  # the mark the getattr above looks for
    logging.setLogRecordFactory(factory)
    if not structlog.is_configured():  # structlog's default prints straight to stdout: route it through logging
        structlog.configure(
            processors=[structlog.processors.format_exc_info, _redact,
                        structlog.processors.JSONRenderer(ensure_ascii=False, default=str)],
            logger_factory=structlog.stdlib.LoggerFactory(),
            cache_logger_on_first_use=False,
        )


def _exc_text(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """A stdlib record's (already masked) traceback into the event dict."""
    record = event_dict.get("_record")
    if record is not None and getattr(record, "exc_text", None) and "exception" not in event_dict:
        event_dict["exception"] = record.exc_text
    return event_dict


def configure(level: str = "INFO", fmt: str = "json", stream: Any = None) -> None:
    install_redaction()
    renderer: Any = structlog.processors.JSONRenderer(ensure_ascii=False) if fmt == "json" \
        else structlog.dev.ConsoleRenderer(colors=False)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _exc_text],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _redact, renderer],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    # Replace the handlers configure() installed before, and bare stream handlers (basicConfig);
    # keep handlers others attached on purpose (a test's capture, a file handler).
    root.handlers[:] = [h for h in root.handlers
                        if not getattr(h, _HANDLER_MARK, False) and type(h) is not logging.StreamHandler] + [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "uvicorn.access", "alembic", "amqp", "kombu"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
