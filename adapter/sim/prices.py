"""The simulator's own tariff: what both desks (prescribing and provider) charge per unit of a code."""

from __future__ import annotations

import zlib


def unit_price(srv_code: str | None) -> int:
    """Sim-defined tariff: a stable price in rials per unit of a service code (100,000-2,000,000)."""
    return 100_000 * (1 + zlib.crc32(str(srv_code).encode()) % 20)
