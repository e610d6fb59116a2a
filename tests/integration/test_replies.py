"""Replies to the HIS through real RabbitMQ and PostgreSQL, from the real adapter process: every
outcome the HIS acts on arrives, checked against reply contract v1, with ``reply_id`` as the AMQP
message id, in the order of its causes; and a kill -9 between the state commit and the publish
loses none of them (each arrives at least once, a repeat with the same ``reply_id``)."""

from __future__ import annotations

import datetime as dt
import hmac
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kombu import Connection
from sqlalchemy import func, select

from adapter.config import BrokerConfig
from adapter.replies.contract import validate_reply
from adapter.replies.sinks import SIGNATURE_HEADER, TIMESTAMP_HEADER, reply_queue, signature
from adapter.sim.server import SimServer
from adapter.sim.settings import TaminSimSettings
from adapter.sim.tamin_app import create_tamin_app
from adapter.store.db import make_engine, make_sessionmaker
from adapter.store.models import FallbackRecord, InboxEvent, Outage, ReplyRow, Submission
from tests.support import services as svc
from tests.support.stack import Stack, good_event_lines, wait_all_final
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration
BAD_EVENT = b'{"event_id": "bad-1", "event_type": "prescription.created", "schema_version": "1"}'


@pytest.fixture
def stack(tmp_path: Path, pg_admin_url: str, relay: tuple[TcpProxy, str]) -> Iterator[Stack]:
    via_proxy = relay[1]
    with SimServer(create_tamin_app(TaminSimSettings())) as sim:
        name = svc.unique_name()
        built = Stack("rabbitmq+postgresql", tmp_path, svc.create_database(pg_admin_url, name), via_proxy, sim)
        built.write_config()
        with built.edited_config() as config:
            config["broker"].update(reply_queue=f"his.replies.{uuid.uuid4().hex[:8]}", heartbeat_s=2)
            config["status"] = {"port": 0}
        assert built.adapter("db-upgrade").returncode == 0, built.log_tail()
        try:
            yield built
        finally:
            svc.drop_database(pg_admin_url, name)


def broker_of(stack: Stack, amqp_url: str) -> BrokerConfig:
    """The adapter's broker settings, straight to RabbitMQ (not through the relay)."""
    config = yaml.safe_load(stack.config_path.read_text())
    return BrokerConfig(**{**config["broker"], "url": amqp_url})


def take_replies(broker: BrokerConfig) -> list[tuple[str | None, dict[str, Any]]]:
    """Everything on the reply queue now: (AMQP message id, body), in queue order."""
    got: list[tuple[str | None, dict[str, Any]]] = []
    with Connection(broker.url) as connection:
        queue = reply_queue(broker)(connection.default_channel)
        queue.declare()
        while (message := queue.get(no_ack=True)) is not None:
            got.append((message.properties.get("message_id"), json.loads(message.body)))
    return got


def reply_rows(stack: Stack) -> list[ReplyRow]:
    engine = make_engine(stack.db_url)
    try:
        with make_sessionmaker(engine)() as session:
            return list(session.scalars(select(ReplyRow).order_by(ReplyRow.id)))
    finally:
        engine.dispose()


def count(stack: Stack, *where: Any) -> int:
    engine = make_engine(stack.db_url)
    try:
        with make_sessionmaker(engine)() as session:
            return session.scalar(select(func.count()).select_from(ReplyRow).where(*where)) or 0
    finally:
        engine.dispose()


