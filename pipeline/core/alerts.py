"""Alerts to the people who run the pipeline: a failed task, a retention run that stopped.

Where an alert goes is a setting, `CDR_NOTIFY`: `log` (default: an ERROR line in the task log),
`webhook` (JSON POSTed to `CDR_ALERT_WEBHOOK`), or `email` (to `CDR_ALERT_EMAIL` through the SMTP
server `CDR_SMTP_HOST`, default localhost:25). This is the command line's delivery; inside Airflow,
`cdr_airflow.alerting` sends the same alert through the SMTP and HTTP providers' connections. An
alert names DAGs, tasks, runs, files by reference or digest and counts; callers never put record
values in one.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import smtplib
import urllib.request
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from typing import Any

from pipeline.core import layout
from pipeline.core.layout import RETENTION_SUCCESS
from pipeline.core.registry import SourceRule
from pipeline.core.store import ObjectStore

log = logging.getLogger("pipeline.core.alerts")
CHANNELS = ("log", "webhook", "email")
RETENTION_MAX_AGE = dt.timedelta(days=2)


@dataclass(frozen=True)
class Alert:
    title: str
    detail: str
    severity: str = "error"
    facts: dict[str, Any] = field(default_factory=dict)


def channel_of(env: dict[str, str] | None = None) -> str:
    """The configured channel (`CDR_NOTIFY`), refused if unknown."""
    e = os.environ if env is None else env
    channel = (e.get("CDR_NOTIFY") or "log").lower()
    if channel not in CHANNELS:
        raise ValueError(f"CDR_NOTIFY={channel!r}: one of {', '.join(CHANNELS)}")
    return channel


def log_alert(alert: Alert) -> None:
    """Every alert is an ERROR line in the log too, whatever else carries it."""
    log.error("ALERT %s: %s %s", alert.title, alert.detail, json.dumps(alert.facts, default=str))


def payload(alert: Alert) -> dict[str, Any]:
    """The JSON a webhook receives."""
    return json.loads(json.dumps(asdict(alert), default=str))


def subject(alert: Alert) -> str:
    return f"[cdr-pipeline] {alert.title}"


def email_text(alert: Alert) -> str:
    """The body of an alert e-mail: the detail, then one line per fact."""
    facts = "\n".join(f"{k}: {v}" for k, v in alert.facts.items())
    return f"{alert.detail}\n\n{facts}\n"


def send(alert: Alert, env: dict[str, str] | None = None) -> str:
    """Deliver the alert on the configured channel; returns the channel used."""
    e = os.environ if env is None else env
    channel = channel_of(e)
    log_alert(alert)
    if channel == "webhook":
        url = e.get("CDR_ALERT_WEBHOOK") or ""
        if not url:
            raise ValueError("CDR_NOTIFY=webhook needs CDR_ALERT_WEBHOOK")
        body = json.dumps(payload(alert)).encode()
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
    elif channel == "email":
        to = e.get("CDR_ALERT_EMAIL") or ""
        if not to:
            raise ValueError("CDR_NOTIFY=email needs CDR_ALERT_EMAIL")
        message = EmailMessage()
        message["Subject"] = subject(alert)
        message["From"] = e.get("CDR_ALERT_FROM") or "cdr-pipeline@localhost"
        message["To"] = to
        message.set_content(email_text(alert))
        host, _, port = (e.get("CDR_SMTP_HOST") or "localhost:25").partition(":")
        with smtplib.SMTP(host, int(port or 25), timeout=10) as smtp:
            smtp.send_message(message)
    return channel


def record_retention_success(store: ObjectStore, as_of: dt.date, now: dt.datetime) -> None:
    """Written at the end of every successful retention run: what the watch checks."""
    body = {"as_of": as_of.isoformat(), "finished_at": now.isoformat()}
    store.put_bytes(RETENTION_SUCCESS, json.dumps(body).encode())


def last_retention_success(store: ObjectStore) -> dt.datetime | None:
    """When a retention run last succeeded (`record_retention_success`), or None: never."""
    if store.info(RETENTION_SUCCESS) is None:
        return None
    return dt.datetime.fromisoformat(json.loads(store.get_bytes(RETENTION_SUCCESS))["finished_at"])


def retention_overdue(store: ObjectStore, now: dt.datetime) -> Alert | None:
    """An alert if retention has not succeeded within RETENTION_MAX_AGE (a compliance breach:
    identifiers would be kept past their deletion date), else None."""
    last = last_retention_success(store)
    if last is not None and now - last <= RETENTION_MAX_AGE:
        return None
    since = f"since {last.isoformat()}" if last else "ever"
    return Alert(
        title="retention has not succeeded for two days",
        detail=f"cdr_retention has not completed successfully {since}: identifiers due for "
        "deletion may still be stored. Check the cdr_retention runs and their logs.",
        facts={"last_success": last.isoformat() if last else None, "checked_at": now.isoformat()},
    )


def hours_since_delivery(store: ObjectStore, rule: SourceRule, now: dt.datetime) -> float | None:
    """Hours from the end of the last hour a source delivered in to `now`, looking back twice
    its interval and a day (None: nothing in that window, silent however long)."""
    prefix = layout.deliveries_prefix(rule.name)
    since = now - dt.timedelta(hours=2 * rule.interval_hours + 24)
    after = layout.delivery_key(rule.name, since)
    hours = [layout.delivery_hour(o.key) for o in store.list_after(prefix, after)]
    if not hours:
        return None
    last_end = max(hours) + dt.timedelta(hours=1)
    return max((now - last_end).total_seconds() / 3600, 0.0)


#: how long a delivery marker is kept at least (a source in no registry, or a short interval)
MARKERS_KEPT = dt.timedelta(days=31)


def prune_delivery_markers(
    store: ObjectStore, rules: dict[str, SourceRule], now: dt.datetime
) -> int:
    """Delete the delivery markers older than any silence check looks back (twice the
    source's interval and a day, and at least `MARKERS_KEPT`); how many were deleted. Without
    this, every source would leave a marker an hour for ever."""
    deleted = 0
    for obj in store.list(layout.DELIVERIES):
        source = obj.key[len(layout.DELIVERIES) :].split("/", 1)[0]
        rule = rules.get(source)
        window = dt.timedelta(hours=2 * rule.interval_hours + 24) if rule else dt.timedelta(0)
        try:
            hour = layout.delivery_hour(obj.key)
        except ValueError:  # not a marker this pipeline writes: left alone
            continue
        if hour + dt.timedelta(hours=1) < now - max(window, MARKERS_KEPT):
            store.delete(obj.key)
            deleted += 1
    return deleted


def silent_sources(
    store: ObjectStore, rules: dict[str, SourceRule], now: dt.datetime
) -> tuple[Alert | None, dict[str, float | None]]:
    """Each registered source's hours since its last delivery, and an alert naming those
    silent for longer than their interval (a switch that stopped sending, a broken transfer)."""
    since = {name: hours_since_delivery(store, rule, now) for name, rule in sorted(rules.items())}
    silent = {
        name: hours
        for name, hours in since.items()
        if hours is None or hours > rules[name].interval_hours
    }
    if not silent:
        return None, since
    parts = [
        f"{name} ({'no delivery in the window' if h is None else f'{h:.1f} h since its last delivery'}, expected every {rules[name].interval_hours} h)"
        for name, h in silent.items()
    ]
    alert = Alert(
        title="sources silent longer than their delivery interval",
        detail="no new file from: "
        + "; ".join(parts)
        + ". Check the source system and the transfer into landing/.",
        facts={"sources": sorted(silent), "checked_at": now.isoformat()},
    )
    return alert, since
