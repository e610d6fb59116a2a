"""Builds the adapter's parts from a validated config: store, mappings, destinations,
intake and dispatcher. Nothing here runs; ``adapter.pipeline.runner`` does."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from adapter.config import AdapterConfig, ConfigError, TaminConfig, read_secret
from adapter.destinations.auth import ClientCredentialsProvider, RefreshTokenProvider, TokenCache, TokenProvider
from adapter.destinations.tamin import TaminClient
from adapter.destinations.tamin_destination import TaminDestination
from adapter.keys import load_key
from adapter.mapping import MappingError, MappingSet, load_mappings
from adapter.outage.control import OutageControl, settings_from_config
from adapter.pipeline.dispatch import Dispatcher
from adapter.pipeline.intake import FallbackPolicy, Intake
from adapter.store.db import make_engine, make_sessionmaker, upgrade
from adapter.store.refresh_tokens import DbRefreshTokenStore


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

    def close(self) -> None:
        self.dispatcher.close()
        self.http.close()
        self.engine.dispose()


def open_store(config: AdapterConfig) -> tuple[Engine, sessionmaker[Session]]:
    """Engine + sessions, with the schema migrated to the newest version."""
    upgrade(config.database.url)
    engine = make_engine(config.database.url)
    return engine, make_sessionmaker(engine)


def load_checked_mappings(config: AdapterConfig) -> MappingSet:
    enabled = [name for name, dest in (("tamin", config.destinations.tamin),) if dest.enabled]
    try:
        return load_mappings(Path(config.mappings_root), enabled)
    except MappingError as exc:
        raise ConfigError([str(p) for p in exc.problems]) from None


def _token_provider(tamin: TaminConfig, http: httpx.Client, sessions: sessionmaker[Session],
                    config: AdapterConfig) -> TokenProvider:
    auth = tamin.auth
    base = (auth.auth_base_url or tamin.base_url).rstrip("/")
    if auth.mode == "doctor_refresh":
        key = load_key(config.secrets.token_key_env, config.secrets.token_key_file, source=config.source_file,
                       key_name="token_key")
        return RefreshTokenProvider(http, base + auth.refresh_token_path, auth.client_id,
                                    DbRefreshTokenStore(sessions, key, "tamin"))
    secret = read_secret(auth.client_secret_env, auth.client_secret_file, auth.client_secret,
                         what="destinations.tamin.auth.client_secret", source=config.source_file)
    return ClientCredentialsProvider(http, base + auth.token_path, auth.client_id, secret)


def build(config: AdapterConfig) -> App:
    engine, sessions = open_store(config)
    mappings = load_checked_mappings(config)
    tamin = config.destinations.tamin
    http = httpx.Client(timeout=httpx.Timeout(tamin.read_timeout_s, connect=tamin.connect_timeout_s),
                        limits=httpx.Limits(max_connections=config.dispatch.workers * 2))
    cache = TokenCache(_token_provider(tamin, http, sessions, config), tamin.auth.refresh_leeway_s)
    destinations = {"tamin": TaminDestination(TaminClient(tamin, http, cache))} if tamin.enabled else {}
    patient_key = load_key(config.secrets.patient_ref_key_env, config.secrets.token_key_file, source=config.source_file,
                           key_name="patient_ref_key")
    fallback = config.fallback
    intake = Intake(sessions, mappings, set(destinations), patient_key,
                    {"tamin": "prescriber" if tamin.auth.mode == "doctor_refresh" else "facility"},
                    FallbackPolicy(fallback.enabled, fallback.number_prefix, fallback.timezone))
    owner = f"{socket.gethostname()}:{os.getpid()}"
    outages = OutageControl(sessions, {name: settings_from_config(tamin.circuit) for name in destinations},
                            {"tamin": (tamin.max_rps, tamin.max_burst)}, owner)
    dispatcher = Dispatcher(sessions, destinations, {"tamin": tamin.retry}, config.dispatch, owner, outages=outages)
    return App(config, engine, sessions, mappings, intake, dispatcher, http, {"tamin": cache}, outages)
