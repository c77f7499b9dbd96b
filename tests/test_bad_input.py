"""Real-world bad files, ingested the way an operator does (`python -m pipeline ingest`):
every row is read exactly as its format defines it or quarantined on its own with a reason;
a file is refused whole only when it is not the format at all."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from pipeline.cli import main as cli
from pipeline.core.config import Settings
from pipeline.flows.ingest import Resources
from tests.conftest import AS_OF
from tests.helpers import read_tier

HEADER = "record_id,event_time,channel,direction,origin,destination,duration_s\n"


def row(rid: str, when: str = "2025-05-02T10:00:00Z", duration: str = "61") -> str:
    return f"{rid},{when},voice,outbound,+922134567890,+923001234567,{duration}\n"


@pytest.fixture
def store(local_env: dict[str, str]) -> Resources:
    return Resources.from_settings(Settings.from_env(local_env))


def ingest(path: Path, *extra: str) -> int:
    return cli(
        ["ingest", "--as-of", AS_OF.isoformat(), "--default-region", "PK", *extra, str(path)]
    )


def gold(res: Resources) -> pl.DataFrame:
    return read_tier(res.store, "gold/").sort("source_line")


def quarantined(res: Resources) -> dict[int, str]:
    rows = read_tier(res.store, "quarantine/rows/")
    return dict(rows.select("source_line", "reason").iter_rows()) if len(rows) else {}


# --- rows keep their own width: no silent column loss ------------------------------------


def test_a_short_first_row_does_not_truncate_the_rows_after_it(
    store: Resources, tmp_path: Path
) -> None:
    p = tmp_path / "export.csv"
    short = "c1,2025-05-02T10:00:00Z,voice,outbound,+922134567890,+923001234567\n"
    p.write_text(HEADER + short + row("c2") + row("c3", duration="5"))
    assert ingest(p) == 0
    kept = gold(store)
    assert kept.get_column("record_id").to_list() == ["c2", "c3"]
    assert kept.get_column("duration_s").to_list() == [61.0, 5.0]
    assert quarantined(store) == {2: "wrong_column_count"}


ASTERISK_16 = (
    '"acct-1","1001","2000","from-internal","","","","","","2025-05-02 12:00:00","",'
    '"2025-05-02 12:00:09","9","0","BUSY","DOCUMENTATION"\n'
)


def asterisk_18(uid: str, lastdata: str = "PJSIP/2000,30", duration: str = "65") -> str:
    return (
        f'"acct-1","1001","03001234567","from-internal","""Ali"" <1001>","PJSIP/1001-0001",'
        f'"PJSIP/trunk-pk-0002","Dial","{lastdata}","2025-05-02 10:00:00",'
        f'"2025-05-02 10:00:05","2025-05-02 10:01:05","{duration}","60","ANSWERED",'
        f'"DOCUMENTATION","{uid}",""\n'
    )


def test_asterisk_rows_of_18_columns_after_one_of_16_keep_their_uniqueid(
    store: Resources, tmp_path: Path
) -> None:
    p = tmp_path / "Master.csv"
    p.write_text(ASTERISK_16 + asterisk_18("1746180000.101") + asterisk_18("1746180000.102"))
    assert ingest(p) == 0
    kept = gold(store)
    assert kept.get_column("record_id").to_list()[1:] == ["1746180000.101", "1746180000.102"]
    assert kept.get_column("duration_s").to_list() == [9.0, 65.0, 65.0]
    derived = kept.get_column("record_id")[0]  # 16 columns: derived from file and line
    assert derived[:16].isalpha() and derived.endswith("-1") and len(derived) == 18


def test_a_huge_unquoted_line_does_not_shift_the_next_row(store: Resources, tmp_path: Path) -> None:
    p = tmp_path / "export.csv"
    with open(p, "w") as f:
        f.write(HEADER + row("c1"))
        f.write("x" * (20 << 20) + "\n")
        f.write(row("c2") + row("c3"))
    assert ingest(p) == 0
    assert gold(store).get_column("record_id").to_list() == ["c1", "c2", "c3"]
    assert quarantined(store) == {3: "wrong_column_count"}


# --- one bad row is one quarantined row --------------------------------------------------


def message(mid: str, **fields: object) -> str:
    record = {"messageId": mid, "from": "InfoSMS", "to": "923001234567",
              "sentAt": "2025-05-02T10:00:00.000+0000",
              "status": {"groupName": "DELIVERED"}, "price": {"pricePerMessage": 0.01}}  # fmt: skip
    return json.dumps(record | fields) + "\n"


