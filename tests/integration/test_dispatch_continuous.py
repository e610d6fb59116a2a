"""The hot path of issue 8: intake in batches, the dispatcher's continuous mode (``pump``, woken by
intake and by finished sends), and the claim query's index. Behaviour only; the speed is measured
by ``python -m bench``, not here."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from adapter.app import App, build
from adapter.pipeline.intake import Received
from adapter.samples.generate import SampleSet, generate
from adapter.sim.server import SimServer
from adapter.sim.settings import TaminSimSettings
from adapter.sim.tamin_app import create_tamin_app
from adapter.store.models import InboxEvent, StateChange, Submission
from tests.support.pipeline import adapter_config, drain, good_lines


@pytest.fixture(scope="module")
def sample() -> SampleSet:
    return generate(dt.datetime.now(dt.timezone.utc), patients=12)


@pytest.fixture
def slow_sim() -> Iterator[Any]:
    with SimServer(create_tamin_app(TaminSimSettings(latency_ms=400))) as server:
        yield server


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., App]]:
    apps: list[App] = []

    def make(db_url: str, sim_url: str = "http://127.0.0.1:9", **overrides: Any) -> App:
        app = build(adapter_config(db_url, sim_url, tmp_path, **overrides))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


def _store_contents(app: App) -> dict[str, Any]:
    """What intake wrote, without ids and times (they differ between two stores)."""
    with app.sessions() as session:
        events = sorted((e.event_id, e.status, e.duplicate_receipts, e.subject_key, e.patient_ref, e.body, str(e.problems))
                        for e in session.scalars(select(InboxEvent)))
        submissions = {s.id: s for s in session.scalars(select(Submission))}
        subs = sorted((s.event_id, s.destination, s.operation, s.state, s.subject_key, s.after_key, s.principal,
                       s.idempotency_key, str(s.params), str(s.payload), s.last_error) for s in submissions.values())
        changes = Counter((c.event_id, c.submission_id and submissions[c.submission_id].operation, c.from_state,
                           c.to_state, c.actor, c.reason) for c in session.scalars(select(StateChange)))
    return {"events": events, "submissions": subs, "changes": changes}


def test_a_batch_stores_what_one_by_one_stores(sample: SampleSet, make_app: Callable[..., App], tmp_path: Path) -> None:
    """Valid, invalid and repeated messages (in the store and within one batch): same rows, same outcomes, in order."""
    lines = list(sample.lines)
    lines = lines + lines[:5] + [lines[7]]  # repeats: of stored events, and twice within the last batch
    assert len({*lines}) < len(lines)
    alone = make_app(f"sqlite:///{tmp_path / 'alone.db'}")
    batched = make_app(f"sqlite:///{tmp_path / 'batched.db'}")

    one_by_one = [alone.intake.receive(line) for line in lines]
    in_batches: list[Any] = []
    for start in range(0, len(lines), 20):
        results = batched.intake.receive_many(lines[start:start + 20])
        assert results is not None
        in_batches += results

    assert [(r.outcome, r.event_id, r.submissions, r.destinations) for r in in_batches] == \
        [(r.outcome, r.event_id, r.submissions, r.destinations) for r in one_by_one]
    assert {r.outcome for r in in_batches} == {Received.stored, Received.invalid, Received.duplicate}
    assert _store_contents(batched) == _store_contents(alone)


def test_pump_takes_new_work_while_earlier_sends_are_in_flight(sample: SampleSet, make_app: Callable[..., App],
                                                               slow_sim: Any, tmp_path: Path) -> None:
    """A claim does not wait for the sends of the previous one (the insurer answers in 400 ms)."""
    visits = [line for line in good_lines(sample.lines) if b'"visit.' in line][:2]
    app = make_app(f"sqlite:///{tmp_path / 'a.db'}", slow_sim.base_url)
    dispatcher = app.dispatcher
    app.intake.receive(visits[0])
    assert dispatcher.pump() == 1
    app.intake.receive(visits[1])
    dispatcher.wake(["tamin"])
    assert dispatcher.pump() == 1, "the second visit is claimed while the first is still being sent"
    assert dispatcher.in_flight == 2, "both sends are in flight at once"
    assert dispatcher.wait_idle(timeout=30)
    with app.sessions() as session:
        assert [s.state for s in session.scalars(select(Submission))] == ["accepted", "accepted"]


def test_a_quiet_destination_is_asked_again_when_woken(sample: SampleSet, make_app: Callable[..., App],
                                                       slow_sim: Any, tmp_path: Path) -> None:
    """After a claim that found nothing, new work is claimed at once when intake names its
    destination, and otherwise at the latest after poll_interval_s."""
    visits = [line for line in good_lines(sample.lines) if b'"visit.' in line][:2]
    app = make_app(f"sqlite:///{tmp_path / 'a.db'}", slow_sim.base_url, dispatch__poll_interval_s=0.5)
    dispatcher = app.dispatcher
    assert dispatcher.pump() == 0  # nothing there: every destination is quiet now
    app.intake.receive(visits[0])  # stored without telling the dispatcher
    assert dispatcher.pump() == 0
    dispatcher.wake(["tamin"])
    assert dispatcher.pump() == 1
    app.intake.receive(visits[1])
    assert dispatcher.pump() == 0  # the claim above took all there was: quiet again
    time.sleep(0.6)
    assert dispatcher.pump() == 1, "asked again after poll_interval_s even without a wake"
    assert dispatcher.wait_idle(timeout=30)


def test_run_once_and_pump_keep_create_edit_cancel_in_order(sample: SampleSet, make_app: Callable[..., App],
                                                            tmp_path: Path) -> None:
    """Stored in one batch, sent by the continuous loop: a record's operations reach the insurer in order."""
    with SimServer(create_tamin_app(TaminSimSettings(latency_ms=20))) as sim:
        app = make_app(f"sqlite:///{tmp_path / 'a.db'}", sim.base_url)
        lines = good_lines(sample.lines)
        assert app.intake.receive_many(lines) is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not app.dispatcher.pump():
                app.dispatcher.wait_for_work(0.05)
            if not app.dispatcher.in_flight and app.dispatcher.next_due_in() is None:
                break
        assert app.dispatcher.wait_idle(timeout=30)
        drain(app)
        with app.sessions() as session:
            subs = list(session.scalars(select(Submission)))
            accepted_at = {c.submission_id: c.at for c in session.scalars(
                select(StateChange).where(StateChange.to_state == "accepted"))}
    assert {s.state for s in subs} == {"accepted"}
    by_subject: dict[str, dict[str, dt.datetime]] = {}
    for s in subs:
        by_subject.setdefault(s.subject_key or "", {})[s.operation] = accepted_at[s.id]
    chains = [ops for ops in by_subject.values() if "create" in ops and len(ops) > 1]
    assert chains, "the sample has edits or cancels"
    for ops in chains:
        for later in ("update", "cancel"):
            if later in ops:
                assert ops["create"] < ops[later]


