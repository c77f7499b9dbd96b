"""Progress on long work: bytes read against the file's size and a rate, logged every few
seconds (what Airflow's task log shows), and said while the suites judge the records."""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from pathlib import Path

import pytest

from pipeline.core.config import Settings
from pipeline.core.progress import FileProgress
from pipeline.core.resources import Resources
from pipeline.flows.ingest import IngestRequest, run_ingest
from pipeline.records.synth import generate
from tests.conftest import AS_OF

READING = re.compile(
    r"read ([\d.,]+) of ([\d.,]+) MB \((\d+)%\) at ([\d.,]+) MB/s; ([\d,]+) records"
)


def test_an_ingest_logs_bytes_read_a_rate_and_the_validation(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    g = generate("canonical_csv", tmp_path / "cdr.csv", 40_000)
    res = Resources.from_settings(dataclasses.replace(settings, progress_seconds=0.02))
    with caplog.at_level(logging.INFO, logger="pipeline.progress"):
        report = run_ingest(res, IngestRequest(AS_OF), g.path)
    assert report.status == "ingested"
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.progress"]
    reading = [m for line in lines if (m := READING.search(line))]
    assert reading, lines
    size = g.path.stat().st_size / (1 << 20)
    assert all(float(m.group(2).replace(",", "")) == pytest.approx(size, abs=0.05) for m in reading)
    assert any(float(m.group(1).replace(",", "")) > 0 for m in reading)
    assert any(f"{report.records:,} records read; validating and publishing" in x for x in lines)
    assert all(line.startswith("cdr.csv: ") for line in lines)


def test_the_position_of_an_open_file_is_what_is_shown(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * (3 << 20))
    meter = FileProgress("data.bin", path, every=60)
    assert "working" in meter.line()
    with open(path, "rb") as f:
        f.read(1 << 20)
        time.sleep(0.01)
        assert meter.line().startswith("data.bin: read 1.0 of 3.0 MB (33%) at ")
    meter(12)
    assert meter.line().startswith("data.bin: 12 records read; validating and publishing")
