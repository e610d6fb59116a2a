"""Fetch the insurer's audit / payment / deduction status of recent claims, store it, and
report deductions with their reasons.

plan_claims -> fetch_claim_status (mapped, pool ``tamin_api``, retry policy) ->
report_deductions. Logic: ``adapter.reconcile.billing``; configuration: docs/airflow.md.
"""

from __future__ import annotations

import csv
import json
import logging

from airflow.sdk import dag, get_current_context, task

from adapter.reconcile import dagkit as kit

DAG_ID = "billing_status"
log = logging.getLogger(__name__)


@dag(dag_id=DAG_ID, schedule=kit.daily_timetable(), start_date=kit.START_DATE, catchup=False, max_active_runs=1,
     default_args=kit.DEFAULT_ARGS, tags=kit.TAGS, doc_md=__doc__)
def billing_status() -> None:
    @task
    def plan_claims() -> list[list[int]]:
        from adapter.reconcile import billing
        from adapter.reconcile.common import store

        interval = kit.interval_of(get_current_context())
        with store(kit.adapter_db_url()) as sessions:
            batches = billing.plan(sessions, interval, kit.variable_int("adapter_billing_lookback_days", 30),
                                   kit.variable_int("adapter_reconcile_batch_size", 100))
        log.info("%d claim(s) to ask about, in %d batch(es)", sum(map(len, batches)), len(batches))
        return batches

    @task(**kit.INSURER_TASK_ARGS)
    def fetch_claim_status(submission_ids: list[int]) -> dict[str, int]:
        from adapter.reconcile import billing
        from adapter.reconcile.common import store
        from adapter.reconcile.insurer import TaminStatusClient

        interval = kit.interval_of(get_current_context())
        with store(kit.adapter_db_url()) as sessions, TaminStatusClient(kit.tamin_endpoint()) as client:
            counts = billing.fetch_batch(sessions, client, submission_ids, interval)
        log.info("batch of %d: %s", len(submission_ids), json.dumps(counts, sort_keys=True))
        return counts

    @task(trigger_rule="none_failed")
    def report_deductions() -> dict[str, object]:
        from adapter.reconcile import billing
        from adapter.reconcile.common import store

        interval = kit.interval_of(get_current_context())
        with store(kit.adapter_db_url()) as sessions:
            found = billing.deductions_found(sessions, interval)
        folder = kit.report_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"deductions-{interval.start.astimezone(kit.zone()).date().isoformat()}.csv"
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["destination", "head_id", "tracking_code", "bill_id",
                                                        "deduction", "srv_code", "amount", "reason_code", "reason"])
            writer.writeheader()
            writer.writerows(found)
        for item in found:
            log.warning("DEDUCTION head=%s tracking=%s service=%s amount=%s reason=%s %s", item["head_id"],
                        item["tracking_code"], item["srv_code"], item["amount"], item["reason_code"], item["reason"])
        log.info("%d deduction(s) first seen in this interval; written to %s", len(found), path)
        return {"deductions": len(found), "amount": sum(int(d["amount"]) for d in found), "file": str(path)}

    fetch_claim_status.expand(submission_ids=plan_claims()) >> report_deductions()


billing_status()
