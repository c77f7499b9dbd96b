"""Producing the next item in a background thread while the caller works on this one."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from queue import Full, Queue
from typing import Any, TypeVar

T = TypeVar("T")


def prefetch(batches: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Produce the next batch in a background thread while the caller works on this one.

    Work that releases the GIL (parsing, sorting, reading) then overlaps with the caller's
    (transforming, writing); `depth` bounds how many batches wait, so memory stays bounded. An
    error in the producer is raised here.
    """
    queue: Queue[tuple[str, Any]] = Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        queue.put(("item", item), timeout=0.1)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
            queue.put(("done", None))
        except BaseException as exc:  # handed to the consumer, never lost
            queue.put(("error", exc))

    worker = threading.Thread(target=produce, name="batch-reader", daemon=True)
    worker.start()
    try:
        while True:
            kind, item = queue.get()
            if kind == "done":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)
