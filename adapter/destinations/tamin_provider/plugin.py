"""Tamin dispensing (``destinations.tamin_pharmacy``) and paraclinic (``destinations.tamin_paraclinic``)
as the registry sees them: one config shape, one token per facility operator."""

from __future__ import annotations

from collections.abc import Callable

from adapter.config import (AdapterConfig, ConfigError, TaminParaclinicConfig, TaminPharmacyConfig, TaminProviderConfig,
                            read_secret)
from adapter.destinations.auth import AclAuthenticateProvider, Operator, TokenCache
from adapter.destinations.base import Destination
from adapter.destinations.http import Exchange
from adapter.destinations.plugin import BuildContext, Built, DestinationPlugin, SimulatorRef
from adapter.destinations.tamin_provider.client import ProviderClient, endpoint
from adapter.destinations.tamin_provider.paraclinic import DESTINATION as PARACLINIC
from adapter.destinations.tamin_provider.paraclinic import ParaclinicDestination
from adapter.destinations.tamin_provider.pharmacy import DESTINATION as PHARMACY
from adapter.destinations.tamin_provider.pharmacy import PharmacyDestination


def provider_operators(name: str, provider: TaminProviderConfig, source: str) -> dict[str, Operator]:
    """Each facility's operator with its password read (environment, mode-600 file, or the simulator's literal)."""
    return {facility: Operator(op.username, read_secret(op.password_env, op.password_file, op.password, source=source,
                                                        what=f"destinations.{name}.auth.operators.{facility}.password"))
            for facility, op in provider.auth.operators.items()}


def provider_secret(name: str, provider: TaminProviderConfig, source: str) -> str:
    auth = provider.auth
    return read_secret(auth.software_client_secret_env, auth.software_client_secret_file, auth.software_client_secret,
                       what=f"destinations.{name}.auth.software_client_secret", source=source)


def _builder(name: str, make: Callable[[ProviderClient], Destination]) -> Callable[[TaminProviderConfig, BuildContext], Built]:
    def build(provider: TaminProviderConfig, context: BuildContext) -> Built:
        auth, source = provider.auth, context.config.source_file
        url = (auth.auth_base_url or provider.base_url).rstrip("/") + auth.token_path
        tokens = TokenCache(AclAuthenticateProvider(context.http, url, auth.software_client_id,
                                                    provider_secret(name, provider, source),
                                                    provider_operators(name, provider, source)),
                            auth.refresh_leeway_s)
        client = ProviderClient(provider, Exchange(context.http, endpoint(provider), tokens, context.recorder))
        return Built(make(client), tokens, "facility")
    return build


def _problems(name: str) -> Callable[[TaminProviderConfig, AdapterConfig], list[str]]:
    def problems(provider: TaminProviderConfig, config: AdapterConfig) -> list[str]:
        """The software client secret and every facility operator's password."""
        found: list[str] = []
        for read in (provider_secret, provider_operators):
            try:
                read(name, provider, config.source_file)
            except ConfigError as exc:
                found += exc.lines
        return found
    return problems


_SIMULATOR = SimulatorRef("tamin", "adapter.sim.tamin_app:create_tamin_app")

PHARMACY_PLUGIN: DestinationPlugin[TaminPharmacyConfig] = DestinationPlugin(
    name=PHARMACY, config_model=TaminPharmacyConfig, operations=("create",),
    build=_builder(PHARMACY, PharmacyDestination), problems=_problems(PHARMACY), simulator=_SIMULATOR,
    description="Tamin dispensing: fetch, PostPresc, confirm")

PARACLINIC_PLUGIN: DestinationPlugin[TaminParaclinicConfig] = DestinationPlugin(
    name=PARACLINIC, config_model=TaminParaclinicConfig, operations=("create", "confirm"),
    build=_builder(PARACLINIC, ParaclinicDestination), problems=_problems(PARACLINIC), simulator=_SIMULATOR,
    description="Tamin paraclinic: RequestList, RequestParPresc, confirm")
