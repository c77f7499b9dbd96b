"""Landing files named by the bucket's object-created notifications (ingest on arrival).

S3 sends an `ObjectCreated` notification for every object written under the store's
`landing/` (directly to SQS, or through SNS, which wraps it). A notification names the object
by its key, which is the deliverer's file name and may hold a phone number: it is turned at once
into the file's landing reference (`layout.landing_ref`), the only name Airflow ever stores.
What is not a landing object of this store (another bucket or prefix, S3's test event, a
removal) names nothing. Being told of a file is only a hint: the ingest takes what is in
`landing/` when it runs, by the same settled-snapshot rule as the hourly sweep, so a duplicate,
late or lost notification changes nothing (the sweep takes what a lost one missed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_plus

from pipeline.core import layout
from pipeline.core.store import split_s3


def store_location(store: str) -> tuple[str, str]:
    """The bucket and key prefix of an `s3://bucket/prefix` store (a folder: no bucket)."""
    if not store.startswith("s3://"):
        return "", ""
    bucket, prefix = split_s3(store)
    return bucket, prefix.strip("/")


def notified_refs(bodies: Iterable[str], store: str) -> list[str]:
    """The landing references of the objects the notifications' bodies say were created in
    the store (`s3://bucket/prefix`), each once, in the order first named."""
    bucket, prefix = store_location(store)
    refs: dict[str, None] = {}
    for body in bodies:
        for record in _records(body):
            key = _landing_key(record, bucket, prefix)
            if key is not None:
                refs[layout.landing_ref(key)] = None
    return list(refs)


def _records(body: str) -> list[dict[str, Any]]:
    """The S3 event records of a message body: S3's own, or wrapped by SNS (`Message`)."""
    try:
        message = json.loads(body)
    except (TypeError, ValueError, RecursionError):  # not JSON, or nested past the parser
        return []
    if isinstance(message, dict) and isinstance(message.get("Message"), str):  # via SNS
        return _records(message["Message"])
    records = message.get("Records") if isinstance(message, dict) else None
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def _landing_key(record: dict[str, Any], bucket: str, prefix: str) -> str | None:
    """The store key (`landing/...`) of a created object in this store, else None."""
    if not str(record.get("eventName", "")).startswith("ObjectCreated"):
        return None
    s3 = record.get("s3") if isinstance(record.get("s3"), dict) else {}
    if not isinstance(s3.get("bucket"), dict) or not isinstance(s3.get("object"), dict):
        return None
    if s3["bucket"].get("name") != bucket or not isinstance(s3["object"].get("key"), str):
        return None
    key = unquote_plus(s3["object"]["key"])  # S3 writes keys form-encoded in notifications
    if prefix:
        if not key.startswith(prefix + "/"):
            return None
        key = key[len(prefix) + 1 :]
    if not key.startswith(layout.LANDING) or key.endswith("/"):
        return None
    return key
