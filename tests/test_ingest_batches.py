"""Small landing files taken in batches, each still its own delivery: batches bounded by count
and bytes (a big file alone), one bad file among fifty fails only itself and is named, and a
batch killed midway (`kill -9`) ingests each of its files exactly once when it runs again."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.core import layout
from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from pipeline.core.store import LocalStore
from pipeline.flows.ingest import copy_into_landing
from pipeline.flows.ingest_batches import batch_label, landing_batches
from pipeline.records.synth import generate
from tests.conftest import ROOT
from tests.helpers import load_dag, read_tier


def _small_files(res: Resources, tmp_path: Path, count: int, rows: int = 30) -> list[str]:
    """`count` generated canonical files of `rows` rows each, with distinct records, dropped
    into landing/ of two sources; their landing keys."""
    g = generate("canonical_csv", tmp_path / "all.csv", count * rows, seed=3,
                 start=dt.date(2025, 4, 1), bad_share=0)  # fmt: skip
    header, *lines = g.path.read_text().splitlines(keepends=True)
    keys = []
    for n in range(count):
        path = tmp_path / "parts" / f"switch-{n:03d}.csv"
        path.parent.mkdir(exist_ok=True)
        path.write_text(header + "".join(lines[n * rows : (n + 1) * rows]))
        keys.append(copy_into_landing(res.store, path, f"sw{n % 2}"))
    return keys


def test_batches_are_bounded_by_count_and_bytes_and_a_big_file_goes_alone(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    sizes = {"a": 10, "b": 10, "c": 10, "d": 500, "e": 10, "f": 60, "g": 50, "h": 10}
    for name, size in sizes.items():
        store.put_bytes(f"landing/src/{name}.csv", b"x" * size)
    store.put_bytes("landing/src/.partial.csv", b"x")  # hidden: an upload in progress
    batches = landing_batches(store, max_files=3, max_bytes=100)
    refs = [[r.rsplit("/", 1)[1][0] for r in b["refs"]] for b in batches]
    # three at most; 'd' (over the byte bound) alone; 'f' + 'g' would pass 100 bytes
    assert refs == [["a", "b", "c"], ["d"], ["e", "f"], ["g", "h"]]
    assert [b["label"] for b in batches][:2] == [
        "landing/src/a.csv (+2 more)",
        "landing/src/d.csv",
    ]
    assert batch_label(["x", "y", "z"], ["y"]) == "FAILED y (+2 ingested or unchanged)"
    assert landing_batches(LocalStore(tmp_path / "empty"), 3, 100) == []


@pytest.mark.slow
@pytest.mark.airflow
def test_one_unreadable_file_among_fifty_fails_only_itself_and_is_named(
    airflow_db: None,
    tmp_path: Path,
    local_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    for key, value in {**local_env, "CDR_DEFAULT_REGION": "PK", "CDR_INGEST_BATCH_FILES": "20"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    res = Resources.from_settings(Settings.from_env(local_env))
    keys = _small_files(res, tmp_path, 49)
    bad = tmp_path / "switch-bad.csv"
    bad.write_bytes(b"\x00\xff not a cdr file\n")
    bad_ref = layout.landing_ref(copy_into_landing(res.store, bad, "sw1"))

    run = load_dag("cdr_ingest").test(logical_date=dt.datetime(2025, 6, 15, tzinfo=dt.UTC))

    assert run.state == "failed"
    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.run_id == run.run_id).all()
        batches = {ti.rendered_map_index: str(ti.state) for ti in tis if ti.task_id == "ingest"}
        others = {ti.task_id: str(ti.state) for ti in tis if ti.task_id != "ingest"}
    assert len(batches) == 3  # 50 files, 20 to a task: three task processes, not fifty
    failed = [name for name, state in batches.items() if state == "failed"]
    assert failed == [f"FAILED {bad_ref} (+9 ingested or unchanged)"], batches  # last of 50
    assert others == {"list_landing": "success", "summarise": "success",
                      "data_docs": "success", "verdict": "failed"}  # fmt: skip
    # Every other file is ingested, those in the failed file's batch too, each once.
    gold, rows = read_tier(res.store, "gold/"), read_tier(res.store, "quarantine/rows/")
    assert gold.get_column("source_sha256").n_unique() == 49
    assert len(gold) + len(rows) == 49 * 30
    assert gold.get_column("record_id").n_unique() == len(gold)
    assert list(res.store.list("landing/")) == []
    out = capfd.readouterr()
    said = out.out + out.err
    assert f"{bad_ref}: quarantined whole (unrecognised_format)" in said  # the task's log
    summary = [line for line in said.splitlines() if line.startswith(bad_ref)]
    assert summary and "quarantined_file" in summary[0]  # the run's summary table
    assert f"1 file(s) not ingested: {bad_ref}" in said
    assert keys  # the good files' keys were real landing keys


def _batch_script(refs: list[str]) -> str:
    return (
        "import datetime as dt, sys\n"
        "from pipeline.core.config import Settings\n"
        "from pipeline.core.resources import Resources\n"
        "from pipeline.flows.ingest import IngestRequest\n"
        "from pipeline.flows.ingest_batches import ingest_batch\n"
        "res = Resources.from_settings(Settings.from_env())\n"
        f"out = ingest_batch(res, IngestRequest(dt.date(2025, 6, 15)), {refs!r})\n"
        "sys.exit(1 if out.failures else 0)\n"
    )


def test_a_batch_killed_midway_ingests_each_file_once_when_run_again(
    tmp_path: Path, local_env: dict[str, str]
) -> None:
    env = {**os.environ, **local_env, "CDR_DEFAULT_REGION": "PK"}
    res = Resources.from_settings(Settings.from_env(env))
    keys = _small_files(res, tmp_path, 12)
    (batch,) = landing_batches(res.store, 50, 1 << 30)
    script = _batch_script(batch["refs"])
    store = Path(local_env["CDR_STORE"])

    def committed() -> int:
        return len(list(store.glob("seals/*.parse.json")))

    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env)
    deadline = time.monotonic() + 120
    while committed() < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = committed()
    assert 4 <= done < len(keys)  # killed midway through the batch

    again = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, timeout=300)
    assert again.returncode == 0
    assert committed() == len(keys)
    gold, rows = read_tier(res.store, "gold/"), read_tier(res.store, "quarantine/rows/")
    assert len(gold) + len(rows) == 12 * 30
    assert gold.get_column("record_id").n_unique() == len(gold)
    assert gold.get_column("source_sha256").n_unique() == 12
    entries = [json.loads(res.store.get_bytes(o.key)) for o in res.store.list("audit/")]
    ingests = [e["body"]["what"]["sha256"] for e in entries if e["body"]["action"] == "ingest"]
    assert len(ingests) == len(set(ingests)) == 12  # one ingest entry per file, none twice
    assert list(res.store.list("landing/")) == []
