"""`verify --deep` re-reads each original from bronze with an independent reader: it passes on
clean files of every format and names the file and record when a reader reshaped rows."""

from __future__ import annotations

import datetime as dt
import io
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


#: one record carrying every field a canonical source writes, and what a tamperer writes instead
FULL_HEADER = (
    "record_id,event_time,end_time,channel,channel_detail,direction,customer_id,origin,"
    "destination,origin_network,destination_network,route_id,duration_s,units,status,"
    "error_code,price,currency\n"
)
EDITS = {
    "record_id": "t9",
    "event_time": dt.datetime(2025, 5, 2, 10, 0, 1, tzinfo=dt.UTC),
    "end_time": dt.datetime(2025, 5, 2, 10, 5, tzinfo=dt.UTC),
    "channel": "sms",
    "channel_detail": "telex",
    "direction": "inbound",
    "customer_id": "acme2",
    "origin_network": "41006",
    "destination_network": "41007",
    "route_id": "trunk-2",
    "duration_s": 62.0,
    "units": 3,
    "status": "FAILED",
    "error_code": "E2",
    "price": 1.25,
    "currency": "USD",
}


@pytest.mark.tampers
def test_deep_verify_names_exactly_the_retained_field_that_was_changed(
    local_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every field `verify --deep` compares is one it would see changed: gold edited in one
    field of one record gives that field's mismatch and no other."""
    from pipeline.core import layout
    from pipeline.core.config import Settings
    from pipeline.core.resources import Resources
    from pipeline.core.store import read_parquet
    from pipeline.proof.reference import RETAINED
    from tests.helpers import deep_differences

    assert set(EDITS) == set(RETAINED)
    p = tmp_path / "full.csv"
    p.write_text(
        FULL_HEADER
        + "t1,2025-05-02T10:00:00Z,2025-05-02T10:01:01Z,FAX,,outbound,acme,+922134567890,"
        "+923001234567,41001,41002,trunk-1,61,2,ANSWERED,E1,1.5,pkr\n"
        + "t2,2025-05-02T11:00:00Z,,voice,,outbound,acme,+922134567890,+923001234568,,,,1,1,,,,\n"
    )
    assert cli(["ingest", "--as-of", "2025-06-15", "--default-region", "PK", str(p)]) == 0
    capsys.readouterr()
    assert deep_differences(tmp_path) == []  # `FAX` is `other` + `fax`, `pkr` is `PKR`: normal

    res = Resources.from_settings(Settings.from_env(local_env))
    sha, _ = layout.ingested_files(res.store)[0]
    key = layout.partition("gold", (2025, 5), sha)
    kept = res.store.get_bytes(key)
    for field, value in EDITS.items():
        gold = read_parquet(res.store, key)
        edited = pl.when(pl.col("record_id") == "t1").then(pl.lit(value)).otherwise(pl.col(field))
        buffer = io.BytesIO()
        gold.with_columns(edited.cast(gold.schema[field]).alias(field)).write_parquet(buffer)
        res.store.put_bytes(key, buffer.getvalue())
        found = deep_differences(tmp_path)
        rid = value if field == "record_id" else "t1"
        assert len(found) == 1, (field, found)
        assert f"record {rid} (line 2): {field} is not what the original holds; 1 records differ" in found[0]  # fmt: skip
        res.store.put_bytes(key, kept)
    assert deep_differences(tmp_path) == []


def test_deep_verify_reads_long_fields_and_removed_characters_as_ingest_does(
    local_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 200 KiB status (past the `csv` module's default limit), a NUL and a zero-width space
    inside free text, padded fields, a quoted field over two lines: all normal course."""
    p = tmp_path / "odd.csv"
    p.write_bytes(
        HEADER.replace("duration_s", "status,customer_id").encode()
        + b"o1,2025-05-02T10:00:00Z,voice,outbound,+922134567890,+923001234567,"
        + b"x" * 200_000
        + b",acme\n"
        + b"o2,2025-05-02T10:00:00Z, SMS ,Outbound,+922134567890,+923001234567,ok\x00ay,ac\xe2\x80\x8bme\n"
        + b'o3,2025-05-02T10:00:00Z,voice,outbound,+922134567890,+923001234567,"two\nlines", acme \n'
    )
    assert cli(["ingest", "--as-of", "2025-06-15", "--default-region", "PK", str(p)]) == 0
    capsys.readouterr()
    assert cli(["verify", "--deep"]) == 0
    assert "original (deep)  ok (3 records re-read)" in capsys.readouterr().out
