"""The free-text check searches only the texts long enough to hold a record's own end users
(`freetext._could_hold_own`). A hypothesis property holds it to the rule it must not weaken,
written here row by row in plain Python: a text is masked (a record ID: its row quarantined)
when it holds the record's own number (its last nine digits, whatever separators surround
them) or its e-mail or SIP address or that address's user part, or anything the identifier
detector finds, run here by Python's `re` as Great Expectations runs it."""

from __future__ import annotations

import re

import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.records.detector import pattern
from pipeline.records.freetext import MASK, MASKED_ID_PREFIX, party_patterns, scrub

DIGITS = "0123456789"
FIELDS = ("record_id", "customer_id", "status", "route_id")


@st.composite
def party(draw: st.DrawFn) -> tuple[str | None, str | None]:
    kind = draw(st.sampled_from(["msisdn", "email", "sip", "alphanumeric", None]))
    if kind == "msisdn":
        return kind, "+" + draw(st.text(DIGITS, min_size=5, max_size=12))
    if kind in ("email", "sip"):
        user = draw(st.text("abcxy.1", min_size=1, max_size=8))
        return kind, f"{user}@host.example"
    if kind == "alphanumeric":
        return kind, draw(st.text("ABCDE12", min_size=1, max_size=8))
    return None, None


@st.composite
def text_about(draw: st.DrawFn, values: list[str | None]) -> str | None:
    """A text made of pieces: the parties' values, cut and separated, and noise."""
    pieces = []
    for _ in range(draw(st.integers(0, 4))):
        value = draw(st.sampled_from([v for v in values if v] or ["x"]))
        start = draw(st.sampled_from([0, 1, *range(len(value) + 1)]))  # often whole
        end = draw(st.sampled_from([len(value), *range(start, len(value) + 1)]))
        piece = value[start:end]
        sep = draw(st.sampled_from(["", "-", " ", "."]))
        pieces.append(sep.join(piece) if draw(st.booleans()) else piece)
        pieces.append(draw(st.text("ab09-X@", max_size=4)))
    text = "".join(pieces)
    if draw(st.booleans()):
        text = text.upper()
    return text or draw(st.sampled_from([None, ""]))


def holds_own(text: str | None, parties: list[tuple[str | None, str | None]]) -> bool:
    if text is None:
        return False
    digits, low = re.sub(r"[^0-9]", "", text), text.lower()
    for kind, value in parties:
        if kind == "msisdn" and value:
            tail = re.sub(r"[^0-9]", "", value)[-9:]
            if len(tail) >= 7 and tail in digits:
                return True
        if kind in ("email", "sip") and value:
            user = value.split("@", 1)[0]
            if value in low or (len(user) >= 5 and user in low):
                return True
    return False


@st.composite
def batch(draw: st.DrawFn) -> pl.DataFrame:
    rows = []
    for _ in range(draw(st.integers(1, 12))):
        (ok, ov), (dk, dv) = draw(party()), draw(party())
        texts = {f: draw(text_about([ov, dv])) for f in FIELDS}
        rows.append({"o_kind": ok, "o_value": ov, "d_kind": dk, "d_value": dv} | texts)
    return pl.DataFrame(rows, schema={c: pl.String for c in rows[0]})


def _edge(o: tuple[str, str], text: str) -> pl.DataFrame:
    row = {"o_kind": o[0], "o_value": o[1], "d_kind": None, "d_value": None}
    return pl.DataFrame([row | dict.fromkeys(FIELDS, text)], schema={c: pl.String for c in row} | dict.fromkeys(FIELDS, pl.String))  # fmt: skip


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(batch())
@example(_edge(("msisdn", "+1234567"), "id 12-34-567"))  # the shortest tail: seven digits
@example(_edge(("email", "abcde@host.example"), "ABCDE"))  # the shortest user part: five
@example(_edge(("sip", "ab@h.io"), "x ab@h.io"))  # a short user: the whole address
def test_a_text_is_masked_exactly_when_it_holds_an_own_party_or_an_identifier(
    df: pl.DataFrame,
) -> None:
    df = df.with_columns(*party_patterns("o"), *party_patterns("d"))
    out, counts = scrub(df, b"k" * 32, "PK")
    for field in FIELDS:
        for n, row in enumerate(df.iter_rows(named=True)):
            parties = [(row["o_kind"], row["o_value"]), (row["d_kind"], row["d_value"])]
            shaped = row[field] is not None and re.search(pattern("PK"), row[field]) is not None
            expected = shaped or holds_own(row[field], parties)
            if field == "record_id":  # a stand-in keyed by the file's key, never `masked`
                masked_id = out[field][n] != row[field] and out[field][n].startswith(
                    MASKED_ID_PREFIX
                )
                assert masked_id == expected, row
            else:
                assert (out[field][n] == MASK and row[field] != MASK) == expected, (field, row)
        changed = sum(a != b for a, b in zip(out[field], df[field], strict=True) if b is not None)
        assert counts.get(f"masked:{field}", 0) == changed


def test_identifiers_typed_in_look_alike_characters_are_masked_in_free_text(res, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A number in full-width or Arabic-Indic digits, or an address in full-width letters, is
    read as what it is: masked in a status, an error code or a record ID.
    Searched only as ASCII, each was kept in gold for ten years."""
    import datetime as dt

    from pipeline.flows.ingest import ingest_file
    from tests.helpers import all_text_outputs, find_identifiers, read_tier

    wide = "＋９２ ３００ １２３４５６７"
    arabic = "٠٣٠٠١٢٣٤٥٦٧"
    address = "ａｌｉ＠ｅｘａｍｐｌｅ．ｃｏｍ"
    path = tmp_path / "sms.csv"
    path.write_text(
        "record_id,event_time,channel,direction,origin,destination,status,error_code\n"
        f"b1,2025-05-02T10:00:00Z,sms,outbound,InfoSMS,+923001234567,DELIVERED to {wide},\n"
        f"b2,2025-05-02T10:01:00Z,sms,outbound,InfoSMS,+447797712345,ok,call {arabic}\n"
        f"b3,2025-05-02T10:02:00Z,sms,outbound,InfoSMS,+447797712345,ok,fwd {address}\n"
        "b4,2025-05-02T10:03:00Z,sms,outbound,InfoSMS,+447797712345,ok,E42\n"
        f"id-{arabic},2025-05-02T10:04:00Z,sms,outbound,InfoSMS,+447797712345,ok,\n"
        "b5,2025-05-02T10:05:00Z,sms,outbound,InfoSMS,+447797712345,ok,to +92\u2013300\u20131234567\n"
    )
    report = ingest_file(res, path, as_of=dt.date(2025, 6, 1))
    assert (report.gold, report.quarantined) == (6, 0)
    assert report.scrubbed == {"masked:status": 1, "masked:error_code": 3, "masked:record_id": 1}
    gold = read_tier(res.store, "gold/").sort("source_line")
    assert gold.get_column("status").to_list() == [MASK, "ok", "ok", "ok", "ok", "ok"]
    assert gold.get_column("error_code").to_list() == [None, MASK, MASK, "E42", None, MASK]
    assert gold.get_column("record_id")[4].startswith(MASKED_ID_PREFIX)
    needles = [wide, arabic, address, wide.replace(" ", ""), "3001234567", "ali@example.com"]
    assert not find_identifiers(all_text_outputs(res.store), needles)
