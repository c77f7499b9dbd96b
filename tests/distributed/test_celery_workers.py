"""A real distributed run: PostgreSQL, Redis, the Airflow api-server, scheduler, dag-processor
and two Celery workers on 127.0.0.1, with moto's S3 as the store. CDR files dropped in landing/
are ingested by `cdr_ingest` with mapped tasks spread over both workers, and silver and gold
equal what one process makes of the same files. Everything is stopped by PID afterwards."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from pipeline.flows.ingest import copy_into_landing, ingest_file
from pipeline.records.synth import generate
from tests.distributed.stack import Stack, StatsD, run_dag
from tests.helpers import read_tier

pytestmark = [pytest.mark.distributed, pytest.mark.s3]
FILES = 6


@pytest.fixture
def statsd() -> Iterator[StatsD]:
    listener = StatsD()
    try:
        yield listener
    finally:
        listener.close()


@pytest.fixture
def stack(s3_env: dict[str, str], statsd: StatsD) -> Iterator[Stack]:
    base = Path(tempfile.mkdtemp(prefix="cdr-stack-"))
    cdr_env = s3_env | {
        "CDR_KEYRING": str(base / "keyring"),
        "CDR_DATA_DOCS": str(base / "docs"),
        "CDR_HOME": str(base / "var"),
        "CDR_DEFAULT_REGION": "PK",
        "CDR_BATCH_ROWS": "2000",
        "CDR_INGEST_BATCH_FILES": "2",  # two files to a mapped task: the batches are shared
    }
    s = Stack(base, cdr_env, statsd.port)
    try:
        s.start()
        yield s
    finally:
        left = s.stop()
        shutil.rmtree(base, ignore_errors=True)
        assert left == [], f"still running: {left}"


def test_two_celery_workers_share_the_mapped_ingest(
    stack: Stack, statsd: StatsD, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    res = Resources.from_settings(Settings.from_env(stack.cdr_env))
    today = dt.datetime.now(dt.UTC).date()
    start = (today.replace(day=1) - dt.timedelta(days=40)).replace(day=1)
    paths = []
    for i in range(FILES):
        g = generate("canonical_csv", tmp_path / f"cdr-{i}.csv", 20_000, seed=50 + i,
                     start=start, months=2)  # fmt: skip
        # One source per file: generated record ids restart at each file, and a repeated id
        # from one source is a re-delivery.
        copy_into_landing(res.store, g.path, f"operator-{i}")
        paths.append(g.path)

    runs = run_dag(stack, "cdr_ingest", lambda: not list(res.store.list("landing/")))
    assert {r["state"] for r in runs} == {"success"}
    succeeded, states = 0, []
    for run in runs:
        tis = stack.call(
            "GET", f"/api/v2/dags/cdr_ingest/dagRuns/{run['dag_run_id']}/taskInstances"
        )["task_instances"]
        succeeded += sum(ti["task_id"] == "ingest" and ti["state"] == "success" for ti in tis)
        states += [(run["dag_run_id"], ti["task_id"], ti.get("map_index"), ti["state"], ti.get("try_number")) for ti in tis]  # fmt: skip
    # Which worker ran which mapped task: each worker logs the workloads Celery gave it.
    by_worker = {
        worker: re.findall(
            r"Executing workload in Celery: .*?task_id=ingest/map_index=(\d+)/",
            (stack.base / f"{worker}.log").read_text(errors="replace"),
        )
        for worker in ("w1", "w2")
    }
    with capsys.disabled():
        print(f"\nmapped ingest tasks (map_index) per Celery worker: {by_worker}")
    batches = -(-FILES // 2)
    said = "\n".join(map(str, states))  # every run's task states, whole, when it fails
    assert succeeded == batches == sum(len(v) for v in by_worker.values()), said
    assert all(by_worker.values()), by_worker  # both workers took mapped tasks
    # Each file's counts reached StatsD from the workers, as Airflow metrics.
    metrics = statsd.text()
    assert metrics.count("airflow.cdr.ingest.files.ingested:1|c") == FILES, metrics[:3000]
    assert "airflow.cdr.ingest.records:20000|c" in metrics

    # One process, the same files, the same keyring: the same silver and gold.
    single = Resources.from_settings(
        Settings.from_env(stack.cdr_env | {"CDR_STORE": str(tmp_path / "single"),
                                           "CDR_BRONZE_STORE": str(tmp_path / "single")})
    )  # fmt: skip
    for i, path in enumerate(paths):
        ingest_file(single, path, source=f"operator-{i}", default_region="PK", as_of=today)
    for tier in ("silver/", "gold/"):
        order = ["source_sha256", "leaf_index"]
        distributed = read_tier(res.store, tier).sort(order)
        alone = read_tier(single.store, tier).sort(order)
        assert len(distributed) > 0
        assert distributed.equals(alone), tier
    assert len(read_tier(res.store, "gold/")) == pl.Series(
        [len(p.read_text().splitlines()) - 1 for p in paths]
    ).sum() - len(read_tier(res.store, "quarantine/rows/"))
