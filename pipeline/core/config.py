"""One frozen settings object, read from the environment, with the embedded defaults.

Nothing here reads Airflow Variables or touches the network: DAGs and the CLI both call
`Settings.from_env()` when a task or command starts, never at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.core import layout

DEFAULT_HOME = Path(os.environ.get("CDR_HOME", "var")).resolve()
#: Rows per ingest batch (`CDR_BATCH_ROWS`): what an ingest holds in memory at once.
BATCH_ROWS = 40_000

#: Extras of the `cdr_store` Airflow connection (type aws) and the variable each replaces.
CONNECTION_EXTRAS = {
    "endpoint_url": "CDR_S3_ENDPOINT_URL",
    "kms_endpoint_url": "CDR_KMS_ENDPOINT_URL",
    "store": "CDR_STORE",
    "bronze_store": "CDR_BRONZE_STORE",
    "keyring_dir": "CDR_KEYRING_DIR",
}


def _zones(text: str) -> tuple[tuple[str, str], ...]:
    """`CDR_SOURCE_TIMEZONES`: `source=Zone` pairs separated by commas."""
    pairs = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        source, sep, zone = item.partition("=")
        if not sep or not source.strip() or not zone.strip():
            raise ValueError(f"CDR_SOURCE_TIMEZONES wants source=Zone pairs, not {item!r}")
        pairs.append((source.strip(), zone.strip()))
    return tuple(pairs)


def _flag(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in {"", "0", "false", "no", "off"}:
        return False
    if value in {"1", "true", "yes", "on"}:
        return True
    raise ValueError(f"{name} must be true or false, not {text!r}")


@dataclass(frozen=True)
class Settings:
    """Where the store and the keys live, and how sources are read.

    `store` is a local folder path or `s3://bucket/prefix`. `bronze_store` may name a separate
    bucket (with Object Lock) for the encrypted originals; by default it is the main store.
    `keyring` must never be inside the store: keys and the data they protect are kept apart so
    that deleting a key really shreds the data. It is a folder, or `kms://<key id or alias>` to
    keep the key-encryption key in AWS KMS, the wrapped keys then in `keyring_dir`.
    """

    store: str
    bronze_store: str
    keyring: str
    s3_endpoint_url: str | None
    default_region: str | None
    #: the zone of every source's times written without an offset (`CDR_SOURCE_TIMEZONE`);
    #: None: unknown, so such a time is quarantined, never assumed UTC
    source_timezone: str | None
    batch_rows: int
    data_docs: str
    keyring_dir: str = ""
    bronze_lock: bool = False
    kms_endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_region: str | None = None
    retention_policy: str = ""
    #: how often long work on a file logs its progress (bytes read, rate, records)
    progress_seconds: float = 30.0
    #: a landing object is taken once its size and modification time have not changed for
    #: this long (a younger one is waited for, then looked at again)
    landing_settle_seconds: float = 2.0
    #: an ingest's lease lives this long after its last renewal (renewed every fifth of it):
    #: a run gone for longer, on any host, has its files taken over
    lease_seconds: float = 300.0
    #: a zone per source (`CDR_SOURCE_TIMEZONES`: `source=Zone,...`), over `source_timezone`
    source_timezones: tuple[tuple[str, str], ...] = ()
    #: a compressed delivery is refused once its content passes this many bytes, or this
    #: many times its delivered size (`CDR_UNPACK_MAX_BYTES`, `CDR_UNPACK_MAX_RATIO`)
    unpack_max_bytes: int = 32 << 30
    #: the source of a file ingested by path (or put directly in landing/) without one
    #: (`CDR_DEFAULT_SOURCE`): one name for the deployment, so that the same records delivered
    #: again in another format or wrapping are found as re-deliveries
    default_source: str = "default"
    unpack_max_ratio: float = 500.0
    #: the DAG's mapped ingest takes landing files in batches of at most this many files and
    #: bytes (`CDR_INGEST_BATCH_FILES`, `CDR_INGEST_BATCH_BYTES`); a bigger file has its own
    batch_files: int = 50
    batch_bytes: int = 64 << 20

    def zone_for(self, source: str, registered: str | None = None) -> str | None:
        """The zone a source's times without an offset are read in: `CDR_SOURCE_TIMEZONES`'
        entry for it, else the source registry's (`registered`), else `CDR_SOURCE_TIMEZONE`
        (None: unknown)."""
        return dict(self.source_timezones).get(source, registered or self.source_timezone)

    def zone_read_in(self, body: dict[str, Any]) -> str | None:
        """The zone an ingested file's times without an offset were read in: as its parse
        entry says. Entries written before it was recorded read canonical and messaging
        files in UTC, and PBX files in `CDR_SOURCE_TIMEZONE` (then UTC unless set)."""
        if "source_timezone" in body:
            return body["source_timezone"]  # type: ignore[no-any-return]
        if body.get("format") in ("asterisk", "freeswitch"):
            return self.zone_for(str(body.get("source") or "")) or "UTC"
        return "UTC"

    @classmethod
    def from_env(
        cls, env: dict[str, str] | None = None, connection: dict[str, Any] | None = None
    ) -> Settings:
        """From CDR_* variables; an Airflow connection's fields (`connection`: login, password,
        extra) take precedence where they are set (see `CONNECTION_EXTRAS`)."""
        e = dict(os.environ if env is None else env)
        conn = connection or {}
        extra = conn.get("extra") or {}
        for name, variable in CONNECTION_EXTRAS.items():
            if extra.get(name):
                e[variable] = str(extra[name])
        if extra.get("kms_key"):
            e["CDR_KEYRING"] = f"kms://{extra['kms_key']}"
        store = e.get("CDR_STORE") or str(DEFAULT_HOME / "store")
        settings = cls(
            store=store,
            bronze_store=e.get("CDR_BRONZE_STORE") or store,
            keyring=e.get("CDR_KEYRING") or str(DEFAULT_HOME / "keyring"),
            s3_endpoint_url=e.get("CDR_S3_ENDPOINT_URL") or None,
            default_region=(e.get("CDR_DEFAULT_REGION") or "").upper() or None,
            source_timezone=(e.get("CDR_SOURCE_TIMEZONE") or "").strip() or None,
            source_timezones=_zones(e.get("CDR_SOURCE_TIMEZONES") or ""),
            batch_rows=int(e.get("CDR_BATCH_ROWS") or BATCH_ROWS),
            data_docs=e.get("CDR_DATA_DOCS") or str(DEFAULT_HOME / "data_docs"),
            keyring_dir=e.get("CDR_KEYRING_DIR") or str(DEFAULT_HOME / "keyring"),
            bronze_lock=_flag("CDR_BRONZE_LOCK", e.get("CDR_BRONZE_LOCK") or ""),
            kms_endpoint_url=e.get("CDR_KMS_ENDPOINT_URL") or None,
            aws_access_key_id=conn.get("login") or None,
            aws_secret_access_key=conn.get("password") or None,
            aws_region=extra.get("region_name") or None,
            retention_policy=e.get("CDR_RETENTION_POLICY") or "",
            progress_seconds=float(e.get("CDR_PROGRESS_SECONDS") or 30),
            landing_settle_seconds=float(e.get("CDR_LANDING_SETTLE_SECONDS") or 2),
            lease_seconds=float(e.get("CDR_LEASE_SECONDS") or 300),
            unpack_max_bytes=int(e.get("CDR_UNPACK_MAX_BYTES") or 32 << 30),
            default_source=e.get("CDR_DEFAULT_SOURCE") or "default",
            unpack_max_ratio=float(e.get("CDR_UNPACK_MAX_RATIO") or 500),
            batch_files=int(e.get("CDR_INGEST_BATCH_FILES") or 50),
            batch_bytes=int(e.get("CDR_INGEST_BATCH_BYTES") or 64 << 20),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse settings that would defeat crypto-shredding or cannot work."""
        if self.batch_rows < 1:
            raise ValueError("CDR_BATCH_ROWS must be a positive whole number")
        if self.batch_files < 1 or self.batch_bytes < 1:
            raise ValueError("CDR_INGEST_BATCH_FILES and CDR_INGEST_BATCH_BYTES must be positive")
        if not self.progress_seconds > 0:
            raise ValueError("CDR_PROGRESS_SECONDS must be a positive number of seconds")
        try:
            layout.source(self.default_source)
        except layout.LayoutError as exc:
            raise ValueError(f"CDR_DEFAULT_SOURCE: {exc}") from None
        if self.unpack_max_bytes < 1 or not self.unpack_max_ratio >= 1:
            raise ValueError(
                "CDR_UNPACK_MAX_BYTES must be positive, CDR_UNPACK_MAX_RATIO at least 1"
            )
        for zone in {self.source_timezone, *dict(self.source_timezones).values()} - {None}:
            try:
                ZoneInfo(str(zone))
            except (ValueError, ZoneInfoNotFoundError):
                raise ValueError(f"not a time zone (e.g. Asia/Karachi, UTC): {zone!r}") from None
        if not 1 <= self.lease_seconds <= 86400:
            raise ValueError("CDR_LEASE_SECONDS must be from 1 to 86400 seconds")
        if not 0 <= self.landing_settle_seconds <= 3600:
            raise ValueError("CDR_LANDING_SETTLE_SECONDS must be from 0 to 3600 seconds")
        if self.bronze_lock and not self.bronze_store.startswith("s3://"):
            raise ValueError("CDR_BRONZE_LOCK needs an S3 bronze store: a folder cannot lock")
        if self.keyring.startswith("kms://") and len(self.keyring) <= len("kms://"):
            raise ValueError("CDR_KEYRING=kms:// needs a key id, ARN or alias after it")
        if not self.keyring.startswith("s3://"):
            keyring = Path(self.key_folder).resolve()
            for store in {self.store, self.bronze_store}:
                if store.startswith("s3://"):
                    continue
                root = Path(store).resolve()
                if keyring == root or root in keyring.parents:
                    raise ValueError(
                        f"the keyring ({keyring}) must not be inside the store ({root}): "
                        "keys kept beside the data cannot shred it"
                    )
        else:
            raise ValueError("CDR_KEYRING must be a local folder; it never lives in the store")

    def aws(self) -> dict[str, str]:
        """boto3 client arguments from the connection, if any (else boto3's own chain)."""
        given = {
            "aws_access_key_id": self.aws_access_key_id,
            "aws_secret_access_key": self.aws_secret_access_key,
            "region_name": self.aws_region,
        }
        return {k: v for k, v in given.items() if v}

    @property
    def key_folder(self) -> str:
        """Where the keyring's files are: CDR_KEYRING, or CDR_KEYRING_DIR under KMS."""
        return self.keyring_dir if self.keyring.startswith("kms://") else self.keyring
