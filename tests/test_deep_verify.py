"""`verify --deep` re-reads each original from bronze with an independent reader: it passes on
clean files of every format and names the file and record when a reader reshaped rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from pipeline.cli import main as cli
from pipeline.records.sources import base
from pipeline.records.synth import FORMATS, generate

HEADER = "record_id,event_time,channel,direction,origin,destination,duration_s\n"


def _width_from_first_row(data: bytes, sep: str, columns: list[str]) -> pl.DataFrame | None:
    """The reader as it once was: its width taken from the chunk's first row."""
    fields = pl.read_csv(
        data, has_header=False, separator=sep, infer_schema=False,
        truncate_ragged_lines=True,
    )  # fmt: skip
    fields = fields.select(fields.columns[: len(columns)])
    fields.columns = columns[: fields.width]
    return fields.with_columns([pl.lit(None, pl.String).alias(c) for c in columns[fields.width :]])


@pytest.mark.tampers
def test_deep_verify_names_the_file_and_record_a_reader_truncated(
    local_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    p = tmp_path / "export.csv"
    p.write_text(
        HEADER
        + "c1,2025-05-02T10:00:00Z,voice,outbound,+922134567890,+923001234567\n"
        + "c2,2025-05-02T10:00:00Z,voice,outbound,+922134567890,+923001234567,61\n"
    )
    with monkeypatch.context() as patched:
        patched.setattr(base, "_read_fields", _width_from_first_row)
        assert cli(["ingest", "--as-of", "2025-06-15", "--default-region", "PK", str(p)]) == 0
    capsys.readouterr()
    # The commitments were made on the wrongly read rows: the ordinary check cannot see it.
    assert cli(["verify"]) == 0
    capsys.readouterr()
    assert cli(["verify", "--deep", "--file", "export.csv"]) == 1
    out = capsys.readouterr().out
    assert "export.csv" in out and "record c2 (line 3): duration_s" in out


def test_deep_verify_passes_on_clean_files_of_every_format(
    local_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = []
    for seed, fmt in enumerate(FORMATS):
        g = generate(fmt, tmp_path / "in" / f"f.{fmt}", 1500, seed=seed, bad_share=0.05,
                     start=dt.date(2025, 3, 1))  # fmt: skip
        paths.append(str(g.path))
    assert cli(["ingest", "--as-of", "2025-06-15", "--default-region", "PK", *paths]) == 0
    capsys.readouterr()
    code = cli(["verify", "--deep"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("original (deep)  ok") == len(FORMATS)
