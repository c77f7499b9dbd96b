"""Inside Airflow the S3 and KMS clients come from the Amazon provider's `AwsBaseHook` on the
AWS connection (`CDR_AWS_CONN_ID`), defined here as AIRFLOW_CONN_* JSON as a deployment's
environment or secrets backend defines it; moto's server stands in for S3, STS and KMS."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from pipeline.core.store import open_store
from pipeline.flows.ingest import copy_into_landing
from pipeline.records.synth import generate
from tests.helpers import load_dag, read_tier


def _aws_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **extra: object) -> None:
    connection = {"conn_type": "aws", "login": "AKIDFROMCONNECTION", "password": "secret",
                  "extra": {"region_name": "us-east-1", **extra}}  # fmt: skip
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    monkeypatch.setenv("CDR_AWS_CONN_ID", conn_id)


@pytest.mark.slow
@pytest.mark.airflow
@pytest.mark.s3
def test_the_ingest_dag_reaches_the_store_through_the_aws_connection(
    airflow_db: None,
    tmp_path: Path,
    moto_endpoint: str,
    s3_buckets: tuple[str, str],
    s3_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, _ = s3_buckets
    g = generate("canonical_csv", tmp_path / "in.csv", 300, seed=3, start=dt.date(2025, 5, 1))
    copy_into_landing(open_store(f"s3://{data}/cdr", moto_endpoint), g.path, "src-a")
    # The endpoint is only in the connection: without the hook, boto3 would go to AWS itself.
    env = {k: v for k, v in s3_env.items() if k != "CDR_S3_ENDPOINT_URL"}
    for key, value in {**env, "CDR_DEFAULT_REGION": "PK"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CDR_S3_ENDPOINT_URL", raising=False)
    _aws_connection(monkeypatch, "cdr_aws", endpoint_url=moto_endpoint)

    run = load_dag("cdr_ingest").test(logical_date=dt.datetime(2025, 6, 15, tzinfo=dt.UTC))

    assert run.state == "success"
    res = Resources.from_settings(Settings.from_env(s3_env))
    assert len(read_tier(res.store, "gold/")) + len(read_tier(res.store, "quarantine/rows/")) == g.rows  # fmt: skip
    assert [o.key for o in res.bronze.list("bronze/")]  # the original, sealed in the lock bucket
    assert list(res.store.list("landing/")) == []


@pytest.mark.airflow
@pytest.mark.s3
def test_a_role_in_the_connection_is_assumed_and_its_endpoint_used(
    moto_endpoint: str, s3_buckets: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cdr_airflow.aws import task_clients

    data, _ = s3_buckets
    _aws_connection(monkeypatch, "cdr_role", endpoint_url=moto_endpoint,
                    role_arn="arn:aws:iam::123456789012:role/cdr-pipeline",
                    service_config={"sts": {"endpoint_url": moto_endpoint}})  # fmt: skip
    clients = task_clients()
    assert clients is not None
    s3 = clients("s3", "http://ignored.invalid:1")  # the connection's endpoint wins
    assert s3.meta.endpoint_url == moto_endpoint
    key = s3._request_signer._credentials.get_frozen_credentials().access_key
    assert key != "AKIDFROMCONNECTION" and key.startswith("ASIA")  # STS session credentials
    store = open_store(f"s3://{data}/cdr", client=s3)
    store.put_bytes("probe.txt", b"ok")
    assert store.get_bytes("probe.txt") == b"ok"
    assert store.put_new("probe.txt", b"again") is False  # conditional writes still hold


def test_without_an_aws_connection_the_clients_are_boto3s_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cdr_airflow.aws import aws_conn_id, task_clients

    monkeypatch.delenv("CDR_AWS_CONN_ID", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)
    assert aws_conn_id() == "aws_default"
    assert task_clients() is None  # no aws_default: boto3's chain, as on the command line
    monkeypatch.setenv("CDR_AWS_CONN_ID", "")
    assert aws_conn_id() is None and task_clients() is None


def test_a_named_aws_connection_that_does_not_exist_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cdr_airflow.aws import task_clients

    monkeypatch.setenv("CDR_AWS_CONN_ID", "cdr_missing")
    with pytest.raises(LookupError, match="CDR_AWS_CONN_ID=cdr_missing"):
        task_clients()
