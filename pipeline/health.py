"""The pipeline's health as metrics (docs/operations.md, "Metrics"): what data engineers chart
and alert on in their own tools (StatsD or OpenTelemetry through Airflow, then Prometheus and
Grafana: `docker/monitoring/`).

Every name and value here is a count, a duration or a date difference, built from reports,
listings and request statuses; never a record's value, an identifier or a file's name (a file
is not named at all, a source by its folder, through `layout.file_label`).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from pipeline.core import layout
from pipeline.core.alerts import last_retention_success
from pipeline.core.resources import Resources
from pipeline.report import COUNTS

#: open subject requests by days left to their statutory deadline (upper bounds, inclusive)
DEADLINE_BUCKETS = (("overdue", -1), ("due_0_7_days", 7), ("due_8_30_days", 30))


@dataclass
class Metrics:
    """StatsD-style metrics: counters (added), gauges (set) and timings (milliseconds)."""

    counters: dict[str, int] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)


def name_part(text: str) -> str:
    """A source or reason as one dotted name's part (what StatsD and Prometheus accept)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "unknown"


def ingest_metrics(report: dict[str, Any]) -> Metrics:
    """One file's outcome: counts per tier and quarantine reason, in total and per source
    (`cdr.ingest.*`, `cdr.source.<source>.*`), its lag from arrival to publish, and its rows
    and bytes per second of ingest."""
    out = Metrics()
    # cleaned first, then labelled: a cleaned name that reads as a number is hashed
    source = layout.file_label(name_part(report.get("source") or "unknown"))
    reasons = {
        f"quarantined.{re.sub(r'[^A-Za-z0-9_]+', '.', reason)}": int(n)
        for reason, n in (report.get("reasons") or {}).items()
    }
    counts = {k: int(report[k]) for k in COUNTS} | reasons
    for key, value in counts.items():
        out.counters[f"cdr.ingest.{key}"] = value
        out.counters[f"cdr.source.{source}.{key}"] = value
    out.counters[f"cdr.ingest.files.{report['status']}"] = 1
    delivery = report.get("delivery") or {}
    if delivery.get("arrived_at") and delivery.get("published_at"):
        lag = _at(delivery["published_at"]) - _at(delivery["arrived_at"])
        out.timings_ms["cdr.ingest.lag"] = out.timings_ms[f"cdr.source.{source}.lag"] = max(
            lag.total_seconds() * 1000, 0.0
        )
    seconds = float(delivery.get("seconds") or 0)
    if seconds > 0:
        out.gauges["cdr.ingest.rows_per_second"] = round(int(report["records"]) / seconds, 1)
        out.gauges["cdr.ingest.bytes_per_second"] = round(int(delivery["bytes"]) / seconds, 1)
    return out


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def retention_gauges(res: Resources, now: dt.datetime) -> dict[str, float]:
    """Months still holding identifiers; those past their purge date (awaiting purge) and by
    how many days the oldest is overdue; hours since retention last succeeded (-1: never)."""
    from pipeline.flows.retention import inventory

    today = now.date()
    inv = inventory(res.store, res.keyring)
    months = set(inv.month_objects) | inv.month_keys
    due = {m: res.policy.identifier_purge(*m) for m in months}
    late = [(today - d).days for d in due.values() if d <= today]
    return {
        "cdr.retention.months_with_identifiers": len(months),
        "cdr.retention.months_awaiting_purge": len(late),
        "cdr.retention.days_overdue": max(late, default=0),
        **_since_success(res, now),
    }


def _since_success(res: Resources, now: dt.datetime) -> dict[str, float]:
    """When retention last succeeded (Unix seconds, what an alert compares with the time, so
    that a gauge no one updates any more still ages) and the hours since (-1 both: never)."""
    done = last_retention_success(res.store)
    if done is None:
        return {"cdr.retention.last_success_at": -1, "cdr.retention.hours_since_success": -1}
    return {
        "cdr.retention.last_success_at": round(done.timestamp()),
        "cdr.retention.hours_since_success": round((now - done).total_seconds() / 3600, 2),
    }


def hold_gauges(res: Resources, today: dt.date) -> dict[str, float]:
    """Legal holds in force: placed by a case, and statutory (a country's longer retention)."""
    from pipeline.flows.holds import list_holds

    active = [h for h in list_holds(res.store) if h.active(today)]
    return {
        "cdr.holds.open": sum(not h.statutory for h in active),
        "cdr.holds.open_statutory": sum(h.statutory for h in active),
    }


def request_gauges(res: Resources, today: dt.date) -> dict[str, float]:
    """Open data subject requests, by days left to their statutory deadline (overdue, due in 0
    to 7 days, in 8 to 30, later)."""
    from pipeline.flows.subject import list_requests

    left = [
        (dt.date.fromisoformat(s["deadline"]) - today).days
        for s in list_requests(res)
        if s["state"] == "open"
    ]
    out: dict[str, float] = {"cdr.requests.open": len(left)}
    low = -(10**9)
    for name, high in DEADLINE_BUCKETS:
        out[f"cdr.requests.{name}"] = sum(low < d <= high for d in left)
        low = high
    out["cdr.requests.due_later"] = sum(d > low for d in left)
    return out


def health_gauges(res: Resources, now: dt.datetime) -> dict[str, float]:
    """Everything a dashboard shows of retention, holds and subject requests, as gauges, and
    when they were reported (a watch that stopped leaves its gauges as they were)."""
    today = now.date()
    reported = {reported_at("retention"): round(now.timestamp())}
    return retention_gauges(res, now) | hold_gauges(res, today) | request_gauges(res, today) | reported  # fmt: skip


def reported_at(watch: str) -> str:
    """The gauge of when a watch last reported (Unix seconds): `cdr.watch.<watch>.reported_at`."""
    return f"cdr.watch.{watch}.reported_at"
