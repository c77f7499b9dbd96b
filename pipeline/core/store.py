"""Object store behind one small interface: a local folder (embedded default) or S3.

Every write is atomic: a reader sees the old object or the whole new one, never a part. On a
local folder that is a temporary file renamed into place; on S3 a single PUT (or a completed
multipart upload) is atomic by itself. Keys are `/`-separated on both.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import shutil
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from pipeline.core import staging

if TYPE_CHECKING:
    import polars as pl

log = logging.getLogger("pipeline.core.store")
TMP_PREFIX = ".tmp-"
#: What a bucket without Object Lock answers when asked for its lock configuration.
NO_LOCK = {"ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound"}
#: Modes of what a local store, the keyring and staging write, whatever the umask.
FILE_MODE, FOLDER_MODE = 0o600, 0o700


def private_folder(path: Path) -> None:
    """Create a folder and its missing parents as 0700 (chmod: the umask may have narrowed or,
    at 000, not applied to what mkdir asked)."""
    if path.is_dir():  # the common case: one look, not one per parent
        return
    missing = [p for p in [path, *path.parents] if not p.exists()]
    path.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
    for p in missing:
        os.chmod(p, FOLDER_MODE)


def private_file(path: Path) -> Path:
    """An empty file created 0600 (for writers that open a path themselves)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE))
    os.chmod(path, FILE_MODE)
    return path


