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

from adapter.config import (AdapterConfig, ConfigError, RetryConfig, SepasConfig, TaminConfig, TaminProviderConfig,
                            read_secret)
from adapter.destinations.base import Destination
from adapter.destinations.sepas.client import DitasClient, PasswordGrantProvider
from adapter.destinations.sepas.destination import SepasDestination
from adapter.destinations.sepas.terminology import load_terminology
from adapter.destinations.auth import (AclAuthenticateProvider, ClientCredentialsProvider, Operator, RefreshTokenProvider,
                                      TokenCache, TokenProvider)
from adapter.destinations.tamin.client import TaminClient
from adapter.destinations.tamin.destination import TaminDestination
from adapter.destinations.tamin_provider.paraclinic import ParaclinicDestination
from adapter.destinations.tamin_provider.pharmacy import PharmacyDestination
from adapter.destinations.tamin_provider.client import ProviderClient
from adapter.keys import load_key
from adapter.mapping import MappingError, MappingSet, load_mappings
from adapter.outage.control import OutageControl, settings_from_config
from adapter.pipeline.dispatch import Dispatcher
from adapter.pipeline.intake import FallbackPolicy, Intake
from adapter.store import at_rest
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
    intake_engine: Engine | None = None  # intake's own engine: durable commits before each ack

    def close(self) -> None:
        self.dispatcher.close()
        self.http.close()
        self.engine.dispose()
        if self.intake_engine is not None:
            self.intake_engine.dispose()


def open_store(config: AdapterConfig) -> tuple[Engine, sessionmaker[Session]]:
    """Engine + sessions, with the schema migrated to the newest version."""
    at_rest.use_key_env(config.secrets.payload_key_env)
    upgrade(config.database.url)
    engine = make_engine(config.database.url)
    return engine, make_sessionmaker(engine)


def enabled_destinations(config: AdapterConfig) -> list[str]:
    d = config.destinations
    configured = (("tamin", d.tamin), ("sepas", d.sepas), ("tamin_pharmacy", d.tamin_pharmacy),
                  ("tamin_paraclinic", d.tamin_paraclinic))
    return [name for name, dest in configured if dest is not None and dest.enabled]


def load_checked_mappings(config: AdapterConfig) -> MappingSet:
    enabled = enabled_destinations(config)
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


@dataclass
class _Part:
    """One destination, built: what the dispatcher and the outage control need of it."""

    destination: Destination
    cache: TokenCache
    retry: RetryConfig
    circuit: object
    rate: tuple[float | None, int | None]
    principal_mode: str


def _tamin(tamin: TaminConfig, http: httpx.Client, sessions: sessionmaker[Session], config: AdapterConfig) -> _Part:
    cache = TokenCache(_token_provider(tamin, http, sessions, config), tamin.auth.refresh_leeway_s)
    return _Part(TaminDestination(TaminClient(tamin, http, cache)), cache, tamin.retry, tamin.circuit,
                 (tamin.max_rps, tamin.max_burst), "prescriber" if tamin.auth.mode == "doctor_refresh" else "facility")


def _sepas(sepas: SepasConfig, http: httpx.Client, config: AdapterConfig) -> _Part:
    auth = sepas.auth
    secret = read_secret(auth.client_secret_env, auth.client_secret_file, auth.client_secret,
                         what="destinations.sepas.auth.client_secret", source=config.source_file)
    password = read_secret(auth.password_env, auth.password_file, auth.password,
                           what="destinations.sepas.auth.password", source=config.source_file)
    cache = TokenCache(PasswordGrantProvider(http, sepas.base_url.rstrip("/") + auth.token_path, auth.client_id,
                                             secret, auth.username, password), auth.refresh_leeway_s)
    try:
        terminology = load_terminology(Path(sepas.terminology_dir), sepas.enforcement)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError([f"{config.source_file}: destinations.sepas.terminology_dir: {exc} "
                           "-- fix: point it at a folder with terminology.yaml"]) from None
    return _Part(SepasDestination(DitasClient(sepas, http, cache), sepas, terminology), cache, sepas.retry,
                 sepas.circuit, (sepas.max_rps, sepas.max_burst), "facility")


