"""Where a scenario's broker queue and store live: fresh ones per scenario.

* ``embedded``: a SQLite store and the embedded SQLite kombu queue, files in the scenario's folder.
* ``rabbitmq-postgres``: a fresh RabbitMQ vhost (``rabbitmqctl``, as root) on 127.0.0.1:5672
  (guest/guest) and a fresh PostgreSQL database on 127.0.0.1:5432, both removed afterwards.
  The admin URL is ``BENCH_PG_URL`` or the first of the test suite's defaults that works.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

PG_ADMIN_URLS = ("postgresql+psycopg://adapter:adapter@127.0.0.1:5432/postgres",
                 "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@dataclass
class Backend:
    kind: str  # embedded | rabbitmq-postgres
    workdir: Path
    db_url: str
    broker_url: str

    @property
    def queue(self) -> str:
        return "his.events"


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _pg_admin() -> str:
    import psycopg

    candidates = [os.environ["BENCH_PG_URL"]] if os.environ.get("BENCH_PG_URL") else list(PG_ADMIN_URLS)
    errors = []
    for url in candidates:
        try:
            with psycopg.connect(_libpq(url), connect_timeout=5):
                return url
        except psycopg.Error as exc:
            errors.append(f"{make_url(url).render_as_string(hide_password=True)}: {str(exc).strip().splitlines()[0]}")
    raise RuntimeError("no PostgreSQL admin URL works (set BENCH_PG_URL): " + "; ".join(errors))


def _pg(admin: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(_libpq(admin), autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


def _rabbitmqctl(*args: str) -> None:
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    done = subprocess.run([exe, "-q", *args], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {(done.stderr or done.stdout).strip()}")


@contextlib.contextmanager
def backend(kind: str, workdir: Path) -> Iterator[Backend]:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    if kind == "embedded":
        yield Backend(kind, workdir, f"sqlite:///{workdir}/adapter.db", f"sqlite-queue:///{workdir}/queue.db")
        return
    if kind != "rabbitmq-postgres":
        raise ValueError(kind)
    name = f"adapter_bench_{secrets.token_hex(4)}"
    admin = _pg_admin()
    _pg(admin, f'CREATE DATABASE "{name}"')
    try:
        _rabbitmqctl("add_vhost", name)
        try:
            _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
            db_url = make_url(admin).set(database=name).render_as_string(hide_password=False)
            yield Backend(kind, workdir, db_url, f"amqp://guest:guest@127.0.0.1:5672/{name}")
        finally:
            with contextlib.suppress(Exception):
                _rabbitmqctl("delete_vhost", name)
    finally:
        with contextlib.suppress(Exception):
            _pg(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