def _tmp_prefix() -> str:
    """Temporary objects name their writer, so a sweep can tell a dead run's from a live one's."""
    return f"{TMP_PREFIX}{staging.owner_tag()}"


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing says of one object."""

    key: str
    size: int
    modified: dt.datetime
    version: str | None = None


@dataclass(frozen=True)
class VersionInfo:
    """One version (or delete marker) of an object on a versioned store."""

    key: str
    version: str
    latest: bool
    delete_marker: bool


def store_errors() -> tuple[type[BaseException], ...]:
    """What a store or the network raises when one request fails (after the client's retries):
    a local file error, an S3 error answer, or a connection broken mid-request or mid-body."""
    from botocore.exceptions import BotoCoreError, ClientError
    from urllib3.exceptions import HTTPError

    return (OSError, ClientError, BotoCoreError, HTTPError)


class ObjectStore(ABC):
    """The few operations the pipeline needs from object storage."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def put_file(self, key: str, path: Path, lock_until: dt.datetime | None = None) -> None:
        """Upload a local file as one object, optionally under a COMPLIANCE retention."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def open(self, key: str) -> IO[bytes]:
        """A binary stream of the object, read without loading it whole."""

    def open_seekable(self, key: str) -> IO[bytes]:
        """A seekable stream (Parquet readers jump to the footer and to the columns they need)."""
        return self.open(key)

    @abstractmethod
    def info(self, key: str) -> ObjectInfo | None: ...

    @abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...

    def list_after(self, prefix: str, after: str) -> Iterator[ObjectInfo]:
        """The objects under `prefix` whose keys sort after `after` (S3 starts its listing
        there, so the tail of a long, ordered prefix costs one request, not all of them)."""
        return (o for o in self.list(prefix) if o.key > after)

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def uri(self, key: str) -> str: ...

    def exists(self, key: str) -> bool:
        return self.info(key) is not None

    @abstractmethod
    def put_new(self, key: str, data: bytes) -> bool:
        """Create an object only if no object has the key; False if one already does."""

    def purge(self, key: str, through: str | None = None) -> list[str]:
        """Delete an object and, on a versioned store, every version and delete marker of it
        (with `through`, only that version and older ones: a newer upload is left alone).

        Returns what could not be deleted (a version still under Object Lock), never forcing it.
        """
        self.delete(key)
        return []

    def stale_temporary(self, older_than: dt.timedelta = staging.STALE_AFTER) -> list[str]:
        """Partial objects left by writers that are gone (a run killed while publishing)."""
        return []

    def sweep_temporary(self, older_than: dt.timedelta = staging.STALE_AFTER) -> int:
        """Remove the partial objects of writers that are gone; how many were removed."""
        return 0

    def delete_version(self, key: str, version: str) -> None:
        """Delete one version of an object (a folder has only the current one)."""
        self.delete(key)

    def versions(self, prefix: str) -> Iterator[VersionInfo]:
        """Every version and delete marker under `prefix` (a folder has current objects only)."""
        for obj in self.list(prefix):
            yield VersionInfo(obj.key, "null", True, False)

    def supports_lock(self) -> bool:
        """Whether objects can be put under Object Lock (COMPLIANCE) here."""
        return False

    def _version_lock(self, key: str, version: str) -> str:
        head = self.client.head_object(Bucket=self.bucket, Key=self._key(key), VersionId=version)
        until = head.get("ObjectLockRetainUntilDate")
        return until.date().isoformat() if until else "(lock date unreadable)"

    def lock_until(self, key: str) -> dt.datetime | None:
        """The retain-until date of an object, where the store has Object Lock."""
        return None

    def set_lock(self, key: str, until: dt.datetime) -> None:
        """Hold an object under COMPLIANCE retention until `until` (extend only)."""
        raise NotImplementedError("this store has no Object Lock")

    def abort_stale_uploads(self, older_than: dt.datetime) -> int:
        """Abort unfinished multipart uploads begun before `older_than` (none on a folder)."""
        return 0

    def download(self, key: str, path: Path, version: str | None = None) -> None:
        """The object (`version` of it, on a versioned store) into a local file."""
        with self.open(key) as src, open(private_file(path), "wb") as dst:
            shutil.copyfileobj(src, dst, 8 << 20)


def _through(found: list[VersionInfo], through: str) -> list[VersionInfo]:
    """The versions of one key to delete for `purge(through=...)`: the one named and older
    ones. Every upload after it stays (S3 lists a key's versions newest first), and so do the
    delete markers while a newer upload stays (deleting one could bring an older one back)."""
    uploads = [v for v in found if not v.delete_marker]
    named = next((i for i, v in enumerate(uploads) if v.version == through), None)
    if named is None:  # already gone: only what is not the current upload
        return [v for v in found if not (v.latest and not v.delete_marker)]
    newer = uploads[:named]
    return uploads[named:] + ([] if newer else [v for v in found if v.delete_marker])


def _stat_info(key: str, st: os.stat_result) -> ObjectInfo:
    """What a listing says of a local file, from its `stat`."""
    return ObjectInfo(key, st.st_size, dt.datetime.fromtimestamp(st.st_mtime, dt.UTC))


class LocalStore(ObjectStore):
    """A folder as object store: the embedded default."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self._inside = str(self.root) + os.sep
        private_folder(self.root)

    def _path(self, key: str) -> Path:
        real = os.path.realpath(os.path.join(self._inside, key))  # symbolic links followed
        if not real.startswith(self._inside):
            raise ValueError(f"key escapes the store: {key!r}")
        return Path(real)

    def _staged(self, key: str, data: bytes) -> tuple[Path, Path]:
        """Write `data` durably to a temporary file beside the key's path: (tmp, path)."""
        path = self._path(key)
        private_folder(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(), dir=path.parent)  # 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Path(tmp), path

    def put_bytes(self, key: str, data: bytes) -> None:
        tmp, path = self._staged(key, data)
        try:
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def put_new(self, key: str, data: bytes) -> bool:
        tmp, path = self._staged(key, data)
        try:
            os.link(tmp, path)  # atomic, and fails if the key exists
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def put_file(self, key: str, path: Path, lock_until: dt.datetime | None = None) -> None:
        target = self._path(key)
        private_folder(target.parent)
        tmp = private_file(target.parent / f"{_tmp_prefix()}{uuid.uuid4().hex}")
        try:
            shutil.copyfile(path, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def get_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def open(self, key: str) -> IO[bytes]:
        return open(self._path(key), "rb")

    def open_seekable(self, key: str) -> IO[bytes]:
        """A pyarrow file: Parquet readers read it without taking Python's lock, so searches
        read several parts at once on every core."""
        import pyarrow as pa

        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(key)
        return pa.OSFile(str(path), "rb")  # type: ignore[return-value]

    def info(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        if not path.is_file():
            return None
        st = path.stat()
        return _stat_info(key, st)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if base.is_file():
            found = [base]
        elif base.is_dir() and (prefix.endswith("/") or not prefix.strip("/")):
            found = sorted(p for p in base.rglob("*") if p.is_file())
        else:  # a prefix that ends inside a name: every key that starts with it, as on S3
            found = []
            if base.parent.is_dir():
                for p in sorted(base.parent.iterdir()):
                    if p.name.startswith(base.name):
                        found += (
                            [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
                        )
        for p in found:
            if p.name.startswith(TMP_PREFIX):
                continue
            key = p.relative_to(self.root).as_posix()
            st = p.stat()
            yield _stat_info(key, st)

    def list_after(self, prefix: str, after: str) -> Iterator[ObjectInfo]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if not (prefix.endswith("/") and base.is_dir()):
            return super().list_after(prefix, after)
        # The names alone are compared; only the objects after `after` are looked at (a
        # folder holding folders is walked as `list` walks it).
        with os.scandir(base) as found:
            names = [(e.name, e.is_dir(follow_symlinks=False)) for e in found]
        if any(folder for _, folder in names):
            return super().list_after(prefix, after)
        rel = base.relative_to(self.root).as_posix() + "/"
        later = sorted(rel + n for n, _ in names if rel + n > after and not n.startswith(TMP_PREFIX))  # fmt: skip
        return (_stat_info(key, st) for key in later if (st := os.stat(self.root / key)))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def stale_temporary(self, older_than: dt.timedelta = staging.STALE_AFTER) -> list[str]:
        """`.tmp-` files (which `list` never shows) of writers that are gone, as paths."""
        found = []
        for p in self.root.rglob(f"{TMP_PREFIX}*"):
            try:
                modified = p.stat().st_mtime
            except FileNotFoundError:
                continue
            if p.is_file() and staging.is_stale(p.name, TMP_PREFIX, modified, older_than):
                found.append(p.relative_to(self.root).as_posix())
        return sorted(found)

    def sweep_temporary(self, older_than: dt.timedelta = staging.STALE_AFTER) -> int:
        stale = self.stale_temporary(older_than)
        for rel in stale:
            (self.root / rel).unlink(missing_ok=True)
        return len(stale)

    def uri(self, key: str) -> str:
        return str(self._path(key))


T = TypeVar("T")
RETRIES = 4  # after boto3's own: a body cut mid-stream, or a part upload that gave up
#: Answers that say the request itself is wrong: retrying cannot help.
FINAL = {"NoSuchKey", "404", "NotFound", "PreconditionFailed", "412", "AccessDenied", "403",
         "InvalidRequest", "NoSuchBucket", "NoSuchVersion"}  # fmt: skip


def retried(step: Callable[[], T], what: str) -> T:
    """Run a whole request (including reading its body) again after a transient failure,
    with exponential backoff; the last failure is raised."""
    from botocore.exceptions import ClientError

    for attempt in range(RETRIES):
        try:
            return step()
        except store_errors() as exc:
            final = isinstance(exc, ClientError) and (
                exc.response.get("Error", {}).get("Code") in FINAL
            )
            if final or isinstance(exc, FileNotFoundError) or attempt == RETRIES - 1:
                raise
            log.info("%s failed (%s), retrying", what, type(exc).__name__)
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


class _RangeReader(io.RawIOBase):
    """An S3 object read by ranged GETs: only the bytes asked for cross the network."""

    def __init__(self, store: S3Store, key: str, size: int) -> None:
        self._store, self._key, self._size, self._pos = store, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        rng = f"bytes={self._pos}-{self._pos + n - 1}"
        store, key = self._store, self._store._key(self._key)

        def fetch() -> bytes:
            answer = store.client.get_object(Bucket=store.bucket, Key=key, Range=rng)
            body: bytes = answer["Body"].read()
            return body

        data = retried(fetch, f"reading {self._key}")
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


class S3Store(ObjectStore):
    """S3 or any S3-compatible store (MinIO) through boto3."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self._lock: bool | None = None

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _strip(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, ChecksumAlgorithm="SHA256"
        )

    def put_new(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                IfNoneMatch="*",
                ChecksumAlgorithm="SHA256",
            )
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"PreconditionFailed", "412"}:
                return False
            raise

    def versions(self, prefix: str) -> Iterator[VersionInfo]:
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            for kind, marker in (("Versions", False), ("DeleteMarkers", True)):
                for v in page.get(kind, []):
                    key, latest = self._strip(v["Key"]), bool(v.get("IsLatest"))
                    yield VersionInfo(key, v["VersionId"], latest, marker)

    def delete_version(self, key: str, version: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key), VersionId=version)

    def purge(self, key: str, through: str | None = None) -> list[str]:
        from botocore.exceptions import ClientError

        found = [v for v in self.versions(key) if v.key == key]
        if through is not None:
            found = _through(found, through)
        left = []
        for v in found:
            try:
                self.delete_version(key, v.version)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code not in {"AccessDenied", "InvalidRequest"}:
                    raise
                left.append(f"{self.uri(key)} locked until {self._version_lock(key, v.version)}")
        return left

    def put_file(self, key: str, path: Path, lock_until: dt.datetime | None = None) -> None:
        extra: dict[str, Any] = {"ChecksumAlgorithm": "SHA256"}
        if lock_until is not None and self.supports_lock():
            extra["ObjectLockMode"] = "COMPLIANCE"
            extra["ObjectLockRetainUntilDate"] = lock_until
        # A failed multipart upload is aborted by the transfer manager; the whole upload is
        # retried, and parts a crash leaves behind are aborted by retention after a day.
        retried(
            lambda: self.client.upload_file(
                str(path), self.bucket, self._key(key), ExtraArgs=extra
            ),
            f"uploading {key}",
        )

    def get_bytes(self, key: str) -> bytes:
        return retried(
            lambda: self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read(),
            f"reading {key}",
        )

    def download(self, key: str, path: Path, version: str | None = None) -> None:
        """The whole object (that `version`: the bytes described, even if a newer upload
        replaced them since) into a local file; a connection cut mid-body starts it again."""
        pinned = {"VersionId": version} if version else {}

        def fetch() -> None:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **pinned)["Body"]
            with body, open(path, "wb") as dst:
                shutil.copyfileobj(body, dst, 8 << 20)

        retried(fetch, f"downloading {key}")

    def abort_stale_uploads(self, older_than: dt.datetime) -> int:
        """Abort multipart uploads begun before `older_than` (a crashed upload's parts)."""
        aborted = 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key("")):
            for upload in page.get("Uploads", []):
                if upload["Initiated"] < older_than:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted += 1
        return aborted

    def open(self, key: str) -> IO[bytes]:
        stream: IO[bytes] = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        return stream

    def open_seekable(self, key: str) -> IO[bytes]:
        info = self.info(key)
        if info is None:
            raise FileNotFoundError(key)
        return io.BufferedReader(_RangeReader(self, key, info.size), buffer_size=1 << 20)

    def info(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise
        return ObjectInfo(key, head["ContentLength"], head["LastModified"], head.get("VersionId"))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self._list(prefix)

    def list_after(self, prefix: str, after: str) -> Iterator[ObjectInfo]:
        return self._list(prefix, StartAfter=self._key(after))

    def _list(self, prefix: str, **start: str) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix), **start):
            for obj in page.get("Contents", []):
                yield ObjectInfo(self._strip(obj["Key"]), obj["Size"], obj["LastModified"])

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def supports_lock(self) -> bool:
        """Whether the bucket has Object Lock. Only the bucket's own answer that it has none
        counts as "no lock"; any other error is raised (and not remembered), never read as no."""
        if self._lock is None:
            from botocore.exceptions import ClientError

            try:
                conf = self.client.get_object_lock_configuration(Bucket=self.bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in NO_LOCK:
                    raise
                conf = {}
            state = conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
            self._lock = state == "Enabled"
        return self._lock

    def _version_lock(self, key: str, version: str) -> str:
        head = self.client.head_object(Bucket=self.bucket, Key=self._key(key), VersionId=version)
        until = head.get("ObjectLockRetainUntilDate")
        return until.date().isoformat() if until else "(lock date unreadable)"

    def lock_until(self, key: str) -> dt.datetime | None:
        # head_object, not get_object_retention: the latter is not served by every S3 clone.
        head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        until: dt.datetime | None = head.get("ObjectLockRetainUntilDate")
        return until

    def set_lock(self, key: str, until: dt.datetime) -> None:
        self.client.put_object_retention(
            Bucket=self.bucket,
            Key=self._key(key),
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until},
        )


def read_parquet(store: ObjectStore, key: str) -> pl.DataFrame:
    """A whole Parquet object as a polars frame (for objects a month's work reads whole)."""
    import polars as pl
    import pyarrow.parquet as pq

    frame = pl.from_arrow(pq.read_table(io.BytesIO(store.get_bytes(key))))
    assert isinstance(frame, pl.DataFrame)
    return frame


def aws_client(service: str, endpoint_url: str | None, **credentials: str) -> Any:
    """A boto3 client (`s3`, `kms`); `endpoint_url` points at MinIO or a test endpoint, and
    `credentials` (aws_access_key_id, aws_secret_access_key, region_name) come from an Airflow
    connection when one is set, else boto3 finds its own."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        **credentials,
    )


def s3_client(endpoint_url: str | None, **credentials: str) -> Any:
    return aws_client("s3", endpoint_url, **credentials)


#: Makes the boto3 client of one service (`s3`, `kms`), given the endpoint the settings name for
#: it (None: AWS's own). The CLI's comes from boto3's chain; in Airflow, a task passes one built
#: from the Amazon provider's AWS connection, so `pipeline/` never imports Airflow.
ClientFactory = Callable[[str, str | None], Any]


def boto3_clients(credentials: dict[str, str] | None = None) -> ClientFactory:
    """Clients from boto3's own chain (environment, profile, instance role), or from the
    given keys and region."""
    given = dict(credentials or {})
    return lambda service, endpoint_url: aws_client(service, endpoint_url, **given)


def split_s3(uri: str) -> tuple[str, str]:
    """The bucket and the rest (prefix or key) of an `s3://bucket/rest` URI."""
    bucket, _, rest = uri[len("s3://") :].partition("/")
    return bucket, rest


def open_store(
    location: str,
    endpoint_url: str | None = None,
    client: Any = None,
    credentials: dict[str, str] | None = None,
) -> ObjectStore:
    """A store from a folder path or an `s3://bucket/prefix` URI."""
    if location.startswith("s3://"):
        bucket, prefix = split_s3(location)
        if not bucket:
            raise ValueError(f"no bucket in store URI {location!r}")
        return S3Store(bucket, prefix, client or s3_client(endpoint_url, **(credentials or {})))
    return LocalStore(location)
