"""The trigger that watches the bucket's notifications (`cdr_airflow.arrivals`): the
common-messaging provider's `MessageQueueTrigger` on SQS, whose events carry landing references
only. A module of its own: importing the provider's queue triggers costs a DAG file that does
not watch a queue nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
from airflow.triggers.base import TriggerEvent

from pipeline.flows.arrivals import notified_refs

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
