"""Status service without a running pipeline: who may call it (auth required off loopback,
refusal to start otherwise), and the HTML page."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient
from typer.testing import CliRunner

from adapter.app import build
from adapter.config import ConfigError
from adapter.ops.cli import app as cli
from adapter.ops.http_status import StatusAuth, create_status_app, is_loopback, render_page, resolve_auth
from adapter.pipeline.runner import Liveness
from tests.support.pipeline import EMBEDDED, adapter_config


def config_for(tmp_path: Path, **overrides: Any) -> Any:
    return adapter_config(f"sqlite:///{tmp_path / 'a.db'}", "http://127.0.0.1:9", tmp_path, **overrides)


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                           ("0.0.0.0", False), ("10.1.2.3", False), ("status.example", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_loopback_needs_no_credentials(tmp_path: Path) -> None:
    assert resolve_auth(config_for(tmp_path)) is None


def test_bound_elsewhere_without_credentials_is_a_config_error_naming_key_and_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_auth(config_for(tmp_path, status__host="0.0.0.0"))
    (line,) = caught.value.lines
    assert "status.host: 0.0.0.0" in line and "-- fix: set status.token_env" in line and "127.0.0.1" in line


def test_bound_elsewhere_with_a_token_or_basic_auth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATUS_TOKEN", "s3cret-status-token")
    auth = resolve_auth(config_for(tmp_path, status__host="0.0.0.0", status__token_env="STATUS_TOKEN"))
    assert auth == StatusAuth(token="s3cret-status-token")
    monkeypatch.setenv("STATUS_PW", "s3cret-status-pw")
    auth = resolve_auth(config_for(tmp_path, status__host="0.0.0.0", status__basic_user="ops",
                                   status__basic_password_env="STATUS_PW"))
    assert auth == StatusAuth(user="ops", password="s3cret-status-pw")
    with pytest.raises(ConfigError, match="status.basic_user: set without a password"):
        resolve_auth(config_for(tmp_path, status__host="0.0.0.0", status__basic_user="ops"))
    monkeypatch.delenv("STATUS_TOKEN")
    with pytest.raises(ConfigError, match="STATUS_TOKEN is not set"):
        resolve_auth(config_for(tmp_path, status__token_env="STATUS_TOKEN"))


def test_every_path_requires_the_credentials(tmp_path: Path) -> None:
    app = build(config_for(tmp_path))
    try:
        for auth, good, bad in [
            (StatusAuth(token="tok-123456"), "Bearer tok-123456", "Bearer nope"),
            (StatusAuth(user="ops", password="pw-123456"),
             "Basic " + base64.b64encode(b"ops:pw-123456").decode(), "Basic " + base64.b64encode(b"ops:x").decode()),
        ]:
            client = TestClient(create_status_app(app, Liveness(), auth))
            for path in ("/", "/healthz", "/readyz", "/status", "/metrics"):
                assert client.get(path).status_code == 401
                assert client.get(path, headers={"Authorization": bad}).status_code == 401
                assert client.get(path, headers={"Authorization": good}).status_code in (200, 503), path
            assert "WWW-Authenticate" in client.get("/healthz").headers
    finally:
        app.close()


def test_readyz_is_red_before_the_consumer_attached(tmp_path: Path) -> None:
    app = build(config_for(tmp_path))
    try:
        client = TestClient(create_status_app(app, Liveness()))
        assert client.get("/healthz").status_code == 200
        response = client.get("/readyz")
        assert response.status_code == 503
        assert "not attached" in response.json()["checks"]["consumer"]["why"]
        assert response.json()["checks"]["database"]["ok"] is True
    finally:
        app.close()


def test_adapter_run_refuses_an_open_status_port_without_credentials(tmp_path: Path) -> None:
    config = yaml.safe_load(EMBEDDED.read_text())
    config["database"]["url"] = f"sqlite:///{tmp_path / 'a.db'}"
    config["status"] = {"host": "0.0.0.0"}
    path = tmp_path / "adapter.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(cli, ["run", "--config", str(path)])
    assert result.exit_code == 2
    assert "status.host: 0.0.0.0" in result.output and "fix:" in result.output


def test_page_escapes_what_it_shows() -> None:
    document = {
        "instance": "<script>alert(1)</script>", "generated_at": "now", "liveness": {"consumer_attached": True},
        "events": {"accepted": 2}, "oldest_pending": None,
        "destinations": {"tamin": {"accepted": 1, "rejected": 1}},
        "health": {"tamin": {"circuit": "open", "outage": None, "fallback": {"issued": 0},
                             "last_success_at": None,
                             "last_error": {"at": "t", "class": "rejected", "submission_id": 3, "message": "<b>x</b>"}}},
    }
    page = render_page(document)
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "class='bad'>open" in page and "accepted=1, rejected=1" in page