def query_plan(app: App, run: Callable[[Any], Any], starts: str) -> str:
    """SQLite's EXPLAIN QUERY PLAN of the statement starting with ``starts`` that ``run(session)`` executes."""
    from sqlalchemy import event

    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(app.engine, "before_cursor_execute", capture)
    try:
        with app.sessions() as session:
            run(session)
    finally:
        event.remove(app.engine, "before_cursor_execute", capture)
    [(statement, parameters)] = [(s, p) for s, p in seen if s.lstrip().startswith(starts)]
    with app.engine.connect() as connection:
        return " ".join(str(row[-1]) for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                                                             parameters))


def test_the_claim_query_reads_the_partial_index(make_app: Callable[..., App], tmp_path: Path) -> None:
    """SQLite uses ix_submissions_claim only if the query carries the index's own WHERE text:
    the claim then costs with open work, not with the history kept."""
    from adapter.pipeline.dispatch import _candidates

    app = make_app(f"sqlite:///{tmp_path / 'a.db'}")
    now = dt.datetime.now(dt.timezone.utc)
    plan = query_plan(app, lambda session: _candidates(session, ["tamin"], now, now, False, 8, abandoned=False),
                      "SELECT")
    assert "ix_submissions_claim" in plan
    assert "TEMP B-TREE" not in plan, "the index gives the order: no sort of all due rows"


