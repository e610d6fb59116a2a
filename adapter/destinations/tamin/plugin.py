"""Tamin e-prescribing as the registry sees it (``destinations.tamin``)."""

from __future__ import annotations

from adapter.config import AdapterConfig, ConfigError, TaminConfig, read_secret
from adapter.destinations.auth import ClientCredentialsProvider, RefreshTokenProvider, TokenCache, TokenProvider
from adapter.destinations.http import Exchange
from adapter.destinations.plugin import BuildContext, Built, DestinationPlugin, SimulatorRef
from adapter.destinations.tamin.client import DESTINATION, TaminClient, endpoint
from adapter.destinations.tamin.coverage import coverage_screen
from adapter.destinations.tamin.destination import TaminDestination


def _token_provider(tamin: TaminConfig, context: BuildContext) -> TokenProvider:
    auth, config = tamin.auth, context.config
    base = (auth.auth_base_url or tamin.base_url).rstrip("/")
    if auth.mode == "doctor_refresh":
        return RefreshTokenProvider(context.http, base + auth.refresh_token_path, auth.client_id,
                                    context.refresh_tokens(DESTINATION))
    secret = read_secret(auth.client_secret_env, auth.client_secret_file, auth.client_secret,
                         what="destinations.tamin.auth.client_secret", source=config.source_file)
    return ClientCredentialsProvider(context.http, base + auth.token_path, auth.client_id, secret)


def build(tamin: TaminConfig, context: BuildContext) -> Built:
    tokens = TokenCache(_token_provider(tamin, context), tamin.auth.refresh_leeway_s)
    client = TaminClient(tamin, Exchange(context.http, endpoint(tamin), tokens, context.recorder))
    return Built(TaminDestination(client), tokens,
                 "prescriber" if tamin.auth.mode == "doctor_refresh" else "facility")


def problems(tamin: TaminConfig, config: AdapterConfig) -> list[str]:
    """The client secret it names (client credentials; prescribers' refresh tokens are in the store)."""
    auth = tamin.auth
    if auth.mode != "client_credentials":
        return []
    try:
        read_secret(auth.client_secret_env, auth.client_secret_file, auth.client_secret,
                    what="destinations.tamin.auth.client_secret", source=config.source_file)
    except ConfigError as exc:
        return list(exc.lines)
    return []


PLUGIN = DestinationPlugin(
    name=DESTINATION, config_model=TaminConfig, operations=("eligibility", "create", "update", "cancel"),
    build=build, problems=problems, screen=lambda tamin: coverage_screen(tamin.accepts_unidentified_patients),
    simulator=SimulatorRef("tamin", "adapter.sim.tamin_app:create_tamin_app"),
    reconciler="adapter.reconcile.reconcile",
    description="Tamin e-prescribing: eligibility, SendEpresc, edit, delete")
