"""What the Airflow UI shows of an ingest, read where the UI reads it (the metadata database): a
file quarantined whole is a failed mapped task whose alert names it by reference; the other files
still run; asset events are on the store's real URI, with counts, and only when rows were written.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from cdr_airflow import demo_report
from pipeline.core import layout
from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from pipeline.flows.ingest import copy_into_landing
from pipeline.proof.audit import read_log
from pipeline.records.synth import generate
from tests.dags.test_notifications import http_alerts  # noqa: F401 (fixture)
from tests.helpers import load_dag

RAW_NAME = "+923001234567_calls.dat"  # a source that names files after a subscriber


def _states(run_id: str) -> dict[tuple[str, str | None], str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.run_id == run_id).all()
        return {(ti.task_id, ti.rendered_map_index): str(ti.state) for ti in tis}


def _asset_events(run_id: str) -> list[tuple[str, str, dict]]:  # type: ignore[type-arg]
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(AssetModel.name, AssetModel.uri, AssetEvent.extra)
            .join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetEvent.source_run_id == run_id)
            .all()
        )
        return [(name, uri, dict(extra)) for name, uri, extra in rows]


@pytest.mark.airflow
def test_a_file_quarantined_whole_fails_its_task_and_is_named_by_reference(
    airflow_db: None,
    tmp_path: Path,
    local_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    http_alerts: list[tuple[str, dict]],  # type: ignore[type-arg]  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CDR_DEFAULT_REGION", "PK")
    res = Resources.from_settings(Settings.from_env(local_env))
    good = generate("canonical_csv", tmp_path / "calls.csv", 400, seed=5, start=dt.date(2025, 4, 1))
    good_ref = layout.landing_ref(copy_into_landing(res.store, good.path, "src-a"))
    bad_path = tmp_path / RAW_NAME
    bad_path.write_bytes(b"\x00\xff not a cdr file at all\n")
    bad_ref = layout.landing_ref(copy_into_landing(res.store, bad_path, "src-b"))

    run = load_dag("cdr_ingest").test(logical_date=dt.datetime(2025, 6, 15, tzinfo=dt.UTC))

    assert run.state == "failed"  # because of that one file
    states = _states(run.run_id)
    assert states[("list_landing", None)] == "success"
    # Both small files are one batch, whose task is named after the file that failed.
    assert states == {
        **states,
        ("ingest", f"FAILED {bad_ref} (+1 ingested or unchanged)"): "failed",
    }
    assert states[("summarise", None)] == "success"  # lists both files
    assert states[("verdict", None)] == "failed"  # names the file that failed
    assert states[("data_docs", None)] == "success"
    ingest_alerts = [a for _, a in http_alerts if a["facts"]["task_id"] == "ingest"]
    assert len(ingest_alerts) == 1  # failed for good: not retried
    alert = json.dumps(ingest_alerts[0])
    assert bad_ref in ingest_alerts[0]["detail"]
    assert "quarantined whole (unrecognised_format)" in ingest_alerts[0]["detail"]
    assert "3001234567" not in alert and "calls.dat" not in alert

    # The demo's report marks a failure it was told to expect, and fails on any other.
    assert demo_report.main(["--expect-failed", bad_ref]) == 0
    shown = capsys.readouterr().out
    assert f"FAILED {bad_ref} (+1 ingested or unchanged)]: failed ({demo_report.EXPECTED})" in shown
    assert f"verdict: failed ({demo_report.EXPECTED})" in shown
    assert demo_report.main([]) == 1
    assert "failed unexpectedly: ingest[FAILED" in capsys.readouterr().err

    # The person behind the run (dag.test's triggering user), the task apart from it.
    ingest_entries = [e for e in read_log(res.store) if e["action"] in ("seal", "ingest")]
    assert ingest_entries and {e["actor"] for e in ingest_entries} == {"dag_test"}
    assert all(f"airflow:cdr_ingest/{run.run_id}/ingest" in e["process"] for e in ingest_entries)

    events = _asset_events(run.run_id)
    gold_uri = (Path(local_env["CDR_STORE"]).resolve() / "gold" / "cdr").as_uri()
    assert {(name, uri) for name, uri, _ in events} == {
        ("cdr_gold", gold_uri),
        ("cdr_silver", gold_uri.replace("/gold/cdr", "/silver/cdr")),
        ("cdr_vault", gold_uri.replace("/gold/cdr", "/vault")),
    }  # one per tier, from the good file only
    for _, _, extra in events:
        assert extra["file"] == good_ref and extra["records"] == good.rows
        assert extra["gold"] + extra["quarantined"] == good.rows and extra["gold"] > 0

    again = load_dag("cdr_ingest").test(logical_date=dt.datetime(2025, 6, 15, 1, tzinfo=dt.UTC))
    assert again.state == "success"  # nothing new in landing: nothing failed, nothing written
    assert _asset_events(again.run_id) == []


@pytest.mark.airflow
@pytest.mark.s3
def test_asset_events_name_the_bucket_and_prefix_of_an_s3_store(
    airflow_db: None,
    tmp_path: Path,
    s3_buckets: tuple[str, str],
    s3_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, _ = s3_buckets
    for key, value in {**s3_env, "CDR_DEFAULT_REGION": "PK"}.items():
        monkeypatch.setenv(key, value)
    res = Resources.from_settings(Settings.from_env(s3_env))
    g = generate("canonical_csv", tmp_path / "calls.csv", 200, seed=6, start=dt.date(2025, 5, 1))
    copy_into_landing(res.store, g.path, "src-a")

    run = load_dag("cdr_ingest").test(logical_date=dt.datetime(2025, 6, 15, tzinfo=dt.UTC))

    assert run.state == "success"
    uris = {name: uri for name, uri, _ in _asset_events(run.run_id)}
    assert uris["cdr_gold"] == f"s3://{data}/cdr/gold/cdr"
    assert uris["cdr_silver"] == f"s3://{data}/cdr/silver/cdr"


def test_the_integrity_audit_can_be_scheduled_on_the_gold_asset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.sdk.definitions.asset import AssetNameRef

    from cdr_airflow.dag_defaults import audit_schedule

    assert audit_schedule({}) == "@weekly"
    assert audit_schedule({"CDR_AUDIT_SCHEDULE": "0 3 * * *"}) == "0 3 * * *"
    gold = audit_schedule({"CDR_AUDIT_SCHEDULE": "gold"})
    assert isinstance(gold, AssetNameRef) and gold.name == "cdr_gold"
    monkeypatch.setenv("CDR_AUDIT_SCHEDULE", "gold")
    dag = load_dag("cdr_integrity_audit")
    assert type(dag.timetable).__name__ == "AssetTriggeredTimetable"
    assert dag.timetable.asset_condition == gold
