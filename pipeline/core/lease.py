"""One ingest per file at a time, across hosts: a lease object renewed while the run works.

The lease (`leases/<sha256>.json`) is created only if absent and names its owner, host, start
and last renewal. A run renews it every fifth of its lifetime (`CDR_LEASE_SECONDS`), so a lease
not renewed for that long belongs to a run that is gone (killed, its host dead or cut off) and
any host may take it over. On the owner's own host a lease whose process is gone is taken over
at once. `held_leases` lists them for `summary`, `verify` and the DAG.

A renewal reads the lease before it writes, so it never overwrites a lease another host took
over. Two runs may still both believe they hold it for a moment (both take over a lapsed lease
at once, or a paused run wakes after its lease lapsed), so a run confirms the lease is still
its own (`confirm`) before it publishes and before it commits: the one that lost it stops
(`LeaseLost`) and leaves the file to the other.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pipeline.core import layout, staging
from pipeline.core.errors import PipelineError
from pipeline.core.store import ObjectStore, store_errors

log = logging.getLogger("pipeline.core.lease")

#: the leases this context holds: digest → owner (`confirm` checks them)
_HOLDING: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "leases", default=()
)


class LeaseLost(PipelineError):
    """Another run took this file's lease over: this run stops before it publishes or commits."""


def confirm(store: ObjectStore, sha256: str) -> None:
    """LeaseLost unless the file's lease is still the one this context took (a no-op outside
    a lease)."""
    owner = dict(_HOLDING.get()).get(sha256)
    if owner is None:
        return
    current = _read(store, layout.lease_key(sha256))
    if current is None or current.get("owner") != owner:
        raise LeaseLost(f"{sha256[:12]}…: another run took this file over; it commits it")


#: how long a lease lives after its last renewal (the default of `CDR_LEASE_SECONDS`)
LEASE_SECONDS = 300


@dataclass(frozen=True)
class Held:
    """A lease as `summary` and `verify` show it: whose, where, since when."""

    sha256: str
    host: str
    started: dt.datetime
    renewed: dt.datetime
    expires: dt.datetime

    def describe(self, now: dt.datetime | None = None) -> str:
        now = now or dt.datetime.now(dt.UTC)
        state = "not renewed: may be taken over" if self.expires <= now else "live"
        return (
            f"leased by host {self.host} {_age(now - self.started)} ago, renewed "
            f"{_age(now - self.renewed)} ago ({state})"
        )


def _age(span: dt.timedelta) -> str:
    seconds = max(int(span.total_seconds()), 0)
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def _read(store: ObjectStore, key: str) -> dict[str, Any] | None:
    data = store.get_bytes(key) if store.exists(key) else None
    return None if data is None else dict(json.loads(data))


def _tag(body: dict[str, Any]) -> str:
    """The owner's `<host>-<pid>-…` tag (older leases prefix it with the actor and `/`)."""
    return str(body.get("owner", "")).rpartition("/")[2]


def _held(sha256: str, body: dict[str, Any]) -> Held:
    expires = dt.datetime.fromisoformat(body["expires"])
    started = dt.datetime.fromisoformat(body.get("started") or body["expires"])
    renewed = dt.datetime.fromisoformat(body.get("renewed") or body.get("started") or body["expires"])  # fmt: skip
    host = str(body.get("host") or _tag(body).partition("-")[0] or "?")
    return Held(sha256, host, started, renewed, expires)


def held_leases(store: ObjectStore) -> list[Held]:
    """Every lease in the store: the files some run is (or was, if not renewed) ingesting."""
    out = []
    for obj in store.list(layout.LEASES):
        sha = obj.key[len(layout.LEASES) :].removesuffix(".json")
        try:
            body = _read(store, obj.key)
        except (ValueError, *store_errors()):
            continue
        if body is not None:
            out.append(_held(sha, body))
    return out


def lease_of(store: ObjectStore, sha256: str) -> Held | None:
    body = _read(store, layout.lease_key(sha256))
    return None if body is None else _held(sha256, body)


@contextmanager
def lease(store: ObjectStore, sha256: str, seconds: float = LEASE_SECONDS) -> Iterator[bool]:
    """Hold the file's lease while the block runs: yields False while another run's is live.

    A lease not renewed for `seconds` (from any host), or whose process is gone on this host
    (`kill -9`), is taken over. Two names for the same bytes, or two hosts given one file,
    cannot both publish."""
    key = layout.lease_key(sha256)
    owner = f"{staging.owner_tag()}{uuid.uuid4().hex}"
    started = dt.datetime.now(dt.UTC)

    def body(at: dt.datetime) -> bytes:
        return json.dumps({
            "owner": owner, "host": staging.host(), "started": started.isoformat(),
            "renewed": at.isoformat(), "expires": (at + dt.timedelta(seconds=seconds)).isoformat(),
        }).encode()  # fmt: skip

    def mine() -> bool:
        current = _read(store, key)
        return current is not None and current.get("owner") == owner

    held = store.put_new(key, body(started)) or mine()
    if not held:
        current = _read(store, key)
        if (
            current is None
            or dt.datetime.fromisoformat(current["expires"]) <= started
            or staging.dead_here(_tag(current))
        ):
            gone = _held(sha256, current) if current else None
            log.warning("taking over the ingest lease of a run that is gone (%s) on %s…",
                        gone.describe(started) if gone else "no lease", sha256[:12])  # fmt: skip
            store.purge(key)
            held = store.put_new(key, body(started)) or mine()
    stop = threading.Event()
    beat = threading.Thread(target=_renew, args=(store, key, mine, body, seconds / 5, stop), daemon=True)  # fmt: skip
    token = _HOLDING.set((*_HOLDING.get(), (sha256, owner))) if held else None
    if held:
        beat.start()
    try:
        yield held
    finally:
        if token is not None:
            _HOLDING.reset(token)
        stop.set()
        if held:
            beat.join()
            if mine():
                store.purge(key)


def _renew(store: ObjectStore, key: str, mine: Any, body: Any, every: float, stop: threading.Event) -> None:  # fmt: skip
    """Renew the lease every `every` seconds while it is ours; a store that does not answer
    is tried again at the next beat (the lease lives five beats)."""
    while not stop.wait(every):
        try:
            if not mine():
                log.warning("the ingest lease %s was taken over by another run", key)
                return
            store.put_bytes(key, body(dt.datetime.now(dt.UTC)))
        except store_errors() as exc:
            log.warning("could not renew the ingest lease %s: %s", key, type(exc).__name__)
