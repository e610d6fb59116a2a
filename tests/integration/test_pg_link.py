"""The settings libpq really uses for the adapter's PostgreSQL connections: keepalives and a
TCP user timeout, so a connection a firewall dropped fails in about a minute instead of hanging
a thread for the kernel's ~15 minutes of retransmissions; a setting in the URL wins."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from adapter.store.db import PG_LINK_DEFAULTS, make_engine

pytestmark = pytest.mark.integration


def libpq_parameters(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        return dict(connection.connection.driver_connection.info.get_parameters())  # type: ignore[union-attr]


def test_every_connection_has_keepalives_and_a_tcp_user_timeout(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        used = libpq_parameters(engine)
    finally:
        engine.dispose()
    assert {key: used.get(key) for key in PG_LINK_DEFAULTS} == {
        "connect_timeout": "10", "keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10",
        "keepalives_count": "3", "tcp_user_timeout": "60000"}


def test_a_setting_in_the_url_wins(pg_url: str) -> None:
    engine = make_engine(pg_url + ("&" if "?" in pg_url else "?") + "keepalives_idle=7&tcp_user_timeout=5000")
    try:
        used = libpq_parameters(engine)
    finally:
        engine.dispose()
    assert used["keepalives_idle"] == "7" and used["tcp_user_timeout"] == "5000"
    assert used["keepalives_count"] == "3"  # the others still set
