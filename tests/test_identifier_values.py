"""Values shaped like identifiers are never kept literally: not as sender IDs, not in free text,
not with control characters hidden in them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from pipeline.core.resources import Resources
from pipeline.flows.ingest import ingest_file
from pipeline.records.normalise import normalise_addresses
from tests.helpers import all_text_outputs, assert_no_identifiers, read_tier

HEADER = "record_id,event_time,channel,direction,customer_id,origin,destination,route_id,status,error_code,origin_network"  # fmt: skip


def _ingest(res: Resources, tmp_path: Path, rows: list[str], name: str = "cdr.csv"):  # type: ignore[no-untyped-def]
    path = tmp_path / name
    path.write_bytes(("\n".join([HEADER, *rows]) + "\n").encode())
    return ingest_file(res, path, as_of=dt.date(2025, 6, 1))


def _row(rid: str, origin: str = "InfoSMS", destination: str = "+923339876543", **free: str) -> str:
    f = {"customer_id": "cust-1", "route_id": "rt-1", "status": "DELIVERED", "error_code": "",
         "origin_network": ""} | free  # fmt: skip
    return (
        f"{rid},2025-03-02T10:00:00Z,sms,outbound,{f['customer_id']},{origin},{destination},"
        f"{f['route_id']},{f['status']},{f['error_code']},{f['origin_network']}"
    )


@pytest.mark.parametrize("sender", ["3001234567x", "9230012345a", "Bank 300 1234567"])
def test_a_sender_with_seven_digits_is_never_a_literal_sender_id(sender: str) -> None:
    df = pl.DataFrame({"raw": [sender]})
    row = normalise_addresses(df, {"raw": "a"}, "PK", False).row(0, named=True)
    assert row["a_kind"] is None and row["a_bad"] and row["a_ambiguous"]


def test_identifier_shaped_senders_are_quarantined_not_kept_in_gold(
    res: Resources, tmp_path: Path
) -> None:
    report = _ingest(
        res,
        tmp_path,
        [_row("r-1", "3001234567x"), _row("r-2", "9230012345a"), _row("r-3", "InfoSMS"),
         _row("r-4", "+92 300 1234567")],
    )  # fmt: skip
    assert report.reasons == {"ambiguous_identifier:origin": 2}
    gold = read_tier(res.store, "gold/")
    assert sorted(gold.get_column("record_id")) == ["r-3", "r-4"]
    assert set(gold.get_column("origin").drop_nulls()) == {"InfoSMS"}
    outside = [(k, t) for k, t in all_text_outputs(res.store) if not k.startswith("bronze/")]
    assert_no_identifiers(outside, ["3001234567", "9230012345"])


def test_bare_international_numbers_in_free_text_are_masked(res: Resources, tmp_path: Path) -> None:
    other = "923001234567"  # somebody's number, bare international, in the business's fields
    report = _ingest(
        res,
        tmp_path,
        [
            _row(f"msg-{other}"),
            _row("r-2", customer_id=other),
            _row("r-3", route_id=f"route/{other}"),
            _row("r-4", error_code=f"E{other}"),
            _row("r-5", origin_network=other),
            _row("r-6", status="+44 20 7946 0000"),
            _row("r-7", customer_id="bob@example.org"),
            _row("r-8"),
        ],
    )
    assert report.reasons == {}  # masked, never quarantined: every record is kept
    assert report.scrubbed == {
        "masked:customer_id": 2, "masked:error_code": 1, "masked:origin_network": 1,
        "masked:record_id": 1, "masked:route_id": 1, "masked:status": 1,
    }  # fmt: skip
    gold = read_tier(res.store, "gold/").sort("record_id")
    ids = gold.get_column("record_id").to_list()
    assert ids[1:] == [f"r-{i}" for i in range(2, 9)]
    assert ids[0].startswith("masked-") and not any(ch.isdigit() for ch in ids[0])
    assert gold.row(7, named=True)["customer_id"] == "cust-1"  # untouched where nothing was found
    outside = [(k, t) for k, t in all_text_outputs(res.store) if not k.startswith("bronze/")]
    assert_no_identifiers(outside, ["3001234567", "2079460000", "bob@example.org"])


def test_the_records_own_party_in_any_written_form_is_masked(
    res: Resources, tmp_path: Path
) -> None:
    report = _ingest(
        res,
        tmp_path,
        [
            _row("r-1", destination="+923339876543", customer_id="acct 333-987-6543"),
            _row("r-2", destination="carol.payne@example.net", customer_id="carol.payne"),
            _row("r-3", destination="+923339876543", route_id="rt-9"),
        ],
    )
    assert report.scrubbed == {"masked:customer_id": 2}
    gold = read_tier(res.store, "gold/").sort("record_id")
    assert gold.get_column("customer_id").to_list() == ["masked", "masked", "cust-1"]
    assert gold.get_column("route_id").to_list() == ["rt-1", "rt-1", "rt-9"]


def test_a_nul_byte_in_customer_id_is_removed_and_counted(res: Resources, tmp_path: Path) -> None:
    report = _ingest(
        res, tmp_path, [_row("r-1", customer_id="cust-\x001"), _row("r-2", status="OK\u200b")]
    )
    assert report.scrubbed == {"control:customer_id": 1, "control:status": 1}
    gold = read_tier(res.store, "gold/").sort("record_id")
    assert gold.get_column("customer_id").to_list() == ["cust-1", "cust-1"]
    assert gold.get_column("status").to_list() == ["DELIVERED", "OK"]
    assert report.gold == 2 and report.quarantined == 0
