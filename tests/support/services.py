"""Helpers behind the service fixtures in ``tests/conftest.py``.

PostgreSQL: throw-away databases created and dropped through an admin URL.
RabbitMQ: throw-away vhosts created and deleted with ``rabbitmqctl`` (the
management plugin is not enabled by default; rabbitmqctl needs root, which
the developer machines and CI have).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess

import psycopg
import pytest
from sqlalchemy.engine import make_url

#: Tried in order when ADAPTER_TEST_PG_URL is not set.  ``adapter`` is the
#: role ``scripts/services.sh ensure`` creates, and the only one that works
#: over 127.0.0.1 on a fresh Debian cluster (scram auth); ``postgres`` works
#: where 127.0.0.1 has trust auth, as on the dev machines before that script
#: ran.
DEFAULT_PG_ADMIN_URLS = (
    "postgresql+psycopg://adapter:adapter@127.0.0.1:5432/postgres",
    "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
)

AMQP_HOST = "127.0.0.1"
AMQP_PORT = 5672


def in_ci() -> bool:
    """True when the ``CI`` environment variable is set to something truthy."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> None:
    """Skip the test locally, fail it in CI: CI must never skip silently."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(f"{reason}; run `scripts/services.sh ensure` to start the services")


def unique_name(prefix: str = "adapter_test") -> str:
    """A lower-case name unique to this test run, valid as a PG identifier."""
    return f"{prefix}_{secrets.token_hex(4)}"


# -- PostgreSQL -------------------------------------------------------------


def libpq_url(sqlalchemy_url: str) -> str:
    """``postgresql+psycopg://...`` -> ``postgresql://...`` for psycopg."""
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def with_database(sqlalchemy_url: str, database: str) -> str:
    """The same server and credentials, another database."""
    return make_url(sqlalchemy_url).set(database=database).render_as_string(hide_password=False)


def pg_connect_error(sqlalchemy_url: str) -> str | None:
    """None if we can log in at ``sqlalchemy_url``, else why not."""
    try:
        with psycopg.connect(libpq_url(sqlalchemy_url), connect_timeout=5):
            return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]


def find_pg_admin_url() -> tuple[str | None, list[str]]:
    """The first admin URL that works, and the errors of the ones that did not."""
    explicit = os.environ.get("ADAPTER_TEST_PG_URL")
    candidates = (explicit,) if explicit else DEFAULT_PG_ADMIN_URLS
    errors = []
    for url in candidates:
        error = pg_connect_error(url)
        if error is None:
            return url, errors
        errors.append(f"{make_url(url).render_as_string(hide_password=True)}: {error}")
    return None, errors


def _admin_execute(admin_url: str, sql: str) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction block.
    with psycopg.connect(libpq_url(admin_url), autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


def create_database(admin_url: str, name: str) -> str:
    """CREATE DATABASE ``name``; return its SQLAlchemy URL."""
    _admin_execute(admin_url, f'CREATE DATABASE "{name}"')
    return with_database(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    """DROP DATABASE ``name``, disconnecting whoever is still connected."""
    _admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- RabbitMQ -----------------------------------------------------------------


def amqp_reachable(host: str = AMQP_HOST, port: int = AMQP_PORT) -> bool:
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


def rabbitmqctl(*args: str) -> None:
    """Run ``rabbitmqctl -q ARGS``; raise RuntimeError with its output on failure."""
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    try:
        done = subprocess.run(
            [exe, "-q", *args], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {exc}") from exc
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {output}")


def create_vhost(name: str, user: str = "guest") -> None:
    """Add vhost ``name`` with full permissions for ``user``."""
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
    except RuntimeError:
        with contextlib.suppress(RuntimeError):
            delete_vhost(name)
        raise


def delete_vhost(name: str) -> None:
    rabbitmqctl("delete_vhost", name)


def amqp_url(vhost: str, user: str = "guest", password: str = "guest") -> str:
    return f"amqp://{user}:{password}@{AMQP_HOST}:{AMQP_PORT}/{vhost}"
