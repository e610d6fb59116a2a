"""TLS to the insurer, against the Tamin simulator served over real HTTPS with certificates made
here: a certificate the adapter cannot verify, or a client certificate the insurer requires
and does not get, is a configuration fault (``config``): the submission is parked, its retry
budget untouched, the circuit not counted; with ``tls.ca_file`` (and the client certificate)
configured the same submission is accepted."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from adapter.app import App, build
from adapter.config import TlsConfig
from adapter.destinations.auth import ClientCredentialsProvider, TokenError
from adapter.destinations.http import Endpoint, Exchange, Request
from adapter.destinations.outcome import OutcomeClass
from adapter.samples.generate import generate
from adapter.sim.server import SimServer
from adapter.sim.settings import TaminSimSettings
from adapter.sim.tamin_app import create_tamin_app
from adapter.store.models import Attempt, Submission
from adapter.tls import client_context
from tests.support.certs import Certs, make_certs
from tests.support.pipeline import adapter_config
from tests.support.tls_front import TlsFront

@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "certs")


@pytest.fixture
def plain_sim() -> Iterator[SimServer]:
    with SimServer(create_tamin_app(TaminSimSettings())) as server:
        yield server


@pytest.fixture
def sim(certs: Certs, plain_sim: SimServer) -> Iterator[TlsFront]:
    """The Tamin simulator over HTTPS."""
    with TlsFront(certs.server_context(), plain_sim.base_url) as front:
        yield front


@pytest.fixture
def mtls_sim(certs: Certs, plain_sim: SimServer) -> Iterator[TlsFront]:
    """The Tamin simulator over HTTPS that requires a client certificate issued by the test CA."""
    with TlsFront(certs.server_context(require_client_cert=True), plain_sim.base_url) as front:
        yield front


def client(tls: TlsConfig) -> httpx.Client:
    context = client_context(tls, "destinations.tamin.tls", "test.yaml")
    return httpx.Client(verify=context if context is not None else True, timeout=10)


def token_request(base_url: str, http: httpx.Client) -> Any:
    return ClientCredentialsProvider(http, base_url + "/auth/server/token", "adapter-test", "adapter-test-secret") \
        .fetch("facility")


def test_an_unverifiable_insurer_certificate_is_a_config_fault_with_the_fix(sim: TlsFront, certs: Certs) -> None:
    with client(TlsConfig()) as http:  # the system's CAs do not know the test CA
        outcome = Exchange(http, Endpoint(sim.base_url)).send(Request("POST", "/api/v2/SendEpresc", json={})).outcome
        with pytest.raises(TokenError) as caught:
            token_request(sim.base_url, http)
    assert outcome.klass is OutcomeClass.config
    assert "tls.ca_file" in outcome.message and "certificate" in outcome.message
    assert caught.value.klass is OutcomeClass.config and "tls.ca_file" in str(caught.value)
    with client(TlsConfig(ca_file=str(certs.other_ca))) as http:  # a CA bundle that did not issue it
        assert Exchange(http, Endpoint(sim.base_url)).send(Request("GET", "/x")).outcome.klass is OutcomeClass.config
    with client(TlsConfig(ca_file=str(certs.ca))) as http:
        assert token_request(sim.base_url, http).access_token


def test_a_required_client_certificate_not_presented_is_a_config_fault_and_works_when_configured(
        mtls_sim: TlsFront, certs: Certs) -> None:
    with client(TlsConfig(ca_file=str(certs.ca))) as http:
        outcome = Exchange(http, Endpoint(mtls_sim.base_url)).send(
            Request("POST", "/api/v2/SendEpresc", json={})).outcome  # a POST: not ambiguous either
        with pytest.raises(TokenError) as caught:
            token_request(mtls_sim.base_url, http)
    assert outcome.klass is OutcomeClass.config and "tls.client_cert_file" in outcome.message
    assert caught.value.klass is OutcomeClass.config
    with client(TlsConfig(ca_file=str(certs.ca), client_cert_file=str(certs.client_cert),
                          client_key_file=str(certs.client_key))) as http:
        assert token_request(mtls_sim.base_url, http).access_token


# -- through the whole adapter ---------------------------------------------------------------

def _settle(app: App, timeout_s: float = 30.0) -> list[Submission]:
    """Run the dispatcher until no submission is pending or being sent."""
    deadline = time.monotonic() + timeout_s
    while True:
        app.dispatcher.run_once()
        with app.sessions() as session:
            rows = list(session.scalars(select(Submission).order_by(Submission.id)))
        if rows and all(row.state not in ("pending", "sending") for row in rows):
            return rows
        assert time.monotonic() < deadline, f"still open: {[row.state for row in rows]}"
        time.sleep(0.05)


def _app(tmp_path: Path, sim: TlsFront, name: str, **tls: str) -> App:
    overrides = {f"destinations__tamin__tls__{key}": value for key, value in tls.items()}
    config = adapter_config(f"sqlite:///{tmp_path / name}", sim.base_url, tmp_path,
                            destinations__tamin__retry__max_attempts="2", destinations__tamin__retry__max_delay_s="600",
                            destinations__tamin__circuit__min_calls="1", **overrides)
    return build(config)


def test_a_tls_fault_parks_the_submission_without_spending_its_budget_or_opening_the_circuit(
        tmp_path: Path, mtls_sim: TlsFront, certs: Certs) -> None:
    lines = generate(dt.datetime.now(dt.timezone.utc), patients=1).lines
    visit = next(line for line in lines if b'"evt-0000-visit"' in line)
    app = _app(tmp_path, mtls_sim, "a.db", ca_file=str(certs.ca))  # no client certificate
    try:
        app.intake.receive(visit)
        for _ in range(3):  # more tries than max_attempts: still not dead
            rows = _settle(app)
            with app.sessions() as session:
                for row in session.scalars(select(Submission)):
                    row.next_attempt_at = dt.datetime.now(dt.timezone.utc)  # due again now
                session.commit()
        assert rows and {row.state for row in rows} == {"retry_wait"}
        assert {row.last_error_class for row in rows} == {"config"}
        assert all(row.attempts == 0 for row in rows)  # tried, but not counted against the budget
        with app.sessions() as session:
            tried = session.scalars(select(Attempt.outcome)).all()
        assert len(tried) >= 3 and set(tried) == {"config"}
        assert all("tls.client_cert_file" in (row.last_error or "") for row in rows)
        assert app.outages is not None
        assert app.outages.circuit("tamin").value == "closed"  # with min_calls 1, one counted failure opens it
    finally:
        app.close()
    fixed = _app(tmp_path, mtls_sim, "a.db", ca_file=str(certs.ca), client_cert_file=str(certs.client_cert),
                 client_key_file=str(certs.client_key))
    try:
        with fixed.sessions() as session:
            for row in session.scalars(select(Submission)):
                row.next_attempt_at = dt.datetime.now(dt.timezone.utc)  # as after the parked delay
            session.commit()
        rows = _settle(fixed)
        assert {row.state for row in rows} == {"accepted"}
    finally:
        fixed.close()


def test_the_reconciliation_client_reaches_the_insurer_with_the_connections_tls_extras(mtls_sim: TlsFront,
                                                                                     certs: Certs) -> None:
    """Airflow's reconciliation calls the same insurer: the ``tamin`` Connection's extras name the
    CA bundle and the client certificate, as ``destinations.tamin.tls`` does for the adapter."""
    from adapter.reconcile.insurer import InsurerError, TaminEndpoint, TaminStatusClient, connection_tls

    extras = {"ca_file": str(certs.ca), "client_cert_file": str(certs.client_cert),
              "client_key_file": str(certs.client_key)}
    defaults = TaminSimSettings()
    endpoint = TaminEndpoint(base_url=mtls_sim.base_url, client_id=defaults.client_id,
                             client_secret=defaults.client_secret, tls=connection_tls(extras))
    with TaminStatusClient(endpoint) as reconciler:
        assert reconciler.lookup_tracking("0012345679", "999999") == []
    without = TaminEndpoint(base_url=mtls_sim.base_url, client_id=defaults.client_id,
                            client_secret=defaults.client_secret, tls=connection_tls({"ca_file": str(certs.ca)}))
    with TaminStatusClient(without) as reconciler, pytest.raises((InsurerError, httpx.HTTPError)):
        reconciler.lookup_tracking("0012345679", "999999")  # no client certificate: refused