def provider_operators(name: str, provider: TaminProviderConfig, source: str) -> dict[str, Operator]:
    """Each facility's operator with its password read (environment, mode-600 file, or the simulator's literal)."""
    return {facility: Operator(op.username, read_secret(op.password_env, op.password_file, op.password, source=source,
                                                        what=f"destinations.{name}.auth.operators.{facility}.password"))
            for facility, op in provider.auth.operators.items()}


def provider_secret(name: str, provider: TaminProviderConfig, source: str) -> str:
    auth = provider.auth
    return read_secret(auth.software_client_secret_env, auth.software_client_secret_file, auth.software_client_secret,
                       what=f"destinations.{name}.auth.software_client_secret", source=source)


def _provider(name: str, provider: TaminProviderConfig, http: httpx.Client, config: AdapterConfig) -> _Part:
    """Dispensing or paraclinic: its own acl/authenticate token per facility operator."""
    auth = provider.auth
    url = (auth.auth_base_url or provider.base_url).rstrip("/") + auth.token_path
    tokens = AclAuthenticateProvider(http, url, auth.software_client_id,
                                     provider_secret(name, provider, config.source_file),
                                     provider_operators(name, provider, config.source_file))
    cache = TokenCache(tokens, auth.refresh_leeway_s)
    client = ProviderClient(provider, http, cache)
    destination = PharmacyDestination(client) if name == "tamin_pharmacy" else ParaclinicDestination(client)
    return _Part(destination, cache, provider.retry, provider.circuit, (provider.max_rps, provider.max_burst), "facility")


def build(config: AdapterConfig) -> App:
    from adapter.ops.alerts.notify import check_alert_channels
    from adapter.ops.http_status import resolve_auth
    from adapter.ops.logs import install_redaction

    install_redaction()  # every log record of this process is masked, whoever logs it
    resolve_auth(config)  # a status service reachable from elsewhere without credentials: refuse to start
    check_alert_channels(config)  # an alert channel whose secret is missing: refuse to start
    engine, sessions = open_store(config)
    mappings = load_checked_mappings(config)
    tamin, sepas = config.destinations.tamin, config.destinations.sepas
    http = httpx.Client(timeout=httpx.Timeout(tamin.read_timeout_s, connect=tamin.connect_timeout_s),
                        limits=httpx.Limits(max_connections=config.dispatch.workers * 2))
    parts: dict[str, _Part] = {}
    if tamin.enabled:
        parts["tamin"] = _tamin(tamin, http, sessions, config)
    if sepas is not None and sepas.enabled:
        parts["sepas"] = _sepas(sepas, http, config)
    for name in ("tamin_pharmacy", "tamin_paraclinic"):
        provider = getattr(config.destinations, name)
        if provider is not None and provider.enabled:
            parts[name] = _provider(name, provider, http, config)
    destinations = {name: part.destination for name, part in parts.items()}
    patient_key = load_key(config.secrets.patient_ref_key_env, config.secrets.token_key_file, source=config.source_file,
                           key_name="patient_ref_key")
    fallback = config.fallback
    intake_engine = make_engine(config.database.url, durable_commits=True)
    intake = Intake(make_sessionmaker(intake_engine), mappings, set(destinations), patient_key,
                    {name: part.principal_mode for name, part in parts.items()},
                    FallbackPolicy(fallback.enabled, fallback.number_prefix, fallback.timezone))
    owner = f"{socket.gethostname()}:{os.getpid()}"
    outages = OutageControl(sessions, {name: settings_from_config(part.circuit) for name, part in parts.items()},
                            {name: part.rate for name, part in parts.items()}, owner,
                            shared_rates=engine.dialect.name == "postgresql")
    dispatcher = Dispatcher(sessions, destinations, {name: part.retry for name, part in parts.items()},
                            config.dispatch, owner, outages=outages)
    return App(config, engine, sessions, mappings, intake, dispatcher, http,
               {name: part.cache for name, part in parts.items()}, outages, intake_engine)
