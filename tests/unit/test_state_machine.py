"""The one submission state machine (``adapter.store.states.TRANSITIONS``): illegal moves raise
and name both states, whoever writes them; every move the code makes is in the table (driven
through the real dispatcher, reconciliation, billing and replay on a SQLite store); and
``adapter.pipeline.policy.decide`` maps each outcome class to its state."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from adapter.config import DispatchConfig, RetryConfig
from adapter.destinations.base import Job
from adapter.destinations.outcome import Outcome, OutcomeClass
from adapter.ops.replay import Replayer
from adapter.pipeline.dispatch import Dispatcher
from adapter.pipeline.intake import _write_rows
from adapter.pipeline.policy import Settlement, decide
from adapter.reconcile import billing, reconcile
from adapter.reconcile import sepas as sepas_reconcile
from adapter.reconcile.common import Interval, move as reconcile_move
from adapter.store.audit import move, move_unaudited, state_change, transition
from adapter.store.models import StateChange, Submission
from adapter.store.states import (ACCEPTED_FAMILY, BILLING_STATES, NEEDS_PERSON, TRANSITIONS, IllegalTransition,
                                  State, allowed, check_transition)
from tests.support.store import migrated_sessions

REPO = Path(__file__).resolve().parents[2]
START = dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.timezone.utc)


# ----- the table -------------------------------------------------------------------------------
def test_the_table_covers_every_state_and_only_states() -> None:
    assert set(TRANSITIONS) == {None, *State}
    for targets in TRANSITIONS.values():
        assert targets and all(isinstance(t, State) for t in targets)
    assert TRANSITIONS[None] == {State.pending, State.invalid}  # intake creates rows in these only
    assert "fallback" not in {s.value for s in State}  # paper fallback is a FallbackRecord, not a state


@pytest.mark.parametrize("source, target", [
    (State.accepted, State.pending), (State.pending, State.accepted), (State.billed, State.confirmed),
    (State.dead, State.accepted), (State.discrepancy, State.billed), (State.confirmed, State.accepted),
    (None, State.sending), (None, State.accepted), (State.pending, State.pending), ("accepted", "fallback"),
])
def test_an_illegal_move_raises_naming_both_states(source: State | str | None, target: State | str) -> None:
    with pytest.raises(IllegalTransition) as raised:
        check_transition(source, target)
    name = getattr(source, "value", source)
    assert str(raised.value) == f"illegal submission state change: {name or '(new)'} -> {getattr(target, 'value', target)}"
    assert isinstance(raised.value, ValueError) and not allowed(source, target)


# the moves the code makes, by who makes them
MADE_BY_THE_CODE = {
    "intake": [(None, State.pending), (None, State.invalid)],
    "dispatcher claim": [(State.pending, State.sending), (State.retry_wait, State.sending),
                         (State.sending, State.sending)],
    "dispatcher settle": [(State.sending, s) for s in (State.accepted, State.rejected, State.invalid,
                                                        State.retry_wait, State.dead)],
    "replay": [(s, State.pending) for s in NEEDS_PERSON] + [(s, State.invalid) for s in NEEDS_PERSON],
    "reconciliation": [(State.accepted, State.confirmed), (State.accepted, State.discrepancy),
                       (State.confirmed, State.discrepancy), (State.discrepancy, State.confirmed)],
    "billing": [(a, b) for a in (State.confirmed, *BILLING_STATES) for b in BILLING_STATES if a is not b],
}


@pytest.mark.parametrize("who", sorted(MADE_BY_THE_CODE))
def test_every_move_the_code_makes_is_allowed(who: str) -> None:
    for source, target in MADE_BY_THE_CODE[who]:
        check_transition(source, target)
        check_transition(None if source is None else source.value, target.value)  # as stored: strings


def test_the_table_allows_nothing_the_code_does_not_make() -> None:
    made = {pair for pairs in MADE_BY_THE_CODE.values() for pair in pairs}
    table = {(source, target) for source, targets in TRANSITIONS.items() for target in targets}
    assert table == made


def test_the_readme_diagram_is_the_table() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```mermaid\nstateDiagram-v2\n(.*?)```", text, re.S)
    assert block, "README.md has no stateDiagram-v2 of the submission states"
    edges = {(None if a == "[*]" else State(a), State(b))
             for a, b in re.findall(r"^\s*(\[\*\]|\w+)\s*-->\s*(\w+)", block.group(1), re.M)}
    assert edges == {(source, target) for source, targets in TRANSITIONS.items() for target in targets}


# ----- a real store ----------------------------------------------------------------------------
@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    yield from migrated_sessions(f"sqlite:///{tmp_path / 'store.db'}")


_ITEMS = [{"srvId": {"srvCode": "10001"}, "srvQty": 2}]


def _new(sessions: sessionmaker[Session], event_id: str, *, destination: str = "tamin", state: str = "pending",
         operation: str = "create") -> int:
    """An event with one submission, stored the way intake stores them (``_write_rows``)."""
    row = dict(event_id=event_id, event_type="prescription.created", status="accepted", body="{}")
    sub = dict(event_id=event_id, destination=destination, operation=operation, mapping="test",
               subject_key=f"rx:{event_id}", after_key=None, principal="p", idempotency_key=f"key-{event_id}",
               next_attempt_at=START - dt.timedelta(seconds=1), state=state, last_error=None, last_error_class=None,
               params={}, payload={"patient": "0012345678", "docId": "D1", "prescDate": "2025-03-01",
                                   "noteDetailEprscs": _ITEMS})
    with sessions() as session:
        _write_rows(session, [(row, [sub], None)])
        session.commit()
    return int(sub["id"])


def _trail(sessions: sessionmaker[Session], sid: int) -> list[tuple[str | None, str]]:
    with sessions() as session:
        return [(c.from_state, c.to_state) for c in session.scalars(
            select(StateChange).where(StateChange.submission_id == sid).order_by(StateChange.id))]


def _state(sessions: sessionmaker[Session], sid: int) -> str:
    with sessions() as session:
        return str(session.scalar(select(Submission.state).where(Submission.id == sid)))


def _audit_count(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(StateChange)) or 0)


def test_audit_move_refuses_an_illegal_move_and_writes_nothing(sessions: sessionmaker[Session]) -> None:
    sid = _new(sessions, "evt-1")
    with sessions() as session:
        assert move(session, sid, "evt-1", "pending", State.sending, actor="t", reason="claim")
        assert move(session, sid, "evt-1", "sending", State.accepted, actor="t", reason="ok")
        session.commit()
    before = _audit_count(sessions)
    with sessions() as session:
        with pytest.raises(IllegalTransition, match="illegal submission state change: accepted -> pending"):
            move(session, sid, "evt-1", "accepted", State.pending, actor="t", reason="nope")
        with pytest.raises(IllegalTransition, match="accepted -> retry_wait"):
            move_unaudited(session, sid, "evt-1", "accepted", State.retry_wait, actor="t", reason="nope")
        session.commit()
    assert _state(sessions, sid) == "accepted" and _audit_count(sessions) == before


def test_transition_refuses_an_illegal_move_and_leaves_the_row(sessions: sessionmaker[Session]) -> None:
    sid = _new(sessions, "evt-1")
    with sessions() as session:
        row = session.get(Submission, sid)
        assert row is not None
        with pytest.raises(IllegalTransition, match="pending -> confirmed"):
            transition(session, row, State.confirmed, actor="t", reason="nope", last_error="x")
        assert row.state == "pending" and row.last_error is None
        session.commit()
    assert _trail(sessions, sid) == [(None, "pending")]


def test_audit_rows_of_submissions_are_checked_those_of_events_are_not() -> None:
    with pytest.raises(IllegalTransition, match=r"\(new\) -> accepted"):
        state_change("evt-1", 7, None, State.accepted.value, "intake", None)
    with pytest.raises(IllegalTransition, match="dead -> sending"):
        state_change("evt-1", 7, "dead", State.sending.value, "dispatcher", None)
    assert state_change("evt-1", None, None, "accepted", "intake", None)["to_state"] == "accepted"  # EventStatus


def test_intake_cannot_create_a_row_in_a_later_state(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(IllegalTransition, match=r"\(new\) -> accepted"):
        _new(sessions, "evt-1", state="accepted")
    with sessions() as session:  # the transaction was not committed
        assert session.scalar(select(func.count()).select_from(Submission)) == 0
    assert _trail(sessions, _new(sessions, "evt-2", state="invalid")) == [(None, "invalid")]


def test_reconcile_move_goes_through_the_table(sessions: sessionmaker[Session]) -> None:
    sid = _new(sessions, "evt-1")
    with sessions() as session:
        row = session.get(Submission, sid)
        assert row is not None
        assert reconcile_move(session, row, "pending", actor="t", reason="same") is False  # already there: no-op
        with pytest.raises(IllegalTransition, match="pending -> confirmed"):
            reconcile_move(session, row, "confirmed", actor="t", reason="not accepted yet")
        with pytest.raises(IllegalTransition, match="pending -> billed"):
            reconcile_move(session, row, State.billed, actor="t", reason="not accepted yet")
        with pytest.raises(ValueError):
            reconcile_move(session, row, "fallback", actor="t", reason="no such state")
        session.commit()
    assert _state(sessions, sid) == "pending" and _trail(sessions, sid) == [(None, "pending")]


# ----- every writer, for real ------------------------------------------------------------------
class FakeTamin:
    """A destination that answers from a script; ``fail_recording`` makes the settle fail (the
    dispatcher then leaves the submission ``sending``, as if it died before the commit)."""

    name = "tamin"

    def __init__(self, answers: list[Outcome]):
        self.answers = answers
        self.looked_up: list[int] = []
        self.fail_recording = False

    def prepare(self, store: Any, job: Job) -> Job | Outcome:
        return job

    def send(self, job: Job) -> Outcome:
        return self.answers.pop(0)

    def lookup(self, job: Job) -> Outcome:
        self.looked_up.append(job.submission_id)
        return Outcome(OutcomeClass.accepted, "found", result={"head_id": "H9", "tracking_code": "T9"})

    def on_result(self, store: Any, job: Job, outcome: Outcome) -> None:
        if self.fail_recording:
            raise RuntimeError("the store went away")


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def _dispatcher(sessions: sessionmaker[Session], destination: FakeTamin, clock: Clock) -> Dispatcher:
    config = DispatchConfig(workers=1, lease_s=30, ambiguous_grace_s=5)
    return Dispatcher(sessions, {"tamin": destination}, {"tamin": RetryConfig(max_attempts=3)}, config,
                      "test-owner", clock=clock)


class FakeStatus:
    """What reconciliation and billing ask the insurer, answered from the test's dict."""

    def __init__(self) -> None:
        self.claim: dict[str, Any] | None = None

    def lookup_tracking(self, patient: str, tracking_code: str) -> list[dict[str, Any]]:
        return [{"head_EPRSC_ID": "H1", "status": "active", "items": _ITEMS}]

    def lookup_day(self, patient: str, doc_id: str, presc_date: str) -> list[dict[str, Any]]:
        return []

    def claim_status(self, patient: str, tracking_code: str) -> dict[str, Any] | None:
        return self.claim


