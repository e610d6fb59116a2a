"""Reconcile accepted submissions with Tamin (and SEPAS), one local day (data interval) per run.

plan_batches -> reconcile_batch (mapped, pool ``tamin_api``, retry policy: transient insurer
errors retry, permanent ones fail at once) -> summarize; beside it reconcile_sepas (DITAS
lookups of accepted SEPAS records, same retry policy; skipped when the Connection ``ditas``
is not defined) -> summarize. Logic: ``adapter.reconcile.reconcile``;
configuration: ``adapter.reconcile.dagkit`` and docs/airflow.md.
"""

from __future__ import annotations

import json
import logging

from airflow.sdk import dag, get_current_context, task

from adapter.reconcile import dagkit as kit

DAG_ID = "reconcile_submissions"
log = logging.getLogger(__name__)


@dag(dag_id=DAG_ID, schedule=kit.daily_timetable(), start_date=kit.START_DATE, catchup=False, max_active_runs=1,
     default_args=kit.DEFAULT_ARGS, deadline=kit.reconcile_deadline(DAG_ID), tags=kit.TAGS, doc_md=__doc__)
def reconcile_submissions() -> None:
    @task
    def plan_batches() -> list[list[int]]:
        from adapter.reconcile import reconcile
        from adapter.reconcile.common import store

        interval = kit.interval_of(get_current_context())
        with store(kit.adapter_db_url()) as sessions:
            batches = reconcile.plan(sessions, interval, kit.variable_int("adapter_reconcile_batch_size", 100))
        log.info("%d submission(s) accepted in %s .. %s, in %d batch(es)", sum(map(len, batches)),
                 interval.start, interval.end, len(batches))
        return batches

    @task(**kit.INSURER_TASK_ARGS)
    def reconcile_batch(submission_ids: list[int]) -> dict[str, int]:
        from adapter.reconcile import reconcile
        from adapter.reconcile.common import store
        from adapter.reconcile.insurer import TaminStatusClient

        interval = kit.interval_of(get_current_context())
        with store(kit.adapter_db_url()) as sessions, TaminStatusClient(kit.tamin_endpoint()) as client:
            counts = reconcile.reconcile_batch(sessions, client, submission_ids, interval)
            counts["insurer_calls"] = client.calls
        log.info("batch of %d: %s", len(submission_ids), json.dumps(counts, sort_keys=True))
        return counts

    @task(trigger_rule="none_failed")
    def summarize() -> dict[str, object]:
        from adapter.reconcile import reconcile
        from adapter.reconcile.common import store

        with store(kit.adapter_db_url()) as sessions:
            result = reconcile.summary(sessions, kit.interval_of(get_current_context()))
        log.info("reconciliation of %s: %s", result["interval"], json.dumps(result["by_kind"], sort_keys=True))
        for item in result["discrepancies"]:
            log.warning("DISCREPANCY %s", json.dumps(item, sort_keys=True))
        return result

    @task(retry_policy=kit.INSURER_RETRY_POLICY)
    def reconcile_sepas() -> dict[str, int]:
        from airflow.sdk.exceptions import AirflowSkipException

        from adapter.reconcile import sepas
        from adapter.reconcile.common import store

        endpoint = kit.ditas_endpoint()
        if endpoint is None:
            raise AirflowSkipException("SEPAS is not configured (no Connection 'ditas'): nothing to reconcile")
        interval = kit.interval_of(get_current_context())
        totals: dict[str, int] = {}
        with store(kit.adapter_db_url()) as sessions, sepas.DitasLookupClient(endpoint) as client:
            batches = sepas.plan(sessions, interval, kit.variable_int("adapter_reconcile_batch_size", 100))
            log.info("%d SEPAS submission(s) accepted in %s .. %s", sum(map(len, batches)), interval.start,
                     interval.end)
            for batch in batches:
                for key, value in sepas.reconcile_batch(sessions, client, batch, interval).items():
                    totals[key] = totals.get(key, 0) + value
            totals["insurer_calls"] = client.calls
        log.info("SEPAS: %s", json.dumps(totals, sort_keys=True))
        return totals

    summary = summarize()
    reconcile_batch.expand(submission_ids=plan_batches()) >> summary
    reconcile_sepas() >> summary


reconcile_submissions()
