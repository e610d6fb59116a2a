"""Alerts end to end: ``adapter run`` as a process against the Tamin simulator, a local webhook
receiver (Starlette over HTTP) and a local SMTP server (aiosmtpd, with AUTH). The insurer goes
down -> the circuit opens -> one start alert on each channel; the SMTP server is not up at first,
so the email start is retried until it is; the insurer comes back -> one resolve alert on each.
No duplicates, no patient identifiers, the configured header and SMTP login are used. And
``adapter alerts test`` reaches both channels."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapter.sim.server import SimServer
from adapter.sim.settings import TaminSimSettings
from adapter.sim.tamin_app import create_tamin_app
from adapter.store.db import upgrade
from tests.support.stack import Stack, good_event_lines

CIRCUIT = {"window": 10, "min_calls": 4, "failure_rate": 0.5, "open_s": 1.0, "half_open_probes": 2}
HOOK_TOKEN = "Bearer hook-token-4711"
SMTP_USER, SMTP_PASSWORD = "adapter", "smtp-pass-0815"
DIGITS10 = re.compile(r"(?<!\d)\d{10}(?!\d)")


class Webhook:
    """A tiny receiver: every POST is kept (JSON body + headers), answered 204."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()

        async def hook(request: Request) -> Response:
            body = await request.json()
            with self._lock:
                self.received.append({"body": body, "headers": dict(request.headers)})
            return Response(status_code=204)
        self.app = Starlette(routes=[Route("/hooks/adapter", hook, methods=["POST"])])

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r["body"] for r in self.received]


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.logins: list[str] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.messages.append(message_from_bytes(envelope.original_content, policy=policy.default))
        return "250 OK"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == (SMTP_USER, SMTP_PASSWORD)
        if ok:
            with self._lock:
                self.logins.append(data.login.decode())
        return AuthResult(success=ok, handled=False)

    def subjects(self) -> list[str]:
        with self._lock:
            return [str(m["Subject"]).strip() for m in self.messages]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def webhook() -> Iterator[tuple[Webhook, str]]:
    receiver = Webhook()
    with SimServer(receiver.app) as server:
        yield receiver, server.base_url + "/hooks/adapter"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with SimServer(create_tamin_app(TaminSimSettings())) as sim:
        yield Stack("embedded", tmp_path, f"sqlite:///{tmp_path / 'adapter.db'}",
                    f"sqlite-queue:///{tmp_path / 'queue.db'}", sim)


def smtp_controller(mailbox: Mailbox, port: int) -> Controller:
    return Controller(mailbox, hostname="127.0.0.1", port=port, authenticator=mailbox.authenticate,
                      auth_require_tls=False, ready_timeout=10)


def configure(stack: Stack, hook_url: str, smtp_port: int) -> None:
    stack.write_config()
    with stack.edited_config() as config:
        config["destinations"]["tamin"].update(circuit=CIRCUIT, max_rps=None)
        config["destinations"]["tamin"]["retry"].update(base_delay_s=0.2, max_delay_s=1)
        config["alerts"] = {
            "evaluate_every_s": 0.3,
            "renotify_s": 3600,
            "webhooks": [{"url": hook_url, "headers_env": {"Authorization": "ALERT_HOOK_AUTH"}}],
            "email": {"host": "127.0.0.1", "port": smtp_port, "from": "adapter@hospital.example",
                      "to": ["ops@hospital.example", "oncall@hospital.example"], "starttls": False,
                      "username": SMTP_USER, "password_env": "ALERT_SMTP_PASSWORD", "timeout_s": 5},
        }
    upgrade(stack.db_url)


