"""A canonical file may carry every column of the canonical schema as docs/formats.md lists it: the
columns the pipeline derives are recomputed (the file's values counted, never trusted), so the
same rows with or without them give the same silver and gold."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core import layout
from pipeline.core.resources import Resources
from pipeline.flows.ingest import ingest_file
from pipeline.records.schema import CANONICAL_SOURCE_COLUMNS, DERIVED_COLUMNS, GOLD
from tests.conftest import ROOT
from tests.helpers import all_text_outputs, find_identifiers, read_tier

AS_OF = dt.date(2025, 6, 15)

#: the rows as a source writes them (the columns a canonical source reads)
ROWS = [
    {"record_id": "r1", "event_time": "2025-05-02T10:00:00Z", "channel": "voice",
     "direction": "outbound", "customer_id": "acme", "origin": "+922134567890",
     "destination": "0300-1234567", "duration_s": "61", "currency": "PKR", "price": "1.5"},
    {"record_id": "r2", "event_time": "2025-05-03T11:00:00Z", "channel": "email",
     "direction": "inbound", "customer_id": "acme", "origin": "Ali@Example.PK",
     "destination": "InfoSMS", "status": "Delivered"},
    {"record_id": "r3", "event_time": "2025-04-30T23:59:59Z", "channel": "sms",
     "direction": "outbound", "customer_id": "beta", "origin": "InfoSMS",
     "destination": "+447911123456", "channel_detail": "campaign 7"},
]  # fmt: skip

#: what a file exported elsewhere says of the same rows: some values agree with what the
#: pipeline derives, some contradict it (r1's origin is a PK number, not an IN e-mail)
CLAIMS = [
    {"source": "elsewhere", "source_file": "old.csv", "source_sha256": "ab" * 32,
     "source_line": "40", "origin_kind": "email", "destination_kind": "msisdn",
     "origin_country": "IN", "destination_country": "pk", "identity_commitment": "cc" * 16,
     "leaf_index": "9"},
    {"source": "elsewhere", "source_line": "41", "origin_kind": "email",
     "destination_kind": "alphanumeric", "origin_domain": "example.pk", "leaf_index": "10"},
    {"source": "elsewhere", "source_line": "42", "origin_kind": "alphanumeric",
     "destination_kind": "msisdn", "destination_country": "GG", "destination_domain": "x.org",
     "leaf_index": "11"},
]  # fmt: skip

#: columns that name the file a record came from: different for two files by design
FILE_BOUND = ["source", "source_file", "source_sha256", "identity_commitment"]


def _every_column(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The rows with every column the README's canonical CDR lists, in its order, plus a
    column the pipeline adds internally (`raw`) and a content column (`text`)."""
    listed = _readme_columns()
    extra = {"raw": "+923009998801", "text": "call me on 0300 999 8802"}
    return [{c: {**row, **claim, **extra}.get(c, "") for c in [*listed, *extra]}
            for row, claim in zip(rows, CLAIMS, strict=True)]  # fmt: skip


def _readme_columns() -> list[str]:
    """The canonical CDR's columns as docs/formats.md lists them."""
    text = (ROOT / "docs" / "formats.md").read_text().split("## Canonical CDR", 1)[1]
    listing = text.split("(see", 1)[0]
    return [
        c.strip(" `\n") for c in listing.replace(", plus", ",").replace(" and ", ",").split(",")
    ]