def wait(what: str, check: Any, stack: Stack, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{stack.log_tail()}"
        time.sleep(0.1)


def run_until_replied(stack: Stack, events: int, timeout: float = 120) -> None:
    """Start the adapter, wait until the events are final and every reply is published, stop it."""
    process = stack.start_adapter()
    try:
        wait_all_final(stack, events, timeout=timeout)
        wait("every reply published", lambda: count(stack, ReplyRow.state != "published") == 0, stack)
    finally:
        stop(process)


def stop(process: Any) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0


def test_every_outcome_reaches_the_his_in_order(stack: Stack, amqp_url: str) -> None:
    lines = good_event_lines(40)
    stack.publish(lines + [BAD_EVENT])
    process = stack.start_adapter()
    try:
        wait_all_final(stack, len(lines) + 1, timeout=120)
        wait("every reply published", lambda: count(stack, ReplyRow.state != "published") == 0, stack)
    finally:
        stop(process)
    got = take_replies(broker_of(stack, amqp_url))
    rows = reply_rows(stack)
    assert sorted(b["reply_id"] for _, b in got) == sorted(r.reply_id for r in rows), "each reply once"
    for message_id, body in got:
        assert message_id == body["reply_id"]
        assert validate_reply(body) == body, "the contract holds on the wire"
    events = [json.loads(line) for line in lines]
    by_event: dict[str, list[str]] = {}
    for _, body in got:
        by_event.setdefault(body["event_id"], []).append(body["type"])
    for event in events:
        if event["event_type"] == "prescription.created":
            assert by_event[event["event_id"]] == ["prescription.registered"], event["event_id"]
        if event["event_type"] == "visit.admitted":
            assert by_event[event["event_id"]] == ["eligibility.result"]
    assert by_event["bad-1"] == ["prescription.invalid"]
    created = next(e for e in events if e["event_type"] == "prescription.created")
    shown = json.loads(stack.adapter("show", created["event_id"], "--json").stdout)
    assert [(r["type"], r["state"]) for r in shown["replies"]] == [("prescription.registered", "published")]
    listed = json.loads(stack.adapter("replies", "list", "--event", created["event_id"], "--json").stdout)
    assert [r["reply_id"] for r in listed] == [r["reply_id"] for r in shown["replies"]]
    # one prescription's replies leave in the order their causes happened: create, then edit, then delete
    order = [(b["prescription_id"], b["type"]) for _, b in got if b["type"].startswith("prescription.")]
    for prescription in {p for p, t in order if t == "prescription.cancelled"}:
        mine = [t for p, t in order if p == prescription]
        assert mine.index("prescription.registered") < mine.index("prescription.cancelled")
        if "prescription.updated" in mine:
            assert mine.index("prescription.registered") < mine.index("prescription.updated") \
                < mine.index("prescription.cancelled")


def test_a_kill_between_the_commit_and_the_publish_loses_no_reply(stack: Stack, amqp_url: str,
                                                                   proxy: TcpProxy) -> None:
    """The broker goes quiet (the relay stalls every open connection) while the insurer keeps
    answering: outcomes are committed with their replies, which cannot be published. kill -9
    then. After the restart each reply reaches the HIS, at least once, with its own reply_id."""
    lines = good_event_lines(60)
    stack.publish(lines)
    stack.sim_faults(latency_ms=60)  # the sends outlast the intake: outcomes come after the stall
    process = stack.start_adapter()
    try:
        wait("every event stored", lambda: _events(stack) == len(lines), stack)
        proxy.silence()
        wait("replies committed and not published",
             lambda: count(stack, ReplyRow.state == "pending") >= 5, stack, timeout=60)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    pending_at_kill = count(stack, ReplyRow.state == "pending")
    assert pending_at_kill >= 5
    stack.sim_faults(latency_ms=0)
    run_until_replied(stack, len(lines))
    got = take_replies(broker_of(stack, amqp_url))
    rows = reply_rows(stack)
    received = {b["reply_id"] for _, b in got}
    assert {r.reply_id for r in rows} == received, "every reply arrived; none the store does not know"
    bodies: dict[str, dict[str, Any]] = {}
    for message_id, body in got:
        assert message_id == body["reply_id"]
        assert bodies.setdefault(body["reply_id"], body) == body, "a repeat is the same reply"
    registered = [b["event_id"] for b in bodies.values() if b["type"] == "prescription.registered"]
    assert len(registered) == len(set(registered)), "one registration reply per prescription (repeats share an id)"
    assert stack.sim_stats()["duplicates"] == 0


def _events(stack: Stack) -> int:
    engine = make_engine(stack.db_url)
    try:
        with make_sessionmaker(engine)() as session:
            return session.scalar(select(func.count()).select_from(InboxEvent)) or 0
    finally:
        engine.dispose()


# -- the answer deadline --------------------------------------------------------------------------
@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Stack]:
    with SimServer(create_tamin_app(TaminSimSettings())) as sim:
        built = Stack("embedded", tmp_path, f"sqlite:///{tmp_path / 'adapter.db'}",
                      f"sqlite-queue:///{tmp_path / 'queue.db'}", sim)
        built.write_config(lease_s=90)
        with built.edited_config() as config:
            config["fallback"] = {"answer_within_s": 2, "late_grace_s": 0.5}
            config["status"] = {"port": 0}
        assert built.adapter("db-upgrade").returncode == 0, built.log_tail()
        yield built


