"""Bronze: the original bytes of every file, encrypted under the file's own data key.

Bronze objects are written once and never rewritten. On an S3 bucket with Object Lock they are
held in COMPLIANCE mode until the file's identifier purge date, so not even an administrator can
delete or replace an original before then; after it, destroying the file's key shreds it.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipeline import staging
from pipeline.crypto import SEGMENT, decrypt_stream, encrypt_segments
from pipeline.store import ObjectStore


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while block := f.read(SEGMENT):
            yield block


def store_original(store: ObjectStore, key: str, path: Path, sha256: str, file_key: bytes) -> bool:
    """Encrypt the file into bronze unless it is already there; True if written now."""
    if store.exists(key):
        return False
    with tempfile.NamedTemporaryFile(prefix=staging.prefix("bronze"), suffix=".enc") as tmp:
        for part in encrypt_segments(file_key, _chunks(path), sha256.encode()):
            tmp.write(part)
        tmp.flush()
        store.put_file(key, Path(tmp.name))
    return True


def read_original(store: ObjectStore, key: str, sha256: str, file_key: bytes) -> Iterator[bytes]:
    """The original bytes, decrypted and authenticated segment by segment."""
    with store.open(key) as src:
        yield from decrypt_stream(file_key, src, sha256.encode())


def hold_until(store: ObjectStore, key: str, until: dt.date) -> bool:
    """Put a bronze object under COMPLIANCE retention until `until` (only ever extended)."""
    if not store.supports_lock():
        return False
    retain = dt.datetime.combine(until, dt.time(), tzinfo=dt.UTC)
    current = store.lock_until(key)
    if current is not None and current >= retain:
        return True
    store.set_lock(key, retain)
    return True
