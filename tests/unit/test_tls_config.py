"""TLS settings checked at start-up: the status service's certificate files and exposure, the
destinations' CA bundle and client certificate, plain http:// to an insurer off this machine;
and what a configuration fault does to a submission (parked, not dead, circuit not counted)."""

from __future__ import annotations

import datetime as dt
import os
import resource
from pathlib import Path
from typing import Any

import pytest

from adapter.config import ConfigError, RetryConfig, TlsConfig
from adapter.destinations.base import Job
from adapter.destinations.outcome import Outcome, OutcomeClass
from adapter.destinations.transport import plain_http_problems, tls_problems
from adapter.ops.cli_ops import config_problems
from adapter.ops.http_status import resolve_serving
from adapter.outage.breaker import Verdict
from adapter.outage.control import verdict_of
from adapter.pipeline.policy import decide
from adapter.store.states import State
from adapter.tls import client_context
from tests.support.certs import Certs, make_certs
from tests.support.pipeline import EMBEDDED, adapter_config

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "certs")


def config_for(tmp_path: Path, sim_url: str = "http://127.0.0.1:9", **overrides: Any) -> Any:
    if "127.0.0.1" not in sim_url:  # a remote insurer: its secret from the environment, as in production
        overrides["destinations__tamin__auth__client_secret_env"] = "TAMIN_CLIENT_SECRET"
    return adapter_config(f"sqlite:///{tmp_path / 'a.db'}", sim_url, tmp_path, **overrides)


# -- the status service ----------------------------------------------------------------------

def test_status_beyond_loopback_needs_tls_or_the_explicit_opt_out(tmp_path: Path, certs: Certs) -> None:
    assert resolve_serving(config_for(tmp_path)).tls is None  # loopback: plain HTTP is fine
    with pytest.raises(ConfigError) as caught:
        resolve_serving(config_for(tmp_path, status__host="0.0.0.0"))
    (line,) = caught.value.lines
    assert "status.host: 0.0.0.0" in line and "status.tls_cert_file" in line and "allow_plain_http" in line
    assert resolve_serving(config_for(tmp_path, status__host="0.0.0.0", status__allow_plain_http=True)).tls is None
    serving = resolve_serving(config_for(tmp_path, status__host="0.0.0.0", status__tls_cert_file=str(certs.server_cert),
                                         status__tls_key_file=str(certs.server_key), status__max_connections=7))
    assert serving.tls is not None and serving.limits.max_connections == 7


def test_bad_status_certificate_files_name_the_key(tmp_path: Path, certs: Certs) -> None:
    def problem(**overrides: Any) -> str:
        with pytest.raises(ConfigError) as caught:
            resolve_serving(config_for(tmp_path, status__host="0.0.0.0", **overrides))
        (line,) = caught.value.lines
        return line

    assert "status.tls_key_file: status.tls_cert_file is set without it" in problem(
        status__tls_cert_file=str(certs.server_cert))
    missing = problem(status__tls_cert_file=str(tmp_path / "nope.pem"), status__tls_key_file=str(certs.server_key))
    assert "status.tls_cert_file:" in missing and "does not exist" in missing
    mismatched = problem(status__tls_cert_file=str(certs.server_cert), status__tls_key_file=str(certs.client_key))
    assert "status.tls_cert_file:" in mismatched and "cannot be loaded" in mismatched
    os.chmod(certs.server_key, 0o644)
    loose = problem(status__tls_cert_file=str(certs.server_cert), status__tls_key_file=str(certs.server_key))
    assert "status.tls_key_file:" in loose and "chmod 600" in loose