@pytest.mark.parametrize("seen_state,probe", [("pending", False), ("retry_wait", True), ("sending", False)],
                         ids=["due", "probe", "abandoned"])
def test_the_claiming_update_looks_the_ids_up_by_key(make_app: Callable[..., App], tmp_path: Path,
                                                     seen_state: str, probe: bool) -> None:
    """The claiming UPDATE finds its few rows by primary key, not by a range scan of
    ix_submissions_due over every due row: that made each claim cost with the backlog, and a
    100,000-submission drain after an outage reached only 87 % of max_rps."""
    app = make_app(f"sqlite:///{tmp_path / 'a.db'}")
    now = dt.datetime.now(dt.timezone.utc)

    def claim(session: Any) -> None:
        assert app.dispatcher._take(session, [1, 2, 3], seen_state, now, now, probe) == []

    plan = query_plan(app, claim, "UPDATE submissions")
    assert "PRIMARY KEY" in plan, plan
    assert "ix_submissions_due" not in plan, plan


class _FailsToRecord:
    """The simulator-backed Tamin destination, except that recording one submission's answer fails
    (as a bug in a destination's ``on_result`` would)."""

    def __init__(self, real: Any, bad_submission: int):
        self._real, self._bad = real, bad_submission
        self.name = real.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def on_result(self, store: Any, job: Any, outcome: Any) -> None:
        if job.submission_id == self._bad:
            raise RuntimeError("recording this one fails")
        self._real.on_result(store, job, outcome)


@pytest.mark.parametrize("mode", ["run_once", "pump"])
def test_one_outcome_that_cannot_be_recorded_does_not_hold_back_the_others(
        sample: SampleSet, make_app: Callable[..., App], tmp_path: Path, mode: str) -> None:
    """Outcomes are recorded many per transaction; when that transaction fails, each is recorded on
    its own: the others are accepted, the failing one stays ``sending`` (looked up after its lease,
    never resent blindly) and its send slot is freed."""
    from adapter.pipeline.dispatch import Dispatcher

    visits = [line for line in good_lines(sample.lines) if b'"visit.' in line][:4]
    with SimServer(create_tamin_app(TaminSimSettings(latency_ms=50))) as sim:
        app = make_app(f"sqlite:///{tmp_path / 'a.db'}", sim.base_url)
        assert app.intake.receive_many(visits) is not None
        with app.sessions() as session:
            first = min(session.scalars(select(Submission.id)))
        parts = app.config.destinations
        dispatcher = Dispatcher(app.sessions, {"tamin": _FailsToRecord(app.dispatcher._destinations["tamin"], first)},
                                {"tamin": parts.tamin.retry}, app.config.dispatch, "test-owner")
        try:
            if mode == "run_once":
                assert dispatcher.run_once() == 4
            else:
                assert dispatcher.pump() == 4
                assert dispatcher.wait_idle(timeout=30), "a send slot was never freed"
            assert dispatcher.in_flight == 0
        finally:
            dispatcher.close()
        with app.sessions() as session:
            states = {s.id: s.state for s in session.scalars(select(Submission))}
            moved_to_accepted = {c.submission_id for c in session.scalars(select(StateChange).where(
                StateChange.to_state == "accepted", StateChange.submission_id.is_not(None)))}
    assert states.pop(first) == "sending"
    assert set(states.values()) == {"accepted"} and moved_to_accepted == set(states)
