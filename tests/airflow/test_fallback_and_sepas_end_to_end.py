"""``fallback_reconciliation``, the outage/fallback part of ``daily_report`` and the SEPAS
part of ``reconcile_submissions`` end to end with ``dag.test()``.

The store is filled by the real pipeline (``adapter publish`` + ``adapter run --until-idle``)
against the Tamin and DITAS simulators over HTTP, with declared outages through the CLI
(``adapter outage start|end``):

* outage 1 (ended): prescriptions get paper-fallback records; after the outage they are
  accepted late (linked by the adapter; one link is undone here, as if the adapter had
  missed it, for the DAG to redo) and one is rejected (unknown patient: paper_claim);
* two SEPAS medication prescriptions are saved at DITAS; one record is then "lost" at the
  simulator (a seeded discrepancy);
* outage 2 (left open): more prescriptions wait with fallback records; one of them is made
  72 h old: it must be flagged and listed for a paper claim.

Each DAG runs twice for today's interval; the second run must change nothing.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
from airflow.dag_processing.dagbag import DagBag
from sqlalchemy import func, select, update

from adapter.reconcile.models import FallbackReview, ReconciliationResult
from adapter.sim.ditas_app import create_ditas_app
from adapter.sim.ditas_registry import DitasSimSettings
from adapter.sim.server import SimServer
from adapter.sim.settings import TaminSimSettings
from adapter.sim.tamin_app import create_tamin_app
from adapter.store.db import make_engine, make_sessionmaker
from adapter.store.models import FallbackRecord, Outage, StateChange, Submission
from tests.support.stack import Stack, good_event_lines

REPO = Path(__file__).resolve().parents[2]
TEHRAN = dt.timezone(dt.timedelta(hours=3, minutes=30))
GOLDEN = json.loads((REPO / "tests/golden/sepas/medication_prescription.event.json").read_text("utf-8"))
SYSTEM_ID = "4e794d6f-45a2-1186-817c-5e34e3fcf8ac"
PID = "5f0c0a0b0c0d0e0f10111213"


def today_interval() -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(dt.datetime.now(TEHRAN).date(), dt.time(0, 0), TEHRAN)
    return start, start + dt.timedelta(days=1)


def created_prescriptions(lines: list[bytes]) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, lines) if e["event_type"] == "prescription.created"]


def sepas_event(n: int) -> bytes:
    event = copy.deepcopy(GOLDEN)
    event["event_id"] = f"evt-sepas-af-{n}"
    event["payload"]["prescription_id"] = f"RX-SEPAS-AF-{n}"
    return json.dumps(event, ensure_ascii=False).encode()


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("adapter-fallback")
    lines = good_event_lines(60)
    first, second = lines[:30], lines[30:]
    rejected_patient = created_prescriptions(first)[0]["payload"]["patient"]["identity"]["value"]
    with SimServer(create_tamin_app(TaminSimSettings(unknown_patients={rejected_patient}))) as tamin, \
            SimServer(create_ditas_app(DitasSimSettings(today_override="1403/05/15"))) as ditas:
        db_url = f"sqlite:///{work / 'adapter.db'}"
        stack = Stack("embedded", work, db_url, f"sqlite-queue:///{work / 'queue.db'}", tamin)
        stack.write_config()
        key_file = work / "moh-public.pem"
        key_file.write_bytes(ditas.app.state.registry.public_key_pem)
        with stack.edited_config() as config:
            config["destinations"]["sepas"] = {
                "enabled": True, "base_url": ditas.base_url,
                "auth": {"client_id": "adapter-sim", "client_secret": "adapter-sim-secret", "username": "hospital-user",
                         "password": "hospital-password"},
                "pids": {"default": PID}, "system_id": SYSTEM_ID,
                "default_location_id": "859773e8-5d81-46c6-9df1-5fb551b00495", "public_key_file": str(key_file),
                "terminology_dir": str(REPO / "mappings/sepas/terminology"), "max_rps": None}

        def cli(*args: str) -> None:
            done = stack.adapter(*args)
            assert done.returncode == 0, f"adapter {' '.join(args)}: {done.stdout}\n{stack.log_tail()}"

        # outage 1: paper records, then late acceptance (one rejected)
        cli("outage", "start", "-d", "tamin", "--reason", "Tamin maintenance window", "--actor", "ops")
        stack.publish(first)
        cli("run", "--until-idle")
        cli("outage", "end", "-d", "tamin", "--reason", "Tamin back", "--actor", "ops")
        # SEPAS records (no outage)
        stack.publish([sepas_event(1), sepas_event(2)])
        cli("run", "--until-idle")
        # outage 2, left open: these stay unaccepted
        cli("outage", "start", "-d", "tamin", "--reason", "Tamin down again", "--actor", "ops")
        stack.publish(second)
        cli("run", "--until-idle")

        env = {
            "AIRFLOW_CONN_ADAPTER_DB": db_url,
            "AIRFLOW_CONN_TAMIN": tamin.base_url.replace("http://", "http://adapter-test:adapter-test-secret@"),
            "AIRFLOW_CONN_DITAS": json.dumps({
                "conn_type": "http", "host": ditas.base_url.split("://")[1].split(":")[0],
                "port": int(ditas.base_url.rsplit(":", 1)[1]), "login": "adapter-sim",
                "password": "adapter-sim-secret",
                "extra": {"username": "hospital-user", "password": "hospital-password", "system_id": SYSTEM_ID,
                          "pid": PID}}),
            "AIRFLOW_VAR_ADAPTER_REPORT_DIR": str(work / "reports"),
            "AIRFLOW_VAR_ADAPTER_RECONCILE_BATCH_SIZE": "10",
        }
        with mock.patch.dict(os.environ, env):
            yield {"stack": stack, "tamin": tamin, "ditas": ditas, "work": work, "db_url": db_url,
                   "rejected_patient": rejected_patient}


def sessions(world: dict[str, Any]) -> Any:
    return make_sessionmaker(make_engine(world["db_url"]))


def snapshot(world: dict[str, Any]) -> dict[str, Any]:
    with sessions(world)() as s:
        return {
            "records": sorted((f.fallback_no, f.state, str(f.linked_at), f.tracking_code, str(f.claimed_at),
                               f.claim_reason) for f in s.scalars(select(FallbackRecord))),
            "reviews": sorted((r.fallback_no, r.verdict, r.detail, str(r.flagged_at), r.run_id)
                              for r in s.scalars(select(FallbackReview))),
            "states": sorted(s.execute(select(Submission.id, Submission.state)).all()),
            "state_changes": s.scalar(select(func.count()).select_from(StateChange)),
            "recon": sorted((r.destination, r.item_key, r.verdict, r.kind, r.run_id)
                            for r in s.scalars(select(ReconciliationResult))),
        }


def run_dag(dagbag: DagBag, dag_id: str) -> Any:
    dag = dagbag.get_dag(dag_id)
    saved, dag.deadline = dag.deadline, None  # Airflow 3.3.2 dag.test() deadline bug: see test_dags_end_to_end
    try:
        run = dag.test(logical_date=today_interval()[1])
    finally:
        dag.deadline = saved
    assert run.state == "success", f"{dag_id}: {run.state}"
    return run


def test_fallback_reconciliation_sepas_and_report(dagbag: DagBag, world: dict[str, Any],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    start, _ = today_interval()
    with sessions(world).begin() as s:
        records = {f.fallback_no: f for f in s.scalars(select(FallbackRecord).order_by(FallbackRecord.id))}
        subs = {sub.id: sub for sub in s.scalars(select(Submission))}
        outages = list(s.scalars(select(Outage).order_by(Outage.id)))
        assert [(o.reason, o.ended_at is None) for o in outages] == [
            ("Tamin maintenance window", False), ("Tamin down again", True)]
        first = [f for f in records.values() if f.outage_id == outages[0].id]
        waiting = [f for f in records.values() if f.outage_id == outages[1].id]
        linked = [f for f in first if f.state == "linked"]
        claimed_all = [f for f in first if f.state == "paper_claim"]
        assert claimed_all, "the rejected prescription did not become a paper claim"
        claimed = claimed_all[0]
        assert len(linked) >= 3 and len(waiting) >= 3, (len(linked), len(waiting))
        assert subs[claimed.submission_id].state == "rejected"
        assert {subs[f.submission_id].state for f in waiting} == {"pending"}
        # the adapter "missed" one link: the DAG must redo it
        missed = linked[0]
        expected_tracking = missed.tracking_code
        s.execute(update(FallbackRecord).where(FallbackRecord.id == missed.id).values(
            state="issued", linked_at=None, tracking_code=None, head_id=None))
        # one waiting paper is three days old: it must be flagged
        old = waiting[0]
        old_created = start + dt.timedelta(hours=12) - dt.timedelta(hours=72)
        s.execute(update(FallbackRecord).where(FallbackRecord.id == old.id).values(created_at=old_created))
        sepas = sorted((sub for sub in subs.values() if sub.destination == "sepas" and sub.state == "accepted"),
                       key=lambda sub: sub.id)
    assert len(sepas) >= 2, "the two SEPAS prescriptions were not accepted"
    assert all(sub.result.get("document_hash") and sub.result.get("location_id") for sub in sepas)
    lost = next(sub for sub in sepas if sub.event_id == "evt-sepas-af-2")
    kept = next(sub for sub in sepas if sub.event_id == "evt-sepas-af-1")
    assert httpx.delete(world["ditas"].base_url + f"/_sim/records/{lost.result['composition_uid']}").status_code == 200

    # -- fallback_reconciliation --
    caplog.set_level(logging.INFO)
    run_dag(dagbag, "fallback_reconciliation")
    after = snapshot(world)
    with sessions(world)() as s:
        rec = {f.fallback_no: f for f in s.scalars(select(FallbackRecord))}
        reviews = {r.fallback_no: r for r in s.scalars(select(FallbackReview))}
        first_accept = s.scalar(select(func.min(StateChange.at)).where(
            StateChange.submission_id == missed.submission_id, StateChange.to_state == "accepted"))
    assert rec[missed.fallback_no].state == "linked"
    assert rec[missed.fallback_no].tracking_code == expected_tracking
    assert rec[missed.fallback_no].linked_at == first_accept
    assert {reviews[f.fallback_no].verdict for f in linked} == {"linked"}
    assert reviews[claimed.fallback_no].verdict == "paper_claim"
    assert reviews[old.fallback_no].verdict == "flagged"
    assert reviews[old.fallback_no].flagged_at == old_created + dt.timedelta(hours=72)
    assert rec[old.fallback_no].state == "issued", "flagging does not change the adapter's record"
    assert {reviews[f.fallback_no].verdict for f in waiting[1:]} == {"waiting"}
    [claims_file] = list((world["work"] / "reports").glob("paper-claims-*.csv"))
    claims_text = claims_file.read_text()
    claim_lines = claims_text.strip().splitlines()[1:]
    assert sorted(line.split(",")[0] for line in claim_lines) == sorted([f.fallback_no for f in claimed_all] + [old.fallback_no])
    assert f"PAPER CLAIM {old.fallback_no} verdict=flagged" in caplog.text
    assert f"PAPER CLAIM {claimed.fallback_no} verdict=paper_claim" in caplog.text
    run_dag(dagbag, "fallback_reconciliation")
    assert snapshot(world) == after, "re-running fallback_reconciliation for the same interval changed something"
    assert claims_file.read_text() == claims_text

    # -- reconcile_submissions: SEPAS --
    run_dag(dagbag, "reconcile_submissions")
    after = snapshot(world)
    with sessions(world)() as s:
        by_item = {(r.destination, r.item_key): r for r in s.scalars(select(ReconciliationResult))}
        states = dict(s.execute(select(Submission.id, Submission.state)).all())
    assert by_item[("sepas", f"sub:{kept.id}")].verdict == "confirmed"
    assert by_item[("sepas", f"sub:{lost.id}")].kind == "missing_at_insurer"
    assert states[kept.id] == "confirmed" and states[lost.id] == "discrepancy"
    run_dag(dagbag, "reconcile_submissions")
    assert snapshot(world) == after, "re-running reconcile_submissions (SEPAS) changed something"

    # -- daily_report: outages and fallback counts --
    caplog.clear()
    run_dag(dagbag, "daily_report")
    [report] = list((world["work"] / "reports").glob("adapter-report-*.csv"))
    text = report.read_text()
    outage_lines = [line for line in text.splitlines() if line.startswith("outage,")]
    assert len(outage_lines) == 2, text
    assert "outage,tamin,manual,1" in outage_lines[0] and "reason=Tamin maintenance window" in outage_lines[0]
    assert "end=open" in outage_lines[1] and "duration_s=open" in outage_lines[1]
    assert "duration_s=open" not in outage_lines[0]
    assert f"fallback,tamin,paper_claim,{len(claimed_all)}," in text
    assert f"fallback,tamin,linked,{len(linked)}," in text
    assert "fallback_review,tamin,flagged,1," in text
    assert "reconciliation,sepas,discrepancy:missing_at_insurer,1" in text
    assert "outage,tamin,manual" in caplog.text
    run_dag(dagbag, "daily_report")
    assert report.read_text() == text
