"""The audit log: append-only, hash-chained, signed entries under `audit/`.

Each entry is one object, `audit/<seq>.json`, holding its sequence number, the SHA-256 of the
previous entry and an Ed25519 signature (the seal key) over both and its content. Object stores
have no append, so "append-only" is enforced by creating each entry with create-if-absent: a
second writer racing for the same number loses and retries on top. Editing, deleting, inserting
or reordering entries breaks a signature, the sequence or the chain, and `verify` names the first
bad entry. Entries say who, what, when, why and how many; never an identifier.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pipeline import layout
from pipeline.integrity import SealError, entry_digest, sign, verify
from pipeline.store import ObjectStore

GENESIS = "0" * 64


def actor() -> str:
    """Who acts: `CDR_ACTOR` (the DAGs set `airflow:<dag>/<run>`), else the OS user."""
    return os.environ.get("CDR_ACTOR") or f"user:{getpass.getuser()}"


def _entries(store: ObjectStore) -> list[tuple[int, str]]:
    out = []
    for obj in store.list(layout.AUDIT):
        seq = layout.audit_seq(obj.key)
        if seq is not None:
            out.append((seq, obj.key))
    return sorted(out)


def append(
    store: ObjectStore,
    key: Ed25519PrivateKey,
    action: str,
    *,
    what: dict[str, Any],
    why: str = "",
    at: dt.datetime | None = None,
) -> dict[str, Any]:
    """Add one entry at the end of the chain (retrying if another writer got there first)."""
    for _ in range(20):
        entries = _entries(store)
        if entries:
            seq, last_key = entries[-1]
            prev = entry_digest(json.loads(store.get_bytes(last_key)))
        else:
            seq, prev = 0, GENESIS
        body = {
            "seq": seq + 1,
            "prev": prev,
            "at": (at or dt.datetime.now(dt.UTC)).isoformat(),
            "actor": actor(),
            "action": action,
            "what": what,
            "why": why,
        }
        entry = sign(body, key)
        if store.put_new(layout.audit_key(seq + 1), json.dumps(entry, sort_keys=True).encode()):
            return entry
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


def verify_log(store: ObjectStore, public: Ed25519PublicKey) -> AuditReport:
    """Check signatures, numbering and chaining of every entry, in order."""
    prev = GENESIS
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
        prev = entry_digest(entry)
    return AuditReport(len(entries), None, None)


def read_log(store: ObjectStore) -> list[dict[str, Any]]:
    """Every entry's body, in order (for reports; `verify_log` is what proves them)."""
    return [json.loads(store.get_bytes(key))["body"] for _, key in _entries(store)]