def wait_until(what: str, check: Any, stack: Stack, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{stack.log_tail()}"
        time.sleep(0.1)
    return value


def test_circuit_open_and_close_alert_once_each_by_webhook_and_email(
        stack: Stack, webhook: tuple[Webhook, str], monkeypatch: pytest.MonkeyPatch) -> None:
    receiver, hook_url = webhook
    mailbox, smtp_port = Mailbox(), free_port()
    monkeypatch.setenv("ALERT_HOOK_AUTH", HOOK_TOKEN)
    monkeypatch.setenv("ALERT_SMTP_PASSWORD", SMTP_PASSWORD)
    configure(stack, hook_url, smtp_port)

    stack.sim_faults(down_for_s=600)  # the insurer is down until the test brings it back
    stack.publish(good_event_lines(20))
    process = stack.start_adapter()
    smtp: Controller | None = None
    try:
        def hook_start() -> list[dict[str, Any]]:
            return [b for b in receiver.bodies() if b["status"] == "firing"]
        [start] = wait_until("the webhook's start alert", hook_start, stack)
        assert start["key"] == "circuit:tamin" and start["rule"] == "circuit_open" and start["notification"] == "start"
        assert start["destination"] == "tamin" and start["type"] == "adapter.alert"
        assert "circuit of tamin is" in start["summary"] and start["since"]
        wait_until("a failed email delivery in the log", lambda: "not delivered by email" in stack.log_tail(400), stack)

        smtp = smtp_controller(mailbox, smtp_port)  # the mail server comes up: the start is retried and gets through
        smtp.start()
        [subject] = wait_until("the email start alert", mailbox.subjects, stack)
        assert subject.startswith("[adapter embedded] ALERT: circuit of tamin is")
        mail = mailbox.messages[0]
        assert mail["From"] == "adapter@hospital.example"
        assert mail["To"] == "ops@hospital.example, oncall@hospital.example"
        assert mail["X-Adapter-Alert-Key"] == "circuit:tamin" and mail["X-Adapter-Alert-Status"] == "firing"
        assert mailbox.logins and set(mailbox.logins) == {SMTP_USER}

        time.sleep(1.5)  # several evaluations while the circuit stays open: nothing new
        assert len(receiver.bodies()) == 1 and len(mailbox.subjects()) == 1

        stack.sim_faults(down_for_s=0)  # the insurer is back: probes succeed, the circuit closes

        def hook_resolved() -> list[dict[str, Any]]:
            return [b for b in receiver.bodies() if b["status"] == "resolved"]
        [resolved] = wait_until("the webhook's resolve alert", hook_resolved, stack, timeout=90)
        assert resolved["key"] == "circuit:tamin" and resolved["notification"] == "resolve"
        assert resolved["details"]["lasted_s"] >= 0
        wait_until("the email resolve alert", lambda: len(mailbox.subjects()) == 2, stack)
        assert mailbox.subjects()[1].startswith("[adapter embedded] RESOLVED: circuit of tamin is")
        assert mailbox.messages[1]["X-Adapter-Alert-Status"] == "resolved"
        wait_until("the backlog to drain", lambda: stack.store()["states"].keys() == {"accepted"}, stack, timeout=90)
        time.sleep(1.0)
    finally:
        process.terminate()
        assert process.wait(timeout=60) == 0, stack.log_tail()
        if smtp is not None:
            smtp.stop()

    assert [(b["notification"], b["key"]) for b in receiver.bodies()] == [("start", "circuit:tamin"),
                                                                         ("resolve", "circuit:tamin")]
    assert {r["headers"]["authorization"] for r in receiver.received} == {HOOK_TOKEN}
    assert {r["headers"]["content-type"] for r in receiver.received} == {"application/json"}
    assert len(mailbox.messages) == 2
    everything = str(receiver.bodies()) + "".join(m.as_string() for m in mailbox.messages)
    assert not DIGITS10.search(everything), "no national code (or any 10-digit number) in an alert"
    assert HOOK_TOKEN not in str(receiver.bodies()) and SMTP_PASSWORD not in everything


def test_alerts_test_command_reaches_every_channel(stack: Stack, webhook: tuple[Webhook, str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    receiver, hook_url = webhook
    mailbox, smtp_port = Mailbox(), free_port()
    monkeypatch.setenv("ALERT_HOOK_AUTH", HOOK_TOKEN)
    monkeypatch.setenv("ALERT_SMTP_PASSWORD", SMTP_PASSWORD)
    configure(stack, hook_url, smtp_port)

    done = stack.adapter("alerts", "test", timeout=60)  # no mail server yet: the email channel fails
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and lines[0].endswith(": sent") and "FAILED" in lines[1] and "email via" in lines[1]
    assert [b["status"] for b in receiver.bodies()] == ["test"]

    smtp = smtp_controller(mailbox, smtp_port)
    smtp.start()
    try:
        done = stack.adapter("alerts", "test", timeout=60)
    finally:
        smtp.stop()
    assert done.returncode == 0, done.stdout + stack.log_tail()
    assert [b["status"] for b in receiver.bodies()] == ["test", "test"]
    assert mailbox.subjects() == ["[adapter embedded] TEST: test alert: this channel reaches the operators"]

    monkeypatch.delenv("ALERT_SMTP_PASSWORD")  # a missing secret is a configuration problem, named
    done = stack.adapter("alerts", "test", timeout=60)
    assert done.returncode == 2
    assert "ALERT_SMTP_PASSWORD" in (stack.workdir / "adapter.log").read_text()