def now_stamped(event: dict[str, Any]) -> bytes:
    return json.dumps({**event, "occurred_at": dt.datetime.now(dt.timezone.utc).isoformat()}).encode()


def test_an_insurer_that_hangs_without_any_outage_still_gets_the_his_an_answer_in_time(embedded: Stack) -> None:
    """No outage is declared and the circuit never opens: the insurer just takes 25 s to answer.
    The prescription's paper comes from its deadline (2 s after it was written), before the
    registration; the late registration then links it (paper_fallback.linked, with the tracking
    code; no prescription.registered besides)."""
    events = [json.loads(line) for line in good_event_lines(40)]
    visit = next(e for e in events if e["event_type"] == "visit.admitted")
    prescription = next(e for e in events if e["event_type"] == "prescription.created"
                        and e["payload"].get("visit_id") == visit["payload"]["visit_id"])
    embedded.publish([now_stamped(visit)])
    process = embedded.start_adapter()
    try:
        wait("the visit's eligibility", lambda: embedded.store()["states"] == {"accepted": 1}, embedded)
        embedded.sim_faults(latency_ms=25_000)
        written = dt.datetime.now(dt.timezone.utc)
        embedded.publish([now_stamped(prescription)])
        wait("the paper answer", lambda: count(embedded, ReplyRow.type == "paper_fallback.issued") == 1, embedded,
             timeout=60)
        [paper] = [r for r in reply_rows(embedded) if r.type == "paper_fallback.issued"]
        assert paper.event_id == prescription["event_id"]
        assert dt.datetime.fromisoformat(paper.body["at"]) >= written + dt.timedelta(seconds=2), "not before its time"
        assert embedded.store()["states"].get("accepted") == 1, "issued while the registration was still on its way"
        embedded.sim_faults(latency_ms=0)
        wait("the late registration", lambda: embedded.store()["states"] == {"accepted": 2}, embedded, timeout=90)
        wait("the link reply", lambda: count(embedded, ReplyRow.type == "paper_fallback.linked") == 1, embedded)
        wait("every reply published", lambda: count(embedded, ReplyRow.state != "published") == 0, embedded)
    finally:
        stop(process)
    engine = make_engine(embedded.db_url)
    try:
        with make_sessionmaker(engine)() as session:
            assert session.scalar(select(func.count()).select_from(Outage)) == 0, "no outage was declared or detected"
            [record] = session.scalars(select(FallbackRecord))
            [create] = session.scalars(select(Submission).where(Submission.event_id == prescription["event_id"]))
            assert record.state == "linked" and record.tracking_code == create.result["tracking_code"]
    finally:
        engine.dispose()
    config = yaml.safe_load(embedded.config_path.read_text())
    got = take_replies(BrokerConfig(**config["broker"]))
    mine = [b for _, b in got if b["event_id"] == prescription["event_id"]]
    assert [b["type"] for b in mine] == ["paper_fallback.issued", "paper_fallback.linked"]
    assert mine[1]["tracking_code"] == record.tracking_code


def test_tail_shows_what_the_his_receives_and_resend_needs_a_reason(embedded: Stack) -> None:
    lines = good_event_lines(6)
    tail = subprocess.Popen([sys.executable, "-m", "adapter", "replies", "tail", "--count", "4", "--timeout", "90",
                             "--config", str(embedded.config_path)], cwd=embedded.workdir, stdout=subprocess.PIPE,
                            text=True)
    time.sleep(1.5)  # tail has read where the outbox stands
    embedded.publish(lines)
    process = embedded.start_adapter()
    try:
        shown, _ = tail.communicate(timeout=120)
        wait_all_final(embedded, len(lines), timeout=60)
        wait("every reply published", lambda: count(embedded, ReplyRow.state != "published") == 0, embedded)
    finally:
        stop(process)
    printed = [json.loads(line) for line in shown.splitlines()]
    assert tail.returncode == 0 and len(printed) == 4
    rows = {r.reply_id: r for r in reply_rows(embedded)}
    for body in printed:
        assert validate_reply(body) == body and rows[body["reply_id"]].body == body
    first = printed[0]["reply_id"]
    refused = embedded.adapter("replies", "resend", first)
    assert refused.returncode == 2 and rows[first].state == "published"
    done = embedded.adapter("replies", "resend", first, "--reason", "HIS restored from a backup")
    assert done.returncode == 0, embedded.log_tail()
    assert {r.reply_id: r.state for r in reply_rows(embedded)}[first] == "pending"
    audit = json.loads(embedded.adapter("audit", "list", "--json").stdout)
    assert any(a["command"] == "replies resend" and a["reason"] == "HIS restored from a backup" for a in audit)


