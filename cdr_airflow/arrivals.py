"""Ingest on arrival: an Asset watched through the bucket's object-created notifications.

The bucket sends a notification to an SQS queue (`CDR_ARRIVALS_QUEUE`, its URL) for every
object written under the store's `landing/`. Airflow's triggerer polls the queue through the
common-messaging provider's `MessageQueueTrigger` (SQS: the Amazon provider's trigger, on the
AWS connection `CDR_AWS_CONN_ID`), every `CDR_ARRIVALS_POLL_SECONDS`. The trigger here is that
trigger with one change: the event it hands to Airflow carries the landing references of the
files named, never the messages, whose object keys are deliverers' file names and may hold a
phone number (Airflow stores an asset event's payload in its database in clear).

Messages are deleted from the queue once received; the hourly `cdr_ingest` sweep is the safety
net for a notification lost or for a run that failed. Without a queue the Asset has no watcher:
`cdr_ingest_on_arrival` then runs only when triggered.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
from airflow.sdk import Asset, AssetWatcher
from airflow.triggers.base import TriggerEvent

from pipeline.flows.arrivals import notified_refs

ASSET = "cdr_landing_arrivals"
DEFAULT_POLL_SECONDS = 30
#: consecutive failed polls after which (and every so many after) the failure is an ERROR
ESCALATE_AFTER = 10


class LandingArrivalTrigger(MessageQueueTrigger):
    """`MessageQueueTrigger` whose events say which landing files arrived, by reference only.

    A poll whose messages name no landing object of the store (S3's test event, another
    prefix) yields no event; the trigger goes on polling."""

    def __init__(self, *, store: str, scheme: str = "sqs", **kwargs: Any) -> None:
        super().__init__(scheme=scheme, **kwargs)
        self.store = store

    def serialize(self) -> tuple[str, dict[str, Any]]:
        path = f"{type(self).__module__}.{type(self).__qualname__}"
        return path, {"store": self.store, "scheme": self.scheme, **self.kwargs}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        delay = int(self.kwargs.get("waiter_delay") or DEFAULT_POLL_SECONDS)
        failures = 0
        while True:  # the queue's trigger ends after each batch of messages it received
            try:
                async for event in self.trigger.run():
                    failures = 0
                    messages = (event.payload or {}).get("message_batch") or []
                    refs = notified_refs((m.get("Body", "") for m in messages), self.store)
                    if refs:
                        yield TriggerEvent({"refs": refs, "messages": len(messages)})
            except Exception as exc:  # the queue did not answer: polled again; the sweep covers
                failures += 1
                answer = getattr(exc, "response", None)
                code = answer.get("Error", {}).get("Code", "") if isinstance(answer, dict) else ""
                say = self.log.error if failures % ESCALATE_AFTER == 0 else self.log.warning
                say("polling the arrivals queue failed (%s %s), %d time(s) since the last message; "
                    "again in %d s; the hourly cdr_ingest takes what lands meanwhile",
                    type(exc).__name__, code, failures, delay)  # fmt: skip
                await asyncio.sleep(delay)


def arrivals_asset(env: dict[str, str] | None = None) -> Asset:
    """The Asset `cdr_ingest_on_arrival` is scheduled on, watched through the queue when
    `CDR_ARRIVALS_QUEUE` names one."""
    e = os.environ if env is None else env
    queue = (e.get("CDR_ARRIVALS_QUEUE") or "").strip()
    if not queue:
        return Asset(name=ASSET, uri=f"cdr://{ASSET}")
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
