"""``adapter list`` and ``adapter replay``: finding failed work and sending it again.

The store is filled the real way: sample events through ``App.intake.receive`` and the real
dispatcher against the Tamin simulator over HTTP, on SQLite and on PostgreSQL (``db_url``).
What ends where:

* phase A (simulator answering 503, retry budget 1 attempt): patients 0-2 -> ``dead``
  (visit and prescription each), and patient 0's prescription edit -> ``invalid`` (its
  create is dead);
* phase B (healthy simulator): patients 3-9 -> ``accepted``, except patient 7, whom Tamin
  does not know -> ``rejected``; the sample's ``bad-unmapped-code`` event -> ``invalid``
  (its drug code is not in the services code table).

CLI cases run ``python -m adapter ... --config`` as a subprocess.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select

from adapter.app import App, build, load_checked_mappings
from adapter.config import TaminConfig, load_config
from adapter.ops.inspect import list_submissions, make_filters
from adapter.ops.replay import Replayer, ReplayArgumentError
from adapter.samples.generate import SampleSet, generate
from adapter.sim.server import SimServer
from adapter.sim.settings import TaminSimSettings
from adapter.sim.tamin_app import create_tamin_app
from adapter.store.models import StateChange, Submission
from adapter.store.types import utcnow
from tests.support.stack import REPO, Stack

PHASE_A = ("0000", "0001", "0002")  # patients whose events end dead


@dataclass
class World:
    stack: Stack
    app: App
    sample: SampleSet
    between: dt.datetime  # after phase A settled, before phase B was received

    def sub(self, event_id: str, operation: str | None = None) -> Submission:
        with self.app.sessions() as session:
            query = select(Submission).where(Submission.event_id == event_id)
            if operation:
                query = query.where(Submission.operation == operation)
            rows = session.scalars(query).all()
        assert len(rows) == 1, (event_id, rows)
        return rows[0]

    def ids(self, state: str) -> list[int]:
        with self.app.sessions() as session:
            return list(session.scalars(select(Submission.id).where(Submission.state == state).order_by(Submission.id)))

    def audit(self, submission_id: int) -> list[StateChange]:
        with self.app.sessions() as session:
            return list(session.scalars(select(StateChange).where(StateChange.submission_id == submission_id)
                                        .order_by(StateChange.id)))

    def snapshot(self) -> tuple[list[tuple[Any, ...]], int]:
        with self.app.sessions() as session:
            rows = session.execute(select(Submission.id, Submission.state, Submission.attempts, Submission.updated_at,
                                          Submission.last_error, Submission.payload).order_by(Submission.id)).all()
            changes = session.scalar(select(func.count()).select_from(StateChange))
        return [tuple(r) for r in rows], int(changes or 0)

    def national_codes(self) -> set[str]:
        codes: set[str] = set()
        for line in self.sample.lines:
            try:
                body = json.loads(line)
            except ValueError:
                continue
            _collect_codes(body, codes)
        return codes

    def cli(self, *args: str) -> tuple[int, Any]:
        done = self.stack.adapter(*args)
        try:
            return done.returncode, json.loads(done.stdout)
        except ValueError:
            return done.returncode, done.stdout


def _collect_codes(value: Any, out: set[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("national_code", "value") and isinstance(item, str) and item.isdigit() and len(item) == 10:
                out.add(item)
            _collect_codes(item, out)
    elif isinstance(value, list):
        for item in value:
            _collect_codes(item, out)


def drain(app: App, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        app.dispatcher.run_once()
        due_in = app.dispatcher.next_due_in()
        if due_in is None:
            return
        assert time.monotonic() < deadline, "dispatcher still busy"
        time.sleep(min(due_in, 0.05))


def _patient_of(line: bytes) -> str | None:
    try:
        event_id = json.loads(line)["event_id"]
    except (ValueError, KeyError, TypeError):
        return None
    return event_id.split("-")[1] if event_id.startswith("evt-") else None


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    sample = generate(dt.datetime.now(dt.timezone.utc), patients=10)
    with SimServer(create_tamin_app(TaminSimSettings(unknown_patients=sample.unknown_patients))) as sim:
        stack = Stack("replay", tmp_path, db_url, f"sqlite-queue:///{tmp_path / 'queue.db'}", sim)
        stack.write_config()
        with stack.edited_config() as config:
            _one_attempt_no_circuit(config)
        app = build(load_config(stack.config_path, environ={}))
        try:
            phase_a = [line for line in sample.lines if _patient_of(line) in PHASE_A]
            stack.sim_faults(fail_next=10_000, fail_status=503)
            for line in phase_a:
                app.intake.receive(line)
            drain(app)
            time.sleep(0.05)
            between = utcnow()
            time.sleep(0.05)
            stack.sim_faults(fail_next=0)
            for line in sample.lines:
                if line not in phase_a:
                    app.intake.receive(line)
            drain(app)
            yield World(stack, app, sample, between)
        finally:
            app.close()


def _one_attempt_no_circuit(config: dict[str, Any]) -> None:
    """Phase A's 503s make submissions dead at once; they must not also open a circuit breaker
    (where the config has one), which would hold phase B and every later drain back."""
    tamin = config["destinations"]["tamin"]
    tamin["retry"].update(max_attempts=1)
    if "circuit" in TaminConfig.model_fields:
        tamin["circuit"] = {"window": 10_000, "min_calls": 10_000}


def _replayer(world: World, **kwargs: Any) -> Replayer:
    return Replayer(world.app.sessions, **{"actor": "alice", "reason": "tamin fixed it", **kwargs})


# -- the starting point ---------------------------------------------------------------------------

def test_world_has_every_replayable_state(world: World) -> None:
    assert len(world.ids("dead")) == 6  # patients 0-2: visit + rx each
    assert world.sub("evt-0000-rx-edit").state == "invalid"
    assert world.sub("evt-0007-rx").state == "rejected"
    assert world.sub("bad-unmapped-code").state == "invalid"
    assert world.sub("evt-0003-rx").state == "accepted"


# -- adapter list ---------------------------------------------------------------------------------

def test_list_filters_by_state_destination_type_operation_error_and_time(world: World) -> None:
    def listed(**given: Any) -> list[dict[str, Any]]:
        limit = given.pop("limit", 500)
        with world.app.sessions() as session:
            return list_submissions(session, make_filters(**given), limit)

    def ids(rows: list[dict[str, Any]]) -> set[int]:
        return {r["id"] for r in rows}

    everything = listed()
    assert len(everything) == len(world.snapshot()[0])
    assert ids(listed(states=["dead"])) == set(world.ids("dead"))
    assert ids(listed(states=["dead", "rejected"])) == set(world.ids("dead")) | set(world.ids("rejected"))
    assert ids(listed(states=["dead,invalid"])) == set(world.ids("dead")) | set(world.ids("invalid"))
    assert ids(listed(destination="tamin")) == ids(everything)
    assert listed(destination="sepas") == []

    visits = listed(event_type="visit.admitted")
    assert visits and {r["event_type"] for r in visits} == {"visit.admitted"}
    assert {r["operation"] for r in visits} == {"eligibility"}
    assert ids(listed(operation="eligibility")) == ids(visits)
    assert ids(listed(states=["rejected"], event_type="prescription.created")) == {world.sub("evt-0007-rx").id}

    # --error: substring of last_error, case-insensitive
    assert ids(listed(error="tamin ERROR 400")) == {world.sub("evt-0007-rx").id}
    assert ids(listed(error="D-NOT-IN-TABLE".lower())) == {world.sub("bad-unmapped-code").id}
    assert ids(listed(error="503")) == set(world.ids("dead"))
    assert listed(error="no such text anywhere") == []

    # --since / --until on updated_at: absolute and relative
    phase_a = set(world.ids("dead")) | {world.sub("evt-0000-rx-edit").id}
    assert ids(listed(until=world.between.isoformat())) == phase_a
    assert ids(listed(since=world.between.isoformat())) == ids(everything) - phase_a
    assert ids(listed(since="1h")) == ids(everything)
    assert listed(until="1h") == []
    assert ids(listed(since="2d", until=world.between.isoformat(), states=["dead"])) == set(world.ids("dead"))

    newest_first = listed(limit=3)
    assert len(newest_first) == 3
    assert [r["updated_at"] for r in newest_first] == sorted((r["updated_at"] for r in newest_first), reverse=True)


def test_list_cli_json_and_table_never_show_a_national_code(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # a table wide enough that no value is wrapped across lines
    rejected = world.sub("evt-0007-rx")
    unknown = next(iter(world.sample.unknown_patients))
    # insurers echo identifiers in their messages: make this one do so
    with world.app.sessions() as session:
        row = session.get(Submission, rejected.id)
        assert row is not None
        row.last_error = f"Tamin error 400: patient {unknown} is not insured (mobile 09121234567)"
        session.commit()

    code, rows = world.cli("list", "--state", "rejected", "--type", "prescription.created", "--json")
    assert code == 0
    assert [r["id"] for r in rows] == [rejected.id]
    assert rows[0]["event_id"] == "evt-0007-rx" and rows[0]["destination"] == "tamin"
    assert rows[0]["operation"] == "create" and rows[0]["state"] == "rejected" and rows[0]["attempts"] == 1
    assert "**********" in rows[0]["last_error"] and "09121234567" not in rows[0]["last_error"]

    outputs = [world.stack.adapter("list", "--limit", "500", "--json").stdout,
               world.stack.adapter("list", "--limit", "500").stdout,
               world.stack.adapter("replay", "--filter", "--state", "rejected", "--dry-run").stdout]
    codes = world.national_codes() | {unknown}
    assert len(codes) > 10
    for text in outputs:
        assert "evt-0007-rx" in text
        leaked = [c for c in codes if c in text]
        assert leaked == [], "a national code in adapter list output"

    code, _ = world.cli("list", "--state", "bogus")
    assert code == 2
    code, _ = world.cli("list", "--since", "yesterday-ish")
    assert code == 2


# -- adapter replay -------------------------------------------------------------------------------

def test_replay_one_moves_it_to_pending_with_an_audit_row(world: World) -> None:
    before = world.sub("evt-0007-rx")
    start = utcnow()
    report = _replayer(world).replay_ids([before.id])
    assert report.as_json() == {"replayed": 1, "skipped": [], "dry_run": False}

    after = world.sub("evt-0007-rx")
    assert after.state == "pending"
    assert after.attempts == 0 and after.first_attempt_at is None and after.ambiguous is False
    assert after.last_error is None and after.last_error_class is None
    assert after.next_attempt_at is not None and start <= after.next_attempt_at <= utcnow()
    assert after.payload == before.payload and after.idempotency_key == before.idempotency_key
    last = world.audit(before.id)[-1]
    assert (last.from_state, last.to_state, last.actor, last.reason) == \
        ("rejected", "pending", "replay:alice", "tamin fixed it")
    assert start <= last.at <= utcnow()

    # the dispatcher picks it up again (Tamin still refuses this patient)
    drain(world.app)
    assert world.sub("evt-0007-rx").state == "rejected"
    assert world.sub("evt-0007-rx").attempts == 1


def test_replay_cli_by_id_defaults_actor_to_the_os_user(world: World) -> None:
    import getpass

    dead = world.ids("dead")[0]
    code, out = world.cli("replay", str(dead), "--reason", "outage over", "--json")
    assert (code, out) == (0, {"replayed": 1, "skipped": [], "dry_run": False})
    last = world.audit(dead)[-1]
    assert (last.to_state, last.actor, last.reason) == ("pending", f"replay:{getpass.getuser()}", "outage over")

    code, out = world.cli("replay", str(world.ids("dead")[0]), "--reason", "r", "--actor", "bob", "--json")
    assert code == 0 and world.audit(world.ids("pending")[-1])[-1].actor == "replay:bob"
    code, actions = world.cli("audit", "list", "--command", "replay", "--json")  # the operator audit, newest first
    assert code == 0 and [(a["claimed_actor"], a["reason"], a["result"]) for a in actions] == [
        ("bob", "r", "ok"), (None, "outage over", "ok")]
    assert actions[1]["arguments"] == {"submission_ids": [dead], "count": 1, "remap": False}
    assert actions[1]["detail"] == f"replayed 1 ({dead}); skipped 0"


def test_replaying_an_accepted_or_pending_one_reports_it_and_skips_it(world: World) -> None:
    accepted, dead = world.sub("evt-0003-rx"), world.ids("dead")[0]
    audit_before = len(world.audit(accepted.id))
    code, out = world.cli("replay", str(accepted.id), str(dead), "999999", "--reason", "try", "--json")
    assert code == 1
    assert out["replayed"] == 1 and out["dry_run"] is False
    assert [(s["id"], s["state"]) for s in out["skipped"]] == [(accepted.id, "accepted"), (999999, None)]
    assert "not replayable" in out["skipped"][0]["reason"]
    assert world.sub("evt-0003-rx").state == "accepted"
    assert len(world.audit(accepted.id)) == audit_before

    # the one replayed is pending now: asking again skips it
    report = _replayer(world).replay_ids([dead])
    assert report.replayed == [] and [(s.id, s.state) for s in report.skipped] == [(dead, "pending")]


def test_bulk_replay_by_filter_respects_max_and_batch_size(world: World) -> None:
    dead = world.ids("dead")
    commits: list[int] = []

    def count_commit(_conn: Any) -> None:
        commits.append(1)

    progress: list[tuple[int, int]] = []
    replayer = _replayer(world, batch_size=2)
    filters = make_filters(states=["dead"], destination="tamin", error="503")
    event.listen(world.app.engine, "commit", count_commit)
    try:
        report = replayer.replay_matching(filters, max_rows=5,
                                          progress=lambda done, total: progress.append((done, total)))
    finally:
        event.remove(world.app.engine, "commit", count_commit)

    assert report.replayed == dead[:5]  # oldest first
    assert report.matched == 6 and report.over_max == 1 and report.skipped == []
    assert progress == [(0, 5), (2, 5), (4, 5), (5, 5)]
    assert len(commits) == 3  # one transaction per batch of at most 2 rows
    assert world.ids("dead") == dead[5:]
    assert {world.audit(i)[-1].actor for i in dead[:5]} == {"replay:alice"}

    # --filter may only name replayable states
    with pytest.raises(ReplayArgumentError):
        replayer.replay_matching(make_filters(states=["accepted"]), max_rows=5)


def test_bulk_replay_cli_with_filter_and_max(world: World) -> None:
    dead = world.ids("dead")
    code, out = world.cli("replay", "--filter", "--state", "dead", "--destination", "tamin", "--error", "503",
                          "--max", "4", "--batch-size", "3", "--reason", "outage over", "--json")
    assert (code, out) == (0, {"replayed": 4, "skipped": [], "dry_run": False})
    assert world.ids("dead") == dead[4:]
    assert "--max 4 reached" in world.stack.log_tail()
    code, actions = world.cli("audit", "list", "--command", "replay", "--json")
    assert actions[0]["arguments"] == {"filter": {"states": ["dead"], "destination": "tamin", "error": "503"},
                                       "remap": False, "max": 4}
    assert actions[0]["detail"].startswith("replayed 4 (") and actions[0]["result"] == "ok"

    # left: patient 2's dead visit and create; the rejected create; the create that never mapped
    code, out = world.cli("replay", "--filter", "--type", "prescription.created", "--reason", "all failed rx", "--json")
    assert code == 1 and out["replayed"] == 2
    never_mapped = world.sub("bad-unmapped-code")
    assert [(s["id"], s["state"]) for s in out["skipped"]] == [(never_mapped.id, "invalid")]
    assert "--remap" in out["skipped"][0]["reason"] and never_mapped.state == "invalid"
    assert world.ids("dead") == [world.sub("evt-0002-visit").id]
    assert world.sub("evt-0007-rx").state == world.sub("evt-0002-rx").state == "pending"


def test_dry_run_changes_nothing(world: World) -> None:
    before = world.snapshot()
    code, out = world.cli("replay", "--filter", "--state", "dead", "--dry-run", "--json")
    assert (code, out) == (0, {"replayed": 6, "skipped": [], "dry_run": True})
    code, out = world.cli("replay", str(world.sub("evt-0003-rx").id), "--dry-run", "--remap", "--json")
    assert code == 1 and out["replayed"] == 0 and out["dry_run"] is True
    report = _replayer(world, reason=None, dry_run=True, mappings=world.app.mappings).replay_matching(
        make_filters(), max_rows=100)
    assert len(report.replayed) == 9  # 6 dead, 2 rejected, the edit; the unmapped code would still fail to map
    assert [s.id for s in report.skipped] == [world.sub("bad-unmapped-code").id]
    assert world.snapshot() == before


def test_bad_arguments_exit_2_and_change_nothing(world: World) -> None:
    before = world.snapshot()
    dead = str(world.ids("dead")[0])
    for args in ([dead],  # no --reason
                 [dead, "--reason", " "],
                 [],  # neither ids nor --filter
                 [dead, "--filter", "--reason", "r"],
                 [dead, "--state", "dead", "--reason", "r"],  # filter options without --filter
                 ["--filter", "--state", "accepted", "--reason", "r"],
                 ["--filter", "--since", "last tuesday", "--reason", "r"],
                 ["--filter", "--since", "1h", "--until", "2h", "--reason", "r"],
                 ["--filter", "--max", "0", "--reason", "r"],
                 ["--filter", "--batch-size", "0", "--reason", "r"],
                 ["abc", "--reason", "r"]):
        code, _ = world.cli("replay", *args)
        assert code == 2, args
    assert world.snapshot() == before


def test_remap_uses_the_current_mapping_files_and_the_replayed_submission_is_accepted(world: World,
                                                                                     tmp_path: Path) -> None:
    invalid = world.sub("bad-unmapped-code")
    assert invalid.payload is None and "D-NOT-IN-TABLE" in (invalid.last_error or "")

    # with the mapping files unchanged the mapping still fails: stays invalid, with the new reason
    code, out = world.cli("replay", str(invalid.id), "--remap", "--reason", "try again", "--json")
    assert code == 1 and out["replayed"] == 0 and out["skipped"][0]["state"] == "invalid"
    assert world.sub("bad-unmapped-code").state == "invalid"
    last = world.audit(invalid.id)[-1]
    assert (last.from_state, last.to_state, last.actor) == ("invalid", "invalid", f"replay:{_os_user()}")
    assert last.reason.startswith("try again; re-map failed:") and "D-NOT-IN-TABLE" in last.reason

    # the integrator adds the code to a copy of the code table; the config points at the copy
    mappings = tmp_path / "mappings-fixed"
    shutil.copytree(REPO / "mappings", mappings)
    services = mappings / "tamin" / "codes" / "services.csv"
    services.write_text(services.read_text().rstrip("\n") + "\nD-NOT-IN-TABLE,10199999,01,,Added for replay\n")
    with world.stack.edited_config() as config:
        config["mappings_root"] = str(mappings)

    code, out = world.cli("replay", str(invalid.id), "--remap", "--reason", "code table fixed", "--actor", "integrator",
                          "--json")
    assert (code, out) == (0, {"replayed": 1, "skipped": [], "dry_run": False})
    replayed = world.sub("bad-unmapped-code")
    assert replayed.state == "pending" and replayed.last_error is None
    assert replayed.payload["noteDetailEprscs"][0]["srvId"]["srvCode"] == "10199999"
    last = world.audit(invalid.id)[-1]
    assert (last.from_state, last.to_state, last.actor) == ("invalid", "pending", "replay:integrator")
    assert last.reason.startswith("code table fixed; re-mapped with tamin-send-epresc")

    done = world.stack.adapter("run", "--until-idle")
    assert done.returncode == 0, world.stack.log_tail()
    accepted = world.sub("bad-unmapped-code")
    assert accepted.state == "accepted", world.stack.log_tail()
    assert accepted.result and accepted.result.get("tracking_code")
    registered = httpx.get(world.stack.sim.base_url + "/_sim/prescriptions", timeout=10).text
    assert "10199999" in registered and str(accepted.result["tracking_code"]) in registered


def test_remap_that_now_fails_leaves_a_dead_submission_invalid(world: World, tmp_path: Path) -> None:
    dead = world.sub("evt-0000-rx")
    codes = {item["code"] for item in json.loads(_line(world, "evt-0000-rx"))["payload"]["items"]}
    mappings = tmp_path / "mappings-shrunk"
    shutil.copytree(REPO / "mappings", mappings)
    services = mappings / "tamin" / "codes" / "services.csv"
    services.write_text("".join(line for line in services.read_text().splitlines(keepends=True)
                                if line.split(",")[0] not in codes))
    config = load_config(world.stack.config_path, environ={"ADAPTER__MAPPINGS_ROOT": str(mappings)})

    report = _replayer(world, mappings=load_checked_mappings(config)).replay_ids([dead.id])
    assert report.replayed == [] and [(s.id, s.state) for s in report.skipped] == [(dead.id, "invalid")]
    after = world.sub("evt-0000-rx")
    assert after.state == "invalid" and after.last_error_class == "mapping"
    assert any(code in (after.last_error or "") for code in codes)
    assert after.payload == dead.payload  # the old payload is kept for comparison
    last = world.audit(dead.id)[-1]
    assert (last.from_state, last.to_state, last.actor) == ("dead", "invalid", "replay:alice")


def _line(world: World, event_id: str) -> bytes:
    return next(line for line in world.sample.lines if line.startswith(f'{{"event_id": "{event_id}"'.encode()))


def _os_user() -> str:
    import getpass

    return getpass.getuser()


def test_replay_keeps_ambiguous_so_a_maybe_sent_create_is_looked_up_not_sent_twice(world: World) -> None:
    dead = world.sub("evt-0001-rx")
    with world.app.sessions() as session:  # as if its last try had timed out after the request left
        row = session.get(Submission, dead.id)
        assert row is not None
        row.ambiguous = True
        session.commit()
    assert _replayer(world).replay_ids([dead.id]).replayed == [dead.id]
    assert world.sub("evt-0001-rx").ambiguous is True
    drain(world.app)
    done = world.sub("evt-0001-rx")
    assert done.state == "accepted" and done.ambiguous is False
    assert world.stack.sim_stats()["duplicates"] == 0
