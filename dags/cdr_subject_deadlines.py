"""Airflow DAG `cdr_subject_deadlines`: wiring only; the check is `pipeline.flows.subject`."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task

from cdr_airflow.dag_defaults import dag_args

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
    **dag_args(tags=["privacy", "alerts"], retries=1, retry_delay=dt.timedelta(minutes=5), timeout=dt.timedelta(minutes=10)),
)  # fmt: skip
def cdr_subject_deadlines() -> None:
    @task
    def check_deadlines(logical_date=None, dag_run=None) -> dict:  # type: ignore[no-untyped-def]
        from airflow.sdk.exceptions import AirflowFailException

        from cdr_airflow.settings import task_resources
        from pipeline.flows.subject import deadline_alert

        today = (logical_date or dag_run.run_after).date()
        alert = deadline_alert(task_resources(), today)
        if alert is not None:
            raise AirflowFailException(f"{alert.title}: {alert.detail}")
        return {"subject_requests": "on time"}

    check_deadlines()


cdr_subject_deadlines()