def test_a_submission_from_intake_to_paid_makes_only_allowed_moves(sessions: sessionmaker[Session]) -> None:
    sid = _new(sessions, "evt-1")
    clock = Clock()
    tamin = FakeTamin([Outcome(OutcomeClass.transient, "HTTP 503"),
                       Outcome(OutcomeClass.accepted, "registered", result={"head_id": "H1", "tracking_code": "T1"})])
    dispatcher = _dispatcher(sessions, tamin, clock)
    try:
        assert dispatcher.run_once() == 1
        assert _state(sessions, sid) == "retry_wait"
        clock.advance(700)  # past the longest backoff
        assert dispatcher.run_once() == 1
    finally:
        dispatcher.close()
    assert _state(sessions, sid) == "accepted"

    interval = Interval(START - dt.timedelta(days=1), START + dt.timedelta(days=1), "run-1")
    status = FakeStatus()
    counts = reconcile.reconcile_batch(sessions, status, [sid], interval)  # type: ignore[arg-type]
    assert counts["confirmed"] == 1 and counts["state_moves"] == 1
    assert reconcile.reconcile_batch(sessions, status, [sid], interval).get("state_moves", 0) == 0  # type: ignore[arg-type]
    status.claim = {"auditStatus": "submitted", "claimedAmount": 100}
    assert billing.fetch_batch(sessions, status, [sid], interval)["state_moves"] == 1  # type: ignore[arg-type]
    status.claim = {"auditStatus": "paid", "claimedAmount": 100, "paidAmount": 100}
    assert billing.fetch_batch(sessions, status, [sid], interval)["state_moves"] == 1  # type: ignore[arg-type]

    trail = _trail(sessions, sid)
    assert trail == [(None, "pending"), ("pending", "sending"), ("sending", "retry_wait"), ("retry_wait", "sending"),
                     ("sending", "accepted"), ("accepted", "confirmed"), ("confirmed", "billed"), ("billed", "paid")]
    assert all(allowed(a, b) for a, b in trail)
    assert _state(sessions, sid) == "paid" and State.paid in ACCEPTED_FAMILY


