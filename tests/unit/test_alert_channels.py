"""Alert channels: a webhook that does not answer 2xx is a failure (and its URL path, which may
hold a token, stays out of the label); missing channel secrets are configuration problems named
by ``adapter config check``; ``adapter run`` refuses them at build time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from adapter.app import build
from adapter.config import ConfigError, WebhookConfig, load_config
from adapter.ops.alerts.notify import Alert, EmailNotifier, WebhookNotifier
from adapter.ops.cli import app as cli
from tests.support.pipeline import EMBEDDED, REPO

ALERT = Alert("start", "new_dead:tamin", "new_dead", "3 submissions to tamin became dead, patient 0012345679",
              "test", dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc), "tamin", None,
              {"count": 3, "reason": "mobile 09121234567"})


def test_webhook_non_2xx_is_a_failure_and_the_url_path_is_not_in_the_label() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(500)
    client = httpx.Client(transport=httpx.MockTransport(answer))
    hook = WebhookNotifier(WebhookConfig(url="https://hooks.example/T000/B000/secretpath"), {"X-Key": "k"}, client)
    with pytest.raises(RuntimeError, match="HTTP 500"):
        hook.send(ALERT)
    assert "secretpath" not in hook.label and "hooks.example" in hook.label
    assert "secretpath" not in hook.channel
    assert seen[0].headers["x-key"] == "k"
    body = seen[0].read().decode()
    assert "0012345679" not in body and "09121234567" not in body, "alerts are masked"


def test_email_message_is_masked_and_addressed() -> None:
    from adapter.config import EmailConfig

    mail = EmailNotifier(EmailConfig.model_validate({"host": "smtp.example", "from": "a@h.example",
                                                     "to": ["ops@h.example"]}))
    built = mail.message(ALERT)
    message = built.as_string()
    assert "0012345679" not in message and "09121234567" not in message
    assert str(built["Subject"]).startswith("[adapter test] ALERT: 3 submissions to tamin became dead")
    assert built["To"] == "ops@h.example" and built["X-Adapter-Alert-Status"] == "firing"


def config_with_alerts(tmp_path: Path) -> Path:
    config = yaml.safe_load(EMBEDDED.read_text())
    config["mappings_root"] = str(REPO / "mappings")
    config["database"]["url"] = f"sqlite:///{tmp_path / 'a.db'}"
    config["secrets"] = {"token_key_file": str(tmp_path / "token.key")}
    config["alerts"] = {"webhooks": [{"url": "http://127.0.0.1:9/hook", "headers_env": {"Authorization": "NO_SUCH_HOOK_AUTH"}}],
                        "email": {"host": "127.0.0.1", "from": "a@h.example", "to": ["ops@h.example"],
                                  "username": "adapter", "password_env": "NO_SUCH_SMTP_PASSWORD"}}
    path = tmp_path / "adapter.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_missing_channel_secrets_are_named_by_config_check(tmp_path: Path) -> None:
    path = config_with_alerts(tmp_path)
    result = CliRunner().invoke(cli, ["config", "check", "--config", str(path)], env={"ADAPTER_CONFIG": None})
    assert result.exit_code == 1
    problems = result.output.splitlines()[:-1]
    assert any("NO_SUCH_HOOK_AUTH" in p and "alerts.webhooks[0].headers_env.Authorization" in p for p in problems)
    assert any("NO_SUCH_SMTP_PASSWORD" in p and "alerts.email.password" in p for p in problems)


def test_adapter_run_refuses_a_channel_without_its_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAPTER_PATIENT_KEY", "k" * 32)
    with pytest.raises(ConfigError) as caught:
        build(load_config(config_with_alerts(tmp_path), environ={}))
    assert "NO_SUCH_HOOK_AUTH" in str(caught.value)


def test_an_empty_alerts_section_is_valid_and_sends_nothing(tmp_path: Path) -> None:
    from adapter.ops.alerts.notify import build_notifiers

    config = yaml.safe_load(EMBEDDED.read_text())
    config["alerts"] = {"evaluate_every_s": 5}
    path = tmp_path / "adapter.yaml"
    path.write_text(yaml.safe_dump(config))
    assert build_notifiers(load_config(path, environ={})) == []


def test_bad_alert_settings_are_named(tmp_path: Path) -> None:
    config: dict[str, Any] = yaml.safe_load(EMBEDDED.read_text())
    config["alerts"] = {"evaluate_every_s": 0, "webhooks": [{"url": "ftp://x"}], "email": {"host": "h", "to": []}}
    path = tmp_path / "adapter.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    keys = {line.split(": ")[1] for line in caught.value.lines}
    assert {"alerts.evaluate_every_s", "alerts.webhooks.0.url", "alerts.email.to", "alerts.email.from"} <= keys
