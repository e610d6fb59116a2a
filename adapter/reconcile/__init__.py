"""Reconciliation, billing status and the daily report: the logic the Airflow DAGs in
``dags/`` call. Nothing here imports Airflow except ``adapter.reconcile.dagkit`` (used by
the DAG files only), so the adapter's own venv can import and test the rest."""
