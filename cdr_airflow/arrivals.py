"""Ingest on arrival: an Asset watched through the bucket's object-created notifications.

The bucket sends a notification to an SQS queue (`CDR_ARRIVALS_QUEUE`, its URL) for every
object written under the store's `landing/`. Airflow's triggerer polls the queue through the
common-messaging provider's `MessageQueueTrigger` (SQS: the Amazon provider's trigger, on the
AWS connection `CDR_AWS_CONN_ID`), every `CDR_ARRIVALS_POLL_SECONDS`. The trigger
(`cdr_airflow.arrival_trigger`) is that trigger with one change: the event it hands to Airflow carries the landing references of the
files named, never the messages, whose object keys are deliverers' file names and may hold a
phone number (Airflow stores an asset event's payload in its database in clear).

Messages are deleted from the queue once received; the hourly `cdr_ingest` sweep is the safety
net for a notification lost or for a run that failed. Without a queue the Asset has no watcher:
`cdr_ingest_on_arrival` then runs only when triggered.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import Asset, AssetWatcher

ASSET = "cdr_landing_arrivals"


def arrivals_asset(env: dict[str, str] | None = None) -> Asset:
    """The Asset `cdr_ingest_on_arrival` is scheduled on, watched through the queue when
    `CDR_ARRIVALS_QUEUE` names one."""
    e = os.environ if env is None else env
    queue = (e.get("CDR_ARRIVALS_QUEUE") or "").strip()
    if not queue:
        return Asset(name=ASSET, uri=f"cdr://{ASSET}")
    from cdr_airflow.arrival_trigger import DEFAULT_POLL_SECONDS, LandingArrivalTrigger
    from pipeline.core.config import Settings

    trigger = LandingArrivalTrigger(
        store=Settings.from_env(e).store,
        sqs_queue=queue,
        aws_conn_id=(e.get("CDR_AWS_CONN_ID", "aws_default").strip() or None),
        waiter_delay=int(e.get("CDR_ARRIVALS_POLL_SECONDS") or DEFAULT_POLL_SECONDS),
        max_messages=10,
        wait_time_seconds=1,
    )
    watcher = AssetWatcher(name="landing_notifications", trigger=trigger)
    return Asset(name=ASSET, uri=f"cdr://{ASSET}", watchers=[watcher])


def arrived_refs(triggering_asset_events: Any) -> list[str]:
    """The landing references the run's triggering events name, each once."""
    refs: dict[str, None] = {}
    for events in (triggering_asset_events or {}).values():
        for event in events:
            extra = event.extra if isinstance(event.extra, dict) else {}
            payload = extra.get("payload")  # the watcher's event; else one posted by hand
            found = (payload if isinstance(payload, dict) else extra).get("refs")
            if isinstance(found, list):
                refs.update(dict.fromkeys(str(r) for r in found))
    return list(refs)


def arrival_batches(triggering_asset_events: Any) -> list[dict[str, Any]]:
    """The batches (as the hourly sweep makes them) of the notified files still in landing;
    a file already ingested, or named twice, is not taken again."""
    from cdr_airflow.settings import task_resources
    from pipeline.flows.ingest_batches import landing_batches

    refs = arrived_refs(triggering_asset_events)
    if not refs:
        return []
    res = task_resources()
    limits = res.settings.batch_files, res.settings.batch_bytes
    return landing_batches(res.store, *limits, only=set(refs))
