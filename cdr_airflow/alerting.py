"""The failure notifier every CDR DAG uses: an Airflow notifier that hands the alert to
`pipeline.core.alerts.send`, on the channel `CDR_NOTIFY` names (log, webhook or e-mail)."""

from __future__ import annotations

from airflow.sdk import BaseNotifier


class CdrFailureNotifier(BaseNotifier):
    """Says which DAG, run and task failed, and why, in words the pipeline wrote itself: the
    exception's text only for the pipeline's and Airflow's own errors, which never carry record
    values; any other error by its type alone."""

    def notify(self, context) -> None:  # type: ignore[no-untyped-def,override]
        from airflow.sdk.exceptions import AirflowException

        from pipeline.core.alerts import Alert, send
        from pipeline.core.errors import PipelineError

        ti, run = context.get("ti"), context.get("dag_run")
        exc = context.get("exception")
        own = isinstance(exc, PipelineError | AirflowException)
        why = f"{type(exc).__name__}: {str(exc)[:500]}" if own else type(exc).__name__
        dag_id = getattr(ti, "dag_id", None) or getattr(run, "dag_id", "?")
        task_id = getattr(ti, "task_id", None)
        send(
            Alert(
                title=f"{dag_id} failed" + (f" at {task_id}" if task_id else ""),
                detail=why if exc is not None else "the run failed",
                facts={
                    "dag_id": dag_id,
                    "task_id": task_id,
                    "run_id": getattr(run, "run_id", None),
                    "try_number": getattr(ti, "try_number", None),
                    "map_index": getattr(ti, "map_index", None),
                },
            )
        )


def on_failure() -> CdrFailureNotifier:
    return CdrFailureNotifier()


def fail_on(alert: object | None) -> None:
    """Fail the task (no retry: the condition does not heal by retrying) when a watch found
    something due; the failure notifier then sends it."""
    if alert is not None:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"{alert.title}: {alert.detail}")  # type: ignore[attr-defined]
