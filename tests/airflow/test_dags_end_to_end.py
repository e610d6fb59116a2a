"""Each DAG end to end with ``dag.test()``: a real adapter database filled by the real
pipeline (``adapter publish`` + ``adapter run --until-idle``) and the Tamin simulator over
HTTP, reached only through the Connections ``adapter_db`` / ``tamin`` (environment) and
Variables. Discrepancies and a deduction are seeded at the simulator; re-running a DAG for
the same data interval must change nothing."""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
from airflow.dag_processing.dagbag import DagBag
from sqlalchemy import func, select

from adapter.reconcile.models import BillingDeduction, BillingStatus, ReconciliationResult
from adapter.sim.server import SimServer
from adapter.sim.settings import TaminSimSettings
from adapter.sim.tamin_app import create_tamin_app
from adapter.store.db import make_engine, make_sessionmaker
from adapter.store.models import StateChange, Submission
from tests.support.stack import Stack, good_event_lines

REPO = Path(__file__).resolve().parents[2]
TEHRAN = dt.timezone(dt.timedelta(hours=3, minutes=30))


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Events through the real pipeline into a SQLite store; the simulator stays up."""
    work = tmp_path_factory.mktemp("adapter")
    with SimServer(create_tamin_app(TaminSimSettings())) as sim:
        stack = Stack("embedded", work, f"sqlite:///{work / 'adapter.db'}", f"sqlite-queue:///{work / 'queue.db'}", sim)
        stack.write_config()
        stack.publish(good_event_lines(80))
        done = stack.adapter("run", "--until-idle")
        assert done.returncode == 0, stack.log_tail()
        assert set(stack.store()["states"]) == {"accepted"}, stack.store()
        env = {
            "AIRFLOW_CONN_ADAPTER_DB": f"sqlite:///{work / 'adapter.db'}",
            "AIRFLOW_CONN_TAMIN": sim.base_url.replace("http://", "http://adapter-test:adapter-test-secret@"),
            "AIRFLOW_VAR_ADAPTER_REPORT_DIR": str(work / "reports"),
            "AIRFLOW_VAR_ADAPTER_RECONCILE_BATCH_SIZE": "10",
        }
        with mock.patch.dict(os.environ, env):
            yield {"stack": stack, "sim": sim, "work": work, "db_url": f"sqlite:///{work / 'adapter.db'}"}


def sessions(world: dict[str, Any]) -> Any:
    return make_sessionmaker(make_engine(world["db_url"]))


def snapshot(world: dict[str, Any]) -> dict[str, Any]:
    with sessions(world)() as s:
        return {
            "states": sorted(s.execute(select(Submission.id, Submission.state)).all()),
            "state_changes": s.scalar(select(func.count()).select_from(StateChange)),
            "recon": sorted((r.item_key, r.verdict, r.kind, r.run_id, str(r.difference))
                            for r in s.scalars(select(ReconciliationResult))),
            "billing": sorted((b.head_id, b.state, b.paid_amount, b.deducted_amount, b.run_id)
                              for b in s.scalars(select(BillingStatus))),
            "deductions": sorted((d.head_id, d.deduction_ref, d.amount, d.reason, d.run_id)
                                 for d in s.scalars(select(BillingDeduction))),
        }


def logical_date_covering_today() -> dt.datetime:
    """A manual run's data interval with the daily interval timetable is the last whole day
    before the logical date: tomorrow 00:00 Tehran covers today, when the events came in."""
    today = dt.datetime.now(TEHRAN).date()
    return dt.datetime.combine(today + dt.timedelta(days=1), dt.time(0, 0), TEHRAN)


def run_dag(dagbag: DagBag, dag_id: str) -> Any:
    """``dag.test()`` for the interval of today. Airflow 3.3.2's ``dag.test()`` crashes when the
    run finishes on a DAG with a deadline alert (``DagRun.update_state`` looks the alerts up by
    id, but the test path's in-memory DAG carries them as dicts: "'dict' object has no attribute
    'hex'"), so the deadline is taken off the in-memory DAG for the call. The scheduler path
    is unaffected; ``test_deadline_alert_reaches_the_metadata_db`` checks the stored alert."""
    dag = dagbag.get_dag(dag_id)
    saved, dag.deadline = dag.deadline, None
    try:
        run = dag.test(logical_date=logical_date_covering_today())
    finally:
        dag.deadline = saved
    assert run.state == "success", f"{dag_id}: {run.state}"
    return run


def creates_by_subject(world: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Prescriptions the pipeline registered with only a create (no edit, no delete)."""
    with sessions(world)() as s:
        subs = list(s.scalars(select(Submission).where(Submission.destination == "tamin")))
    ops: dict[str, list[Submission]] = {}
    for sub in subs:
        if sub.subject_key and sub.subject_key.startswith("rx:"):
            ops.setdefault(sub.subject_key, []).append(sub)
    return {key: {"id": rows[0].id, "head": int(rows[0].result["head_id"]), "tracking": rows[0].result["tracking_code"],
                  "patient": rows[0].payload["patient"], "docId": rows[0].payload["docId"],
                  "prescDate": rows[0].payload["prescDate"]}
            for key, rows in sorted(ops.items()) if [r.operation for r in rows] == ["create"]}


def sim_post(world: dict[str, Any], path: str, payload: Any = None, method: str = "POST") -> dict[str, Any]:
    resp = httpx.request(method, world["sim"].base_url + path, json=payload, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_reconcile_billing_and_report_end_to_end(dagbag: DagBag, world: dict[str, Any],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    plain = creates_by_subject(world)
    assert len(plain) >= 4, plain
    altered, lost, neighbour, deducted = list(plain.values())[:4]
    # -- seed discrepancies at the insurer --
    sim_post(world, f"/_sim/prescriptions/{altered['head']}", {"items": [{"srvCode": "10112334", "srvQty": 99}]})
    sim_post(world, f"/_sim/prescriptions/{lost['head']}", method="DELETE")
    stranger = sim_post(world, "/_sim/prescriptions", {
        "patient": neighbour["patient"], "docId": neighbour["docId"], "prescDate": neighbour["prescDate"],
        "prescTypeId": 1, "items": [{"srvCode": "10109520", "srvQty": 5}]})["head"]

    # -- reconcile_submissions (no Connection ditas: the SEPAS part is skipped) --
    run = run_dag(dagbag, "reconcile_submissions")
    assert run.get_task_instance("reconcile_sepas").state == "skipped"
    after_recon = snapshot(world)
    with sessions(world)() as s:
        by_item = {r.item_key: r for r in s.scalars(select(ReconciliationResult))}
        states = dict(s.execute(select(Submission.id, Submission.state)).all())
        ops = dict(s.execute(select(Submission.id, Submission.operation)).all())
    assert by_item[f"sub:{altered['id']}"].kind == "items_differ"
    assert by_item[f"sub:{altered['id']}"].difference["only_insurer"] == [["10112334", 99]]
    assert by_item[f"sub:{lost['id']}"].kind == "missing_at_insurer"
    assert by_item[f"head:{stranger['head_EPRSC_ID']}"].kind == "unknown_at_ours"
    assert by_item[f"sub:{neighbour['id']}"].verdict == "confirmed"
    assert states[altered["id"]] == states[lost["id"]] == "discrepancy"
    discrepancies = {k for k, r in by_item.items() if r.verdict == "discrepancy"}
    assert discrepancies == {f"sub:{altered['id']}", f"sub:{lost['id']}", f"head:{stranger['head_EPRSC_ID']}"}
    # every prescription submission is reconciled; eligibility reads are left accepted
    for sid, state in states.items():
        if ops[sid] == "eligibility":
            assert state == "accepted"
        else:
            assert state == ("discrepancy" if sid in (altered["id"], lost["id"]) else "confirmed"), (sid, ops[sid])
            assert f"sub:{sid}" in by_item
    run_dag(dagbag, "reconcile_submissions")
    assert snapshot(world) == after_recon, "re-running reconcile_submissions for the same interval changed something"

    # -- billing_status: the insurer paid everything, with one deduction --
    sim_post(world, "/_sim/claims/settle", {"auditStatus": "paid"})
    sim_post(world, f"/_sim/claims/{deducted['head']}", {"auditStatus": "paid", "deductions": [
        {"srvCode": "10112334", "amount": 120_000, "reasonCode": "K07", "reason": "quantity above the allowed dose"}]})
    caplog.set_level(logging.INFO)
    run_dag(dagbag, "billing_status")
    after_billing = snapshot(world)
    with sessions(world)() as s:
        billing = {b.head_id: b for b in s.scalars(select(BillingStatus))}
        deductions = list(s.scalars(select(BillingDeduction)))
        states = dict(s.execute(select(Submission.id, Submission.state)).all())
    assert billing[str(deducted["head"])].state == "deducted"
    assert billing[str(deducted["head"])].deducted_amount == 120_000
    assert [(d.head_id, d.reason_code, d.reason) for d in deductions] == [
        (str(deducted["head"]), "K07", "quantity above the allowed dose")]
    assert states[deducted["id"]] == "deducted" and states[neighbour["id"]] == "paid"
    assert states[altered["id"]] == "discrepancy", "billing must not touch unreconciled claims"
    assert "quantity above the allowed dose" in caplog.text
    deduction_files = list((world["work"] / "reports").glob("deductions-*.csv"))
    assert len(deduction_files) == 1 and "K07" in deduction_files[0].read_text()
    run_dag(dagbag, "billing_status")
    assert snapshot(world) == after_billing, "re-running billing_status for the same interval changed something"

    # -- daily_report --
    caplog.clear()
    run_dag(dagbag, "daily_report")
    reports = list((world["work"] / "reports").glob("adapter-report-*.csv"))
    assert len(reports) == 1
    text = reports[0].read_text()
    assert "submissions,tamin,paid," in text and "submissions,tamin,deducted,1," in text
    assert "discrepancy,tamin,items_differ,1" in text and "discrepancy,tamin,missing_at_insurer,1" in text
    assert "discrepancy,tamin,unknown_at_ours,1" in text
    assert "deduction,tamin,K07,1,120000" in text and "quantity above the allowed dose" in text
    assert "discrepancy,tamin,items_differ" in caplog.text, "the report is not in the task log"
    run_dag(dagbag, "daily_report")
    assert reports[0].read_text() == text
    assert snapshot(world) == after_billing


def test_deadline_alert_reaches_the_metadata_db(dagbag: DagBag, world: dict[str, Any]) -> None:
    """What the scheduler will evaluate: the alert as synced from the DAG file by ``dag.test()``."""
    from airflow.models.deadline_alert import DeadlineAlert as DeadlineAlertModel
    from airflow.utils.session import create_session

    run_dag(dagbag, "reconcile_submissions")
    with create_session() as session:
        names = [a.name for a in session.scalars(select(DeadlineAlertModel))]
    assert "reconcile_submissions_finished_by_07:00" in names


def test_insurer_errors_are_split_into_transient_and_permanent(world: dict[str, Any]) -> None:
    from adapter.reconcile import dagkit
    from adapter.reconcile.insurer import InsurerPermanent, InsurerTransient, TaminStatusClient

    endpoint = dagkit.tamin_endpoint()  # from AIRFLOW_CONN_TAMIN
    with TaminStatusClient(endpoint) as client:
        sim_post(world, "/_sim/faults", {"fail_next": 1, "fail_status": 503, "retry_after_s": 7,
                                         "fail_endpoints": ["claim_status"]})
        with pytest.raises(InsurerTransient) as transient:
            client.claim_status("0000000000", "1")
        assert transient.value.retry_after_s == 7
        sim_post(world, "/_sim/faults", {"fail_next": 1, "fail_status": 403, "fail_endpoints": ["lookup"]})
        with pytest.raises(InsurerPermanent):
            client.lookup_tracking("0000000000", "1")
        assert client.claim_status("0000000000", "1") is None  # faults used up: a normal answer
    policy = dagkit.INSURER_RETRY_POLICY
    assert policy.evaluate(transient.value, 1, 5).action.value == "retry"
    assert policy.evaluate(InsurerPermanent("x"), 1, 5).action.value == "fail"
    assert policy.evaluate(KeyError("bug"), 1, 5).action.value == "default"
    bad = endpoint.__class__(**{**endpoint.__dict__, "client_secret": "wrong"})
    with TaminStatusClient(bad) as client, pytest.raises(InsurerPermanent):
        client.lookup_tracking("0000000000", "1")


def test_deadline_callback_logs_and_appends_an_alert_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import asyncio
    import json

    from adapter.reconcile.alerts import deadline_missed

    alerts = tmp_path / "alerts.jsonl"
    event = asyncio.run(deadline_missed(dag_id="reconcile_submissions", deadline="07:00", alerts_file=str(alerts),
                                        context={"dag_run": {"run_id": "scheduled__x"}}))
    assert event["run_id"] == "scheduled__x"
    assert json.loads(alerts.read_text()) == event
    assert "DEADLINE MISSED" in caplog.text


def test_connection_uris_become_sqlalchemy_urls() -> None:
    from adapter.reconcile.dagkit import db_url_of

    assert db_url_of("sqlite", "", "/srv/a/adapter.db", None, None, None, {}) == "sqlite:////srv/a/adapter.db"
    assert db_url_of("postgresql", "db", "adapter", "adapter", "p@ss", 5432, {}) == \
        "postgresql+psycopg://adapter:p%40ss@db:5432/adapter"
    assert db_url_of("generic", None, None, None, None, None, {"sqlalchemy_url": "sqlite:///x.db"}) == "sqlite:///x.db"
