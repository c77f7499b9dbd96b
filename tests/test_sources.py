"""Each source format is detected from its content and mapped to the canonical fields."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from pipeline.records.sources import FileFormatError, ParseOptions, detect

UTC = dt.UTC
OPTS = ParseOptions(default_region="PK", timezone="UTC", batch_rows=1000)


def parse(
    path: Path, fmt: str | None = None, opts: ParseOptions = OPTS
) -> tuple[str, pl.DataFrame]:
    source = detect(path, fmt)
    return source.name, pl.concat(list(source.parse(path, opts)))


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


MESSAGING_DOC = {
    "results": [
        {"bulkId": "b1", "messageId": "m-out", "to": "41793026727", "from": "InfoSMS",
         "sentAt": "2025-03-31T23:59:59.000+0000", "doneAt": "2025-04-01T00:00:03.000+0000",
         "smsCount": 2, "mccMnc": "22801", "price": {"pricePerMessage": 0.01, "currency": "EUR"},
         "status": {"groupId": 3, "groupName": "DELIVERED", "id": 5, "name": "DELIVERED_TO_HANDSET"},
         "error": {"groupId": 0, "groupName": "OK", "id": 0, "name": "NO_ERROR"},
         "text": "secret content 0300-7654321"},
        {"messageId": "m-in", "from": "923001234567", "to": "8080",
         "receivedAt": "2025-03-15T10:00:00.000+0500", "smsCount": 1, "mccMnc": "41001",
         "text": "STOP"},
        {"messageId": "m-mail", "from": "noreply@shop.example.com", "to": "Alice@Example.com",
         "sentAt": "2025-03-15T10:00:00.000+0000", "channel": "EMAIL", "messageCount": 1,
         "subject": "hello"},
    ]
}  # fmt: skip


def test_messaging_json_document(tmp_path: Path) -> None:
    name, df = parse(write(tmp_path, "logs.json", json.dumps(MESSAGING_DOC)))
    assert name == "messaging"
    out, inbound, mail = (
        df.filter(pl.col("record_id") == r).row(0, named=True) for r in ("m-out", "m-in", "m-mail")
    )
    assert (out["direction"], out["origin_raw"], out["destination_raw"]) == (
        "outbound",
        "InfoSMS",
        "41793026727",
    )
    assert out["event_time"] == dt.datetime(2025, 3, 31, 23, 59, 59, tzinfo=UTC)
    assert (out["units"], out["price"], out["currency"], out["status"]) == (
        2,
        0.01,
        "EUR",
        "DELIVERED",
    )
    assert (out["destination_network"], out["error_code"], out["channel"]) == (
        "22801",
        "NO_ERROR",
        "sms",
    )
    assert (inbound["direction"], inbound["origin_raw"], inbound["origin_network"]) == (
        "inbound",
        "923001234567",
        "41001",
    )
    assert inbound["event_time"] == dt.datetime(2025, 3, 15, 5, 0, tzinfo=UTC)  # +0500 → UTC
    # as written: lower-cased and held to the vocabulary by the transform (`normal_course`)
    assert (mail["channel"], mail["units"]) == ("EMAIL", 1)
    assert df.get_column("parse_error").null_count() == 3
    assert "secret content" not in str(df.drop("raw").to_dicts())


def test_messaging_json_lines_with_a_broken_line(tmp_path: Path) -> None:
    lines = [json.dumps(r) for r in MESSAGING_DOC["results"]]
    lines.insert(1, lines[0][:30])  # truncated
    lines.insert(2, "")  # blank lines are not records
    name, df = parse(write(tmp_path, "logs.jsonl", "\n".join(lines) + "\n"))
    assert name == "messaging"
    assert len(df) == 4
    bad = df.filter(pl.col("parse_error").is_not_null())
    assert bad.select("source_line", "parse_error").rows() == [(2, "bad_json")]


ASTERISK = (
    '"acct-1","1001","03001234567","from-internal","""Ali Khan"" <1001>","PJSIP/1001-00000001",'
    '"PJSIP/trunk-pk-00000002","Dial","PJSIP/03001234567@trunk-pk,30","2025-03-15 10:00:00",'
    '"2025-03-15 10:00:05","2025-03-15 10:01:05","65","60","ANSWERED","DOCUMENTATION",'
    '"1742032800.17",""\n'
    '"acct-1","","2000","from-pstn","""Caller"" <+923001234567>","PJSIP/trunk-pk-00000003",'
    '"PJSIP/2000-00000004","Dial","PJSIP/2000,30","2025-03-15 11:00:00","","2025-03-15 11:00:30",'
    '"30","0","NO ANSWER","DOCUMENTATION",""\n'
    '"acct-1","1001","2000","from-internal","","","","","","2025-03-15 12:00:00","",'
    '"2025-03-15 12:00:09","9","0","BUSY","DOCUMENTATION"\n'
    '"acct-1","1001","2000","x","y","z"\n'
)


def test_asterisk_master_csv(tmp_path: Path) -> None:
    name, df = parse(
        write(tmp_path, "Master.csv", ASTERISK), opts=ParseOptions("PK", "Asia/Karachi")
    )
    assert name == "asterisk"
    rows = df.sort("source_line").iter_rows(named=True)
    first, second, third, fourth = list(rows)
    assert first["record_id"] == "1742032800.17"
    assert (first["direction"], first["origin_raw"], first["destination_raw"]) == (
        "outbound",
        "1001",
        "03001234567",
    )
    assert first["route_id"] == "PJSIP/trunk-pk"
    assert first["event_time"] == dt.datetime(2025, 3, 15, 5, 0, tzinfo=UTC)  # Karachi is UTC+5
    assert (first["duration_s"], first["units"], first["status"]) == (65.0, 60, "ANSWERED")
    # No src: the number inside the caller ID is used, never the caller's name.
    assert (second["direction"], second["origin_raw"]) == ("inbound", '"Caller" <+923001234567>')
    assert second["record_id"] is None  # 17 fields without a uniqueid: derived later
    assert third["record_id"] is None and third["parse_error"] is None  # 16 fields
    assert fourth["parse_error"] == "wrong_column_count"
    assert "Ali Khan" not in str(df.drop("raw").to_dicts())


