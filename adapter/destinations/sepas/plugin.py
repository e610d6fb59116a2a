"""SEPAS through the DITAS gateway as the registry sees it (``destinations.sepas``)."""

from __future__ import annotations

from pathlib import Path

from adapter.config import AdapterConfig, ConfigError, SepasConfig, read_secret
from adapter.destinations.auth import PasswordGrantProvider, TokenCache
from adapter.destinations.http import Exchange
from adapter.destinations.plugin import BuildContext, Built, DestinationPlugin, SimulatorRef
from adapter.destinations.sepas.client import DESTINATION, DitasClient, endpoint
from adapter.destinations.sepas.crypto import load_public_key
from adapter.destinations.sepas.destination import SepasDestination
from adapter.destinations.sepas.terminology import Terminology, load_terminology
from adapter.limits import InputLimitError


def _secrets(sepas: SepasConfig, source: str) -> tuple[str, str]:
    auth = sepas.auth
    secret = read_secret(auth.client_secret_env, auth.client_secret_file, auth.client_secret,
                         what="destinations.sepas.auth.client_secret", source=source)
    password = read_secret(auth.password_env, auth.password_file, auth.password,
                           what="destinations.sepas.auth.password", source=source)
    return secret, password


def _terminology(sepas: SepasConfig, source: str) -> Terminology:
    try:
        return load_terminology(Path(sepas.terminology_dir), sepas.enforcement)
    except InputLimitError as exc:  # names the table file, the limit and the fix itself
        raise ConfigError([f"{source}: destinations.sepas.terminology_dir: {exc}"]) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError([f"{source}: destinations.sepas.terminology_dir: {sepas.terminology_dir}: {exc} "
                           "-- fix: point it at a folder with terminology.yaml and its tables"]) from None


def build(sepas: SepasConfig, context: BuildContext) -> Built:
    auth, source = sepas.auth, context.config.source_file
    secret, password = _secrets(sepas, source)
    tokens = TokenCache(PasswordGrantProvider(context.http, sepas.base_url.rstrip("/") + auth.token_path,
                                              auth.client_id, secret, auth.username, password), auth.refresh_leeway_s)
    client = DitasClient(sepas, Exchange(context.http, endpoint(sepas), tokens, context.recorder))
    return Built(SepasDestination(client, sepas, _terminology(sepas, source)), tokens, "facility")


def problems(sepas: SepasConfig, config: AdapterConfig) -> list[str]:
    """Its two secrets, its terminology tables and the Ministry's public key."""
    source, found = config.source_file, []
    for check in (lambda: _secrets(sepas, source), lambda: _terminology(sepas, source)):
        try:
            check()
        except ConfigError as exc:
            found += exc.lines
    try:
        load_public_key(sepas.public_key_file)
    except InputLimitError as exc:
        found.append(f"{source}: destinations.sepas.public_key_file: {exc}")
    except Exception as exc:  # unreadable, not PEM, not <RSAKeyValue>
        found.append(f"{source}: destinations.sepas.public_key_file: {sepas.public_key_file}: "
                     f"{type(exc).__name__}: {exc} -- fix: the Ministry's RSA public key, PEM or <RSAKeyValue> XML")
    return found


PLUGIN = DestinationPlugin(
    name=DESTINATION, config_model=SepasConfig, operations=("create", "update"),
    build=build, problems=problems,
    simulator=SimulatorRef("ditas", "adapter.sim.ditas_app:create_ditas_app"),
    reconciler="adapter.reconcile.sepas",
    description="SEPAS (national health record) through DITAS: validate, then save")
