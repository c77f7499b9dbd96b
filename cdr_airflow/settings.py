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


def run_person() -> str | None:
    """Who acts in the running task, for the audit log: the Airflow user who triggered its run,
    or `airflow:<dag>` for a run the scheduler or an asset started; None outside a task."""
    from airflow.sdk import get_current_context

    try:
        dag_run = get_current_context()["dag_run"]
    except Exception:  # not inside a task: the caller's own default applies
        return None
    user = getattr(dag_run, "triggering_user_name", None)
    return user or f"airflow:{dag_run.dag_id}"


def task_resources() -> Resources:
    """The run's resources (stores, keyring, policy, quality) from the task's settings, their
    S3 and KMS clients from the AWS connection where there is one. Audit entries the task writes
    name the person behind the run (`run_person`)."""
    from cdr_airflow.aws import task_clients
    from pipeline.core.resources import Resources
    from pipeline.proof import audit

    audit.set_person_resolver(run_person)

    return Resources.from_settings(task_settings(), clients=task_clients())
