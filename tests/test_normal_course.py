"""Every change between a retained record and its sealed original is one docs/design.md documents:
case folding, trimming, number formatting, derived routing values, tokenising, purging."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pipeline.core.resources import Resources
from pipeline.flows.ingest import ingest_file
from pipeline.records.schema import CANONICAL_SOURCE_COLUMNS, GOLD
from tests.conftest import ROOT
from tests.helpers import read_tier


def _normal_course_table() -> dict[str, str]:
    """The documented table (docs/design.md): each row's first cell (field names) → the row."""
    text = (ROOT / "docs" / "design.md").read_text()
    section = text.split("## Normal-course changes", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return {row.split("|")[1]: row for row in rows[1:]}


def test_direction_and_channel_are_lower_cased_and_fields_trimmed_as_documented(
    res: Resources, tmp_path: Path
) -> None:
    csv = tmp_path / "padded.csv"
    csv.write_text(
        "record_id,event_time,channel,direction,origin,destination,status,customer_id\n"
        " p1 ,2025-05-02T10:00:00Z, SMS , INBOUND ,InfoSMS,+923001234567,  Delivered ,  acme \n"
        "p2,2025-05-02T10:01:00Z,Voice,OutBound,InfoSMS,+923001234568,Failed,acme\n"
    )
    report = ingest_file(res, csv, as_of=dt.date(2025, 6, 1))
    assert report.quarantined == 0, report.reasons
    gold = read_tier(res.store, "gold/").sort("record_id")
    assert gold.select("record_id", "channel", "direction", "status", "customer_id").rows() == [
        ("p1", "sms", "inbound", "Delivered", "acme"),  # trimmed; status keeps its case
        ("p2", "voice", "outbound", "Failed", "acme"),
    ]
    table = _normal_course_table()
    assert "lower-cased" in table[" `channel` "] and "lower-cased" in table[" `direction` "]
    assert any("trimmed" in row and "CSV" in row for row in table.values())


def test_every_column_gold_adds_to_a_source_is_in_the_documented_changes() -> None:
    """A field gold has and no source writes (a derived value) is listed with how it is made."""
    documented = " ".join(_normal_course_table())
    added = [c for c in GOLD if c not in CANONICAL_SOURCE_COLUMNS]
    bookkeeping = {"source", "source_sha256", "source_line", "identity_commitment", "leaf_index"}
    missing = [c for c in added if c not in bookkeeping and f"`{c}`" not in documented]
    assert missing == [], missing
    rows = " ".join(_normal_course_table().values())
    for change in ("lower-cased", "trimmed", "E.164", "tokenised", "deleted when retention ends"):
        assert change in rows, change
