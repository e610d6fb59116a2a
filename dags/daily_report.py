"""Daily report of one local day: submissions per destination and state, reconciliation
verdicts and discrepancies, billing and deductions. Written as CSV to the Variable
``adapter_report_dir`` and printed to the task log. Logic: ``adapter.reconcile.report``.
"""

from __future__ import annotations

import logging

from airflow.sdk import dag, get_current_context, task

from adapter.reconcile import dagkit as kit

DAG_ID = "daily_report"
log = logging.getLogger(__name__)


@dag(dag_id=DAG_ID, schedule=kit.daily_timetable(), start_date=kit.START_DATE, catchup=False, max_active_runs=1,
     default_args=kit.DEFAULT_ARGS, tags=kit.TAGS, doc_md=__doc__)
def daily_report() -> None:
    @task
    def write_report() -> str:
        from adapter.reconcile import report
        from adapter.reconcile.common import store

        interval = kit.interval_of(get_current_context())
        with store(kit.adapter_db_url()) as sessions:
            path, text = report.write(sessions, interval, kit.report_dir(), kit.TIMEZONE)
        log.info("daily report %s:\n%s", path, text)
        return str(path)

    write_report()


daily_report()