FREESWITCH = (
    '"Ali Khan","+923001234567","1001","public","2025-03-15 10:00:00","2025-03-15 10:00:02",'
    '"2025-03-15 10:01:02","62","60","NORMAL_CLEARING","a1b2c3d4-0000-4000-8000-000000000001","",'
    '"acct-2","PCMA","PCMA"\n'
    '"","1001","0300-1234567","default","2025-03-15 10:00:00","","2025-03-15 10:00:10","10","0",'
    '"USER_BUSY","a1b2c3d4-0000-4000-8000-000000000002","","acct-2","PCMA","PCMA"\n'
)


def test_freeswitch_example_template(tmp_path: Path) -> None:
    name, df = parse(write(tmp_path, "cdr.csv", FREESWITCH))
    assert name == "freeswitch"
    a, b = df.sort("source_line").iter_rows(named=True)
    assert (a["direction"], a["origin_raw"], a["units"], a["status"]) == (
        "inbound",
        "+923001234567",
        60,
        "NORMAL_CLEARING",
    )
    assert (b["direction"], b["destination_raw"], b["error_code"]) == (
        "outbound",
        "0300-1234567",
        "USER_BUSY",
    )
    assert a["record_id"] == "a1b2c3d4-0000-4000-8000-000000000001"


CANONICAL = (
    "record_id,event_time,channel,direction,origin,destination,duration_s,units,text\n"
    "c1,2025-03-15T10:00:00Z,voice,outbound,+922134567890,0300-1234567,61.5,1,hello there\n"
    "c2,2025-13-40T10:00:00Z,sms,outbound,InfoSMS,+923001234567,,1,x\n"
    "c3,2025-03-15 10:00:00,sms,outbound,InfoSMS,+923001234567,abc,1,x\n"
)


def test_canonical_csv_and_parquet(tmp_path: Path) -> None:
    name, df = parse(write(tmp_path, "export.csv", CANONICAL))
    assert name == "canonical_csv"
    assert df.sort("source_line").get_column("parse_error").to_list() == [
        None, "bad_timestamp:event_time", "bad_number:duration_s",
    ]  # fmt: skip
    assert df.get_column("source_line").sort().to_list() == [2, 3, 4]
    assert "hello there" not in str(df.drop("raw").to_dicts())
    parquet = tmp_path / "export.parquet"
    pl.read_csv(tmp_path / "export.csv", infer_schema=False).write_parquet(parquet)
    name, pq_df = parse(parquet)
    assert name == "canonical_parquet"
    assert (
        pq_df.sort("source_line").get_column("parse_error").to_list()
        == df.sort("source_line").get_column("parse_error").to_list()
    )
    assert pq_df.filter(pl.col("record_id") == "c1").row(0, named=True)["duration_s"] == 61.5


def test_format_override_and_unrecognised_files(tmp_path: Path) -> None:
    p = write(tmp_path, "odd.txt", "just some words\n")
    with pytest.raises(FileFormatError) as err:
        detect(p)
    assert err.value.reason == "unrecognised_format"
    with pytest.raises(ValueError, match="unknown format"):
        detect(p, "nope")
    assert detect(write(tmp_path, "f.csv", FREESWITCH), "freeswitch").name == "freeswitch"


def test_large_file_is_streamed_in_batches(tmp_path: Path) -> None:
    body = "".join(FREESWITCH.splitlines(keepends=True)[1] for _ in range(2500))
    p = write(tmp_path, "many.csv", body)
    batches = list(detect(p).parse(p, ParseOptions("PK", "UTC", batch_rows=100)))
    assert len(batches) > 5
    lines = pl.concat(batches).get_column("source_line")
    assert lines.to_list() == list(range(1, 2501))


def test_an_unknown_channel_is_kept_as_written_lower_cased(res, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`FAX` used to become `other` (messaging) or be refused (canonical): now kept as detail."""
    import datetime as dt

    from pipeline.flows.ingest import ingest_file
    from tests.helpers import read_tier

    canonical = tmp_path / "fax.csv"
    canonical.write_text(
        "record_id,event_time,channel,direction,origin,destination,status\n"
        "f1,2025-05-02T10:00:00Z,FAX,Outbound,InfoSMS,+923001234567,DELIVERED\n"
        "f2,2025-05-02T10:01:00Z,SMS,outbound,InfoSMS,+923001234567,DELIVERED\n"
    )
    messaging = tmp_path / "fax.jsonl"
    messaging.write_text(
        '{"messageId": "m1", "sentAt": "2025-05-02T10:00:00.000+0000", "channel": "FAX",'
        ' "from": "InfoSMS", "to": "923001234567", "status": {"groupName": "DELIVERED"}}\n'
    )
    for path in (canonical, messaging):
        report = ingest_file(res, path, as_of=dt.date(2025, 6, 1))
        assert report.quarantined == 0, report.reasons
    gold = read_tier(res.store, "gold/").sort("record_id")
    assert gold.select("record_id", "channel", "channel_detail", "direction").rows() == [
        ("f1", "other", "fax", "outbound"),
        ("f2", "sms", None, "outbound"),
        ("m1", "other", "fax", "outbound"),
    ]
