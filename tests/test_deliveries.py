"""Files as real systems deliver them: leap seconds, old Mac line ends. Each case is the file,
the command and the check, as an operator met it; `verify --deep` reads them as ingest does
(the autouse deep check after every test)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from pipeline.cli import main as cli
from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from tests.helpers import read_tier

HEADER = "record_id,event_time,channel,direction,origin,destination\n"
AS_OF = "2025-06-15"


@pytest.fixture
def res(local_env: dict[str, str]) -> Resources:
    return Resources.from_settings(Settings.from_env(local_env))


def _ingest(*paths: Path) -> None:
    assert cli(["ingest", "--as-of", AS_OF, "--default-region", "PK", *map(str, paths)]) == 0


def test_a_leap_second_stays_in_its_minute_month_and_year(
    res: Resources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`2016-12-31T23:59:60Z` is the last instant of 2016, not the first of 2017: its month's
    identifiers are purged with December's, in every format."""
    csv = tmp_path / "leap.csv"
    csv.write_text(
        HEADER
        + "z1,2016-12-31T23:59:60Z,sms,outbound,InfoSMS,+923001234567\n"
        + "z2,2016-12-31 23:59:60.5,sms,outbound,InfoSMS,+923001234567\n"
        + "z3,2017-01-01T04:59:60+05:00,sms,outbound,InfoSMS,+923001234567\n"
        + "z4,2016-12-31T23:59:59Z,sms,outbound,InfoSMS,+923001234567\n"
    )
    jsonl = tmp_path / "leap.jsonl"
    message = {"messageId": "m1", "from": "InfoSMS", "to": "923001234567",
               "sentAt": "2016-12-31T23:59:60.000+0000"}  # fmt: skip
    jsonl.write_text(json.dumps(message) + "\n")
    asterisk = tmp_path / "Master.csv"
    asterisk.write_text(
        '"acc","1001","+923001234567","from-internal","","PJSIP/1001-01","PJSIP/trunk-02",'
        '"Dial","","2016-12-31 23:59:60","2016-12-31 23:59:60","2017-01-01 00:00:30","30","30",'
        '"ANSWERED","DOCUMENTATION","1483228800.1",""\n'
    )
    _ingest(csv, jsonl, asterisk)
    gold = read_tier(res.store, "gold/").sort("record_id")
    last = dt.datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)
    times = gold.get_column("event_time").to_list()
    assert len(times) == 6 and times.count(last) == 5  # z4 is 23:59:59 itself
    assert gold.filter(pl.col("record_id") == "z4").get_column("event_time").item() < last
    assert [o.key for o in res.store.list("gold/") if "month=12" not in o.key] == []
    assert all("year=2016" in o.key for o in res.store.list("gold/"))
    capsys.readouterr()
    assert cli(["verify", "--deep"]) == 0
    assert capsys.readouterr().out.count("original (deep)  ok") == 3


def _records(lines: list[str], end: str) -> bytes:
    return (HEADER.rstrip("\n") + end + end.join(lines) + end).encode()


@pytest.mark.parametrize("end", ["\r", "\r\n", "\n"])
def test_old_mac_line_ends_are_line_ends(
    res: Resources, tmp_path: Path, capsys: pytest.CaptureFixture[str], end: str
) -> None:
    """A CSV written with bare `\\r` line ends (classic Mac exports) is read record by record,
    like one with `\\r\\n` or `\\n`: never two records merged into one quarantined row."""
    rows = [f"r{i},2025-05-02T10:00:00Z,sms,outbound,InfoSMS,+92300123{i:04d}" for i in range(3)]
    path = tmp_path / "mac.csv"
    path.write_bytes(_records(rows, end))
    _ingest(path)
    gold = read_tier(res.store, "gold/").sort("source_line")
    assert gold.select("record_id", "source_line").rows() == [("r0", 2), ("r1", 3), ("r2", 4)]
    capsys.readouterr()
    assert cli(["verify", "--deep"]) == 0


def test_bare_cr_line_ends_across_many_blocks_and_inside_quotes(
    res: Resources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file of bare `\\r` ends bigger than a read block (no `\\n` at all: it is still read in
    bounded blocks), and a quoted field holding a `\\r`, which is part of its value."""
    n = 4000
    rows = [
        f"r{i},2025-05-02T10:00:00Z,sms,outbound,InfoSMS,+92300{i:07d},"
        + ('"two\rlines"' if i == 7 else "plain " + "x" * 40)
        for i in range(n)
    ]
    path = tmp_path / "big-mac.csv"
    header = HEADER.rstrip("\n") + ",status"
    path.write_bytes((header + "\r" + "\r".join(rows) + "\r").encode())
    assert path.stat().st_size > 3 * (1 << 16)
    _ingest(path)
    gold = read_tier(res.store, "gold/").sort("source_line")
    assert len(gold) == n
    assert gold.get_column("source_line").to_list()[:8] == [2, 3, 4, 5, 6, 7, 8, 9]
    assert gold.filter(pl.col("record_id") == "r7").get_column("status").to_list() == ["twolines"]
    assert gold.get_column("source_line").max() == n + 2  # the quoted `\r` is a line of its own
    capsys.readouterr()
    assert cli(["verify", "--deep"]) == 0
