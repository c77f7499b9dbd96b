"""The failure notifier every CDR DAG uses, delivering on the channel `CDR_NOTIFY` names through
Airflow's providers:

- `email`: the smtp provider's `SmtpNotifier` on the connection `CDR_SMTP_CONN_ID` (default
  `cdr_smtp`, type smtp: host, port, login and password; STARTTLS unless its extra says
  `disable_tls`, SMTPS unless `disable_ssl`), to `CDR_ALERT_EMAIL`;
- `webhook`: the http provider's `HttpHook` POSTing the alert's JSON to the connection
  `CDR_WEBHOOK_CONN_ID` (default `cdr_webhook`, type http: its host is the URL);
- `log`: an ERROR line in the task log (every channel writes it too).

Where the named connection does not exist, the alert goes the command line's way
(`pipeline.core.alerts.send`: `CDR_SMTP_HOST`, `CDR_ALERT_WEBHOOK`).
"""

from __future__ import annotations

import html
import os
from typing import TYPE_CHECKING

from airflow.sdk import BaseNotifier

if TYPE_CHECKING:
    from pipeline.core.alerts import Alert


class CdrFailureNotifier(BaseNotifier):
    """Says which DAG, run and task failed, and why, in words the pipeline wrote itself: the
    exception's text only for the pipeline's and Airflow's own errors, which never carry record
    values; any other error by its type alone."""

    def notify(self, context) -> None:  # type: ignore[no-untyped-def,override]
        deliver(failure_alert(context))


def failure_alert(context) -> Alert:  # type: ignore[no-untyped-def]
    from airflow.sdk.exceptions import AirflowException

    from pipeline.core.alerts import Alert
    from pipeline.core.errors import PipelineError

    ti, run = context.get("ti"), context.get("dag_run")
    exc = context.get("exception")
    own = isinstance(exc, PipelineError | AirflowException)
    why = f"{type(exc).__name__}: {str(exc)[:500]}" if own else type(exc).__name__
    dag_id = getattr(ti, "dag_id", None) or getattr(run, "dag_id", "?")
    task_id = getattr(ti, "task_id", None)
    return Alert(
        title=f"{dag_id} failed" + (f" at {task_id}" if task_id else ""),
        detail=why if exc is not None else "the run failed",
        facts={
            "dag_id": dag_id,
            "task_id": task_id,
            "run_id": getattr(run, "run_id", None),
            "try_number": getattr(ti, "try_number", None),
            "map_index": getattr(ti, "map_index", None),
            "rendered_map_index": getattr(ti, "rendered_map_index", None),
        },
    )


def deliver(alert: Alert) -> str:
    """Send the alert on the configured channel, through a provider where its connection
    exists; returns the channel."""
    from cdr_airflow.settings import find_connection
    from pipeline.core import alerts

    channel = alerts.channel_of()
    smtp_conn = os.environ.get("CDR_SMTP_CONN_ID") or "cdr_smtp"
    http_conn = os.environ.get("CDR_WEBHOOK_CONN_ID") or "cdr_webhook"
    if channel == "email" and find_connection(smtp_conn) is not None:
        alerts.log_alert(alert)
        _email(alert, smtp_conn)
    elif channel == "webhook" and find_connection(http_conn) is not None:
        alerts.log_alert(alert)
        _webhook(alert, http_conn)
    else:
        alerts.send(alert)
    return channel


def _email(alert: Alert, conn_id: str) -> None:
    """Through the smtp provider (TLS and credentials from the connection). `notify` is
    called directly: the alert's text is sent as written, never rendered as a template."""
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    from pipeline.core.alerts import email_text, subject

    to = os.environ.get("CDR_ALERT_EMAIL") or ""
    if not to:
        raise ValueError("CDR_NOTIFY=email needs CDR_ALERT_EMAIL")
    SmtpNotifier(
        to=to,
        from_email=os.environ.get("CDR_ALERT_FROM") or None,  # else the connection's from_email
        subject=subject(alert),
        html_content=f"<pre>{html.escape(email_text(alert))}</pre>",
        smtp_conn_id=conn_id,
    ).notify({})


def _webhook(alert: Alert, conn_id: str) -> None:
    """POST the alert's JSON through the http provider's hook (an answer other than 2xx
    raises)."""
    from airflow.providers.http.hooks.http import HttpHook

    from pipeline.core.alerts import payload

    HttpHook(method="POST", http_conn_id=conn_id).run(
        json=payload(alert), extra_options={"timeout": 10}
    )


def on_failure() -> CdrFailureNotifier:
    return CdrFailureNotifier()


def fail_on(alert: object | None) -> None:
    """Fail the task (no retry: the condition does not heal by retrying) when a watch found
    something due; the failure notifier then sends it."""
    if alert is not None:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"{alert.title}: {alert.detail}")  # type: ignore[attr-defined]
