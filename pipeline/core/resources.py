"""The run's resources, built once from settings: stores, keyring, policy and quality.

Every use case (ingest, retention, holds, export, verify) takes a `Resources` instead of
opening stores and keyrings itself, so the CLI, the DAGs, the bench and the tests hand the same
parts to the same functions, and a test can inject a store of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.config import Settings
from pipeline.core.keys import LocalKeyring, open_keyring
from pipeline.core.policy import RetentionPolicy, load_policy
from pipeline.core.store import ObjectStore, open_store
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
    def from_settings(cls, settings: Settings, policy: RetentionPolicy | None = None) -> Resources:
        """Open everything the settings name; `policy` replaces the configured policy file."""
        store = open_store(settings.store, settings.s3_endpoint_url, credentials=settings.aws())
        bronze = (
            store
            if settings.bronze_store == settings.store
            else open_store(
                settings.bronze_store, settings.s3_endpoint_url, credentials=settings.aws()
            )
        )
        keyring = open_keyring(
            settings.keyring, settings.key_folder, settings.kms_endpoint_url, settings.aws()
        )
        return cls(
            store,
            bronze,
            keyring,
            settings,
            Quality(settings.data_docs, settings.s3_endpoint_url, settings.aws()),
            policy or load_policy(settings.retention_policy or None),
        )


def open_data_store(settings: Settings) -> ObjectStore:
    """Only the main store, for commands that read reports and need no keys."""
    return open_store(settings.store, settings.s3_endpoint_url, credentials=settings.aws())
