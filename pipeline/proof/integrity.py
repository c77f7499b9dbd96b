"""Seals: signed statements of what an original file was, made before anything parses it.

The first entry (`seals/<sha256>.seal.json`) states the file's SHA-256, size, source, name and
arrival time; the second (`seals/<sha256>.parse.json`), written when ingestion completes, names
the first by its digest and states the record counts and where the records went. Both are
Ed25519-signed over their canonical JSON, so a verifier with the published public key can check
them alone. The parse entry is written last: its presence is what marks a file as ingested.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pipeline.core.errors import PipelineError
from pipeline.core.layout import parse_key, seal_key
from pipeline.core.store import ObjectStore

READ = 8 << 20


class SealError(PipelineError):
    """A seal that does not verify."""


def sha256_file(path: Path) -> tuple[str, int]:
    """Digest and size of a file's exact bytes, read in blocks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(READ):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(body: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    body = {**body, "signer": key_id(key.public_key())}
    signature = base64.b64encode(key.sign(canonical(body))).decode()
    return {"body": body, "signature": signature}


def verify(entry: dict[str, Any], public: Ed25519PublicKey) -> dict[str, Any]:
    """The body of a signed entry, or SealError if the signature does not verify."""
    try:
        public.verify(base64.b64decode(entry["signature"]), canonical(entry["body"]))
    except (InvalidSignature, KeyError, ValueError) as exc:
        raise SealError("signature does not verify") from exc
    body: dict[str, Any] = entry["body"]
    return body


def entry_digest(entry: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(entry)).hexdigest()


def verify_pair(
    seal: dict[str, Any], parse: dict[str, Any], public: Ed25519PublicKey, sha256: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The bodies of a file's seal and parse entries, once both signatures verify and the parse
    entry names this seal of this file; SealError otherwise."""
    seal_body, parse_body = verify(seal, public), verify(parse, public)
    if parse_body.get("seal_digest") != entry_digest(seal) or seal_body.get("sha256") != sha256:
        raise SealError("the parse entry does not name this seal")
    return seal_body, parse_body


def seal_original(
    store: ObjectStore,
    key: Ed25519PrivateKey,
    sha256: str,
    size: int,
    source: str,
    file_name: str,
    arrived_at: dt.datetime,
    sealed_at: dt.datetime,
) -> dict[str, Any]:
    """Record the first seal of a file, or return the one already recorded (never re-sealed)."""
    existing = read_entry(store, seal_key(sha256))
    if existing is not None:
        return existing
    entry = sign(
        {
            "type": "seal",
            "sha256": sha256,
            "size": size,
            "source": source,
            "file": file_name,
            "arrived_at": arrived_at.astimezone(dt.UTC).isoformat(),
            "sealed_at": sealed_at.astimezone(dt.UTC).isoformat(),
        },
        key,
    )
    store.put_bytes(seal_key(sha256), json.dumps(entry, indent=1).encode())
    return entry


def read_entry(store: ObjectStore, key: str) -> dict[str, Any] | None:
    if not store.exists(key):
        return None
    entry: dict[str, Any] = json.loads(store.get_bytes(key))
    return entry


def record_parse(
    store: ObjectStore, key: Ed25519PrivateKey, seal: dict[str, Any], facts: dict[str, Any]
) -> dict[str, Any]:
    """The second signed entry: counts and outputs, naming the seal it completes."""
    body = {
        "type": "parse",
        "sha256": seal["body"]["sha256"],
        "seal_digest": entry_digest(seal),
        **facts,
    }
    entry = sign(body, key)
    store.put_bytes(parse_key(body["sha256"]), json.dumps(entry, indent=1).encode())
    return entry
