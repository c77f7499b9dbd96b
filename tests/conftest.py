"""Test set-up: Airflow's home and DAG folder before anything imports airflow; shared fixtures.

Airflow settings come from environment variables, the same path a deployment uses, never from
monkeypatching Airflow itself.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="cdr-airflow-")
os.environ.update(
    {
        "CDR_HOME": tempfile.mkdtemp(prefix="cdr-home-"),  # Data Docs and defaults, per session
        "AIRFLOW_HOME": _AIRFLOW_HOME,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
)

import datetime as dt  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from pipeline.core.config import Settings  # noqa: E402
from pipeline.core.resources import Resources  # noqa: E402

AS_OF = dt.date(2025, 6, 15)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {
            "CDR_STORE": str(tmp_path / "store"),
            "CDR_KEYRING": str(tmp_path / "keyring"),
            "CDR_DATA_DOCS": str(tmp_path / "data_docs"),
            "CDR_DEFAULT_REGION": "PK",
            "CDR_BATCH_ROWS": "700",  # small batches: every test crosses batch boundaries
            "CDR_LANDING_SETTLE_SECONDS": "0",  # files land just before a test ingests them
            "CDR_SOURCE_TIMEZONE": "UTC",  # the generated files' times without an offset are UTC
        }
    )


@pytest.fixture
def local_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A local store, keyring and Data Docs folder, set as environment variables (as deployed)."""
    env = {
        "CDR_STORE": str(tmp_path / "store"),
        "CDR_KEYRING": str(tmp_path / "keys"),
        "CDR_DATA_DOCS": str(tmp_path / "docs"),
        "CDR_LANDING_SETTLE_SECONDS": "0",  # files land just before a test ingests them
        "CDR_SOURCE_TIMEZONE": "UTC",  # the generated files' times without an offset are UTC
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def res(settings: Settings) -> Resources:
    return Resources.from_settings(settings)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1: a real HTTP endpoint, no boto3 patching."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_buckets(moto_endpoint: str) -> Iterator[tuple[str, str]]:
    """A data bucket and an Object Lock bucket for bronze, fresh for each test."""
    import urllib.request
    import uuid

    from pipeline.core.store import s3_client

    client = s3_client(moto_endpoint)
    suffix = uuid.uuid4().hex[:8]
    data, bronze = f"cdr-data-{suffix}", f"cdr-bronze-{suffix}"
    client.create_bucket(Bucket=data)
    client.create_bucket(Bucket=bronze, ObjectLockEnabledForBucket=True)
    yield data, bronze
    req = urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(req).close()


@pytest.fixture
def s3_env(tmp_path: Path, s3_buckets: tuple[str, str], moto_endpoint: str) -> dict[str, str]:
    """Settings for a store on moto's S3 (bronze in the Object Lock bucket), keys in tmp_path."""
    data, bronze = s3_buckets
    return {
        "CDR_STORE": f"s3://{data}/cdr",
        "CDR_BRONZE_STORE": f"s3://{bronze}",
        "CDR_S3_ENDPOINT_URL": moto_endpoint,
        "CDR_KEYRING": str(tmp_path / "keys"),
        "CDR_DATA_DOCS": str(tmp_path / "docs"),
        "CDR_LANDING_SETTLE_SECONDS": "0",  # files land just before a test ingests them
        "CDR_SOURCE_TIMEZONE": "UTC",  # the generated files' times without an offset are UTC
    }


@pytest.fixture(scope="session")
def airflow_db() -> None:
    from airflow.utils import db

    db.initdb()


@pytest.fixture(autouse=True)
def _deep_verified(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """After every test, every file it ingested into a local store reads back as its sealed
    original: `verify --deep` finds no difference beyond the documented normal-course changes.
    Tests that change a kept record or a reader on purpose are marked `tampers`."""
    yield
    if request.node.get_closest_marker("tampers") is None:
        from tests.helpers import deep_differences

        problems = deep_differences(tmp_path)
        assert not problems, f"verify --deep differences: {problems[:5]}"
