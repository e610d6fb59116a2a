"""Retention: ``adapter prune`` removes payload bodies and audit detail of old finished work and
never touches unfinished submissions (pending, sending, retry_wait, rejected, invalid, dead,
fallback, discrepancy) nor their events, nor invalid events. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from adapter.config import RetentionConfig
from adapter.ops.cli import app as cli
from adapter.ops.prune import FINISHED, NEVER_TOUCHED, prune
from adapter.store.db import make_engine, make_sessionmaker, upgrade
from adapter.store.models import Attempt, EventVersion, InboxEvent, StateChange, Submission
from adapter.store.types import utcnow
from tests.support.pipeline import EMBEDDED

NOW = utcnow()
OLD = NOW - dt.timedelta(days=400)
RECENT = NOW - dt.timedelta(days=5)
RETENTION = RetentionConfig(payload_days=30, audit_days=365, batch_size=3)  # small batches: the loops are exercised
BODY = json.dumps({"event_id": "x", "payload": {"patient": {"identity": {"value": "0012345679"}}}})


def add_event(session: Session, event_id: str, states: list[str], at: dt.datetime, status: str = "accepted") -> None:
    session.add(InboxEvent(event_id=event_id, event_type="prescription.created", status=status, received_at=at,
                           body=BODY, duplicate_receipts=0))
    session.add(StateChange(event_id=event_id, submission_id=None, to_state=status, actor="intake", at=at))
    session.flush()
    for index, state in enumerate(states):
        sub = Submission(event_id=event_id, destination="tamin", operation=f"op{index}", state=state,
                         idempotency_key=f"{event_id}-{index}", payload={"patient": "0012345679"}, params={"a": 1},
                         result={"head_id": "H1"} if state in FINISHED else None, created_at=at, updated_at=at)
        session.add(sub)
        session.flush()
        session.add(Attempt(submission_id=sub.id, number=1, started_at=at, duration_ms=5, outcome="accepted",
                            request={"body": "0012345679"}, response={"status": 200}))
        session.add(StateChange(event_id=event_id, submission_id=sub.id, from_state="pending", to_state=state,
                                actor="dispatcher", at=at, reason="done"))


def populate(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        for state in NEVER_TOUCHED:  # one old event per unfinished state, beside a finished sibling
            add_event(session, f"old-open-{state}", [state, "accepted"], OLD)
        for state in FINISHED:
            add_event(session, f"old-done-{state}", [state], OLD)
        add_event(session, "old-done-many", ["accepted", "confirmed", "paid"], OLD)
        add_event(session, "recent-done", ["accepted"], RECENT)
        add_event(session, "old-unrouted", [], OLD, status="unrouted")
        add_event(session, "old-invalid", [], OLD, status="invalid")
        session.commit()


def snapshot(sessions: sessionmaker[Session]) -> dict[str, Any]:
    with sessions() as session:
        events = {e.event_id: (e.body, e.pruned_at is not None) for e in session.scalars(select(InboxEvent))}
        subs = {s.id: (s.event_id, s.state, s.payload, s.result, s.pruned_at is not None)
                for s in session.scalars(select(Submission))}
        attempts = {a.id: (a.submission_id, a.request, a.response) for a in session.scalars(select(Attempt))}
        changes = {c.id: (c.event_id, c.submission_id, c.to_state) for c in session.scalars(select(StateChange))}
    return {"events": events, "subs": subs, "attempts": attempts, "changes": changes}


def test_prune_removes_old_finished_detail_and_never_touches_unfinished_work(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    try:
        populate(sessions)
        before = snapshot(sessions)

        dry = prune(sessions, RETENTION, now=NOW, dry_run=True)
        assert snapshot(sessions) == before, "a dry run changes nothing"
        report = prune(sessions, RETENTION, now=NOW)
        after = snapshot(sessions)
        again = prune(sessions, RETENTION, now=NOW)
    finally:
        engine.dispose()

    assert report.as_dict() | {"dry_run": True} == dry.as_dict(), "the dry run counts what the run does"
    assert again.total == 0, "a second run finds nothing left"

    unfinished_subs = {sid for sid, (_, state, *_rest) in before["subs"].items() if state in NEVER_TOUCHED}
    unfinished_events = {before["subs"][sid][0] for sid in unfinished_subs} | {"old-invalid"}
    assert len(unfinished_subs) == len(NEVER_TOUCHED)
    for sid in unfinished_subs:  # untouched: row, payload, attempts, audit
        assert after["subs"][sid] == before["subs"][sid]
    for aid, attempt in before["attempts"].items():
        if attempt[0] in unfinished_subs:
            assert after["attempts"][aid] == attempt
    for cid, change in before["changes"].items():
        if change[1] in unfinished_subs or (change[1] is None and change[0] in unfinished_events):
            assert after["changes"][cid] == change
    for event_id in unfinished_events | {"recent-done"}:
        assert after["events"][event_id] == before["events"][event_id]

    old_finished = {sid for sid, (event_id, state, *_rest) in before["subs"].items()
                    if state in FINISHED and event_id != "recent-done"}
    for sid in old_finished:
        event_id, state, payload, result, pruned = after["subs"][sid]
        assert payload is None and pruned and state == before["subs"][sid][1]
        assert result == {"head_id": "H1"}, "results (tracking codes, head ids) are kept"
    assert not any(a[0] in old_finished for a in after["attempts"].values()), "old attempts deleted (audit_days)"
    assert not any(c[1] in old_finished for c in after["changes"].values()), "old state changes deleted"
    pruned_events = {e for e, (body, pruned) in after["events"].items() if pruned}
    assert pruned_events == {f"old-done-{s}" for s in FINISHED} | {"old-done-many", "old-unrouted"}
    for event_id in pruned_events:
        assert "0012345679" not in after["events"][event_id][0]
        assert "pruned_at" in json.loads(after["events"][event_id][0])
    recent = [sid for sid, s in before["subs"].items() if s[0] == "recent-done"]
    assert after["subs"][recent[0]] == before["subs"][recent[0]]
    assert report.submission_payloads == len(old_finished)
    assert report.event_bodies == len(pruned_events)


def test_payload_age_alone_blanks_attempt_bodies_but_keeps_the_rows(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    try:
        with sessions() as session:
            add_event(session, "mid-age", ["accepted"], NOW - dt.timedelta(days=60))
            session.commit()
        report = prune(sessions, RETENTION, now=NOW)
        with sessions() as session:
            attempts = session.scalars(select(Attempt)).all()
            changes = session.scalar(select(func.count()).select_from(StateChange))
    finally:
        engine.dispose()
    assert report.attempt_bodies == 1 and report.attempts_deleted == 0
    assert [(a.request, a.response) for a in attempts] == [({"pruned": True}, {"pruned": True})]
    assert changes == 2


def test_adapter_prune_command_dry_run_shows_counts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            add_event(session, "old", ["accepted"], OLD)
            add_event(session, "open", ["dead"], OLD)
            session.commit()
    finally:
        engine.dispose()
    config = yaml.safe_load(EMBEDDED.read_text())
    config["database"]["url"] = url
    path = tmp_path / "adapter.yaml"
    path.write_text(yaml.safe_dump(config))
    runner = CliRunner()
    dry = runner.invoke(cli, ["prune", "--dry-run", "--json", "--config", str(path)])
    assert dry.exit_code == 0, dry.output
    counts = json.loads(dry.output)
    assert counts["dry_run"] is True and counts["submission_payloads"] == 1 and counts["event_bodies"] == 1
    assert counts["attempts_deleted"] == 1 and counts["state_changes_deleted"] == 2
    done = runner.invoke(cli, ["prune", "--reason", "retention", "--config", str(path)])
    assert done.exit_code == 0 and done.output.startswith("pruned: submission payloads=1")
    again = runner.invoke(cli, ["prune", "--dry-run", "--config", str(path)])
    assert "would prune: submission payloads=0 attempt bodies=0 event bodies=0" in again.output


def test_adapter_run_prunes_on_schedule(tmp_path: Path) -> None:
    import threading
    import time

    from adapter.app import build
    from adapter.broker.connection import publish_bodies
    from adapter.pipeline.runner import Runner
    from adapter.samples.generate import generate
    from adapter.sim.server import SimServer
    from adapter.sim.tamin_app import create_tamin_app
    from tests.support.pipeline import adapter_config, good_lines

    lines = good_lines(generate(NOW, patients=2).lines)
    with SimServer(create_tamin_app()) as sim:
        config = adapter_config(f"sqlite:///{tmp_path / 'a.db'}", sim.base_url, tmp_path,
                                broker__url=f"sqlite-queue:///{tmp_path / 'q.db'}", status__enabled=False,
                                retention__payload_days=0.00002, retention__prune_every_s=0.2)  # ~1.7 s
        publish_bodies(config.broker, lines)
        app = build(config)
        runner = Runner(app)
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while True:
                with app.sessions() as session:
                    done = session.scalars(select(Submission).where(Submission.state.in_(FINISHED))).all()
                if done and all(s.pruned_at is not None and s.payload is None for s in done):
                    break
                assert time.monotonic() < deadline, "the scheduled prune never ran"
                time.sleep(0.1)
        finally:
            runner.stop()
            thread.join(timeout=30)
            app.close()


def test_earlier_versions_of_a_pruned_event_go_with_its_body_but_an_open_conflict_stays(db_url: str) -> None:
    """A superseded or replayed version is a whole event body (patient data): kept no longer than
    the event's own body. An unresolved conflict waits for its operator, however old."""
    upgrade(db_url)
    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    try:
        with sessions() as session:
            add_event(session, "old-corrected", ["accepted"], OLD)
            add_event(session, "old-in-conflict", ["accepted"], OLD)
            add_event(session, "recent-corrected", ["accepted"], RECENT)
            for event_id, state in (("old-corrected", "superseded"), ("old-corrected", "replayed"),
                                    ("old-in-conflict", "conflict"), ("recent-corrected", "superseded")):
                session.add(EventVersion(event_id=event_id, content_digest=f"{event_id}-{state}", body=BODY,
                                         state=state, received_at=OLD))
            session.commit()
        counted = prune(sessions, RETENTION, now=NOW, dry_run=True)
        report = prune(sessions, RETENTION, now=NOW)
        again = prune(sessions, RETENTION, now=NOW)
        with sessions() as session:
            left = sorted((v.event_id, v.state) for v in session.scalars(select(EventVersion)))
    finally:
        engine.dispose()
    assert counted.event_versions_deleted == 2 and report.event_versions_deleted == 2
    assert again.event_versions_deleted == 0
    assert left == [("old-in-conflict", "conflict"), ("recent-corrected", "superseded")]
