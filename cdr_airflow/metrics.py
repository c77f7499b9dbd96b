"""Metrics through Airflow's own metrics client (StatsD or OpenTelemetry, as `[metrics]`
configures it; names get Airflow's prefix, `airflow.` by default). The names and what they
mean are in `pipeline.health` and docs/operations.md."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pipeline.health import Metrics


def emit(metrics: Metrics) -> None:
    """Send each counter, gauge and timing."""
    from airflow.sdk.observability.stats import Stats

    for name, count in metrics.counters.items():
        Stats.incr(name, count)
    for name, value in metrics.gauges.items():
        Stats.gauge(name, value)
    for name, ms in metrics.timings_ms.items():
        Stats.timing(name, dt.timedelta(milliseconds=ms))


def report_health() -> dict[str, Any]:
    """Retention, legal holds and subject requests as gauges; returned too (counts only)."""
    from cdr_airflow.settings import task_resources
    from pipeline.health import health_gauges

    gauges = health_gauges(task_resources(), dt.datetime.now(dt.UTC))
    emit(Metrics(gauges=gauges))
    return gauges
