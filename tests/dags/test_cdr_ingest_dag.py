"""The ingest DAG loads, is documented and safe to retry, and really runs (dag.test())."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from pipeline.core import layout
from pipeline.records.synth import generate
from tests.conftest import ROOT
from tests.helpers import (
    all_text_outputs,
    assert_no_identifiers,
    load_dag,
    needles_for,
    read_tier,
)


def test_dagbag_imports_without_errors() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    assert "cdr_ingest" in bag.dags


def test_every_dag_is_documented_tagged_retried_and_scheduled() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.dags
    for dag_id, dag in bag.dags.items():
        assert dag.doc_md and len(dag.doc_md) > 200, dag_id
        assert dag.tags, dag_id
        assert dag.timetable is not None, dag_id
        for t in dag.tasks:
            assert t.execution_timeout is not None, f"{dag_id}.{t.task_id} may hang forever"
            if (dag_id, t.task_id) in ONCE_ONLY:
                assert t.retries == 0 and "not retried" in dag.doc_md, dag_id
            else:
                assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"


# A retry of an export (or of an access request) would build a second package for the same
# request, and a retried approval would ask again: an officer reruns it.
ONCE_ONLY = {
    ("cdr_le_export", "export_package"),
    ("cdr_le_export", "approve"),
    ("cdr_legal_hold", "approve"),
    ("cdr_subject_request", "answer_request"),
}


def _run_dag(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> object:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # The deployment's region: the form's default_region is empty, so national numbers are read
    # in CDR_DEFAULT_REGION.
    monkeypatch.setenv("CDR_DEFAULT_REGION", "PK")
    return load_dag("cdr_ingest").test(logical_date=dt.datetime(2025, 6, 15, tzinfo=dt.UTC))


def _landing_files(
    store_env: dict[str, str], tmp_path: Path
) -> tuple[list[str], set[str], set[str], int]:
    """Generated files of every format dropped into landing/ of the configured store."""
    from pipeline.core.config import Settings
    from pipeline.core.resources import Resources
    from pipeline.flows.ingest import copy_into_landing

    res = Resources.from_settings(Settings.from_env(store_env))
    keys, numbers, emails, records = [], set(), set(), 0
    for seed, fmt in enumerate(("canonical_csv", "messaging_jsonl", "asterisk", "freeswitch")):
        g = generate(fmt, tmp_path / "in" / f"{fmt}.dat", 900, seed=seed, bad_share=0.05,
                     start=dt.date(2025, 4, 1))  # fmt: skip
        keys.append(copy_into_landing(res.store, g.path, f"src-{seed}"))
        numbers |= g.numbers
        emails |= g.emails
        records += g.rows
    return keys, numbers, emails, records


def _check_run(dag_run: object, env: dict[str, str], keys: list[str], records: int) -> None:
    from pipeline.core.config import Settings
    from pipeline.core.resources import Resources

    assert dag_run.state == "success"  # type: ignore[attr-defined]
    tis = {(ti.task_id, ti.map_index): ti for ti in dag_run.get_task_instances()}  # type: ignore[attr-defined]
    mapped = [ti.rendered_map_index for (t, _), ti in tis.items() if t == "ingest"]
    first = sorted(layout.landing_ref(k) for k in keys)[0]
    assert mapped == [f"{first} (+{len(keys) - 1} more)"]  # small files: one batch, named
    assert tis[("data_docs", -1)].state == "success"
    docs = Resources.from_settings(Settings.from_env(env)).quality
    assert docs.has_docs() and not docs.pending()  # every file's results rendered once
    res = Resources.from_settings(Settings.from_env(env))
    assert list(res.store.list("landing/")) == []
    gold = read_tier(res.store, "gold/")
    quarantine = read_tier(res.store, "quarantine/rows/")
    assert len(gold) + len(quarantine) == records
    assert len(read_tier(res.store, "silver/")) == len(gold)  # nothing is late here
    assert gold.get_column("source").n_unique() == len(keys)


@pytest.mark.airflow
def test_dag_runs_on_a_local_folder(
    airflow_db: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    local_env: dict[str, str],
) -> None:
    env = local_env
    keys, numbers, emails, records = _landing_files(env, tmp_path)
    dag_run = _run_dag(monkeypatch, env)
    _check_run(dag_run, env, keys, records)
    out = capfd.readouterr()
    logs = [
        (str(p), p.read_text("latin-1")) for p in Path(os.environ["AIRFLOW_HOME"]).rglob("*.log")
    ]
    assert "ingested" in out.out + out.err
    needles = needles_for(numbers, emails)
    assert_no_identifiers([("stdout", out.out), ("stderr", out.err), *logs], needles)


@pytest.mark.airflow
@pytest.mark.s3
def test_dag_runs_against_s3_with_object_lock_on_bronze(
    airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moto_endpoint: str,
    s3_buckets: tuple[str, str], s3_env: dict[str, str], capfd: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from pipeline.core.policy import load_policy
    from pipeline.core.store import s3_client

    data, bronze = s3_buckets
    env = s3_env
    keys, numbers, emails, records = _landing_files(env, tmp_path)
    dag_run = _run_dag(monkeypatch, env)
    _check_run(dag_run, env, keys, records)
    client = s3_client(moto_endpoint)
    objects = client.list_objects_v2(Bucket=bronze, Prefix="bronze/")["Contents"]
    assert len(objects) == len(keys)
    # April-June 2025 records: locked until the purge date of the earliest month, April's, or
    # the later one of the month the file arrived in (now): the upload itself carries that.
    today = dt.datetime.now(dt.UTC).date()
    policy = load_policy()
    until = max(dt.date(2026, 5, 1), policy.identifier_purge(today.year, today.month))
    for obj in objects:
        head = client.head_object(Bucket=bronze, Key=obj["Key"])
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"].date() == until
    seals = client.list_objects_v2(Bucket=data, Prefix="cdr/seals/")["Contents"]
    assert len(seals) == 2 * len(keys)
    parse_entries = [
        json.loads(client.get_object(Bucket=data, Key=o["Key"])["Body"].read())
        for o in seals if o["Key"].endswith(".parse.json")
    ]  # fmt: skip
    assert sum(e["body"]["records"] for e in parse_entries) == records
    from pipeline.core.config import Settings
    from pipeline.core.resources import Resources

    store = Resources.from_settings(Settings.from_env(env)).store
    out = capfd.readouterr()
    assert_no_identifiers(
        [("stdout", out.out), ("stderr", out.err), *all_text_outputs(store)],
        needles_for(numbers, emails),
    )


@pytest.mark.airflow
def test_a_file_named_with_a_number_never_reaches_airflows_metadata(
    airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_env: dict[str, str]
) -> None:
    """The landing key travels as a reference: task names, XCom and the run's record hold the
    digest label of a file or folder name that could be an identifier, never the name."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from pipeline.core.config import Settings
    from pipeline.core.resources import Resources

    res = Resources.from_settings(Settings.from_env(local_env))
    g = generate("canonical_csv", tmp_path / "cdr-923001234567.csv", 300, seed=4,
                 start=dt.date(2025, 4, 1))  # fmt: skip
    res.store.put_file("landing/ops/cdr-923001234567.csv", g.path)
    dag_run = _run_dag(monkeypatch, local_env)
    assert dag_run.state == "success"  # type: ignore[attr-defined]
    assert list(res.store.list("landing/")) == []
    with create_session() as session:
        names = [
            str(ti.rendered_map_index)
            for ti in session.query(TaskInstance).filter(TaskInstance.run_id == dag_run.run_id)  # type: ignore[attr-defined]
        ]
        xcom = " ".join(
            str(x.value)
            for x in session.query(XComModel).filter(XComModel.run_id == dag_run.run_id)  # type: ignore[attr-defined]
        )
    assert any(n.startswith("landing/ops/file-") for n in names), names
    for text in [*names, xcom]:
        assert "923001234567" not in text and "3001234567" not in text