def test_budget_spent_is_dead_and_replay_puts_refused_work_back_to_pending(sessions: sessionmaker[Session]) -> None:
    rejected, dead = _new(sessions, "evt-1"), _new(sessions, "evt-2")
    clock = Clock()
    tamin = FakeTamin([Outcome(OutcomeClass.rejected, "unknown patient")]
                      + [Outcome(OutcomeClass.transient, "HTTP 503")] * 3)
    dispatcher = _dispatcher(sessions, tamin, clock)
    try:
        assert dispatcher.run_once() == 2
        for _ in range(2):
            clock.advance(700)
            assert dispatcher.run_once() == 1
    finally:
        dispatcher.close()
    assert (_state(sessions, rejected), _state(sessions, dead)) == ("rejected", "dead")

    report = Replayer(sessions, actor="ops", reason="patient fixed").replay_ids([rejected, dead])
    assert report.replayed == [rejected, dead]
    assert _trail(sessions, rejected) == [(None, "pending"), ("pending", "sending"), ("sending", "rejected"),
                                          ("rejected", "pending")]
    assert _trail(sessions, dead)[-2:] == [("sending", "dead"), ("dead", "pending")]
    for sid in (rejected, dead):
        assert all(allowed(a, b) for a, b in _trail(sessions, sid))


