"""Re-deliveries: the same CDRs sent again in another file are quarantined, not kept twice."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import polars as pl

from pipeline.cli import main as cli
from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from pipeline.records.synth import generate
from tests.conftest import AS_OF
from tests.helpers import read_tier


def ingest(path: Path, *extra: str) -> int:
    return cli(
        ["ingest", "--as-of", AS_OF.isoformat(), "--default-region", "PK", *extra, str(path)]
    )


def test_the_same_cdrs_resent_with_crlf_line_ends_are_quarantined_as_duplicates(
    local_env: dict[str, str], tmp_path: Path
) -> None:
    res = Resources.from_settings(Settings.from_env(local_env))
    g = generate(
        "canonical_csv", tmp_path / "day.csv", 1500, bad_share=0, start=dt.date(2025, 3, 1)
    )
    again = tmp_path / "day-resent.csv"
    again.write_bytes(g.path.read_bytes().replace(b"\n", b"\r\n"))
    first_sha = hashlib.sha256(g.path.read_bytes()).hexdigest()
    assert first_sha != hashlib.sha256(again.read_bytes()).hexdigest()

    assert ingest(g.path, "--source", "operator-a") == 0
    assert ingest(again, "--source", "operator-a") == 0
    for tier in ("silver/", "gold/"):
        ids = read_tier(res.store, tier).get_column("record_id")
        assert ids.n_unique() == len(ids) == 1500, tier
    quarantined = read_tier(res.store, "quarantine/rows/")
    assert len(quarantined) == 1500
    assert quarantined.get_column("reason").unique().to_list() == ["duplicate_record_id"]
    assert quarantined.get_column("note").unique().to_list() == [f"earlier file {first_sha}"]
    # Counts still reconcile for the second file: every record is somewhere, once.
    assert ingest(g.path, "--source", "operator-a") == 0  # same digest: nothing to do

    # Another source may use the same IDs for its own records.
    other = tmp_path / "other.csv"
    other.write_bytes(g.path.read_bytes() + b"\n")
    assert ingest(other, "--source", "operator-b") == 0
    gold = read_tier(res.store, "gold/")
    assert gold.filter(pl.col("source") == "operator-b").height == 1500


def test_the_index_is_compact_and_goes_with_the_gold_year(
    local_env: dict[str, str], tmp_path: Path
) -> None:
    res = Resources.from_settings(Settings.from_env(local_env))
    g = generate("canonical_csv", tmp_path / "d.csv", 2000, bad_share=0, start=dt.date(2025, 3, 1))
    assert ingest(g.path) == 0
    parts = list(res.store.list("index/record_ids/"))
    assert {p.key.split("/")[3] for p in parts} == {"2025-03", "2025-04", "2025-05"}
    assert sum(p.size for p in parts) < 2000 * 20  # about 16 bytes a record
    assert cli(["retention", "--as-of", "2036-01-01", "--allow-future-as-of", "--confirm"]) == 0
    assert list(res.store.list("index/record_ids/")) == []