def test_the_connection_cap_must_leave_descriptors_for_delivery(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        with pytest.raises(ConfigError, match=r"status.max_connections: 100 .* 256 file descriptors.*lower it to 64"):
            resolve_serving(config_for(tmp_path, status__max_connections=100))
        assert resolve_serving(config_for(tmp_path, status__max_connections=64)).limits.max_connections == 64
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- the destinations ------------------------------------------------------------------------

def test_destination_tls_files_are_loaded_and_named_when_bad(tmp_path: Path, certs: Certs) -> None:
    assert client_context(TlsConfig(), "destinations.tamin.tls", "x.yaml") is None
    assert client_context(TlsConfig(ca_file=str(certs.ca), client_cert_file=str(certs.client_cert),
                                    client_key_file=str(certs.client_key)), "destinations.tamin.tls", "x.yaml")
    not_a_ca = tmp_path / "garbage.pem"
    not_a_ca.write_text("not a certificate\n")
    cfg = config_for(tmp_path, destinations__tamin__tls__ca_file=str(not_a_ca),
                     destinations__tamin__tls__client_cert_file=str(tmp_path / "missing.pem"))
    (line,) = tls_problems(cfg)
    assert line.startswith(f"{EMBEDDED}: destinations.tamin.tls.ca_file: ") and "cannot be loaded as a CA bundle" in line
    cfg = config_for(tmp_path, destinations__tamin__tls__client_cert_file=str(tmp_path / "missing.pem"))
    (line,) = tls_problems(cfg)
    assert "destinations.tamin.tls.client_cert_file:" in line and "does not exist" in line
    with pytest.raises(ConfigError, match="client_key_file is set without client_cert_file"):
        config_for(tmp_path, destinations__tamin__tls__client_key_file=str(certs.client_key))


def test_plain_http_to_an_insurer_off_this_machine_is_refused_unless_opted_out(tmp_path: Path) -> None:
    assert plain_http_problems(config_for(tmp_path)) == []  # the bundled simulator on this machine
    assert plain_http_problems(config_for(tmp_path, "https://ep.tamin.example")) == []
    (line,) = plain_http_problems(config_for(tmp_path, "http://ep.tamin.example"))
    assert line.startswith(f"{EMBEDDED}: destinations.tamin.base_url: http://ep.tamin.example ")
    assert "-- fix: use https://" in line and "tls.allow_plain_http" in line
    opted = config_for(tmp_path, "http://ep.tamin.example", destinations__tamin__tls__allow_plain_http=True)
    assert plain_http_problems(opted) == []


def test_config_check_reports_plain_http_and_tls_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAPTER__DESTINATIONS__TAMIN__BASE_URL", "http://ep.tamin.example")
    monkeypatch.setenv("ADAPTER__DESTINATIONS__TAMIN__AUTH__CLIENT_SECRET_ENV", "TAMIN_SECRET")
    monkeypatch.setenv("TAMIN_SECRET", "a-real-looking-secret")
    monkeypatch.setenv("ADAPTER__SECRETS__TOKEN_KEY_FILE", str(tmp_path / "token.key"))
    monkeypatch.setenv("ADAPTER__STATUS__HOST", "0.0.0.0")
    monkeypatch.setenv("ADAPTER__STATUS__TOKEN_ENV", "STATUS_TOKEN")
    monkeypatch.setenv("STATUS_TOKEN", "a-long-status-token")
    problems, _ = config_problems(EMBEDDED)
    assert any("destinations.tamin.base_url: http://ep.tamin.example" in p for p in problems)
    assert any("status.host: 0.0.0.0" in p and "plain HTTP" in p for p in problems)


# -- what a configuration fault does ---------------------------------------------------------

def _job(attempts: int) -> Job:
    return Job(submission_id=1, event_id="e", destination="tamin", operation="create", params={}, payload={},
               principal="facility", idempotency_key="k", ambiguous=False, subject_key=None, after_key=None,
               attempts=attempts)


def test_a_config_fault_parks_the_submission_and_never_kills_it() -> None:
    policy = RetryConfig(max_attempts=3, max_delay_s=600, ttl_s=60)
    outcome = Outcome(OutcomeClass.config, "ConnectError: the insurer's TLS certificate was not accepted")
    settled = decide(_job(attempts=3), None, NOW - dt.timedelta(days=10), outcome, NOW, policy, 1.0, 60.0)
    assert settled.to_state is State.retry_wait  # budget and time-to-live both spent: still not dead
    assert settled.fields["attempts"] == 2  # this attempt is given back
    assert settled.fields["last_error_class"] == "config"
    assert settled.fields["next_attempt_at"] == NOW + dt.timedelta(seconds=600)
    assert "ambiguous" not in settled.fields  # left as it was
    assert verdict_of(OutcomeClass.config) is Verdict.neutral  # not counted by the circuit
