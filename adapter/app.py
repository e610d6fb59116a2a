"""Builds the adapter's parts from a validated config: store, mappings, destinations,
intake and dispatcher. Nothing here runs; ``adapter.pipeline.runner`` does."""

from __future__ import annotations

import logging
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from adapter.config import AdapterConfig, ConfigError
from adapter.destinations import registry
from adapter.destinations.auth import TokenCache
from adapter.destinations.http import Recorder
from adapter.destinations.plugin import BuildContext, Built
from adapter.destinations.registry import Configured
from adapter.destinations.transport import plain_http_problems
from adapter.destinations.transport import tls_contexts as destination_tls
from adapter.keys import load_key, load_patient_key, payload_key_problems, shared_key_warning
from adapter.mapping import MappingError, MappingSet, load_mappings
from adapter.outage.control import OutageControl, settings_from_config
from adapter.pipeline.dispatch import Dispatcher
from adapter.pipeline.intake import FallbackPolicy, Intake
from adapter.replies.checks import reply_problems
from adapter.replies.make import ReplyRules
from adapter.store import at_rest
from adapter.store.db import StoreUnusable, check_writable, make_engine, make_sessionmaker, upgrade
from adapter.store.refresh_tokens import DbRefreshTokenStore
from adapter.store.models import InboxEvent

log = logging.getLogger("adapter.app")


@dataclass
class App:
    config: AdapterConfig
    engine: Engine
    sessions: sessionmaker[Session]
    mappings: MappingSet
    intake: Intake
    dispatcher: Dispatcher
    http: httpx.Client
    token_caches: dict[str, TokenCache]
    outages: OutageControl | None = None
    intake_engine: Engine | None = None  # intake's own engine: durable commits before each ack
    tls_clients: tuple[httpx.Client, ...] = ()  # own clients of destinations with tls.* set

    def close(self) -> None:
        self.dispatcher.close()
        self.http.close()
        for client in self.tls_clients:
            client.close()
        self.engine.dispose()
        if self.intake_engine is not None:
            self.intake_engine.dispose()


def open_store(config: AdapterConfig, writable: bool = False) -> tuple[Engine, sessionmaker[Session]]:
    """Engine + sessions, with the schema migrated to the newest version; ``writable``: also
    check that the store takes writes (``adapter run``; the read-only commands skip it).

    Raises ``ConfigError`` (one line: file, key, fix) when the payload key is set but empty or
    not a key, or when the store cannot be created or written (``StoreUnusable``): a read-only
    store stops here, at start-up, not at the first write of a running loop."""
    problems = payload_key_problems(config.secrets.payload_key_env, source=config.source_file,
                                    required=config.secrets.payload_key_required)
    if problems:
        raise ConfigError(problems)
    at_rest.use_key_env(config.secrets.payload_key_env)
    url = config.database.url
    try:
        upgrade(url)
        engine = make_engine(url)
        if writable:
            _check_writable_or_dispose(engine, url)
    except StoreUnusable as exc:
        raise exc.named(config.source_file) from None
    return engine, make_sessionmaker(engine)


def _has_events(sessions: sessionmaker[Session]) -> bool:
    """The store holds events already (their pseudonyms and digests were made with some key)."""
    with sessions() as session:
        return session.execute(select(InboxEvent.event_id).limit(1)).first() is not None


def _check_writable_or_dispose(engine: Engine, url: str) -> None:
    try:
        check_writable(engine, url)
    except BaseException:
        engine.dispose()
        raise


def enabled_destinations(config: AdapterConfig) -> list[str]:
    return registry.enabled_names(config)


def load_checked_mappings(config: AdapterConfig) -> MappingSet:
    try:
        return load_mappings(Path(config.mappings_root), enabled_destinations(config), registry.operations())
    except MappingError as exc:
        raise ConfigError([str(p) for p in exc.problems]) from None


