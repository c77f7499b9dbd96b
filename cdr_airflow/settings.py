"""Settings for tasks: the `cdr_store` Airflow connection when one exists, else CDR_* variables;
AWS clients from the Amazon provider's hook on the AWS connection (`cdr_airflow.aws`).

The connection (type aws) gives the credentials (login, password) and, in its extras, any of
`endpoint_url` (MinIO), `region_name`, `store`, `bronze_store`, `kms_key`, `kms_endpoint_url`,
`keyring_dir`; what it leaves out comes from the CDR_* variables. Tasks call `task_settings()`
when they start, never at parse time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.core.config import Settings

if TYPE_CHECKING:
    from pipeline.core.resources import Resources

CONN_ID = "cdr_store"


def find_connection(conn_id: str):  # type: ignore[no-untyped-def]
    """The Airflow connection (environment, secrets backend or database), or None."""
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except Exception as exc:
        if type(exc).__name__ != "AirflowNotFoundException":
            raise
        return None


def task_settings() -> Settings:
    conn = find_connection(CONN_ID)
    if conn is None:
        return Settings.from_env()
    fields = {"login": conn.login, "password": conn.password, "extra": conn.extra_dejson}
    return Settings.from_env(connection=fields)


def running_task() -> tuple[str, str] | None:
    """The running task, for the audit log: the person behind its run (the Airflow user who
    triggered it, or `airflow:<dag>` for a run the scheduler or an asset started) and its
    `dag/run/task`; None outside a task."""
    from airflow.sdk import get_current_context

    try:
        context = get_current_context()
    except Exception:  # not inside a task: the caller's own default applies
        return None
    dag_run, ti = context["dag_run"], context["ti"]
    person = getattr(dag_run, "triggering_user_name", None) or f"airflow:{dag_run.dag_id}"
    return person, f"{dag_run.dag_id}/{dag_run.run_id}/{ti.task_id}"


def task_resources() -> Resources:
    """The run's resources (stores, keyring, policy, quality) from the task's settings, their
    S3 and KMS clients from the AWS connection where there is one. Audit entries the task writes
    name the person behind the run and the task (`running_task`)."""
    from cdr_airflow.aws import task_clients
    from pipeline.core.resources import Resources
    from pipeline.proof import audit

    audit.set_task_resolver(running_task)

    return Resources.from_settings(task_settings(), clients=task_clients())
