"""What every CDR DAG shares: start date, no catch-up, the failure notifier, retries and a
time limit on every task, so that the DAG files hold only their schedule and wiring."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import pendulum

from cdr_airflow.alerting import on_failure

START = pendulum.datetime(2025, 1, 1, tz="UTC")


def dag_args(
    *,
    tags: list[str],
    retries: int,
    retry_delay: dt.timedelta = dt.timedelta(minutes=1),
    timeout: dt.timedelta = dt.timedelta(hours=2),
    one_run_at_a_time: bool = True,
) -> dict[str, Any]:
    """Keyword arguments for `@dag`: every DAG is tagged `cdr`; a task that hangs fails after
    `timeout` and alerts; a scheduled DAG runs one run at a time."""
    args: dict[str, Any] = {
        "tags": ["cdr", *tags],
        "start_date": START,
        "catchup": False,
        "default_args": {
            "on_failure_callback": on_failure(),
            "retries": retries,
            "retry_delay": retry_delay,
            "execution_timeout": timeout,
        },
    }
    if one_run_at_a_time:
        args["max_active_runs"] = 1
    return args


def watch_args(*, tags: list[str]) -> dict[str, Any]:
    """`dag_args` of a watch DAG: a short check that fails (and so alerts) when something is
    overdue; retried once, in case the store did not answer."""
    return dag_args(
        tags=[*tags, "alerts"],
        retries=1,
        retry_delay=dt.timedelta(minutes=5),
        timeout=dt.timedelta(minutes=10),
    )


def audit_schedule(env: dict[str, str] | None = None) -> Any:
    """The integrity audit's schedule, `CDR_AUDIT_SCHEDULE`: a cron expression or preset
    (default `@weekly`), or `gold` to run after each new event on the `cdr_gold` Asset (an
    ingest that wrote gold rows, a retention that removed gold years)."""
    from cdr_airflow.assets import gold_ref

    value = ((os.environ if env is None else env).get("CDR_AUDIT_SCHEDULE") or "@weekly").strip()
    return gold_ref() if value == "gold" else value


def run_day(logical_date: Any, dag_run: Any) -> dt.date:
    """The day a run acts for: its logical date (or, without one, when it was to run), and
    never a day after today (UTC), the check `--as-of` has on the command line: a run
    triggered for a future date would destroy identifiers early (retention) or file every
    record as past its purge date (ingest). Such a run fails, without retry."""
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline.core.dates import FutureAsOf, refuse_future

    try:
        return refuse_future((logical_date or dag_run.run_after).date())
    except FutureAsOf as exc:
        raise AirflowFailException(f"logical date refused: {exc}") from None
