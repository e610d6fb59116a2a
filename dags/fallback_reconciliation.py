"""Paper-fallback records of one local day against the electronic submissions: link those
accepted late, mark those that ended refused, flag those still without an acceptance after
``adapter_fallback_max_age_hours`` (Variable, default 72), and list what must be claimed on
paper in ``<adapter_report_dir>/paper-claims-<day>.csv`` (also in the task log).

review_fallbacks -> write_paper_claims. No insurer calls (the adapter's own store only).
Logic: ``adapter.reconcile.fallback``; configuration: docs/airflow.md.
"""

from __future__ import annotations

import json
import logging

from airflow.sdk import dag, get_current_context, task

from adapter.reconcile import dagkit as kit

DAG_ID = "fallback_reconciliation"
MAX_AGE_VARIABLE = "adapter_fallback_max_age_hours"
log = logging.getLogger(__name__)


@dag(dag_id=DAG_ID, schedule=kit.daily_timetable(), start_date=kit.START_DATE, catchup=False, max_active_runs=1,
     default_args=kit.DEFAULT_ARGS, tags=kit.TAGS, doc_md=__doc__)
def fallback_reconciliation() -> None:
    @task
    def review_fallbacks() -> dict[str, int]:
        from adapter.reconcile import fallback
        from adapter.reconcile.common import store

        interval = kit.interval_of(get_current_context())
        with store(kit.adapter_db_url()) as sessions:
            counts = fallback.review(sessions, interval, kit.variable_int(MAX_AGE_VARIABLE, 72))
        log.info("fallback records of %s .. %s: %s", interval.start, interval.end, json.dumps(counts, sort_keys=True))
        return counts

    @task
    def write_paper_claims() -> dict[str, object]:
        from adapter.reconcile import fallback
        from adapter.reconcile.common import store

        interval = kit.interval_of(get_current_context())
        with store(kit.adapter_db_url()) as sessions:
            path, rows, text = fallback.write_paper_claims(sessions, interval, kit.report_dir(),
                                                           kit.variable_int(MAX_AGE_VARIABLE, 72), kit.TIMEZONE)
        for row in rows:
            log.warning("PAPER CLAIM %s verdict=%s destination=%s prescription=%s submission=%s %s", row["fallback_no"],
                        row["verdict"], row["destination"], row["prescription_id"], row["submission_state"] or "-",
                        row["detail"])
        log.info("%d record(s) to claim on paper; written to %s:\n%s", len(rows), path, text)
        return {"paper_claims": len(rows), "file": str(path)}

    review_fallbacks() >> write_paper_claims()


fallback_reconciliation()