def test_a_send_abandoned_mid_flight_is_reclaimed_sending_to_sending(sessions: sessionmaker[Session]) -> None:
    sid = _new(sessions, "evt-1")
    clock = Clock()
    tamin = FakeTamin([Outcome(OutcomeClass.accepted, "registered", result={"head_id": "H1", "tracking_code": "T1"})])
    tamin.fail_recording = True
    dispatcher = _dispatcher(sessions, tamin, clock)
    try:
        assert dispatcher.run_once() == 1
        assert _state(sessions, sid) == "sending"  # the outcome was never recorded
        tamin.fail_recording = False
        clock.advance(30 + 5 + 1)  # lease, then the ambiguous grace
        assert dispatcher.run_once() == 1
    finally:
        dispatcher.close()
    assert tamin.looked_up == [sid]  # looked up, not sent again
    assert _trail(sessions, sid) == [(None, "pending"), ("pending", "sending"), ("sending", "sending"),
                                     ("sending", "accepted")]


def test_sepas_reconciliation_moves_through_the_table(sessions: sessionmaker[Session]) -> None:
    sid = _new(sessions, "evt-1", destination="sepas")
    with sessions() as session:
        assert move(session, sid, "evt-1", "pending", State.sending, actor="t", reason="claim")
        assert move(session, sid, "evt-1", "sending", State.accepted, actor="t", reason="saved")
        session.commit()
    interval = Interval(START - dt.timedelta(days=1), START + dt.timedelta(days=1), "run-1")
    counts = sepas_reconcile.reconcile_batch(sessions, None, [sid], interval)  # type: ignore[arg-type]
    assert counts["discrepancy"] == 1 and counts["state_moves"] == 1  # no document hash: nothing to look up
    assert _trail(sessions, sid)[-1] == ("accepted", "discrepancy")


def test_billing_never_moves_a_discrepancy_and_a_forced_move_is_refused(sessions: sessionmaker[Session]) -> None:
    sid = _new(sessions, "evt-1")
    with sessions() as session:
        for source, target in (("pending", State.sending), ("sending", State.accepted),
                               ("accepted", State.discrepancy)):
            assert move(session, sid, "evt-1", source, target, actor="t", reason="setup")
        session.execute(update(Submission).where(Submission.id == sid).values(
            result={"head_id": "H1", "tracking_code": "T1"}))
        session.commit()
    status = FakeStatus()
    status.claim = {"auditStatus": "paid"}
    interval = Interval(START - dt.timedelta(days=1), START + dt.timedelta(days=1), "run-1")
    assert billing.fetch_batch(sessions, status, [sid], interval).get("state_moves", 0) == 0  # type: ignore[arg-type]
    with sessions() as session:
        row = session.get(Submission, sid)
        assert row is not None
        with pytest.raises(IllegalTransition, match="discrepancy -> paid"):
            reconcile_move(session, row, "paid", actor="t", reason="forced")
    assert _state(sessions, sid) == "discrepancy"


# ----- decide ----------------------------------------------------------------------------------
NOW = START
POLICY = RetryConfig(max_attempts=5, base_delay_s=10, max_delay_s=600, ttl_s=3600, jitter=0)


def _job(attempts: int = 1, ambiguous: bool = False) -> Job:
    return Job(submission_id=1, event_id="evt-1", destination="tamin", operation="create", params={}, payload={},
               principal="p", idempotency_key="k", ambiguous=ambiguous, subject_key="rx:1", after_key=None,
               attempts=attempts)


def _decide(outcome: Outcome, *, attempts: int = 1, ambiguous: bool = False, first: dt.datetime | None = NOW,
            result: dict[str, Any] | None = None, grace: float = 60.0) -> Settlement:
    return decide(_job(attempts, ambiguous), result, first, outcome, NOW, POLICY, 2.0, grace)


