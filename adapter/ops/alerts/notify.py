"""Alert channels: webhook (HTTP POST of a JSON document, httpx) and email (SMTP, stdlib).

Every alert is built by ``Alert``, which runs its text and details through
``adapter.redact`` (national codes, mobile numbers, secrets): alerts never carry patient
identifiers, and rules only put counts, states, ages and operator/insurer reasons in them.

A notifier's ``send`` raises on any failure; the caller (``AlertService``) logs it and tries
again at the next evaluation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from adapter.config import AdapterConfig, ConfigError, EmailConfig, WebhookConfig, read_secret
from adapter.redact import redact_text, redact_tree

STATUS = {"start": "firing", "renotify": "firing", "resolve": "resolved", "test": "test"}


@dataclass(frozen=True)
class Alert:
    kind: str  # start | renotify | resolve | test
    key: str
    rule: str
    summary: str
    instance: str
    at: dt.datetime
    destination: str | None = None
    since: dt.datetime | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return STATUS[self.kind]

    def as_json(self) -> dict[str, Any]:
        """The webhook body (also the data of the email). Redacted as a whole."""
        return redact_tree({
            "type": "adapter.alert", "status": self.status, "notification": self.kind, "key": self.key,
            "rule": self.rule, "destination": self.destination, "instance": self.instance,
            "summary": self.summary, "since": self.since.isoformat() if self.since else None,
            "at": self.at.isoformat(), "details": dict(self.details),
        })

    def subject(self) -> str:
        word = {"start": "ALERT", "renotify": "STILL", "resolve": "RESOLVED", "test": "TEST"}[self.kind]
        return redact_text(f"[adapter {self.instance}] {word}: {self.summary}")[:250]

    def text(self) -> str:
        data = self.as_json()
        lines = [data["summary"], ""]
        if self.kind == "resolve":
            lines[0] = f"Resolved: {data['summary']}"
        elif self.kind == "renotify":
            lines[0] = f"Still going on: {data['summary']}"
        lines += [f"status:      {data['status']} ({data['notification']})", f"rule:        {data['rule']}",
                  f"destination: {data['destination'] or '-'}", f"since:       {data['since'] or '-'}",
                  f"at:          {data['at']}", f"instance:    {data['instance']}"]
        lines += [f"{k + ':':<12} {v}" for k, v in sorted(data["details"].items())]
        lines += ["", "Alerts are sent when a condition starts and ends, with reminders while it lasts "
                  "(alerts.renotify_s). See /status on the adapter's status service."]
        return "\n".join(lines) + "\n"


class Notifier(Protocol):
    channel: str  # stable id of the channel, the ledger key (no secrets in it)
    label: str  # for logs

    def send(self, alert: Alert) -> None: ...

    def close(self) -> None: ...


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12]


class WebhookNotifier:
    def __init__(self, config: WebhookConfig, headers: Mapping[str, str] | None = None,
                 client: httpx.Client | None = None):
        self._config = config
        self._headers = dict(headers or {})
        self._client = client or httpx.Client(timeout=config.timeout_s)
        self._own = client is None
        self.channel = "webhook:" + _digest(config.url)
        self.label = f"webhook {urlsplit(config.url).hostname} ({self.channel})"  # never the path: it may be a secret

    def send(self, alert: Alert) -> None:
        answer = self._client.post(self._config.url, json=alert.as_json(),
                                   headers={"User-Agent": "his-insurer-adapter", **self._headers},
                                   timeout=self._config.timeout_s)
        if answer.status_code >= 300:
            raise RuntimeError(f"{self.label} answered HTTP {answer.status_code}")

    def close(self) -> None:
        if self._own:
            self._client.close()


class EmailNotifier:
    def __init__(self, config: EmailConfig, password: str | None = None):
        self._config = config
        self._password = password
        self.channel = "email:" + _digest(config.host, str(config.port), *sorted(config.to))
        self.label = f"email via {config.host}:{config.port} ({self.channel})"

    def message(self, alert: Alert) -> EmailMessage:
        config = self._config
        message = EmailMessage()
        message["Subject"] = alert.subject()
        message["From"] = config.from_
        message["To"] = ", ".join(config.to)
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain=config.from_.rpartition("@")[2] or None)
        message["X-Adapter-Alert-Key"] = alert.key
        message["X-Adapter-Alert-Status"] = alert.status
        message.set_content(alert.text())
        return message

    def send(self, alert: Alert) -> None:
        config = self._config
        with smtplib.SMTP(config.host, config.port, timeout=config.timeout_s) as smtp:
            smtp.ehlo()
            if config.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if config.username:
                smtp.login(config.username, self._password or "")
            smtp.send_message(self.message(alert))

    def close(self) -> None:
        pass


def build_notifiers(config: AdapterConfig, environ: dict[str, str] | None = None) -> list[Notifier]:
    """The configured channels, their secrets read. Nothing is contacted here. Raises
    ``ConfigError`` listing every secret that cannot be read, each with its key and fix."""
    import os

    from adapter.redact import register_secret

    alerts, source = config.alerts, config.source_file
    env = dict(os.environ) if environ is None else environ
    notifiers: list[Notifier] = []
    problems: list[str] = []
    for index, hook in enumerate(alerts.webhooks):
        headers = {}
        for name, variable in hook.headers_env.items():
            value = env.get(variable)
            if value is None or not value.strip():  # an empty header value is refused like a missing one
                state = "is not set" if value is None else "is set but empty"
                problems.append(f"{source}: alerts.webhooks[{index}].headers_env.{name}: environment variable "
                                f"{variable} {state} -- fix: export {variable}=<header value>")
                continue
            register_secret(value)
            headers[name] = value
        notifiers.append(WebhookNotifier(hook, headers))
    email = alerts.email
    if email is not None:
        password = None
        if email.username:
            try:
                password = read_secret(email.password_env, email.password_file, None, what="alerts.email.password",
                                       source=source, environ=env)
            except ConfigError as exc:
                problems += exc.lines
        notifiers.append(EmailNotifier(email, password))
    if problems:
        for notifier in notifiers:
            notifier.close()
        raise ConfigError(problems)
    return notifiers


def check_alert_channels(config: AdapterConfig, environ: dict[str, str] | None = None) -> None:
    """Raise ``ConfigError`` when a configured alert channel's secret cannot be read."""
    if config.alerts.enabled:
        for notifier in build_notifiers(config, environ):
            notifier.close()
