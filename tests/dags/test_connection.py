"""In Airflow the store comes from the `cdr_store` connection when it exists (set here as
AIRFLOW_CONN_CDR_STORE, the way a deployment's secrets backend or environment sets it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from pipeline.core.store import open_store
from pipeline.flows import holds
from pipeline.flows.case_request import create_request
from tests.dags.hitl import run_answered


def _fields(connection: dict) -> dict:  # type: ignore[type-arg]
    """The connection as `cdr_airflow.settings` hands it to `Settings.from_env`."""
    return {k: connection[k] for k in ("login", "password", "extra")}


def _request_hold(settings: Settings, case: str) -> None:
    """Record a hold request in the store these settings name, as the officer's CLI would."""
    fields = {"case": case, "reason": "order 1/2026", "requested_by": "a.khan",
              "identifiers": ["+923001234567"], "default_region": "PK"}  # fmt: skip
    create_request(Resources.from_settings(settings), "hold", fields)


@pytest.mark.airflow
def test_the_connection_wins_over_the_variables(
    airflow_db: None,
    tmp_path: Path,
    local_env: dict[str, str],
    s3_buckets: tuple[str, str],
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, _ = s3_buckets
    connection = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": moto_endpoint, "store": f"s3://{data}/cdr",
                  "region_name": "us-east-1"},
    }  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_CDR_STORE", json.dumps(connection))
    _request_hold(Settings.from_env(connection=_fields(connection)), "CONN-1")
    run = run_answered("cdr_legal_hold", {"action": "place", "case": "CONN-1"}, "b.ali")
    assert run.state == "success"
    s3 = open_store(f"s3://{data}/cdr", moto_endpoint)
    assert holds.load(s3, "CONN-1") is not None  # written where the connection says
    assert holds.load(open_store(local_env["CDR_STORE"]), "CONN-1") is None

    monkeypatch.delenv("AIRFLOW_CONN_CDR_STORE")
    _request_hold(Settings.from_env(), "VARS-1")
    run = run_answered("cdr_legal_hold", {"action": "place", "case": "VARS-1"}, "b.ali")
    assert run.state == "success"
    assert holds.load(open_store(local_env["CDR_STORE"]), "VARS-1") is not None
