"""How the adapter's connections to each insurer are made: TLS per destination and no plain
http to an insurer off this machine.

* ``tls_contexts``: the ``ssl`` context of every enabled destination whose ``tls.*`` asks for one
  (its own CA bundle, a client certificate); the app gives each of those its own HTTP client
  (``adapter.app``), the others share one. A file that is missing or does not load stops
  start-up (``ConfigError``).
* ``plain_http_problems``: an ``http://`` URL of an enabled destination whose host is not this
  machine (the bundled simulators are) is refused, by ``config check`` and ``adapter run``,
  unless the destination sets ``tls.allow_plain_http: true``.
"""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

from pydantic import BaseModel

from adapter.config import AdapterConfig, ConfigError, is_this_machine
from adapter.destinations import registry
from adapter.tls import client_context


def tls_contexts(config: AdapterConfig) -> dict[str, ssl.SSLContext]:
    """Destination name -> its TLS context, for those that configure one; every problem at once."""
    contexts: dict[str, ssl.SSLContext] = {}
    problems: list[str] = []
    for item in registry.configured(config):
        try:
            context = client_context(item.section.tls, f"destinations.{item.name}.tls", config.source_file)
        except ConfigError as exc:
            problems += exc.lines
            continue
        if context is not None:
            contexts[item.name] = context
    if problems:
        raise ConfigError(problems)
    return contexts


def tls_problems(config: AdapterConfig) -> list[str]:
    """``tls_contexts``' problems as lines (for ``config check``)."""
    try:
        tls_contexts(config)
    except ConfigError as exc:
        return list(exc.lines)
    return []


def _url_fields(model: BaseModel, loc: str) -> list[tuple[str, str]]:
    """(key, URL) of every ``*base_url`` in a destination's section, its token hosts included."""
    found: list[tuple[str, str]] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if name.endswith("base_url") and isinstance(value, str):
            found.append((f"{loc}.{name}", value))
        elif isinstance(value, BaseModel):
            found += _url_fields(value, f"{loc}.{name}")
    return found


def plain_http_problems(config: AdapterConfig) -> list[str]:
    """One line per ``http://`` URL to an insurer off this machine, unless the destination opts out."""
    try:
        enabled = registry.configured(config)
    except ConfigError:
        return []  # reported by whoever validates the destinations
    lines = []
    for item in enabled:
        if item.section.tls.allow_plain_http:
            continue
        for key, url in _url_fields(item.section, f"destinations.{item.name}"):
            if urlsplit(url).scheme.lower() == "http" and not is_this_machine(url):
                host = urlsplit(url).hostname or "?"
                lines.append(f"{config.source_file}: {key}: http://{host} sends patient data to the insurer "
                             f"unencrypted -- fix: use https://, or set destinations.{item.name}.tls.allow_plain_http: "
                             "true if this link is secured otherwise (not advised)")
    return lines
