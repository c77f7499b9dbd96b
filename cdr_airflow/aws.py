"""AWS access inside Airflow through the Amazon provider: the boto3 clients of the store (S3)
and the keyring (KMS) come from `AwsBaseHook` on an Airflow connection of type `aws`.

The connection is named by `CDR_AWS_CONN_ID` (default `aws_default`; empty: none). It carries
what the provider understands: keys (login, password), `role_arn` (assumed, credentials
refreshed), `profile_name`, `region_name`, `endpoint_url` (MinIO, a test endpoint; per service
under `service_config`), `botocore_config`. Where the connection names no endpoint, the
settings' `CDR_S3_ENDPOINT_URL` / `CDR_KMS_ENDPOINT_URL` apply. The project's store layer (Object
Lock, conditional writes, version purges) is unchanged: only the clients come from the hook.
"""

from __future__ import annotations

import os
from typing import Any

from cdr_airflow.settings import find_connection
from pipeline.core.store import ClientFactory

DEFAULT_CONN_ID = "aws_default"
#: The retries every client of the pipeline has, whatever the connection says.
RETRIES = {"retries": {"max_attempts": 5, "mode": "standard"}}


def aws_conn_id(env: dict[str, str] | None = None) -> str | None:
    """The AWS connection's id from `CDR_AWS_CONN_ID` (unset: `aws_default`; empty: none)."""
    e = os.environ if env is None else env
    value = e.get("CDR_AWS_CONN_ID", DEFAULT_CONN_ID).strip()
    return value or None


def hook_clients(conn_id: str) -> ClientFactory:
    """Clients from one session the provider's hook builds on the connection (its region,
    endpoint, TLS verification and botocore settings, the pipeline's retries added)."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from botocore.config import Config

    hook = AwsBaseHook(aws_conn_id=conn_id, config=Config(**RETRIES))
    session = hook.get_session(region_name=hook.region_name)

    def make(service: str, endpoint_url: str | None) -> Any:
        given = hook.conn_config.get_service_endpoint_url(service_name=service)
        return session.client(
            service,
            endpoint_url=given or endpoint_url,
            config=hook.config,
            verify=hook.verify,
        )

    return make


def task_clients() -> ClientFactory | None:
    """The hook's clients when the AWS connection exists; None (boto3's own chain, or the keys
    of the `cdr_store` connection) when it does not."""
    conn_id = aws_conn_id()
    if conn_id is None:
        return None
    if find_connection(conn_id) is None:
        if os.environ.get("CDR_AWS_CONN_ID"):  # named on purpose: a missing one is a mistake
            raise LookupError(f"CDR_AWS_CONN_ID={conn_id}: Airflow has no such connection")
        return None
    return hook_clients(conn_id)
