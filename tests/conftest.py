"""Shared pytest fixtures.

Service fixtures (PostgreSQL, RabbitMQ, SQLite)
===============================================

Start the services with ``scripts/services.sh ensure`` (``.ci/run`` does).
Every test run gets its own PostgreSQL database and RabbitMQ vhost, named
``adapter_test_<random>``, so several runs can share one server.

* ``pg_admin_url`` (session) -- SQLAlchemy URL of a superuser connection to
  the ``postgres`` database.  ``$ADAPTER_TEST_PG_URL`` if set, else the
  first that works of ``postgresql+psycopg://adapter:adapter@127.0.0.1:5432/
  postgres`` (role made by services.sh; works on a fresh Debian cluster) and
  ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres`` (trust auth).
* ``pg_url`` (session) -- URL of a fresh database for this run, dropped
  ``WITH (FORCE)`` at the end.  Tests share it: clean up or use unique names.
* ``amqp_url`` (session) -- ``amqp://guest:guest@127.0.0.1:5672/<vhost>``
  with a fresh vhost for this run, deleted at the end.
* ``sqlite_url`` (function) -- ``sqlite:////<tmp_path>/test.db``.
* ``db_url`` (function, parametrized ``sqlite`` / ``postgresql``) -- a test
  that uses it runs once on each backend, each time on an empty database:
  for postgresql a new database per test (CREATE DATABASE takes 15-100 ms,
  cheaper than reasoning about leftovers), dropped after the test.

When a service is unreachable the tests needing it are **skipped** locally
but **fail** when ``CI`` is set, so CI never passes by skipping.

Marker ``integration``: tests that need a real service.  Tests using
``pg_admin_url``, ``pg_url`` or ``amqp_url`` get it automatically, as does
the ``postgresql`` case of ``db_url``; mark other ones yourself with
``@pytest.mark.integration``.  ``pytest -m "not integration"`` runs without
services.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# `tests.support` needs the repo root on sys.path; `python -m pytest` (as in
# scripts/test.sh) adds the cwd, a bare `pytest` does not.  Same effect as
# pytest's `pythonpath = ["."]` setting.
_REPO_ROOT = str(Path(__file__).resolve().parents[1])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.support import services as svc  # noqa: E402
from tests.support.tcp_proxy import TcpProxy, amqp_relay  # noqa: E402

# -- service fixtures ------------------------------------------------------------

_SERVICE_FIXTURES = frozenset({"pg_admin_url", "pg_url", "amqp_url"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests that use a service fixture as ``integration``."""
    for item in items:
        if _SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    url, errors = svc.find_pg_admin_url()
    if url is None:
        svc.unavailable("PostgreSQL is not reachable: " + "; ".join(errors))
    return url


@pytest.fixture(scope="session")
def pg_url(pg_admin_url: str) -> Iterator[str]:
    name = svc.unique_name()
    url = svc.create_database(pg_admin_url, name)
    yield url
    svc.drop_database(pg_admin_url, name)


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    if not svc.amqp_reachable():
        svc.unavailable(f"RabbitMQ is not reachable on {svc.AMQP_HOST}:{svc.AMQP_PORT}")
    vhost = svc.unique_name()
    try:
        svc.create_vhost(vhost)
    except RuntimeError as exc:
        svc.unavailable(f"cannot create a RabbitMQ vhost: {exc}")
    yield svc.amqp_url(vhost)
    svc.delete_vhost(vhost)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
)
def db_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_url")
        return
    admin_url = request.getfixturevalue("pg_admin_url")
    name = svc.unique_name()
    url = svc.create_database(admin_url, name)
    yield url
    svc.drop_database(admin_url, name)


# -- other fixtures below --------------------------------------------------------


# -- log-leak scan (issue 7) ---------------------------------------------------------
# For the whole session a handler on the root logger sees every record the suite logs (root
# level INFO), formatted with its traceback; at the end, the ``adapter.log`` files that the
# subprocess stacks (tests/support/stack.py) wrote under the session's temp folder are read
# too. Any national code or mobile number of the sample generator, or a test secret, in
# clear text fails the session. The redaction is the one every ``adapter`` entry point
# installs: importing the CLI (``python -m adapter``) does it, as does ``adapter.app.build``.

LEAK_SECRETS = ("adapter-test-secret", "adapter-sim-secret", "hospital-password")


def _sample_identifiers() -> set[str]:
    import datetime as dt
    import json as _json

    from adapter.samples.generate import generate

    found: set[str] = set()

    def walk(node: object, key: str = "") -> None:
        if isinstance(node, dict):
            if node.get("kind") == "national_code" and isinstance(node.get("value"), str):
                found.add(node["value"])
            for k, v in node.items():
                walk(v, str(k))
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and key in ("national_code", "mobile"):
            found.add(node)

    for line in generate(dt.datetime.now(dt.timezone.utc), patients=600).lines:
        try:
            walk(_json.loads(line))
        except ValueError:
            continue
    return {value for value in found if value.isascii() and value.isdigit() and len(value) >= 10}


class _LeakScanner:
    def __init__(self) -> None:
        import re

        identifiers = sorted(_sample_identifiers(), key=len, reverse=True)
        self.pattern = re.compile(r"(?<!\d)(?:" + "|".join(map(re.escape, identifiers)) + r")(?!\d)|"
                                  + "|".join(map(re.escape, LEAK_SECRETS)))
        self.identifiers = len(identifiers)
        self.hits: list[str] = []

    def scan(self, text: str, where: str) -> None:
        from adapter.events.digits import to_ascii_digits

        for match in self.pattern.finditer(to_ascii_digits(text)):
            if len(self.hits) < 50:
                start = max(0, match.start() - 120)
                self.hits.append(f"{where}: {match.group(0)!r} in ...{text[start:match.end() + 80]!r}")


class _LeakHandler(__import__("logging").Handler):
    def __init__(self, scanner: _LeakScanner) -> None:
        import logging

        super().__init__(logging.DEBUG)
        self.scanner = scanner
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.records = 0

    def emit(self, record: object) -> None:
        import os

        try:
            text = self.format(record)  # type: ignore[arg-type]
        except Exception:  # a record that cannot be formatted is still scanned raw
            text = repr(getattr(record, "__dict__", record))
        self.records += 1
        self.scanner.scan(text, os.environ.get("PYTEST_CURRENT_TEST", "(no test)").split(" ")[0])


@pytest.fixture
def relay(amqp_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """A TCP relay in front of the per-run RabbitMQ vhost, and the AMQP URL through it (network faults)."""
    with amqp_relay(amqp_url) as pair:
        yield pair


@pytest.fixture
def proxy(relay: tuple[TcpProxy, str]) -> TcpProxy:
    return relay[0]


@pytest.fixture(scope="session", autouse=True)
def log_leak_scan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_LeakScanner]:
    import logging

    import adapter.ops.cli  # noqa: F401  what `python -m adapter` imports: installs the redaction

    scanner = _LeakScanner()
    handler = _LeakHandler(scanner)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO) if level else logging.INFO)
    try:
        yield scanner
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    for path in sorted(tmp_path_factory.getbasetemp().rglob("*.log")):
        try:
            scanner.scan(path.read_text(encoding="utf-8", errors="replace"), str(path))
        except OSError:
            continue
    assert not scanner.hits, ("national codes, mobile numbers or secrets in clear text in the logs:\n"
                              + "\n".join(scanner.hits))
