"""De-duplication by content (issue 16 item 3), on SQLite and PostgreSQL (``db_url``): an identical
body under a known event id is a duplicate receipt (in the store and inside one batch); a
different body is a ``conflict`` kept with its body, counted by ``adapter status``, listed by
``adapter show``, alerted on, and replayable as the new version only when nothing can be sent
twice; a body that repeats a JSON key is an invalid event naming the key."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select, update
from typer.testing import CliRunner

from adapter.app import App, build
from adapter.ops.alerts.service import read_facts
from adapter.ops.cli import app as cli
from adapter.ops.status import status_report
from adapter.ops.trail import event_trail
from adapter.pipeline.intake import Received
from adapter.pipeline.supersede import ConflictRefused, replay_conflict
from adapter.store.models import EventVersion, InboxEvent, OperatorAction, StateChange, Submission
from tests.support.pipeline import EMBEDDED, REPO, adapter_config

SAMPLE = json.loads((REPO / "docs" / "sample-prescription-created.json").read_text())
GOOD_CODE = SAMPLE["payload"]["patient"]["identity"]["value"]  # 0012345679
BAD_CODE = GOOD_CODE[:-1] + "8"  # wrong check digit
OCCURRED_AT = dt.datetime.now(dt.timezone(dt.timedelta(hours=3, minutes=30))).isoformat(timespec="seconds")


def event(event_id: str, code: str = GOOD_CODE) -> dict[str, Any]:
    body = json.loads(json.dumps(SAMPLE))
    body["event_id"] = event_id
    body["occurred_at"] = OCCURRED_AT  # one value: a body built again is the same body
    body["payload"]["patient"]["identity"]["value"] = code
    return body


def dumps(body: dict[str, Any], **kwargs: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, **kwargs).encode()


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[App]:
    built = build(adapter_config(db_url, "http://127.0.0.1:9/unused", tmp_path))
    yield built
    built.close()


def inbox(app: App, event_id: str) -> InboxEvent:
    with app.sessions() as session:
        row = session.get(InboxEvent, event_id)
        assert row is not None
        session.expunge(row)
        return row


def versions(app: App, event_id: str) -> list[EventVersion]:
    with app.sessions() as session:
        return list(session.scalars(select(EventVersion).where(EventVersion.event_id == event_id)
                                    .order_by(EventVersion.id)))


def submissions(app: App, event_id: str) -> list[Submission]:
    with app.sessions() as session:
        return list(session.scalars(select(Submission).where(Submission.event_id == event_id).order_by(Submission.id)))


def test_an_identical_body_reserialised_is_a_duplicate_counted(app: App) -> None:
    body = event("evt-dup-1")
    assert app.intake.receive(dumps(body)).outcome is Received.stored
    again = json.dumps(dict(reversed(list(body.items()))), indent=2).encode()  # other key order, spacing, \u escapes
    assert app.intake.receive(again).outcome is Received.duplicate
    assert inbox(app, "evt-dup-1").duplicate_receipts == 1
    assert versions(app, "evt-dup-1") == []


def test_a_repeat_inside_one_batch_is_counted_and_a_different_one_is_a_conflict(app: App) -> None:
    first, second = event("evt-batch-1"), event("evt-batch-2")
    changed = event("evt-batch-2")
    changed["payload"]["items"][0]["quantity"] = 30
    results = app.intake.receive_many([dumps(first), dumps(first, indent=1), dumps(second), dumps(changed),
                                       dumps(changed)])
    assert results is not None
    assert [r.outcome for r in results] == [Received.stored, Received.duplicate, Received.stored,
                                            Received.conflict, Received.duplicate]
    assert inbox(app, "evt-batch-1").duplicate_receipts == 1
    assert inbox(app, "evt-batch-2").duplicate_receipts == 1  # the conflicting body, sent twice
    assert [v.state for v in versions(app, "evt-batch-2")] == ["conflict"]
    assert len(submissions(app, "evt-batch-2")) == 1  # nothing was made of the conflicting body


def test_a_correction_under_the_same_id_is_a_conflict_kept_shown_and_alerted(app: App,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    assert app.intake.receive(dumps(event("evt-fix-1", BAD_CODE))).outcome is Received.invalid
    with caplog.at_level(logging.WARNING, logger="adapter.pipeline.intake"):
        result = app.intake.receive(dumps(event("evt-fix-1")))
    assert result.outcome is Received.conflict and "kept as version" in result.reason
    assert "evt-fix-1" in caplog.text and "conflict" in caplog.text
    assert GOOD_CODE not in caplog.text and BAD_CODE not in caplog.text

    [version] = versions(app, "evt-fix-1")
    assert version.state == "conflict" and json.loads(version.body)["payload"]["patient"]["identity"]["value"] == GOOD_CODE
    assert inbox(app, "evt-fix-1").status == "invalid" and submissions(app, "evt-fix-1") == []
    assert app.intake.receive(dumps(event("evt-fix-1"))).outcome is Received.duplicate  # the correction again
    assert app.intake.receive(dumps(event("evt-fix-1", BAD_CODE))).outcome is Received.duplicate  # the first again

    with app.sessions() as session:
        assert status_report(session)["events"]["conflicts"] == 1
        trail = event_trail(session, "evt-fix-1")
        facts = read_facts(session, app.config.alerts.rules, dt.datetime.now(dt.timezone.utc))
    assert trail is not None
    [shown] = trail["event"]["versions"]
    assert (shown["id"], shown["state"]) == (version.id, "conflict")
    assert shown["differs_at"] == ["payload.patient.identity.value"]
    assert GOOD_CODE not in json.dumps(trail, ensure_ascii=False)
    assert facts.open_conflicts == 1


def test_replaying_the_conflict_of_an_invalid_event_makes_it_the_event(app: App) -> None:
    app.intake.receive(dumps(event("evt-fix-2", BAD_CODE)))
    app.intake.receive(dumps(event("evt-fix-2")))
    with pytest.raises(ConflictRefused, match="reason"):
        replay_conflict(app.sessions, app.intake, "evt-fix-2", actor="replay:ops", reason=" ")
    dry = replay_conflict(app.sessions, app.intake, "evt-fix-2", actor="replay:ops", reason="HIS fixed it",
                          dry_run=True)
    assert dry.to_status == "accepted" and inbox(app, "evt-fix-2").status == "invalid"  # dry run: nothing changed

    done = replay_conflict(app.sessions, app.intake, "evt-fix-2", actor="replay:ops", reason="HIS fixed it")
    assert (done.from_status, done.to_status) == ("invalid", "accepted")
    row = inbox(app, "evt-fix-2")
    assert row.status == "accepted" and json.loads(row.body)["payload"]["patient"]["identity"]["value"] == GOOD_CODE
    [sub] = submissions(app, "evt-fix-2")
    assert sub.state == "pending" and done.submissions == [
        {"id": sub.id, "destination": sub.destination, "operation": sub.operation, "from": None, "to": "pending"}]
    assert sorted(v.state for v in versions(app, "evt-fix-2")) == ["replayed", "superseded"]
    with app.sessions() as session:
        changes = list(session.scalars(select(StateChange).where(StateChange.event_id == "evt-fix-2")
                                       .order_by(StateChange.id)))
        assert status_report(session)["events"]["conflicts"] == 0
    assert [(c.from_state, c.to_state, c.actor) for c in changes if c.submission_id is None][-1] == (
        "invalid", "accepted", "replay:ops")
    assert "HIS fixed it" in (changes[-1].reason or "")
    # a late redelivery of either body is a duplicate, not a new conflict
    assert app.intake.receive(dumps(event("evt-fix-2", BAD_CODE))).outcome is Received.duplicate
    assert app.intake.receive(dumps(event("evt-fix-2"))).outcome is Received.duplicate
    with pytest.raises(ConflictRefused, match="no open conflict"):
        replay_conflict(app.sessions, app.intake, "evt-fix-2", actor="replay:ops", reason="again")


def test_a_rejected_submission_is_replaced_in_place_with_its_idempotency_key(app: App) -> None:
    app.intake.receive(dumps(event("evt-rej-1")))
    [before] = submissions(app, "evt-rej-1")
    with app.sessions() as session:
        session.execute(update(Submission).where(Submission.id == before.id).values(state="rejected", attempts=1))
        session.commit()
    changed = event("evt-rej-1")
    changed["payload"]["items"][0]["quantity"] = 30
    assert app.intake.receive(dumps(changed)).outcome is Received.conflict
    replay_conflict(app.sessions, app.intake, "evt-rej-1", actor="replay:ops", reason="quantity corrected")
    [after] = submissions(app, "evt-rej-1")
    assert (after.id, after.idempotency_key, after.state, after.attempts) == (
        before.id, before.idempotency_key, "pending", 0)
    assert json.dumps(after.payload) != json.dumps(before.payload)


@pytest.mark.parametrize("state, ambiguous, says", [
    ("accepted", False, "the insurer holds the old version"),
    ("pending", False, "may be on its way"),
    ("dead", True, "ambiguous"),
])
def test_replay_is_refused_when_the_old_version_may_be_at_the_insurer(app: App, state: str, ambiguous: bool,
                                                                      says: str) -> None:
    event_id = f"evt-sent-{state}"
    app.intake.receive(dumps(event(event_id)))
    [sub] = submissions(app, event_id)
    with app.sessions() as session:
        session.execute(update(Submission).where(Submission.id == sub.id).values(state=state, ambiguous=ambiguous))
        session.commit()
    changed = event(event_id)
    changed["payload"]["items"][0]["quantity"] = 30
    assert app.intake.receive(dumps(changed)).outcome is Received.conflict
    with pytest.raises(ConflictRefused, match=says):
        replay_conflict(app.sessions, app.intake, event_id, actor="replay:ops", reason="try")
    [still] = submissions(app, event_id)
    assert (still.state, json.dumps(still.payload)) == (state, json.dumps(sub.payload))
    assert [v.state for v in versions(app, event_id)] == ["conflict"]


def test_a_conflicting_version_that_fails_the_contract_is_not_replayed(app: App) -> None:
    app.intake.receive(dumps(event("evt-bad-2")))
    app.intake.receive(dumps(event("evt-bad-2", BAD_CODE)))
    with pytest.raises(ConflictRefused, match="not a valid event"):
        replay_conflict(app.sessions, app.intake, "evt-bad-2", actor="replay:ops", reason="try")
    assert inbox(app, "evt-bad-2").status == "accepted"


def test_duplicate_json_keys_are_an_invalid_event_naming_the_key(app: App) -> None:
    app.intake.receive(dumps(event("a")))
    result = app.intake.receive(b'{"event_id": "b", "event_id": "a", "event_type": "prescription.created"}')
    assert result.outcome is Received.invalid and result.event_id.startswith("unreadable-")  # not a repeat of "a"
    assert "event_id: duplicate key" in result.reason
    assert inbox(app, "a").duplicate_receipts == 0

    text = dumps(event("evt-dupkey")).decode().replace('"quantity":', '"quantity": 1, "quantity":', 1)
    nested = app.intake.receive(text.encode())
    assert (nested.outcome, nested.event_id) == (Received.invalid, "evt-dupkey")
    assert [p["field"] for p in inbox(app, "evt-dupkey").problems or []] == ["payload.items.0.quantity"]


def test_the_replay_conflict_command_is_audited(app: App, db_url: str, tmp_path: Path) -> None:
    app.intake.receive(dumps(event("evt-cli-1", BAD_CODE)))
    app.intake.receive(dumps(event("evt-cli-1")))
    data = yaml.safe_load(EMBEDDED.read_text())
    data["database"]["url"] = db_url
    data["mappings_root"] = str(REPO / "mappings")
    data.setdefault("secrets", {})["token_key_file"] = str(tmp_path / "token.key")
    config = tmp_path / "adapter.yaml"
    config.write_text(yaml.safe_dump(data))

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, [*args, "--config", str(config)], env={"COLUMNS": "200"})

    assert run("replay", "--conflict", "evt-cli-1").exit_code == 2  # no --reason
    done = run("replay", "--conflict", "evt-cli-1", "--reason", "HIS corrected the code", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["to_status"] == "accepted"
    again = run("replay", "--conflict", "evt-cli-1", "--reason", "again")
    assert again.exit_code == 1 and "no open conflict" in again.output
    with app.sessions() as session:
        actions = list(session.scalars(select(OperatorAction).where(OperatorAction.command == "replay")
                                       .order_by(OperatorAction.id)))
    assert [(a.arguments, a.result) for a in actions] == [({"conflict": "evt-cli-1"}, "ok"),
                                                          ({"conflict": "evt-cli-1"}, "failed")]


def test_the_run_stop_line_counts_conflicts_apart_from_duplicates(tmp_path: Path) -> None:
    from adapter.sim.server import SimServer
    from adapter.sim.tamin_app import create_tamin_app
    from tests.support.stack import Stack

    with SimServer(create_tamin_app()) as sim:
        stack = Stack("embedded", tmp_path, f"sqlite:///{tmp_path / 'adapter.db'}",
                      f"sqlite-queue:///{tmp_path / 'queue.db'}", sim)
        stack.write_config()
        assert stack.adapter("db-upgrade").returncode == 0, stack.log_tail()
        first = event("evt-stop-line")
        stack.publish([dumps(first), dumps(first, separators=(",", ":")), dumps(event("evt-stop-line", BAD_CODE))])
        done = stack.adapter("run", "--until-idle")
        assert done.returncode == 0, stack.log_tail()
    [line] = [line for line in (tmp_path / "adapter.log").read_text().splitlines() if line.startswith("stopped:")]
    assert "received=3 stored=1" in line and "duplicates=1 conflicts=1" in line, line


def test_a_conflict_tells_the_his_its_correction_is_held(app: App) -> None:
    from adapter.store.models import ReplyRow

    app.intake.receive(dumps(event("evt-held")))
    app.intake.receive(dumps(event("evt-held")))  # identical: a duplicate, no reply
    corrected = event("evt-held", BAD_CODE)
    assert app.intake.receive(dumps(corrected)).outcome is Received.conflict
    with app.sessions() as session:
        replies = [r for r in session.scalars(select(ReplyRow).where(ReplyRow.event_id == "evt-held"))
                   if r.type == "event.conflict"]
        [version] = versions(app, "evt-held")
    [reply] = replies
    assert reply.body["version_id"] == version.id
    assert reply.body["prescription_id"] == corrected["payload"]["prescription_id"]
    assert BAD_CODE not in json.dumps(reply.body) and GOOD_CODE not in json.dumps(reply.body)
