"""Re-deliveries: the same CDRs sent again in another file are quarantined, not kept twice."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import polars as pl
import pytest

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


def test_indexes_read_for_one_file_are_reused_by_the_next_and_dropped_once_removed(
    res: Resources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files ingested one after another in one process (a batch) read each earlier index
    once. An index removed in between (a month purged, a person's records erased) no longer
    makes a later record a duplicate, and one written in between is seen."""
    from pipeline.core import layout
    from pipeline.flows.ingest import ingest_file
    from pipeline.records import redelivery

    rows = generate("canonical_csv", tmp_path / "all.csv", 90, bad_share=0, start=dt.date(2025, 3, 1))  # fmt: skip
    header, *lines = rows.path.read_text().splitlines(keepends=True)
    parts = []
    for n in range(3):
        part = tmp_path / f"part-{n}.csv"
        part.write_text(header + "".join(lines[n * 30 : (n + 1) * 30]))
        parts.append(part)
    reads: list[str] = []
    real = res.store.get_bytes
    monkeypatch.setattr(res.store, "get_bytes", lambda key: reads.append(key) or real(key))
    as_of = dt.date(2025, 6, 1)
    for part in parts:
        assert ingest_file(res, part, source="sw", as_of=as_of).status == "ingested"
    index_reads = [k for k in reads if k.startswith(layout.record_id_index_prefix("sw", (2025, 3)))]
    assert len(index_reads) == len(set(index_reads)) == 2  # part 0's and part 1's, once each
    # The same records again: duplicates of what is indexed ...
    again = tmp_path / "again.csv"
    again.write_text(header + "".join(lines[:30]) + "\n")
    first = hashlib.sha256(parts[0].read_bytes()).hexdigest()
    assert (
        ingest_file(res, again, source="sw", as_of=as_of).reasons.get("duplicate_record_id") == 30
    )
    # ... unless the earlier file's index is gone.
    for obj in list(res.store.list("")):  # its index of every month
        if layout.sha_of_record_id_index(obj.key) == first:
            res.store.delete(obj.key)
    again.write_text(header + "".join(lines[:30]) + "\n\n")
    report = ingest_file(res, again, source="sw", as_of=as_of)
    assert "duplicate_record_id" not in report.reasons and report.gold == 30
    assert redelivery._READ  # indexes stayed read between files