def _csv(path: Path, rows: list[dict[str, str]]) -> Path:
    columns = list(rows[0])
    lines = [",".join(columns)] + [",".join(r.get(c, "") for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _plain(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{c: r.get(c, "") for c in CANONICAL_SOURCE_COLUMNS} for r in rows]


def _tiers(res: Resources, source: str) -> dict[str, pl.DataFrame]:
    return {
        tier: read_tier(res.store, f"{tier}/")
        .filter(pl.col("source") == source)
        .drop(FILE_BOUND)
        .sort("record_id")
        for tier in ("silver", "gold")
    }


def test_the_readme_lists_every_gold_column_and_the_derived_ones_are_gold_columns() -> None:
    assert set(_readme_columns()) == set(GOLD)
    assert set(DERIVED_COLUMNS) <= set(GOLD)
    assert not set(DERIVED_COLUMNS) & set(CANONICAL_SOURCE_COLUMNS)


def test_a_canonical_csv_carrying_every_column_is_ingested_whole_with_derived_values_recomputed(
    res: Resources, tmp_path: Path
) -> None:
    full = _csv(tmp_path / "full.csv", _every_column(ROWS))
    plain = _csv(tmp_path / "plain.csv", _plain(ROWS))
    report = ingest_file(res, full, source="partner", as_of=AS_OF)
    assert (report.status, report.gold, report.quarantined) == ("ingested", 3, 0), report.detail
    same = ingest_file(res, plain, source="direct", as_of=AS_OF)
    assert (same.status, same.gold) == ("ingested", 3)

    full_tiers, plain_tiers = _tiers(res, "partner"), _tiers(res, "direct")
    for tier in ("silver", "gold"):
        assert full_tiers[tier].equals(plain_tiers[tier]), tier
    gold = full_tiers["gold"]
    # recomputed, whatever the file said
    assert gold.get_column("source_line").to_list() == [2, 3, 4]
    assert gold.get_column("leaf_index").sort().to_list() == [0, 1, 2]
    assert gold.select("origin_kind", "origin_country").row(0) == ("msisdn", "PK")
    assert gold.get_column("channel_detail").to_list() == [None, None, "campaign 7"]

    # every value given is counted; contradictions are counted apart, the agreeing ones not
    counts = report.scrubbed
    assert counts["derived:source_line"] == 3 and counts["derived:leaf_index"] == 3
    assert counts["derived:source_file"] == 1 and counts["derived:origin_domain"] == 1
    assert counts["contradicts:origin_kind"] == 1  # r1: an e-mail? no, a number
    assert counts["contradicts:origin_country"] == 1  # r1: IN? no, PK
    assert counts["contradicts:destination_domain"] == 1  # r3: a number has no domain
    assert "contradicts:destination_country" not in counts  # `pk`, and `GG` (+44 7911: Guernsey)
    assert "contradicts:destination_kind" not in counts
    assert not [k for k in counts if k.startswith("contradicts:source")]  # only counted

    # in the signed parse entry too, and the content columns never stored
    entry = json.loads(res.store.get_bytes(layout.parse_key(report.sha256)))
    assert entry["body"]["scrubbed"]["contradicts:origin_country"] == 1
    outside_bronze = [(k, t) for k, t in all_text_outputs(res.store) if not layout.is_bronze(k)]
    assert find_identifiers(outside_bronze, ["9998801", "9998802"]) == []


def test_a_canonical_parquet_file_carrying_every_column_follows_the_same_rule(
    res: Resources, tmp_path: Path
) -> None:
    rows = _every_column(ROWS)
    typed: dict[str, pa.Array] = {}
    for c in rows[0]:
        values = [r[c] or None for r in rows]
        if c in ("source_line", "leaf_index"):
            typed[c] = pa.array([int(v) if v else None for v in values], pa.int64())
        elif c == "event_time":
            typed[c] = pa.array([dt.datetime.fromisoformat(v) for v in values], pa.timestamp("us", "UTC"))  # fmt: skip
        elif c in ("duration_s", "price"):
            typed[c] = pa.array([float(v) if v else None for v in values], pa.float64())
        else:
            typed[c] = pa.array(values, pa.string())
    full = tmp_path / "full.parquet"
    pq.write_table(pa.table(typed), full)
    plain = _csv(tmp_path / "plain.csv", _plain(ROWS))
    report = ingest_file(res, full, source="partner", as_of=AS_OF)
    assert (report.status, report.format, report.gold) == ("ingested", "canonical_parquet", 3)
    ingest_file(res, plain, source="direct", as_of=AS_OF)
    full_tiers, plain_tiers = _tiers(res, "partner"), _tiers(res, "direct")
    for tier in ("silver", "gold"):
        # Parquet numbers its rows from 1, CSV from the header's line
        a = full_tiers[tier].drop("source_line")
        assert a.equals(plain_tiers[tier].drop("source_line")), tier
    assert full_tiers["gold"].get_column("source_line").to_list() == [1, 2, 3]
    assert report.scrubbed["contradicts:origin_country"] == 1
    assert report.scrubbed["derived:leaf_index"] == 3


@pytest.mark.parametrize("column", ["source_line", "raw", "_event", "parse_error", "origin_raw"])
def test_a_header_naming_a_column_the_parser_uses_itself_reads_as_usual(
    res: Resources, tmp_path: Path, column: str
) -> None:
    """The issue's repro (`source_line`) and names of the parser's own working columns."""
    path = tmp_path / "a.csv"
    path.write_text(
        f"record_id,{column},event_time,channel,direction,customer_id,origin,destination,duration_s\n"
        "r1,7,2025-05-02T10:00:00Z,voice,outbound,acme,+922134567890,+923001234567,61\n"
    )
    report = ingest_file(res, path, as_of=AS_OF)
    assert (report.status, report.gold, report.quarantined) == ("ingested", 1, 0), report.detail
    gold = read_tier(res.store, "gold/")
    assert gold.select("source_line", "destination_country", "duration_s").row(0) == (2, "PK", 61.0)
