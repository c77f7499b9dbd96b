"""The audit log: append-only, hash-chained, signed entries under `audit/`.

Each entry is one object, `audit/<seq>.json`, holding its sequence number, the SHA-256 of the
previous entry and an Ed25519 signature (the seal key) over both and its content. Object stores
have no append, so "append-only" is enforced by creating each entry with create-if-absent: a
second writer racing for the same number loses and retries on top. Editing, deleting, inserting
or reordering entries breaks a signature, the sequence or the chain, and `verify` names the first
bad entry. Entries say who (the person who acted, and apart from it the process that wrote the
entry), what, when, why and how many; never an identifier.

Every entry carries an `event` id naming what happened (`seal:<sha256>`, `purge-month:2025-01`),
and an event is recorded once: a retried write whose first answer was lost, a rerun after a crash
and two runs racing all find the entry already there and return it. Before writing, a claim
`audit-events/<sha256 of the event>.json` notes how long the log was, so finding an earlier
attempt's entry reads only the entries written since. `verify` flags two entries with one event.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pipeline.core import layout
from pipeline.core.store import ObjectStore
from pipeline.proof.integrity import SealError, entry_digest, sign, verify

if TYPE_CHECKING:
    from pipeline.core.resources import Resources

GENESIS = "0" * 64
ATTEMPTS = 20


#: the people `acting_as` named, innermost last
_acting: list[str] = []
#: the running task as the Airflow glue sees it: (the person behind its run, `dag/run/task`);
#: None outside a task
_task_resolvers: list[Callable[[], tuple[str, str] | None]] = []


def _task() -> tuple[str, str] | None:
    for resolve in _task_resolvers:
        if found := resolve():
            return found
    return None


def actor() -> str:
    """The person who acts: the one `acting_as` names (an approver, a CLI's requester), else
    the running Airflow task's (its run's triggering user, or `airflow:<dag>` for a scheduled
    run), else `CDR_ACTOR`, else the OS user of a shell (`user:<name>`)."""
    if _acting:
        return _acting[-1]
    if task := _task():
        return task[0]
    return os.environ.get("CDR_ACTOR") or f"user:{getpass.getuser()}"


def process() -> str:
    """The process that wrote an entry, kept apart from the person: OS user and host, and in an
    Airflow task its DAG, run and task."""
    who = f"{getpass.getuser()}@{socket.gethostname()}"
    task = _task()
    return f"{who} airflow:{task[1]}" if task else who


def set_task_resolver(resolve: Callable[[], tuple[str, str] | None]) -> None:
    """Install how to tell the running task (once a process; later calls change nothing)."""
    if not _task_resolvers:
        _task_resolvers.append(resolve)


@contextmanager
def acting_as(person: str | None) -> Iterator[None]:
    """Entries written inside are by `person` (no change when None or blank)."""
    name = (person or "").strip()
    if name:
        _acting.append(name)
    try:
        yield
    finally:
        if name:
            _acting.pop()


def _entries(store: ObjectStore, after: int = 0) -> list[tuple[int, str]]:
    """The log's entries (sequence, key) after entry `after`, in order. Keys are zero-padded
    numbers, so a listing can start past the entries already known."""
    listing = store.list_after(layout.AUDIT, layout.audit_key(after)) if after else store.list(layout.AUDIT)  # fmt: skip
    out = []
    for obj in listing:
        seq = layout.audit_seq(obj.key)
        if seq is not None and seq > after:
            out.append((seq, obj.key))
    return sorted(out)


#: the longest log each store was seen with in this process: the next append lists only what
#: was written since (an entry is never removed; a store found shorter is listed whole)
_SEEN: dict[int, tuple[ObjectStore, int]] = {}


def _length(store: ObjectStore) -> int:
    """How many entries the log holds now."""
    known = _SEEN.get(id(store))
    after = known[1] if known and known[0] is store else 0
    if after and not store.exists(layout.audit_key(after)):
        after = 0  # not the log that was seen (a store emptied under the same object)
    entries = _entries(store, after)
    length = entries[-1][0] if entries else after
    _SEEN[id(store)] = (store, length)
    return length


def _read(store: ObjectStore, key: str) -> dict[str, Any] | None:
    if not store.exists(key):
        return None
    data: dict[str, Any] = json.loads(store.get_bytes(key))
    return data


def _claim(store: ObjectStore, event: str) -> dict[str, Any]:
    """The event's claim: made now (noting the log's length) unless a first attempt made it."""
    key = layout.audit_event_key(event)
    claim = _read(store, key)
    if claim is None:
        after = _length(store)
        store.put_new(key, json.dumps({"event": event, "after": after}).encode())
        claim = _read(store, key) or {"event": event, "after": after}
    return claim


class _Scan:
    """Entries written since a claim, each read once, searched for one event."""

    def __init__(self, store: ObjectStore, event: str, after: int) -> None:
        self.store, self.event, self.after = store, event, after

    def find(self, entries: list[tuple[int, str]]) -> dict[str, Any] | None:
        for seq, key in entries:
            if seq <= self.after:
                continue
            entry: dict[str, Any] = json.loads(self.store.get_bytes(key))
            self.after = seq
            if entry.get("body", {}).get("event") == self.event:
                return entry
        return None


def _digest_of(store: ObjectStore, seq: int) -> str:
    """The digest the entry after `seq` chains to (GENESIS for the first)."""
    return entry_digest(json.loads(store.get_bytes(layout.audit_key(seq)))) if seq else GENESIS


def find_event(store: ObjectStore, event: str) -> dict[str, Any] | None:
    """The entry recording `event`, if one was written."""
    claim = _read(store, layout.audit_event_key(event))
    if claim is None:
        return None
    return _Scan(store, event, int(claim["after"])).find(_entries(store))


def append(
    store: ObjectStore,
    key: Ed25519PrivateKey,
    action: str,
    *,
    what: dict[str, Any],
    why: str = "",
    at: dt.datetime | None = None,
    event: str | None = None,
) -> dict[str, Any]:
    """Record one event at the end of the chain, once: if an entry for `event` exists already
    (an earlier attempt, a retry whose answer was lost, a racing run), that entry is returned.

    Without an `event`, the entry is a one-off (`<action>:<random id>`)."""
    event = event or f"{action}:{uuid.uuid4().hex}"
    claim = _claim(store, event)
    scan = _Scan(store, event, int(claim["after"]))
    for _ in range(ATTEMPTS):
        # Only the entries since the claim: the one sought is among them, and so is the last.
        entries = _entries(store, scan.after)
        if (found := scan.find(entries)) is not None:
            return found
        seq = entries[-1][0] if entries else scan.after
        prev = _digest_of(store, seq)
        body = {
            "seq": seq + 1,
            "prev": prev,
            "at": (at or dt.datetime.now(dt.UTC)).isoformat(),
            "actor": actor(),
            "process": process(),
            "action": action,
            "event": event,
            "what": what,
            "why": why,
        }
        entry = sign(body, key)
        if store.put_new(layout.audit_key(seq + 1), json.dumps(entry, sort_keys=True).encode()):
            _SEEN[id(store)] = (store, seq + 1)
            return entry
        # Another writer took this number, or our own write landed and its answer was lost:
        # the next round's scan tells which.
    raise RuntimeError("could not append to the audit log: too many concurrent writers")


@dataclass(frozen=True)
class AuditReport:
    """The verdict on the whole chain: entries checked, and the first problem if any."""

    entries: int
    first_bad: str | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def refused(
    res: Resources, action: str, kind: str, public: dict[str, Any], problems: list[str]
) -> None:
    """Record a request of `kind` refused before any data was read: its fields (never
    identifiers) and the problems, so every kind of request leaves the same trace."""
    append(
        res.store,
        res.keyring.signing_key(),
        action,
        what={**public, "problems": problems},
        why=f"{kind} refused before any data was read",
    )


def verify_log(store: ObjectStore, public: Ed25519PublicKey) -> AuditReport:
    """Check signatures, numbering, chaining and one entry per event, in order."""
    prev = GENESIS
    seen: dict[str, int] = {}
    entries = _entries(store)
    for position, (seq, key) in enumerate(entries, start=1):
        try:
            entry = json.loads(store.get_bytes(key))
            body = verify(entry, public)
        except (SealError, ValueError, KeyError):
            return AuditReport(position, key, "signature does not verify (entry edited or forged)")
        if seq != position:
            return AuditReport(
                position, key, f"sequence gap: expected entry {position}, found {seq}"
            )
        if body.get("seq") != seq:
            return AuditReport(position, key, f"entry says it is {body.get('seq')} (moved)")
        if body.get("prev") != prev:
            return AuditReport(position, key, "chain broken: previous entry changed or removed")
        event = body.get("event")
        if event is not None and event in seen:
            return AuditReport(
                position, key, f"event {event} recorded twice (entries {seen[event]} and {seq})"
            )
        if event is not None:
            seen[event] = seq
        prev = entry_digest(entry)
    return AuditReport(len(entries), None, None)


def read_log(store: ObjectStore) -> list[dict[str, Any]]:
    """Every entry's body, in order (for reports; `verify_log` is what proves them)."""
    return [json.loads(store.get_bytes(key))["body"] for _, key in _entries(store)]
