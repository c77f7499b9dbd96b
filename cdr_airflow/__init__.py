"""The Airflow side of the pipeline, shared by the DAGs: task settings from the `cdr_store`
connection and the failure notifier. `pipeline/` never imports Airflow; this package does."""
