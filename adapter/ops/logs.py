"""Logging: structlog JSON lines (or console), stdlib loggers routed through the same chain,
and a redaction step on every record that no caller can skip."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from adapter.ops.redact import redact_tree


def _redact(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return redact_tree(event_dict)


def configure(level: str = "INFO", fmt: str = "json", stream: Any = None) -> None:
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
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _redact, renderer],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "uvicorn.access", "alembic", "amqp", "kombu"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