def test_decide_accepted_keeps_earlier_results_and_links_the_paper() -> None:
    settled = _decide(Outcome(OutcomeClass.accepted, "", result={"tracking_code": "T1"}), result={"hid": "X"},
                      ambiguous=True)
    assert settled == Settlement(State.accepted, "accepted", dict(
        result={"hid": "X", "tracking_code": "T1"}, ambiguous=False, last_error=None, last_error_class=None,
        next_attempt_at=None), (True, None))
    assert _decide(Outcome(OutcomeClass.accepted, "registered")).reason == "registered"


@pytest.mark.parametrize("klass, state", [(OutcomeClass.rejected, State.rejected),
                                          (OutcomeClass.invalid, State.invalid)])
def test_decide_refused_leaves_it_for_a_person_and_a_paper_claim(klass: OutcomeClass, state: State) -> None:
    settled = _decide(Outcome(klass, "unknown patient", result={"error_Code": "12"}), result={"hid": "X"})
    assert settled == Settlement(state, "unknown patient", dict(
        last_error="unknown patient", last_error_class=klass.value, result={"hid": "X", "error_Code": "12"},
        next_attempt_at=None), (False, f"{state.value}: unknown patient"))


def test_decide_waiting_is_not_an_attempt() -> None:
    settled = _decide(Outcome(OutcomeClass.waiting, "create not registered yet"), attempts=3)
    assert settled == Settlement(State.retry_wait, "create not registered yet", dict(
        attempts=2, last_error="create not registered yet", last_error_class="waiting",
        next_attempt_at=NOW + dt.timedelta(seconds=2)), None)


def test_decide_transient_with_budget_left_retries_with_backoff() -> None:
    settled = _decide(Outcome(OutcomeClass.transient, "HTTP 503"), attempts=2)
    assert settled == Settlement(State.retry_wait, "transient: HTTP 503; retry in 20.0s", dict(
        last_error="transient: HTTP 503", last_error_class="transient", ambiguous=False,
        next_attempt_at=NOW + dt.timedelta(seconds=20)), None)
    honoured = _decide(Outcome(OutcomeClass.transient, "HTTP 429", retry_after_s=120), attempts=1)
    assert honoured.fields["next_attempt_at"] == NOW + dt.timedelta(seconds=120)


def test_decide_transient_with_budget_spent_is_dead() -> None:
    settled = _decide(Outcome(OutcomeClass.transient, "HTTP 503"), attempts=5)
    assert settled == Settlement(State.dead, "transient: HTTP 503; retry budget spent: 5 attempts", dict(
        last_error="transient: HTTP 503", last_error_class="transient", ambiguous=False, next_attempt_at=None),
        (False, "dead: transient: HTTP 503; retry budget spent: 5 attempts"))
    expired = _decide(Outcome(OutcomeClass.auth, "401 twice"), attempts=2, first=NOW - dt.timedelta(hours=2))
    assert expired.to_state is State.dead and expired.reason.endswith("time-to-live spent: 3600s since the first attempt")
    assert _decide(Outcome(OutcomeClass.transient, "x"), attempts=2, first=None).to_state is State.retry_wait


def test_decide_ambiguous_waits_at_least_the_grace_before_the_look_up() -> None:
    settled = _decide(Outcome(OutcomeClass.ambiguous, "read timeout"), attempts=1, grace=60)
    assert settled == Settlement(State.retry_wait, "ambiguous: read timeout; look up in 60s (no answer came)", dict(
        last_error="ambiguous: read timeout", last_error_class="ambiguous", ambiguous=True,
        next_attempt_at=NOW + dt.timedelta(seconds=60)), None)
    later = _decide(Outcome(OutcomeClass.ambiguous, "read timeout"), attempts=4, grace=60)  # backoff 80s > grace
    assert later.reason == "ambiguous: read timeout; retry in 80.0s"
    assert later.fields["next_attempt_at"] == NOW + dt.timedelta(seconds=80)
    # a transient answer to a send that was ambiguous before keeps the flag, and its own backoff
    kept = _decide(Outcome(OutcomeClass.transient, "HTTP 502"), attempts=1, ambiguous=True, grace=60)
    assert kept.fields["ambiguous"] is True and kept.fields["next_attempt_at"] == NOW + dt.timedelta(seconds=10)


def test_decide_results_are_allowed_moves_from_sending() -> None:
    for klass in OutcomeClass:
        for attempts in (1, 5):
            check_transition(State.sending, _decide(Outcome(klass, "m"), attempts=attempts).to_state)

