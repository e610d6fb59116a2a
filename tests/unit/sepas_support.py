"""Shared builders for the SEPAS tests: a test-only key pair, config, client and destination."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx

from adapter.destinations.auth import TokenCache
from adapter.destinations.auth import PasswordGrantProvider
from adapter.destinations.http import Exchange
from adapter.destinations.sepas.client import DitasClient, endpoint
from adapter.destinations.sepas.config import SepasConfig
from adapter.destinations.sepas.crypto import generate_keypair
from adapter.destinations.sepas.destination import SepasDestination
from adapter.destinations.sepas.terminology import load_terminology

REPO = Path(__file__).resolve().parents[2]
SYSTEM_ID = "4e794d6f-45a2-1186-817c-5e34e3fcf8ac"
LOCATION_ID = "859773e8-5d81-46c6-9df1-5fb551b00495"


def make_config(tmp_path: Path, base_url: str = "http://ditas.invalid", public_pem: bytes | None = None) -> SepasConfig:
    if public_pem is None:
        _, public_pem = generate_keypair()
    key_file = tmp_path / "moh-public.pem"
    key_file.write_bytes(public_pem)
    return SepasConfig.model_validate({
        "enabled": True, "base_url": base_url,
        "auth": {"client_id": "adapter-sim", "client_secret": "adapter-sim-secret",
                 "username": "hospital-user", "password": "hospital-password"},
        "pids": {"default": "5f0c0a0b0c0d0e0f10111213", "validate": "5f0c0a0b0c0d0e0f10111299"},
        "system_id": SYSTEM_ID, "location_ids": {"10012345": LOCATION_ID},
        "public_key_file": str(key_file), "terminology_dir": str(REPO / "mappings" / "sepas" / "terminology"),
    })


def make_destination(tmp_path: Path, base_url: str = "http://ditas.invalid", public_pem: bytes | None = None,
                     today: dt.date = dt.date(2024, 8, 5), transport: httpx.BaseTransport | None = None,
                     ) -> tuple[SepasDestination, dict]:
    config = make_config(tmp_path, base_url, public_pem)
    http = httpx.Client(timeout=10, transport=transport)
    provider = PasswordGrantProvider(http, base_url + config.auth.token_path, config.auth.client_id,
                                     config.auth.client_secret or "", config.auth.username, config.auth.password or "")
    cache = TokenCache(provider, config.auth.refresh_leeway_s)
    client = DitasClient(config, Exchange(http, endpoint(config), cache))
    destination = SepasDestination(client, config, load_terminology(Path(config.terminology_dir)), today=lambda: today)
    return destination, {"config": config, "http": http, "cache": cache, "provider": provider, "client": client}
