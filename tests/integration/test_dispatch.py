"""Intake -> store -> dispatcher -> Tamin simulator, over real HTTP, on SQLite and PostgreSQL.

No broker: events go straight into ``app.intake.receive``. The simulator is wrapped in a
``RecordingApp`` that only observes the order of requests and answers.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from adapter.app import App, build
from adapter.destinations.auth import ClientCredentialsProvider, TokenCache
from adapter.destinations.tamin.client import TaminClient
from adapter.destinations.tamin.destination import TaminDestination
from adapter.pipeline.intake import Received
from adapter.samples.generate import SampleSet, generate
from adapter.sim.server import SimServer
from adapter.sim.settings import TaminSimSettings
from adapter.sim.tamin_app import create_tamin_app
from adapter.store.lookups import DestinationStore
from adapter.store.models import Attempt, InboxEvent, StateChange, Submission
from adapter.store.states import OPEN_STATES
from adapter.store.types import utcnow
from adapter.destinations.http import Exchange
from adapter.destinations.tamin.client import endpoint as tamin_endpoint
from tests.support.pipeline import RecordingApp, adapter_config, drain, events_by_id, good_lines

_OPEN = {s.value for s in OPEN_STATES}


@pytest.fixture(scope="module")
def sample() -> SampleSet:
    return generate(dt.datetime.now(dt.timezone.utc), patients=30)


@pytest.fixture
def sim() -> Iterator[RecordingApp]:
    recorder = RecordingApp(create_tamin_app(TaminSimSettings()))
    with SimServer(recorder) as server:
        recorder.base_url = server.base_url  # type: ignore[attr-defined]
        yield recorder


@pytest.fixture
def make_app(db_url: str, sim: RecordingApp, tmp_path: Path) -> Iterator[Callable[..., App]]:
    apps: list[App] = []

    def make(**overrides: Any) -> App:
        app = build(adapter_config(db_url, sim.base_url, tmp_path, **overrides))  # type: ignore[attr-defined]
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


def submissions(app: App) -> list[Submission]:
    with app.sessions() as session:
        return list(session.scalars(select(Submission).order_by(Submission.id)))


def by_event(app: App) -> dict[tuple[str, str], Submission]:
    return {(s.event_id, s.operation): s for s in submissions(app)}


def attempts_of(app: App, submission_id: int) -> list[Attempt]:
    with app.sessions() as session:
        return list(session.scalars(select(Attempt).where(Attempt.submission_id == submission_id).order_by(Attempt.id)))


def trail(app: App, submission_id: int) -> list[StateChange]:
    with app.sessions() as session:
        return list(session.scalars(select(StateChange).where(StateChange.submission_id == submission_id)
                                    .order_by(StateChange.id)))


def patient_of(event: dict[str, Any]) -> str:
    return event["payload"]["patient"]["identity"]["value"]


def receive(app: App, lines: list[bytes]) -> Counter:
    return Counter(app.intake.receive(line).outcome for line in lines)


def lines_for(sample: SampleSet, *event_ids: str) -> list[bytes]:
    by_id = {json.loads(line)["event_id"]: line for line in good_lines(sample.lines)}
    return [by_id[e] for e in event_ids]


def sim_calls(sim: RecordingApp, endpoint: str, key: str | None = None) -> list[dict[str, Any]]:
    """Requests the simulator finished for ``endpoint`` (from its own log), optionally by idempotency key."""
    paths = {"create": "/api/v2/SendEpresc"}
    return [e for e in sim.entries("end")
            if (e["path"] == paths[endpoint]) and (key is None or e["key"] == key)]


# ----- (a) the whole sample ------------------------------------------------------------------
def test_all_sample_events_settle_with_no_duplicate_at_tamin(sample: SampleSet, sim: RecordingApp, make_app) -> None:
    events = events_by_id(sample.lines)
    expired = patient_of(events["evt-0004-rx"])  # a drug prescription that is also edited
    refused_patients = set(sample.unknown_patients) | {expired}
    assert sample.unknown_patients and refused_patients
    sim.registry.update_settings({"unknown_patients": set(sample.unknown_patients), "expired_patients": {expired}})
    app = make_app()

    received = receive(app, sample.lines)
    good = good_lines(sample.lines)
    assert received[Received.duplicate] == 1  # the sample repeats one event
    assert received[Received.invalid] >= 4  # the deliberately bad ones
    drain(app, timeout_s=30)

    rows = submissions(app)
    assert rows and not [s for s in rows if s.state in _OPEN]
    good_ids = {json.loads(line)["event_id"] for line in good}
    checked = 0
    for s in rows:
        if s.event_id not in good_ids:
            continue
        checked += 1
        event = events[s.event_id]
        refused = patient_of(event) in refused_patients
        if not refused:
            expected = "accepted"
        elif s.operation in ("eligibility", "create"):
            expected = "rejected"
        else:
            expected = "invalid"  # an edit/delete of a prescription Tamin never registered
        assert s.state == expected, (s.event_id, s.operation, s.state, s.last_error)
        if expected == "accepted" and s.operation == "create":
            assert s.result and s.result["head_id"] and s.result["tracking_code"]
        if refused and s.operation == "create":
            assert s.last_error and patient_of(event) not in s.last_error

    assert checked == len([s for s in rows if s.event_id in good_ids]) > 60
    found = by_event(app)
    assert sum(s.state == "rejected" for s in rows if s.operation == "create") == len(refused_patients)
    assert found[("evt-0004-rx", "create")].state == "rejected"
    assert found[("evt-0004-rx-edit", "update")].state == "invalid"
    assert found[("bad-unmapped-code", "create")].state == "invalid"
    assert {s.event_id for s in rows} == good_ids | {"bad-unmapped-code", "persian-digits-ok"}

    stats = sim.registry.stats()
    assert stats["duplicates"] == 0, stats["duplicate_keys"]
    sent_creates = [s for s in rows if s.operation == "create" and s.last_error_class != "mapping"]
    assert stats["create_calls"] == len(sent_creates)  # one call per create, none resent
    assert all(s.attempts == 1 for s in rows if s.last_error_class != "mapping")
    assert stats["prescriptions"] == sum(s.state == "accepted" for s in sent_creates)
    assert stats["edits"] == sum(s.state == "accepted" for s in rows if s.operation == "update")
    assert stats["deletes"] == sum(s.state == "accepted" for s in rows if s.operation == "cancel")

    # every submission has an unbroken audit trail from pending to its final state
    for s in rows:
        changes = trail(app, s.id)
        assert changes, s.id
        assert changes[0].from_state is None
        first = "invalid" if s.last_error_class == "mapping" else "pending"
        assert changes[0].to_state == first
        for before, after in zip(changes, changes[1:]):
            assert after.from_state == before.to_state, (s.id, [(c.from_state, c.to_state) for c in changes])
        assert changes[-1].to_state == s.state
        if s.state == "accepted":
            assert "sending" in [c.to_state for c in changes]

    with app.sessions() as session:
        inbox = list(session.scalars(select(InboxEvent)))
    assert {e.event_id for e in inbox} >= good_ids
    assert {e.event_id for e in inbox if e.status == "invalid"} >= {"bad-type", "bad-national-code", "bad-jalali-date"}
    assert sum(e.duplicate_receipts for e in inbox) == 1


# ----- (b) ordering ------------------------------------------------------------------------
def _assert_create_answered_before_changes(app: App, sim: RecordingApp) -> int:
    """For every update/cancel the simulator received: its create was answered 200 (and recorded
    accepted by the adapter) before the update/cancel request arrived. Returns how many were checked."""
    rows = submissions(app)
    creates = {s.subject_key: s for s in rows if s.operation == "create"}
    starts, ends = sim.entries("start"), sim.entries("end")
    checked = 0
    for s in rows:
        if s.operation not in ("update", "cancel"):
            continue
        sent = [e for e in starts if e["key"] == s.idempotency_key]
        if not sent:
            continue
        create = creates[s.subject_key]
        answered = [e for e in ends if e["key"] == create.idempotency_key and e["status"] == 200]
        assert answered, f"{s.operation} of {s.subject_key} sent, but its create was never answered"
        assert answered[0]["seq"] < sent[0]["seq"], f"{s.operation} of {s.subject_key} sent before its create was answered"
        head_id = create.result["head_id"]
        assert f"/{head_id}/" in sent[0]["path"]
        # adapter side: every claim of the edit/delete before the create was recorded accepted ended
        # without a send ("waiting"); the claim that sent it came after
        [accepted_at] = [c.id for c in trail(app, create.id) if c.to_state == "accepted"]
        changes = trail(app, s.id)
        for claim, after in zip(changes, changes[1:]):
            if claim.to_state == "sending" and claim.id < accepted_at:
                assert after.to_state == "retry_wait" and "not registered" in (after.reason or ""), \
                    (s.operation, s.subject_key, after.to_state, after.reason)
        assert [a.number for a in attempts_of(app, s.id)] == [1]  # one real exchange with Tamin
        checked += 1
    return checked


def test_update_and_cancel_never_sent_before_their_create_is_accepted(sample: SampleSet, sim: RecordingApp,
                                                                       make_app) -> None:
    # creates fail a few times (503, no Retry-After): the edits/deletes must wait, not go ahead
    sim.registry.update_settings({"latency_ms": 5, "fail_next": 6, "fail_endpoints": {"create"},
                                  "retry_after_s": None})
    app = make_app(dispatch__workers=8)
    receive(app, good_lines(sample.lines))
    drain(app, timeout_s=30)

    rows = submissions(app)
    assert all(s.state == "accepted" for s in rows), [(s.event_id, s.state, s.last_error) for s in rows if s.state != "accepted"]
    assert sim.registry.stats()["responses"].get("create 503") == 6
    assert _assert_create_answered_before_changes(app, sim) == sum(s.operation in ("update", "cancel") for s in rows) > 5
    assert sim.registry.stats()["duplicates"] == 0


@pytest.mark.parametrize("first, then, operation", [
    ("evt-0000-rx-edit", "evt-0000-rx", "update"),
    ("evt-0005-rx-cancel", "evt-0005-rx", "cancel"),
])
def test_change_received_before_its_create_still_goes_after_it(sample: SampleSet, sim: RecordingApp, make_app,
                                                               first: str, then: str, operation: str) -> None:
    """A redelivery can store an edit/delete before its create. Regression: the edit waited for the
    create while the create was blocked by the earlier, open edit -- a livelock (found against
    dispatch._claimable as committed in 7ddd58d)."""
    visit = then.replace("-rx", "-visit")
    app = make_app()
    receive(app, lines_for(sample, visit, first, then))
    drain(app, timeout_s=5)
    found = by_event(app)
    assert found[(then, "create")].state == "accepted"
    assert found[(first, operation)].state == "accepted"
    assert _assert_create_answered_before_changes(app, sim) == 1


# ----- (c) token expiring during a batch ---------------------------------------------------------
def test_token_expiring_during_a_batch_causes_no_failed_submission(sim: RecordingApp, make_app) -> None:
    big = generate(dt.datetime.now(dt.timezone.utc), patients=60, seed=7)
    lines = good_lines(big.lines)
    assert len(lines) >= 140
    sim.registry.update_settings({"token_ttl_s": 0.3, "latency_ms": 20})
    app = make_app(destinations__tamin__auth__refresh_leeway_s=0, dispatch__workers=8)
    receive(app, lines)
    # Besides the short lifetime, the insurer drops every live token once mid-run (as a
    # restarted token service would), so calls in flight certainly meet a dead token.
    stop = threading.Event()

    def revoke_once_mid_run() -> None:
        if not stop.wait(0.3):
            sim.registry.revoke_access_tokens()

    revoker = threading.Thread(target=revoke_once_mid_run, daemon=True)
    started = time.monotonic()
    revoker.start()
    try:
        drain(app, timeout_s=40)
    finally:
        stop.set()
        revoker.join()
    assert time.monotonic() - started > 0.6  # long enough for tokens to expire mid-run

    rows = submissions(app)
    assert len(rows) == len(lines)
    assert Counter(s.state for s in rows) == {"accepted": len(rows)}, \
        [(s.operation, s.state, s.last_error) for s in rows if s.state != "accepted"][:5]
    assert all(s.attempts == 1 for s in rows), \
        [(s.operation, s.attempts, s.last_error) for s in rows if s.attempts != 1][:5]
    with app.sessions() as session:
        outcomes = Counter(session.scalars(select(Attempt.outcome)))
    assert outcomes == {"accepted": len(rows)}
    stats = sim.registry.stats()
    assert stats["tokens_issued"] > 1, stats
    assert sum(n for label, n in stats["responses"].items() if label.endswith(" 401")) >= 1, stats  # expired mid-flight
    assert stats["duplicates"] == 0


# ----- (d) crash mid-send --------------------------------------------------------------------
def test_dropped_answer_is_looked_up_not_resent(sample: SampleSet, sim: RecordingApp, make_app) -> None:
    app = make_app()
    receive(app, lines_for(sample, "evt-0000-visit", "evt-0000-rx", "evt-0000-rx-edit"))
    sim.registry.update_settings({"drop_response_after_apply": 1, "drop_endpoints": {"create"}})
    drain(app)

    found = by_event(app)
    create = found[("evt-0000-rx", "create")]
    assert create.state == "accepted"
    [registered] = sim.registry.prescriptions()
    assert create.result["head_id"] == str(registered["head_EPRSC_ID"])
    assert create.result["tracking_code"] == str(registered["trackingCode"])
    assert create.result.get("found_by_lookup") is True
    assert [a.outcome for a in attempts_of(app, create.id)] == ["ambiguous", "accepted"]
    assert len(sim_calls(sim, "create", create.idempotency_key)) == 1
    assert sim.registry.stats()["duplicates"] == 0
    assert found[("evt-0000-rx-edit", "update")].state == "accepted"
    assert registered["head_EPRSC_ID"] in {p["head_EPRSC_ID"] for p in sim.registry.prescriptions() if p["edited"]}


def _claim_create_as_a_dying_dispatcher(app: App, sim: RecordingApp, sample: SampleSet, *, send: bool) -> Submission:
    """Eligibility settled, then the create is claimed (state sending, lease held) by a dispatcher
    that sends it (or not) and dies before recording anything."""
    receive(app, lines_for(sample, "evt-0001-visit"))
    drain(app)
    receive(app, lines_for(sample, "evt-0001-rx"))
    jobs = app.dispatcher._claim()  # the first half of run_once(); the dying process never settles
    assert [j.operation for j in jobs] == ["create"]
    job = jobs[0]
    if send:
        config = app.config.destinations.tamin
        provider = ClientCredentialsProvider(app.http, config.base_url + config.auth.token_path,
                                             config.auth.client_id, config.auth.client_secret or "")
        destination = TaminDestination(TaminClient(config, Exchange(app.http, tamin_endpoint(config), TokenCache(provider))))
        with app.sessions() as session:
            prepared = destination.prepare(DestinationStore(session), job)
        assert destination.send(prepared).klass.value == "accepted"  # the answer dies with the process
    with app.sessions() as session:
        row = session.get(Submission, job.submission_id)
        assert row is not None and row.state == "sending"
        assert app.dispatcher.run_once() == 0  # the lease still holds: nobody else takes it
        session.execute(update(Submission).where(Submission.id == job.submission_id)
                        .values(lease_until=utcnow() - dt.timedelta(seconds=1)))
        session.commit()
        return row


@pytest.mark.parametrize("applied", [True, False], ids=["applied-at-tamin", "never-reached-tamin"])
def test_crash_mid_send_is_looked_up_on_the_next_run(sample: SampleSet, sim: RecordingApp, make_app,
                                                     applied: bool) -> None:
    app = make_app()
    row = _claim_create_as_a_dying_dispatcher(app, sim, sample, send=applied)
    drain(app)

    create = by_event(app)[("evt-0001-rx", "create")]
    assert create.state == "accepted"
    assert create.attempts == 2
    [registered] = sim.registry.prescriptions()
    assert create.result["head_id"] == str(registered["head_EPRSC_ID"])
    assert bool(create.result.get("found_by_lookup")) is applied
    assert len(sim_calls(sim, "create", row.idempotency_key)) == 1
    assert sim.registry.stats()["duplicates"] == 0
    reasons = [c.reason or "" for c in trail(app, create.id)]
    assert any("lease expired" in r for r in reasons)
    lookups = [e for e in sim.entries("end") if e["path"] == "/api/v2/ep/lookup"]
    assert len(lookups) == 1


# ----- (e) 503 with Retry-After, then success ---------------------------------------------------
def test_503_waits_for_retry_after_then_succeeds(sample: SampleSet, sim: RecordingApp, make_app) -> None:
    sim.registry.update_settings({"fail_next": 1, "fail_status": 503, "fail_endpoints": {"create"}, "retry_after_s": 1})
    app = make_app()
    receive(app, lines_for(sample, "evt-0001-visit", "evt-0001-rx"))
    assert app.dispatcher.run_once() == 1  # eligibility
    before = utcnow()
    assert app.dispatcher.run_once() == 1  # the create: 503 Retry-After: 1
    create = by_event(app)[("evt-0001-rx", "create")]
    assert (create.state, create.attempts, create.last_error_class) == ("retry_wait", 1, "transient")
    wait = (create.next_attempt_at - before).total_seconds()
    assert 0.9 <= wait <= 2.0, wait  # the retry policy alone would have waited 0.02 s
    assert app.dispatcher.run_once() == 0  # not due yet
    assert 0.5 <= (app.dispatcher.next_due_in() or 0) <= 2.0

    drain(app)
    create = by_event(app)[("evt-0001-rx", "create")]
    assert (create.state, create.attempts) == ("accepted", 2)
    assert [a.outcome for a in attempts_of(app, create.id)] == ["transient", "accepted"]
    calls = [e for e in sim.registry.request_log() if e["endpoint"] == "create"]
    assert [c["status"] for c in calls] == [503, 200]
    assert calls[1]["at"] - calls[0]["at"] >= 0.9
    assert [c.to_state for c in trail(app, create.id)] == ["pending", "sending", "retry_wait", "sending", "accepted"]


# ----- (f) retry budget ------------------------------------------------------------------------
def test_retry_budget_spent_makes_it_dead(sample: SampleSet, sim: RecordingApp, make_app) -> None:
    sim.registry.update_settings({"fail_next": 100, "fail_status": 503, "fail_endpoints": {"create"},
                                  "retry_after_s": None})
    app = make_app(destinations__tamin__retry__max_attempts=3)
    receive(app, lines_for(sample, "evt-0000-visit", "evt-0000-rx", "evt-0000-rx-edit"))
    drain(app)

    found = by_event(app)
    create = found[("evt-0000-rx", "create")]
    assert (create.state, create.attempts) == ("dead", 3)
    assert create.next_attempt_at is None and create.lease_until is None
    assert [a.outcome for a in attempts_of(app, create.id)] == ["transient"] * 3
    assert [a.number for a in attempts_of(app, create.id)] == [1, 2, 3]
    assert "retry budget" in (trail(app, create.id)[-1].reason or "")
    assert len(sim_calls(sim, "create")) == 3
    edit = found[("evt-0000-rx-edit", "update")]
    assert edit.state == "invalid" and "dead" in (edit.last_error or "")
    assert sim.registry.stats()["requests"].get("edit", 0) == 0


# ----- (g) the same event twice ------------------------------------------------------------------
def test_duplicate_event_is_stored_once(sample: SampleSet, sim: RecordingApp, make_app) -> None:
    app = make_app()
    [visit, rx] = lines_for(sample, "evt-0002-visit", "evt-0002-rx")
    assert app.intake.receive(visit).outcome is Received.stored
    first = app.intake.receive(rx)
    assert (first.outcome, first.submissions) == (Received.stored, 1)
    drain(app)
    again = app.intake.receive(rx)  # redelivered after it was already sent
    assert (again.outcome, again.event_id, again.submissions) == (Received.duplicate, "evt-0002-rx", 0)
    drain(app)

    with app.sessions() as session:
        rows = list(session.scalars(select(InboxEvent).where(InboxEvent.event_id == "evt-0002-rx")))
        subs = list(session.scalars(select(Submission).where(Submission.event_id == "evt-0002-rx")))
    assert len(rows) == 1 and rows[0].duplicate_receipts == 1
    assert len(subs) == 1 and subs[0].state == "accepted"
    assert len(sim_calls(sim, "create")) == 1
    assert sim.registry.stats()["duplicates"] == 0


def test_refused_create_whose_answer_was_lost_is_resent_but_never_registered(sample: SampleSet, sim: RecordingApp,
                                                                            make_app) -> None:
    """The kill -9 case of the provider end-to-end test, made exact: Tamin refuses a create (unknown
    patient) and the answer is lost. The lookup finds nothing registered, so the create is sent
    again and refused again. That is a second receipt of one key, but nothing was registered twice:
    the simulator reports it as a resend after a refusal, not as a duplicate."""
    events = events_by_id(sample.lines)
    refused = [e for e in events.values() if e["event_type"] == "prescription.created"
               and patient_of(e) in set(sample.unknown_patients)][0]
    visit = f"{refused['event_id'].rsplit('-rx', 1)[0]}-visit"
    sim.registry.update_settings({"unknown_patients": set(sample.unknown_patients)})
    app = make_app()
    receive(app, lines_for(sample, visit, refused["event_id"]))
    sim.registry.update_settings({"drop_response_after_apply": 1, "drop_endpoints": {"create"}})
    drain(app)

    create = by_event(app)[(refused["event_id"], "create")]
    assert create.state == "rejected", (create.state, create.last_error)
    assert [a.outcome for a in attempts_of(app, create.id)] == ["ambiguous", "rejected"]
    assert len(sim_calls(sim, "create", create.idempotency_key)) == 2
    stats = sim.registry.stats()
    assert stats["prescriptions"] == 0
    assert stats["duplicates"] == 0, stats["duplicate_keys"]
    assert stats["resent_after_refusal"] == 1
