"""Airflow DAG `cdr_retention_watch`: wiring only; the check is `pipeline.core.alerts`."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task

from cdr_airflow.dag_defaults import watch_args

DOC = """
### cdr_retention_watch — alert when retention stops

Hourly. Every successful `cdr_retention` run writes `retention/last_success.json`; this DAG
fails, and so alerts through the failure notifier (`CDR_NOTIFY`: log, webhook or e-mail), when
that record is older than two days or absent. A retention run that silently stops is a
compliance breach: identifiers would be kept past their deletion date. The alert says since when
retention has not succeeded; look at the `cdr_retention` runs and their logs.

It also reports the pipeline's health as StatsD gauges (task `report_health`, docs/operations.md
"Metrics"): months holding identifiers, months awaiting purge and days overdue, hours since
retention succeeded, legal holds in force, open subject requests by days to their deadline.

If the scheduler itself is down nothing runs here either: monitor the scheduler's health
endpoint from outside Airflow too.
"""


@dag(
    dag_id="cdr_retention_watch",
    schedule="@hourly",
    doc_md=DOC,
    **watch_args(tags=["retention"]),
)
def cdr_retention_watch() -> None:
    @task
    def check_retention() -> dict:
        from cdr_airflow.alerting import fail_on
        from cdr_airflow.settings import task_resources
        from pipeline.core.alerts import retention_overdue

        store = task_resources().store
        alert = retention_overdue(store, dt.datetime.now(dt.UTC))
        fail_on(alert)
        return {"retention": "on time"}

    @task
    def report_health() -> dict:  # type: ignore[type-arg]
        from cdr_airflow.metrics import report_health

        return report_health()

    check_retention()
    report_health()


cdr_retention_watch()