# -- the webhook, over real HTTPS -----------------------------------------------------------------
class _His:
    """The HIS's webhook endpoint: checks each POST's signature as docs/replies.md tells it to, and
    keeps the replies it accepted."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.accepted: list[dict[str, Any]] = []
        self.refused = 0

    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        async def take(request: Request) -> Response:
            body = await request.body()
            expected = signature(self.secret, request.headers[TIMESTAMP_HEADER], body)
            if not hmac.compare_digest(expected, request.headers.get(SIGNATURE_HEADER, "")):
                self.refused += 1
                return Response(status_code=401)
            reply = json.loads(body)
            assert request.headers["X-Reply-Id"] == reply["reply_id"]
            self.accepted.append(reply)
            return Response(status_code=204)

        return Starlette(routes=[Route("/replies", take, methods=["POST"])])


def _webhook_parts(workdir: Path) -> tuple[Any, Path, _His]:
    """The test CA and certificates, the shared secret's file (mode 600) and the HIS that checks it."""
    from tests.support.certs import make_certs

    secret = "a-long-webhook-secret-for-the-his"
    secret_file = workdir / "webhook.secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    return make_certs(workdir / "certs"), secret_file, _His(secret.encode())


def test_replies_reach_an_https_webhook_signed_and_checked_against_the_hospitals_ca(embedded: Stack) -> None:
    from tests.support.tls_front import TlsFront

    certs, secret_file, his = _webhook_parts(embedded.workdir)
    lines = good_event_lines(6)
    with SimServer(his.app()) as plain, TlsFront(certs.server_context(), plain.base_url) as front:
        with embedded.edited_config() as config:
            config["replies"] = {"sink": "webhook", "webhook": {
                "url": f"{front.base_url}/replies", "secret_file": str(secret_file), "base_delay_s": 0.2,
                "tls": {"ca_file": str(certs.ca)}}}
        assert embedded.adapter("config", "check").returncode == 0, embedded.log_tail()
        embedded.publish(lines)
        run_until_replied(embedded, len(lines), timeout=60)
    rows = reply_rows(embedded)
    assert rows and his.refused == 0
    assert sorted(r["reply_id"] for r in his.accepted) == sorted(r.reply_id for r in rows)
    assert all(validate_reply(r) == r for r in his.accepted)


def test_a_webhook_whose_certificate_the_config_does_not_trust_is_not_sent_to(embedded: Stack) -> None:
    """Without the hospital's CA in ``replies.webhook.tls.ca_file`` the HIS's certificate is refused:
    nothing is POSTed, the replies wait (pending, their attempts counted) for the config fix."""
    from tests.support.tls_front import TlsFront

    certs, secret_file, his = _webhook_parts(embedded.workdir)
    with SimServer(his.app()) as plain, TlsFront(certs.server_context(), plain.base_url) as front:
        with embedded.edited_config() as config:
            config["replies"] = {"sink": "webhook", "webhook": {
                "url": f"{front.base_url}/replies", "secret_file": str(secret_file), "base_delay_s": 0.2,
                "tls": {"ca_file": str(certs.other_ca)}}}
        embedded.publish(good_event_lines(2))
        process = embedded.start_adapter()
        try:
            wait("a refused delivery", lambda: count(embedded, ReplyRow.attempts > 0) > 0, embedded)
        finally:
            stop(process)
    assert his.accepted == [] and count(embedded, ReplyRow.state == "published") == 0
    assert any("webhook" in (r.last_error or "") for r in reply_rows(embedded))
