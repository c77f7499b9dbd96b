"""Airflow DAG `cdr_subject_deadlines`: wiring only; the check is `pipeline.flows.subject`."""

from __future__ import annotations

from airflow.sdk import dag, task

from cdr_airflow.dag_defaults import watch_args

DOC = """
### cdr_subject_deadlines — alert on data subject requests near their deadline

Daily. Reads the `requests/<case>/status.json` of every recorded request (no identifier is in
them) and fails, and so alerts through the failure notifier (`CDR_NOTIFY`), when an open
request is due within 7 days or overdue. Each request's statutory deadline comes from the
retention policy's `[subject_rights]` table (default one month from receipt). Answer it with
`python -m pipeline subject-request run --case ...` or the `cdr_subject_request` DAG.
"""


@dag(
    dag_id="cdr_subject_deadlines",
    schedule="@daily",
    doc_md=DOC,
    **watch_args(tags=["privacy"]),
)
def cdr_subject_deadlines() -> None:
    @task
    def check_deadlines(logical_date=None, dag_run=None) -> dict:  # type: ignore[no-untyped-def]
        from cdr_airflow.alerting import fail_on
        from cdr_airflow.dag_defaults import run_day
        from cdr_airflow.settings import task_resources
        from pipeline.flows.subject import deadline_alert

        today = run_day(logical_date, dag_run)
        alert = deadline_alert(task_resources(), today)
        fail_on(alert)
        return {"subject_requests": "on time"}

    check_deadlines()


cdr_subject_deadlines()
