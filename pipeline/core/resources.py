"""The run's resources, built once from settings: stores, keyring, policy and quality.

Every use case (ingest, retention, holds, export, verify) takes a `Resources` instead of
opening stores and keyrings itself, so the CLI, the DAGs, the bench and the tests hand the same
parts to the same functions, and a test can inject a store of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.core.config import Settings
from pipeline.core.keys import LocalKeyring, open_keyring
from pipeline.core.policy import RetentionPolicy, load_policy
from pipeline.core.store import ClientFactory, ObjectStore, boto3_clients, open_store
from pipeline.records.quality import Quality


@dataclass
class Resources:
    """The store, the bronze store, the keyring, the retention policy and the quality runner."""

    store: ObjectStore
    bronze: ObjectStore
    keyring: LocalKeyring
    settings: Settings
    quality: Quality
    policy: RetentionPolicy

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        policy: RetentionPolicy | None = None,
        clients: ClientFactory | None = None,
    ) -> Resources:
        """Open everything the settings name; `policy` replaces the configured policy file;
        `clients` makes the S3 and KMS clients (default: boto3's chain, or the keys the
        settings carry)."""
        make = clients or boto3_clients(settings.aws())
        s3 = _lazy_s3(make, settings.s3_endpoint_url)
        store = open_store(settings.store, client=s3(settings.store))
        bronze = (
            store
            if settings.bronze_store == settings.store
            else open_store(settings.bronze_store, client=s3(settings.bronze_store))
        )
        on_kms = settings.keyring.startswith("kms://")
        kms = make("kms", settings.kms_endpoint_url) if on_kms else None
        keyring = open_keyring(settings.keyring, settings.key_folder, client=kms)
        return cls(
            store,
            bronze,
            keyring,
            settings,
            Quality(
                settings.data_docs, client=s3(settings.data_docs), region=settings.default_region
            ),
            policy or load_policy(settings.retention_policy or None),
        )

    def zone_for(self, source: str) -> str | None:
        """The zone a source's times without an offset are read in, the source registry's
        zone taken into account (`Settings.zone_for`)."""
        rule = self.policy.sources.get(source)
        return self.settings.zone_for(source, rule.timezone if rule else None)

    def format_for(self, source: str) -> str | None:
        """The format the source registry declares a source's files are in, if any."""
        rule = self.policy.sources.get(source)
        return rule.format if rule else None


def _lazy_s3(make: ClientFactory, endpoint_url: str | None) -> Callable[[str], Any]:
    """The one S3 client the run's stores share, made only if a location is on S3."""
    made: list[Any] = []

    def client_for(location: str) -> Any:
        if not location.startswith("s3://"):
            return None
        if not made:
            made.append(make("s3", endpoint_url))
        return made[0]

    return client_for


def open_data_store(settings: Settings, clients: ClientFactory | None = None) -> ObjectStore:
    """Only the main store, for commands that read reports and need no keys."""
    make = clients or boto3_clients(settings.aws())
    return open_store(
        settings.store, client=_lazy_s3(make, settings.s3_endpoint_url)(settings.store)
    )
