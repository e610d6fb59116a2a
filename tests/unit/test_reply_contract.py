"""Reply contract v1: the published schema and the documented examples match the models; which
outcome makes which reply; the webhook's signature and the outbox's order, retries and dead."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from adapter.config import AdapterConfig, RepliesConfig, load_config
from adapter.replies.contract import REPLY_TYPES, reply_json_schema, validate_reply
from adapter.replies.make import ReplyRules, Settled, his_ref, invalid_event_reply, settled_reply
from adapter.replies.outbox import ReplyOutbox
from adapter.replies.rows import add_replies
from adapter.replies.sinks import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookSink
from adapter.store.models import ReplyRow
from tests.support.store import migrated_sessions

REPO = Path(__file__).resolve().parents[2]
AT = dt.datetime(2026, 12, 2, 10, 0, tzinfo=dt.timezone.utc)
REF = {"event_type": "prescription.created", "facility_siam_id": "1234567", "prescription_id": "RX1", "visit_id": "V1"}


def documented() -> list[dict[str, Any]]:
    text = (REPO / "docs" / "replies.md").read_text("utf-8")
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", text, flags=re.S)]


def test_the_published_schema_is_the_models_schema() -> None:
    published = json.loads((REPO / "docs" / "reply-schema.json").read_text("utf-8"))
    assert published == reply_json_schema(), "run: adapter schema --replies --out docs/reply-schema.json"


def test_every_documented_example_fits_the_contract_and_every_kind_has_one() -> None:
    examples = documented()
    for example in examples:
        assert validate_reply(example) == example
    kinds = {e["type"] if not e["type"].endswith((".rejected", ".invalid", ".dead")) else e["type"].split(".")[1]
             for e in examples}
    expected = {t for t in REPLY_TYPES if not t.endswith((".rejected", ".invalid", ".dead"))}
    assert expected | {"rejected", "invalid", "dead"} <= kinds


def test_a_reply_with_a_patient_field_or_a_wrong_type_is_refused() -> None:
    good = settled_reply(Settled("e1", 1, "tamin", "create", "accepted", REF, {"tracking_code": "7", "head_id": "5"},
                                 None, None, 1), AT)
    assert good is not None and validate_reply(good)["tracking_code"] == "7"
    with pytest.raises(ValidationError):
        validate_reply({**good, "national_code": "0012345679"})
    with pytest.raises(ValidationError):
        validate_reply({**good, "type": "prescription.approved"})


@pytest.mark.parametrize(("destination", "operation", "event_type", "state", "expected"), [
    ("tamin", "create", "prescription.created", "accepted", "prescription.registered"),
    ("tamin", "update", "prescription.updated", "accepted", "prescription.updated"),
    ("tamin", "cancel", "prescription.cancelled", "accepted", "prescription.cancelled"),
    ("tamin", "eligibility", "visit.admitted", "accepted", "eligibility.result"),
    ("tamin_pharmacy", "create", "dispense.completed", "accepted", "dispense.registered"),
    ("tamin_paraclinic", "create", "paraclinic.requested", "accepted", "paraclinic.registered"),
    ("tamin_paraclinic", "confirm", "paraclinic.completed", "accepted", "paraclinic.confirmed"),
    ("sepas", "create", "bill.closed", "accepted", "sepas.saved"),
    ("tamin", "create", "prescription.created", "rejected", "prescription.rejected"),
    ("sepas", "create", "lab.result", "dead", "sepas.dead"),
    ("tamin", "create", "prescription.created", "invalid", "prescription.invalid"),
    ("tamin", "create", "prescription.created", "retry_wait", None),
])
def test_which_outcome_makes_which_reply(destination: str, operation: str, event_type: str, state: str,
                                         expected: str | None) -> None:
    settled = Settled("e1", 1, destination, operation, state, {**REF, "event_type": event_type},
                      {"error_code": "304", "error_message": "تکراری"}, "it went wrong", "transient", 3)
    reply = settled_reply(settled, AT)
    assert (reply["type"] if reply else None) == expected
    if reply is not None:
        validate_reply(reply)


def test_a_refusal_names_the_insurers_code_message_and_gloss() -> None:
    reply = settled_reply(Settled("e1", 1, "tamin", "create", "rejected", REF,
                                  {"error_code": "304", "error_message": "نسخه تکراری است"}, "Tamin error 304: ...",
                                  "rejected", 1), AT)
    assert reply is not None
    assert (reply["insurer_code"], reply["insurer_message"]) == ("304", "نسخه تکراری است")
    assert reply["gloss"] and "already registered" in reply["gloss"]
    unknown = settled_reply(Settled("e1", 1, "tamin", "create", "rejected", REF, {"error_code": "7777"}, "x",
                                    "rejected", 1), AT)
    assert unknown is not None and unknown["gloss"] is None


def test_not_covered_is_an_eligibility_result_not_a_failure() -> None:
    reply = settled_reply(Settled("e1", 1, "tamin", "eligibility", "rejected", {**REF, "event_type": "visit.admitted"},
                                  {"eligible": False, "error_message": "بیمه نیست"}, "not eligible", "rejected", 1), AT)
    assert reply is not None and (reply["type"], reply["covered"], reply["reason"]) == ("eligibility.result", False,
                                                                                        "بیمه نیست")


def test_his_ref_names_the_his_ids_and_no_patient_identifier() -> None:
    event = {"event_type": "dispense.completed", "facility_siam_id": "F1",
             "payload": {"dispense_id": "D1", "visit_id": "V1", "prescription": {"prescription_id": "RX9"},
                         "patient": {"identity": {"kind": "national_code", "value": "0012345679"}}}}
    ref = his_ref(event)
    assert ref == {"event_type": "dispense.completed", "facility_siam_id": "F1", "prescription_id": "RX9",
                   "dispense_id": "D1", "visit_id": "V1"}
    problems = [{"field": "payload.patient.identity.value", "rule": "bad check digit", "value": "h:1a2b(10)"}]
    reply = invalid_event_reply("e1", "prescription.created", "F1", problems, AT)
    assert reply["problems"] == [{"path": "payload.patient.identity.value", "rule": "bad check digit"}]


def test_reply_rules_choose_types_by_pattern() -> None:
    rules = ReplyRules(types=("prescription.*", "paper_fallback.issued"))
    assert rules.wants("prescription.rejected") and rules.wants("paper_fallback.issued")
    assert not rules.wants("sepas.saved") and not ReplyRules(enabled=False).wants("prescription.registered")
    assert ReplyRules(types=("prescripton.*",)).unknown_patterns() == ["prescripton.*"]


# -- the webhook and the outbox -------------------------------------------------------------------
SECRET = b"s3cret-for-the-his-webhook"


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    yield from migrated_sessions(f"sqlite:///{tmp_path / 'store.db'}")


def webhook_config(**webhook: Any) -> AdapterConfig:
    base = load_config(REPO / "config" / "embedded.yaml")
    replies = RepliesConfig.model_validate({"sink": "webhook", "webhook": {
        "url": "https://his.example/replies", "base_delay_s": 60, **webhook}})
    return base.model_copy(update={"replies": replies})


def write(sessions: sessionmaker[Session], *event_ids: str) -> None:
    with sessions() as session:
        add_replies(session, ReplyRules(), [(settled_reply(Settled(e, 1, "tamin", "create", "accepted", REF,
                                                                  {"tracking_code": "7"}, None, None, 1), AT), None)
                                            for e in event_ids], AT)
        session.commit()


def states(sessions: sessionmaker[Session]) -> list[tuple[str, str, int]]:
    with sessions() as session:
        return [(r.event_id, r.state, r.attempts) for r in session.scalars(select(ReplyRow).order_by(ReplyRow.id))]


def test_the_webhook_signs_timestamp_and_body() -> None:
    seen: list[httpx.Request] = []

    def his(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    sink = WebhookSink(RepliesConfig.model_validate({"webhook": {"url": "https://his.example/r"}}), SECRET,
                       httpx.Client(transport=httpx.MockTransport(his)), clock=lambda: 1764669600)
    reply = settled_reply(Settled("e1", 1, "tamin", "create", "accepted", REF, {"tracking_code": "7"}, None, None, 1), AT)
    assert reply is not None
    sink.deliver(reply, "1234567")
    [request] = seen
    stamp = request.headers[TIMESTAMP_HEADER]
    expected = hmac.new(SECRET, stamp.encode() + b"." + request.content, hashlib.sha256).hexdigest()
    assert stamp == "1764669600" and request.headers[SIGNATURE_HEADER] == f"sha256={expected}"
    assert request.headers["X-Reply-Id"] == reply["reply_id"] and json.loads(request.content) == reply


def test_a_refused_reply_holds_the_line_then_goes_dead_and_the_line_moves_on(sessions: sessionmaker[Session]) -> None:
    answers = {"e1": [500, 500], "e2": [200]}
    got: list[str] = []

    def his(request: httpx.Request) -> httpx.Response:
        event_id = json.loads(request.content)["event_id"]
        status = answers[event_id].pop(0) if answers[event_id] else 200
        if status == 200:
            got.append(event_id)
        return httpx.Response(status)

    config = webhook_config(max_attempts=2)
    now = [AT]
    sink = WebhookSink(config.replies, SECRET, httpx.Client(transport=httpx.MockTransport(his)))
    outbox = ReplyOutbox(sessions, config, sink, clock=lambda: now[0])
    write(sessions, "e1", "e2")
    assert outbox.publish_pending() == 0
    assert states(sessions) == [("e1", "pending", 1), ("e2", "pending", 0)], "e2 waits behind e1 (order)"
    assert outbox.publish_pending() == 0, "not before its retry time"
    now[0] = AT + dt.timedelta(seconds=61)
    assert outbox.publish_pending() == 1
    assert states(sessions) == [("e1", "dead", 2), ("e2", "published", 0)]
    assert got == ["e2"] and outbox.dead == 1


def test_config_check_names_each_replies_problem(tmp_path: Path) -> None:
    from adapter.replies.checks import reply_problems

    base = load_config(REPO / "config" / "embedded.yaml")

    def problems(**replies: Any) -> list[str]:
        return reply_problems(base.model_copy(update={"replies": RepliesConfig.model_validate(replies)}))

    assert problems() == []
    assert any("replies.types" in p and "prescripton.*" in p for p in problems(types=["prescripton.*"]))
    assert any("replies.routing_key" in p for p in problems(routing_key="{queue}.{site}"))
    assert any("replies.webhook.url" in p for p in problems(sink="webhook"))
    remote = {"url": "http://his.example/r", "secret_file": str(tmp_path / "none")}
    found = problems(sink="webhook", webhook=remote)
    assert any("plain http" in p for p in found) and any("none" in p for p in found)
    secret = tmp_path / "secret"
    secret.write_text("a-long-enough-secret\n")
    secret.chmod(0o600)
    assert problems(sink="webhook", webhook={"url": "https://his.example/r", "secret_file": str(secret)}) == []


def test_a_dead_reply_raises_an_alert_until_it_is_resent(sessions: sessionmaker[Session]) -> None:
    from adapter.config import AlertRulesConfig
    from adapter.ops.alerts.rules import conditions
    from adapter.ops.alerts.service import read_facts
    from adapter.replies.rows import mark_failed, resend

    write(sessions, "e1")
    rules = AlertRulesConfig()
    with sessions() as session:
        assert "replies_dead" not in conditions(read_facts(session, rules, AT), rules)
        row = session.scalars(select(ReplyRow)).one()
        mark_failed(session, row.id, attempts=10, error="webhook answered HTTP 500", next_at=None)
        session.commit()
        active = conditions(read_facts(session, rules, AT), rules)
        assert "1 replies to the HIS are dead" in active["replies_dead"].summary
        assert resend(session, [row.reply_id, "unknown"]) == [row.reply_id]
        session.commit()
        assert "replies_dead" not in conditions(read_facts(session, rules, AT), rules)
        assert session.scalars(select(ReplyRow)).one().state == "pending"


class _GroupedSink:
    """Holds what it is given until its ``together`` block ends, as the embedded queue's commit does;
    ``fail_commits`` of those blocks fail at the end (nothing of them reaches the HIS)."""

    name = "grouped"
    retries_each = False

    def __init__(self, fail_commits: int) -> None:
        self.fail_commits = fail_commits
        self.held: list[str] = []
        self.received: list[str] = []

    def deliver(self, reply: dict[str, Any], facility: str | None) -> None:
        self.held.append(reply["reply_id"])

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        self.held = []
        yield
        if self.fail_commits:
            self.fail_commits -= 1
            raise OSError("disk I/O error")
        self.received += self.held

    def close(self, graceful: bool = True) -> None:
        pass


def test_a_group_whose_commit_fails_is_not_marked_and_goes_again_whole(sessions: sessionmaker[Session]) -> None:
    write(sessions, *[f"e{n}" for n in range(120)])  # three groups of at most 50
    sink = _GroupedSink(fail_commits=1)
    outbox = ReplyOutbox(sessions, load_config(REPO / "config" / "embedded.yaml"), sink)
    assert outbox.publish_pending() == 0, "the first group's commit failed: the round stops there"
    assert sink.received == [] and {state for _, state, _ in states(sessions)} == {"pending"}
    assert outbox.publish_pending() == 120
    with sessions() as session:
        written = list(session.scalars(select(ReplyRow.reply_id).order_by(ReplyRow.id)))
    assert sink.received == written, "each reply once, in the order written, with its own reply_id"
    assert {state for _, state, _ in states(sessions)} == {"published"}