def _build_destinations(config: AdapterConfig, http: httpx.Client, sessions: sessionmaker[Session],
                        recorder: Recorder | None, own_http: dict[str, httpx.Client] | None = None,
                        ) -> dict[str, tuple[Configured, Built]]:
    """``own_http``: the clients of destinations with their own TLS settings; the rest share ``http``."""
    def refresh_tokens(destination: str) -> DbRefreshTokenStore:
        key = load_key(config.secrets.token_key_env, config.secrets.token_key_file, source=config.source_file,
                       key_name="token_key")
        return DbRefreshTokenStore(sessions, key, destination)

    def context(name: str) -> BuildContext:
        return BuildContext(config, (own_http or {}).get(name, http), refresh_tokens, recorder)

    return {item.name: (item, item.plugin.build(item.section, context(item.name)))
            for item in registry.configured(config)}


def _http_client(config: AdapterConfig, verify: ssl.SSLContext | bool = True) -> httpx.Client:
    """A connection pool for the destinations' requests; ``verify``: a destination's own TLS context."""
    tamin = config.destinations.tamin
    return httpx.Client(timeout=httpx.Timeout(tamin.read_timeout_s, connect=tamin.connect_timeout_s),
                        limits=httpx.Limits(max_connections=config.dispatch.workers * 2), verify=verify)


def reply_rules(config: AdapterConfig) -> ReplyRules:
    replies = config.replies
    return ReplyRules(replies.enabled, tuple(replies.types), replies.legacy_paper_type)


def build(config: AdapterConfig, recorder: Recorder | None = None) -> App:
    """Every part, from the config; ``recorder`` receives every insurer request and answer."""
    from adapter.ops.alerts.notify import check_alert_channels
    from adapter.ops.http_status import resolve_auth, resolve_serving
    from adapter.ops.logs import install_redaction

    install_redaction()  # every log record of this process is masked, whoever logs it
    resolve_auth(config)  # a status service reachable from elsewhere without credentials: refuse to start
    check_alert_channels(config)  # an alert channel whose secret is missing: refuse to start
    problems = reply_problems(config)  # a webhook without its secret, a replies.types typo: refuse to start
    problems += plain_http_problems(config)  # patient data to an insurer in clear: refuse to start
    if problems:
        raise ConfigError(problems)
    resolve_serving(config)  # the status service's certificate files and connection cap
    tls_contexts = destination_tls(config)  # the insurers' CA bundles and client certificates
    engine, sessions = open_store(config, writable=True)
    mappings = load_checked_mappings(config)
    http = _http_client(config)
    own_http = {name: _http_client(config, context) for name, context in tls_contexts.items()}
    parts = _build_destinations(config, http, sessions, recorder, own_http)
    destinations = {name: built.destination for name, (_, built) in parts.items()}
    settings = {name: item.section for name, (item, _) in parts.items()}
    patient_key = load_patient_key(config.secrets, source=config.source_file, store_has_events=_has_events(sessions))
    shared = shared_key_warning(config.secrets, source=config.source_file)
    if shared:
        log.warning("%s", shared)
    fallback = config.fallback
    intake_engine = make_engine(config.database.url, durable_commits=True)
    intake = Intake(make_sessionmaker(intake_engine), mappings, set(destinations), patient_key,
                    {name: built.principal_mode for name, (_, built) in parts.items()},
                    FallbackPolicy(fallback.enabled, fallback.number_prefix, fallback.timezone), reply_rules(config),
                    registry.screens(config))
    owner = f"{socket.gethostname()}:{os.getpid()}"
    outages = OutageControl(sessions, {name: settings_from_config(section.circuit) for name, section in settings.items()},
                            {name: (section.max_rps, section.max_burst) for name, section in settings.items()}, owner,
                            shared_rates=engine.dialect.name == "postgresql")
    dispatcher = Dispatcher(sessions, destinations, {name: section.retry for name, section in settings.items()},
                            config.dispatch, owner, outages=outages, replies=reply_rules(config))
    return App(config, engine, sessions, mappings, intake, dispatcher, http,
               {name: built.tokens for name, (_, built) in parts.items()}, outages, intake_engine,
               tuple(own_http.values()))
