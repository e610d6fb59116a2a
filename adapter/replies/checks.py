"""What ``config check`` and start-up say about the ``replies`` section (one line per problem,
naming file, key and fix)."""

from __future__ import annotations

import string

from adapter.config import AdapterConfig, ConfigError, is_this_machine, read_secret
from adapter.replies.make import ReplyRules
from adapter.tls import client_context

_FIELDS = {"queue", "facility"}


def reply_problems(config: AdapterConfig) -> list[str]:
    replies, source = config.replies, config.source_file
    if not replies.enabled:
        return []
    problems = [f"{source}: replies.types: {pattern!r} matches no reply type -- fix: see docs/replies.md for the types"
                for pattern in ReplyRules(types=tuple(replies.types)).unknown_patterns()]
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(replies.routing_key) if name is not None}
    except ValueError as exc:
        names = {f"<{exc}>"}
    if names - _FIELDS:
        problems.append(f"{source}: replies.routing_key: unknown placeholder(s) {sorted(names - _FIELDS)} -- fix: use "
                        "{queue} and {facility} only")
    if replies.sink == "webhook":
        problems += _webhook_problems(config)
    return problems


def _webhook_problems(config: AdapterConfig) -> list[str]:
    webhook, source = config.replies.webhook, config.source_file
    if not webhook.url:
        return [f"{source}: replies.webhook.url: not set while replies.sink is webhook -- fix: the HIS's HTTPS endpoint"]
    problems = []
    if not webhook.url.startswith("https://") and not is_this_machine(webhook.url):
        problems.append(f"{source}: replies.webhook.url: plain http to another machine -- fix: use https://")
    if not (webhook.secret_env or webhook.secret_file):
        problems.append(f"{source}: replies.webhook: no signing secret -- fix: set secret_env or secret_file")
        return problems
    try:
        read_secret(webhook.secret_env, webhook.secret_file, None,
                    what="replies.webhook.secret_env / secret_file (the webhook's signing secret)", source=source)
    except ConfigError as exc:
        problems += exc.lines
    try:
        client_context(webhook.tls, "replies.webhook.tls", source)
    except ConfigError as exc:
        problems += exc.lines
    return problems
