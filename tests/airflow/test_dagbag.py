"""The DAG folder loads without import errors and has the expected shape."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from airflow.dag_processing.dagbag import DagBag

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

EXPECTED = {
    "reconcile_submissions": {"plan_batches": {"reconcile_batch"}, "reconcile_batch": {"summarize"},
                              "reconcile_sepas": {"summarize"}, "summarize": set()},
    "billing_status": {"plan_claims": {"fetch_claim_status"}, "fetch_claim_status": {"report_deductions"},
                       "report_deductions": set()},
    "daily_report": {"write_report": set()},
    "fallback_reconciliation": {"review_fallbacks": {"write_paper_claims"}, "write_paper_claims": set()},
}


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(REPO / "dags"))


def test_no_import_errors_and_only_our_dags(dagbag: DagBag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == set(EXPECTED)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_tasks_and_dependencies(dagbag: DagBag, dag_id: str) -> None:
    dag = dagbag.get_dag(dag_id)
    assert {t.task_id: set(t.downstream_task_ids) for t in dag.tasks} == EXPECTED[dag_id]
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
    assert dag.catchup is False and dag.max_active_runs == 1


def test_insurer_tasks_are_pool_limited_with_the_retry_policy(dagbag: DagBag) -> None:
    from adapter.reconcile.insurer import InsurerPermanent, InsurerTransient

    for dag_id, task_id in (("reconcile_submissions", "reconcile_batch"), ("billing_status", "fetch_claim_status")):
        task = dagbag.get_dag(dag_id).get_task(task_id)
        assert task.pool == "tamin_api"
        assert task.retries >= 1
        policy = task.retry_policy
        assert policy.evaluate(InsurerTransient("HTTP 503"), 1, 5).action.value == "retry"
        assert policy.evaluate(InsurerPermanent("HTTP 403"), 1, 5).action.value == "fail"
    sepas_task = dagbag.get_dag("reconcile_submissions").get_task("reconcile_sepas")
    assert sepas_task.retry_policy.evaluate(InsurerTransient("HTTP 503"), 1, 5).action.value == "retry"
    for dag_id, task_id in (("reconcile_submissions", "plan_batches"), ("daily_report", "write_report")):
        assert dagbag.get_dag(dag_id).get_task(task_id).pool != "tamin_api"


def test_reconciliation_has_a_deadline_alert(dagbag: DagBag) -> None:
    dag = dagbag.get_dag("reconcile_submissions")
    alerts = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline]
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.interval == dt.timedelta(days=1, hours=7)
    assert alert.callback.path == "adapter.reconcile.alerts.deadline_missed"


def test_dag_files_parse_quickly() -> None:
    started = time.monotonic()
    DagBag(dag_folder=str(REPO / "dags"))
    assert time.monotonic() - started < 10
