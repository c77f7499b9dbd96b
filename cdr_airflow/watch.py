"""What the watch DAGs share beyond alerting: the sources' delivery check, with its gauges, and
the gold risk reports the integrity audit sends its alert for."""

from __future__ import annotations

import datetime as dt
from typing import Any

#: the StatsD gauge of a source's hours since its last delivery (-1: none in the window)
SILENCE_GAUGE = "cdr.source.{source}.hours_since_delivery"
SILENT_COUNT = "cdr.sources.silent"


def check_sources() -> dict[str, Any]:
    """Each registered source's hours since its last delivery as a gauge, and the task failed
    (so alerted) when any is silent longer than its interval. No registry: nothing to check."""
    from airflow.sdk.observability.stats import Stats

    from cdr_airflow.alerting import fail_on
    from cdr_airflow.settings import task_resources
    from pipeline.core.alerts import silent_sources
    from pipeline.health import reported_at

    res = task_resources()
    alert, since = silent_sources(res.store, res.policy.sources, dt.datetime.now(dt.UTC))
    for source, hours in since.items():
        Stats.gauge(SILENCE_GAUGE.format(source=source), -1 if hours is None else round(hours, 2))
    silent = len(alert.facts["sources"]) if alert else 0
    Stats.gauge(SILENT_COUNT, silent)
    Stats.gauge(reported_at("sources"), round(dt.datetime.now(dt.UTC).timestamp()))
    fail_on(alert)
    return {"sources": len(since), "silent": silent}


def report_gold_risk() -> dict[str, Any]:
    """A risk report for each gold month written since its last one; the months over a
    threshold sent as one alert through the notifier, without failing the task (the audit's
    window, its last successful run, must move on). A month that could not be measured fails
    the task (retried), after the others were reported and alerted on."""
    from airflow.sdk.exceptions import AirflowException

    from cdr_airflow.alerting import deliver
    from cdr_airflow.settings import task_resources
    from pipeline.flows.risk import mark_alerted, run_risk_reports

    res = task_resources()
    reports, alert, errors = run_risk_reports(res)
    if alert is not None:
        deliver(alert)
        mark_alerted(res, reports)  # only once sent: else the next run sends it
    res.quality.render_docs()
    if errors:
        raise AirflowException(f"gold month(s) not measured this time: {'; '.join(errors)}")
    over = [r["month"] for r in reports if not r["verdict"]["passed"]]
    return {"months": [r["month"] for r in reports], "over_thresholds": over}
