"""Bronze: the original bytes of every file, encrypted under the file's own data key.

Bronze objects are written once and never rewritten. On an S3 bucket with Object Lock they are
held in COMPLIANCE mode until the identifier purge date of the file's earliest month, so not even
an administrator can delete or replace an original before then; destroying the file's key shreds
it. Where locking is required, anything short of a lock read back with its date is an error.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipeline.core import staging
from pipeline.core.errors import PipelineError
from pipeline.core.policy import RetentionPolicy
from pipeline.core.store import ObjectStore, store_errors
from pipeline.proof.crypto import SEGMENT, decrypt_stream, encrypt_segments


def file_blocks(path: Path) -> Iterator[bytes]:
    """A local file in blocks of one encryption segment (bounded memory, whatever its size)."""
    with open(path, "rb") as f:
        while block := f.read(SEGMENT):
            yield block


class NotTheSealedBytes(PipelineError):
    """What was about to go to bronze is not what the seal covers: nothing is stored."""


def store_original(
    store: ObjectStore,
    key: str,
    path: Path,
    sha256: str,
    file_key: bytes,
    lock_until: dt.date | None = None,
) -> bool:
    """Encrypt the file into bronze unless it is already there; True if written now. The bytes
    encrypted must hash to the seal's digest, checked before the object is stored.

    Where the store has Object Lock, the upload itself carries the lock until `lock_until`: an
    original is never in bronze unlocked, even if the run dies before its commit extends it."""
    if store.exists(key):
        return False
    digest = hashlib.sha256()

    def hashed() -> Iterator[bytes]:
        for block in file_blocks(path):
            digest.update(block)
            yield block

    with tempfile.NamedTemporaryFile(prefix=staging.prefix("bronze"), suffix=".enc") as tmp:
        for part in encrypt_segments(file_key, hashed(), sha256.encode()):
            tmp.write(part)
        tmp.flush()
        if digest.hexdigest() != sha256:
            raise NotTheSealedBytes("the bytes read for bronze do not hash to the seal")
        retain = dt.datetime.combine(lock_until, dt.time(), tzinfo=dt.UTC) if lock_until else None
        store.put_file(key, Path(tmp.name), lock_until=retain)
    return True


def read_original(store: ObjectStore, key: str, sha256: str, file_key: bytes) -> Iterator[bytes]:
    """The original bytes, decrypted and authenticated segment by segment."""
    with store.open(key) as src:
        yield from decrypt_stream(file_key, src, sha256.encode())


class LockError(Exception):
    """An original that must be locked could not be (or its lock could not be read)."""


def lock_date(policy: RetentionPolicy, months: list[str], arrived_at: str) -> dt.date:
    """When an original's lock ends: the identifier purge date the policy gives its earliest
    month (the month it arrived in, for a file without records)."""
    first = min(months) if months else arrived_at[:7]
    return policy.identifier_purge(int(first[:4]), int(first[5:7]))


def require_lock(store: ObjectStore) -> None:
    """Fail closed: LockError unless the store answers that it has Object Lock."""
    try:
        locks = store.supports_lock()
    except store_errors() as exc:
        raise LockError(
            f"cannot read the Object Lock configuration of {store.uri('')}: {exc}"
        ) from exc
    if not locks:
        raise LockError(
            f"{store.uri('')} has no Object Lock, but originals must be locked (CDR_BRONZE_LOCK)"
        )


def hold_until(store: ObjectStore, key: str, until: dt.date, required: bool = False) -> bool:
    """Put a bronze object under COMPLIANCE retention until `until` (only ever extended).

    With `required`, anything short of a lock read back with that date raises LockError.
    """
    if required:
        require_lock(store)
    elif not store.supports_lock():
        return False
    retain = dt.datetime.combine(until, dt.time(), tzinfo=dt.UTC)
    try:
        current = store.lock_until(key)
        if current is None or current < retain:
            store.set_lock(key, retain)
            current = store.lock_until(key) if required else retain
    except store_errors() as exc:
        raise LockError(f"cannot lock {store.uri(key)} until {until}: {exc}") from exc
    if current is None or current < retain:
        raise LockError(f"{store.uri(key)} is not locked until {until} after setting it")
    return True