def test_wrong_json_types_quarantine_their_line_only(store: Resources, tmp_path: Path) -> None:
    p = tmp_path / "logs.jsonl"
    p.write_text(
        message("m1")
        + message("m2", status="DELIVERED")
        + message("m3", price=0.01)
        + message("m4", to={"number": "923001234567"})
        + message("m5")
    )
    assert ingest(p) == 0
    assert gold(store).get_column("record_id").to_list() == ["m1", "m5"]
    assert quarantined(store) == {2: "bad_type:status", 3: "bad_type:price", 4: "bad_type:to"}


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_invalid_utf8_byte_quarantines_its_row_only(
    store: Resources, tmp_path: Path, fmt: str
) -> None:
    p = tmp_path / f"in.{fmt}"
    if fmt == "csv":
        lines = [HEADER, row("c1"), row("c2"), row("c3")]
        data = "".join(lines).encode().replace(b"voice,outbound,+922134567890,+923001234567,61\nc3", b"voice,outbound,+922134567890,+92300\xff1234567,61\nc3")  # fmt: skip
        bad_line = 3
    else:
        data = (message("c1") + message("c2") + message("c3")).encode()
        data = data.replace(b'"c2", "from": "InfoSMS"', b'"c2", "from": "Info\xffSMS"')
        bad_line = 2
    assert b"\xff" in data
    p.write_bytes(data)
    assert ingest(p) == 0
    assert len(gold(store)) == 2
    assert quarantined(store) == {bad_line: "bad_encoding"}


def test_dates_and_durations_out_of_range_are_row_failures(
    store: Resources, tmp_path: Path
) -> None:
    p = tmp_path / "export.csv"
    p.write_text(
        HEADER
        + row("c1")
        + row("c2", when="1900-01-01T00:00:00Z")
        + row("c3", when="2100-06-01T00:00:00Z")
        + row("c4", duration="700000")
        + row("c5", when="2027-01-01T00:00:00Z")
        + row("c6", when="2025-06-16T23:59:59Z")  # within the day of tolerance
        + row("c7", when="2025-06-17T00:00:00Z")
    )
    assert ingest(p) == 0
    assert gold(store).get_column("record_id").to_list() == ["c1", "c6"]
    assert quarantined(store) == {
        3: "out_of_range:event_time",
        4: "out_of_range:event_time",
        5: "out_of_range:duration_s",
        6: "future_timestamp",
        8: "future_timestamp",
    }


def test_a_duplicate_header_column_quarantines_the_file_with_a_clear_reason(
    store: Resources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "export.csv"
    p.write_text(HEADER.replace("duration_s", "channel") + row("c1"))
    assert ingest(p) == 0
    out = capsys.readouterr().out
    assert "FILE QUARANTINED WHOLE" in out and "duplicate_column" in out and "channel" in out
    note = next(store.store.list("quarantine/files/"))
    assert json.loads(store.store.get_bytes(note.key))["reason"] == "duplicate_column"


# --- what the formats define: BOM, blank leading lines, CRLF, quoted newlines ------------


def test_a_bom_before_json_lines_and_a_json_document(store: Resources, tmp_path: Path) -> None:
    lines = tmp_path / "logs.jsonl"
    lines.write_bytes(b"\xef\xbb\xbf" + (message("m1") + message("m2")).encode())
    doc = tmp_path / "page.json"
    doc.write_bytes(b"\xef\xbb\xbf" + json.dumps({"results": [json.loads(message("m3"))]}).encode())
    assert ingest(lines) == 0 and ingest(doc) == 0
    assert sorted(gold(store).get_column("record_id").to_list()) == ["m1", "m2", "m3"]
    assert set(gold(store).get_column("source").to_list()) == {"default"}  # CDR_DEFAULT_SOURCE


def test_blank_lines_before_a_csv_header_and_crlf_line_ends(
    store: Resources, tmp_path: Path
) -> None:
    p = tmp_path / "export.csv"
    p.write_bytes(("\r\n\n" + HEADER + row("c1") + row("c2")).replace("\n", "\r\n").encode())
    assert ingest(p) == 0
    kept = gold(store)
    assert kept.get_column("record_id").to_list() == ["c1", "c2"]
    # `\r\r\n\r\n` is three line ends (a bare `\r` is one, as Python's csv reads it)
    assert kept.get_column("source_line").to_list() == [5, 6]
    assert kept.get_column("duration_s").to_list() == [61.0, 61.0]


def test_a_quoted_newline_is_part_of_its_field(store: Resources, tmp_path: Path) -> None:
    csv_file = tmp_path / "export.csv"
    head = "record_id,event_time,channel,direction,origin,destination,duration_s,note\n"
    csv_file.write_text(
        head
        + row("c1").rstrip("\n") + ',"one line"\n'
        + row("c2").rstrip("\n") + ',"two\nlines, with a comma"\n'
        + row("c3").rstrip("\n") + ",plain\n"
    )  # fmt: skip
    master = tmp_path / "Master.csv"
    master.write_text(
        asterisk_18("1746180000.101")
        + asterisk_18("1746180000.102", lastdata="PJSIP/2000,30\nsecond line")
        + asterisk_18("1746180000.103")
    )
    assert ingest(csv_file) == 0 and ingest(master) == 0
    kept = gold(store)
    assert sorted(kept.get_column("record_id").to_list()) == [
        "1746180000.101", "1746180000.102", "1746180000.103", "c1", "c2", "c3",
    ]  # fmt: skip
    assert quarantined(store) == {}
    lines = dict(kept.select("record_id", "source_line").iter_rows())
    assert (lines["c3"], lines["1746180000.103"]) == (5, 4)  # numbered by physical line
