"""Closed-world tiers: every stored column has a declared kind, and no identifier survives in
any of them, whatever field it was written in and however it was written.

The property test embeds generated phone numbers and addresses, in the forms real systems write
them, into every text field of every supported format, ingests, and searches every object
outside the encrypted ones (every Parquet value, JSON, Data Docs, logs) with digits folded and
separators dropped. It must find nothing, and the records kept must be those kept without the
identifiers: masking, never quarantine.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import json
import logging
import re
import unicodedata
from pathlib import Path

import phonenumbers
import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from pipeline.flows.ingest import IngestError, ingest_file
from pipeline.records import detector, normalise, tiers
from pipeline.records.formats import ASTERISK, FREESWITCH
from pipeline.records.freetext import MASK
from pipeline.records.schema import (
    COLUMN_KINDS,
    FREE_TEXT,
    FREE_TEXT_COLUMNS,
    GOLD,
    PROOFS,
    QUARANTINE_ROWS,
    SILVER,
    VAULT,
    UndeclaredColumn,
    require_kinds,
)
from pipeline.report import run_summary
from tests.helpers import all_text_outputs, as_text, read_tier

AS_OF = dt.date(2025, 6, 1)
WHEN = "2025-05-02 10:00:00"
#: the marks the search drops, as the detector joins them (and more: a search errs wide)
_DROPPED = re.compile(r"[\s\-./()\[\]_:*#=,+]")


def _fresh(tmp_path: Path, name: str, docs: str = "docs") -> Resources:
    return Resources.from_settings(
        Settings.from_env(
            {
                "CDR_STORE": str(tmp_path / name / "store"),
                "CDR_KEYRING": str(tmp_path / name / "keys"),
                "CDR_DATA_DOCS": str(tmp_path / name / docs),
                "CDR_DEFAULT_REGION": "PK",
                "CDR_BATCH_ROWS": "700",
                "CDR_SOURCE_TIMEZONE": "UTC",  # the generated PBX times are UTC
            }
        )
    )


def _as_searched(text: str) -> str:
    """A text as the search reads it: NFKC, every digit as ASCII, dashes and separators gone."""
    folded = "".join(
        str(unicodedata.digit(ch)) if unicodedata.digit(ch, None) is not None else ch
        for ch in unicodedata.normalize("NFKC", text)
    )
    return _DROPPED.sub("", folded.translate({0x2013: "-", 0x2014: "-", 0x2212: "-"})).lower()


def _everything_written(
    res: Resources, docs: Path, logs: str, before: frozenset[tuple[str, int]] = frozenset()
) -> list[tuple[str, str]]:
    """Every object but the encrypted originals (those not in `before`, a listing of
    (key, size) taken earlier), every Data Docs file (the results rendered first), and the logs."""
    res.quality.render_docs()
    texts = [
        (o.key, as_text(o.key, res.store.get_bytes(o.key)))
        for o in res.store.list("")
        if not o.key.startswith("bronze/") and (o.key, o.size) not in before
    ]
    texts += [(str(p), p.read_text(errors="replace")) for p in docs.rglob("*") if p.is_file()]
    return [*texts, ("log", logs)]


def _leaks(texts: list[tuple[str, str]], needles: list[str]) -> list[str]:
    wanted = [_as_searched(n) for n in needles]
    return [f"{k}: {n}" for k, t in texts for n in wanted if n in _as_searched(t)]


# --- column kinds ----------------------------------------------------------------------------
def test_every_column_a_tier_stores_has_a_declared_kind() -> None:
    for schema in (SILVER, GOLD, VAULT, QUARANTINE_ROWS, PROOFS):
        require_kinds(schema)
    assert set(FREE_TEXT_COLUMNS) <= set(SILVER)
    assert {"record_id", "customer_id", "route_id", "status", "channel_detail"} <= {
        c for c, k in COLUMN_KINDS.items() if k == FREE_TEXT
    }


def test_a_tier_refuses_a_column_without_a_declared_kind(
    res: Resources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A column added to gold without a kind is never written: the file fails, nothing is
    published, and the error names the column."""
    with pytest.raises(UndeclaredColumn, match="operator_note"):
        require_kinds([*GOLD, "operator_note"])
    monkeypatch.setattr(tiers, "GOLD", {**GOLD, "operator_note": pl.String()})
    path = tmp_path / "a.csv"
    path.write_text(
        "record_id,event_time,channel,direction,origin,destination\n"
        "r1,2025-05-02T10:00:00Z,sms,outbound,InfoSMS,+923331234567\n"
    )
    with pytest.raises(IngestError, match=r"FAILED \(UndeclaredColumn\)"):
        ingest_file(res, path, as_of=AS_OF)
    assert not list(res.store.list("gold/")) and not list(res.store.list("silver/"))


# --- the cases, as they were met -------------------------------------------------------
CANONICAL = "record_id,event_time,channel,direction,customer_id,origin,destination,route_id,status,error_code,currency,price"  # fmt: skip
FORMS = [
    "3009998801", "0300 999 8802", "92-300-9998803", "(0300) 9998804", "0300-999-8806",
    "0300.999.8810", "acct:3009998811", "92 300 9998812", "٠٣٠٠٩٩٩٨٨١٣", "+92 300 9998814",
    "00923009998815", "msisdn=923009998816", "tel:+923009998817", "0300\u2013999\u20138818",
    "３００９９９８８１９", "۰۳۰۰۹۹۹۸۸۲۰",
]  # fmt: skip


def _canonical(path: Path, rows: list[dict[str, str]]) -> Path:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CANONICAL.split(","), lineterminator="\n")
    writer.writeheader()
    base = {"event_time": "2025-05-02T10:00:00Z", "channel": "sms", "direction": "outbound",
            "customer_id": "cust-1", "origin": "InfoSMS", "destination": "+923331234567",
            "route_id": "rt-1", "status": "DELIVERED", "error_code": "", "currency": "PKR",
            "price": "1.5"}  # fmt: skip
    for n, row in enumerate(rows):
        writer.writerow(base | {"record_id": f"r-{n:02d}"} | row)
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


@pytest.mark.slow
def test_other_peoples_numbers_in_customer_and_route_ids_are_masked_in_every_common_form(
    res: Resources, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [{"customer_id": f} for f in FORMS] + [{"route_id": f"trunk/{f}"} for f in FORMS]
    rows += [{"customer_id": "cust-17", "route_id": "rt-9", "error_code": "E42"}]  # untouched
    with caplog.at_level(logging.DEBUG):
        report = ingest_file(res, _canonical(tmp_path / "a.csv", rows), as_of=AS_OF)
    assert (report.gold, report.quarantined) == (len(rows), 0)
    assert report.scrubbed == {"masked:customer_id": len(FORMS), "masked:route_id": len(FORMS)}
    gold = read_tier(res.store, "gold/").sort("source_line")
    assert gold.get_column("customer_id").to_list() == [MASK] * len(FORMS) + ["cust-1"] * len(
        FORMS
    ) + ["cust-17"]
    assert gold.get_column("route_id").to_list()[len(FORMS) :] == [MASK] * len(FORMS) + ["rt-9"]
    texts = _everything_written(res, Path(res.settings.data_docs), caplog.text)
    assert not _leaks(texts, [re.sub(r"\D", "", f)[-9:] for f in FORMS[:8]] + ["999881"])


def test_unknown_channels_shifted_currencies_and_directions_keep_only_their_vocabulary(
    res: Resources, tmp_path: Path
) -> None:
    rows = [
        {"channel": "sms to 03009998887"},
        {"channel": "USSD*123*923009998886#"},
        {"channel": "Ali.Khan@Example.pk"},
        {"channel": "carrier pigeon"},
        {"currency": "923009998885"},
        {"currency": "0300-7654321"},
        {"currency": " pkr"},
        {"direction": "outbound 0300 7654322"},
    ]
    report = ingest_file(res, _canonical(tmp_path / "a.csv", rows), as_of=AS_OF)
    # Every record kept: a hit is masked before the suites run, never a reason to refuse.
    assert (report.status, report.gold, report.quarantined) == ("ingested", len(rows), 0)
    assert report.scrubbed == {
        "masked:channel_detail": 3, "other:channel": 4, "other:currency": 2, "other:direction": 1,
    }  # fmt: skip
    gold = read_tier(res.store, "gold/").sort("source_line")
    assert gold.get_column("channel").to_list()[:4] == ["other"] * 4
    assert gold.get_column("channel_detail").to_list()[:4] == [MASK] * 3 + ["carrier pigeon"]
    assert gold.get_column("currency").to_list()[4:7] == ["other", "other", "PKR"]
    assert gold.get_column("direction").to_list()[7] == "other"
    texts = [(k, t) for k, t in all_text_outputs(res.store) if not k.startswith("bronze/")]
    assert not _leaks(texts, ["3009998887", "3009998886", "3009998885", "3007654321", "ali.khan"])


def test_a_messaging_channel_naming_a_number_is_masked(res: Resources, tmp_path: Path) -> None:
    rec = {"messageId": "m-1", "from": "InfoSMS", "to": "923331234567", "sentAt":
           "2025-05-02T10:00:00.000+0000", "smsCount": 1, "channel": "WhatsApp to 0300-7778889"}  # fmt: skip
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    report = ingest_file(res, path, as_of=AS_OF)
    assert (report.gold, report.quarantined) == (1, 0)
    row = read_tier(res.store, "gold/").row(0, named=True)
    assert (row["channel"], row["channel_detail"]) == ("other", MASK)
    texts = [(k, t) for k, t in all_text_outputs(res.store) if not k.startswith("bronze/")]
    assert not _leaks(texts, ["3007778889"])


# --- numbers read as a person reads them -------------------------------------------------------
SAME_PERSON = ["+923001234567", "923001234567.0", "+923001234567.0", "3001234567.0",
               "+92 (0) 300 1234567", "0092 (0)300-1234567"]  # fmt: skip


def test_spreadsheet_and_trunk_forms_are_one_person_found_by_an_export(
    res: Resources, tmp_path: Path
) -> None:
    from pipeline.flows.export import run_export
    from tests.test_export import _open, _pem_pair, _request

    rows = [{"destination": d, "event_time": f"2025-04-0{n + 1}T10:00:00Z"} for n, d in enumerate(SAME_PERSON)]  # fmt: skip
    report = ingest_file(res, _canonical(tmp_path / "a.csv", rows), as_of=AS_OF)
    assert (report.gold, report.quarantined) == (len(SAME_PERSON), 0)
    silver = read_tier(res.store, "silver/")
    assert silver.get_column("destination").n_unique() == 1
    assert set(silver.get_column("destination_country")) == {"PK"}
    public, secret = _pem_pair()
    result = run_export(res, _request(public, ["0300 1234567"]))
    _, records = _open(res, result, secret)
    assert sorted(records.get_column("record_id")) == [f"r-{n:02d}" for n in range(len(SAME_PERSON))]  # fmt: skip


def test_an_impossible_number_is_quarantined_then_replayed_under_a_newer_plan(
    res: Resources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A number no plan allows is never kept under a token of nobody: quarantined as
    `invalid_number:<side>`. When a newer numbering plan allows it (simulated: the plan at
    ingest lacked Pakistan's mobile ranges), a replay re-reads it from the sealed original,
    once per plan."""
    from pipeline.flows.replay import ReplayRequest, run_replay

    real = normalise._plan
    older = normalise.numbering_plan()

    def without_pk(region_code: str) -> object:
        return None if region_code == "PK" else real(region_code)

    normalise._valid_for.cache_clear()  # the rule as polars reads it, built from the plan
    monkeypatch.setattr(normalise, "_plan", without_pk)
    rows = [{"destination": "+923001234567"}, {"destination": "+447797712345"},
            {"destination": "+9230012345670"}]  # fmt: skip
    report = ingest_file(res, _canonical(tmp_path / "a.csv", rows), as_of=AS_OF)
    assert report.reasons == {"invalid_number:destination": 2}
    assert report.gold == 1
    request = ReplayRequest("invalid_number", None, AS_OF)
    assert run_replay(res, request).files == []  # nothing newer yet: nothing to do
    monkeypatch.setattr(normalise, "_plan", real)
    normalise._valid_for.cache_clear()
    monkeypatch.setattr(normalise, "numbering_plan", lambda: f"{older}+1")
    moved = run_replay(res, request)
    assert moved.moved == 1  # the real number; +92 300 1234567 0 stays impossible
    gold = read_tier(res.store, "gold/")
    assert sorted(gold.get_column("record_id")) == ["r-00", "r-01"]
    assert run_replay(res, request).files == []  # once per plan
    body = json.loads(res.store.get_bytes(next(k.key for k in res.store.list("seals/") if k.key.endswith(".parse.json"))))["body"]  # fmt: skip
    assert body["reasons"] == {"invalid_number:destination": 1}


def test_the_summary_shows_every_reason_and_every_masking_count(
    res: Resources, tmp_path: Path
) -> None:
    rows = [{"customer_id": "acct 0300-999-8801"}, {"destination": "+9230012345670"},
            {"currency": "XYZ"}]  # fmt: skip
    report = ingest_file(res, _canonical(tmp_path / "a.csv", rows), as_of=AS_OF)
    text = run_summary([report.to_dict()])
    for line in ("invalid_number:destination", "masked:customer_id", "other:currency"):
        assert line in text
    assert "999" not in text


# --- the detector against phonenumbers' own matcher --------------------------------------------
@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text("0123456789 -()./", min_size=1, max_size=18),
            st.sampled_from(
                [
                    "call ",
                    "acct:",
                    "x",
                    " / ",
                    "ref#",
                    "+",
                    "00",
                    "tel:",
                    "+92 ",
                    "0300",
                    "3",
                    "92",
                    "+44 20 ",
                    "(0)",
                ]
            ),
        ),
        min_size=1,
        max_size=6,
    ).map("".join)
)
@example("call 0300 999 8802 now")
@example("+92 (0) 300 1234567")
@example("x+44 20 7946 0000")
def test_the_detector_finds_every_number_phonenumbers_matcher_finds(text: str) -> None:
    """Every valid number `PhoneNumberMatcher` finds in a text (region PK, leniency VALID) makes
    the text a hit: the detector errs wider (any number a plan's general pattern allows),
    never narrower."""
    flagged = re.search(detector.pattern("PK"), text) is not None
    for match in phonenumbers.PhoneNumberMatcher(text, "PK", phonenumbers.Leniency.VALID):
        assert flagged, (text, match.raw_string)


@pytest.mark.parametrize(
    "value",
    ["r0000000044", "1733580000.1234", "cust-001", "rt-1", "E42", "30001", "8080", "41001",
     "2025-03-15", "DELIVERED", "NORMAL_CLEARING", "PJSIP/trunk-pk", "InfoSMS"],
)  # fmt: skip
def test_what_no_plan_reads_as_a_number_is_kept(value: str) -> None:
    assert re.search(detector.pattern("PK"), value) is None


def test_no_run_of_five_digits_reads_as_a_number_so_six_is_the_floor_of_file_labels() -> None:
    """Every 5-digit string is kept by the detector, a 6-digit one may not be (`+43 1000`): file
    names are labelled from 6 digits on, so the suites' check of `source_file` never refuses a
    file for its own name, and derived record IDs group digits by at most three."""
    from pipeline.core import layout

    fives = pl.DataFrame({"v": [f"{i:05d}" for i in range(100_000)]})
    assert not fives.select(detector.identifying(pl.col("v"), "PK").any()).item()
    assert re.search(detector.pattern("PK"), "431000")
    assert layout.file_label("CDR_431000.csv").startswith(layout.FILE_LABEL_PREFIX)
    assert layout.file_label("cdr-2025.csv") == "cdr-2025.csv"
    for name in ("0300-1234567.csv", "x" * 3):
        assert not re.search(detector.pattern("PK"), layout.file_label(name))
    assert not re.search(detector.pattern("PK"), layout.derived_record_id("9" * 64, 92_300_123_456))


# --- the property: any identifier, any form, any text field, any format ----------------------
@st.composite
def written(draw: st.DrawFn) -> tuple[str, str]:
    """(a phone number or address as some system writes it, what must never be found)."""
    if draw(st.integers(0, 5)) == 0:
        user = "zq" + draw(st.text("abcdefghijklmnopqrstuvwxyz", min_size=8, max_size=10))
        host = draw(st.sampled_from(["example.pk", "mail.example.com", "10.0.0.7"]))
        form = draw(st.sampled_from(["{u}@{h}", "mailto:{u}@{h}", "sip:{u}@{h}",
                                     "<{u}@{h}>", "{U}@{h}", "{u}＠{h}"]))  # fmt: skip
        return form.format(u=user, U=user.title(), h=host), user
    national = "3" + draw(st.sampled_from("0123")) + draw(st.text("0123456789", min_size=8, max_size=8))  # fmt: skip
    lead = draw(st.sampled_from(["", "0", "92", "+92", "0092", "+92 (0) ", "92-"]))
    cuts = sorted(draw(st.lists(st.integers(1, 9), max_size=3, unique=True)))
    parts = [national[i:j] for i, j in zip([0, *cuts], [*cuts, 10], strict=True)]
    sep = draw(st.sampled_from(["", " ", "-", ".", "/", "\u2013", " - "]))
    number = lead + sep.join(parts)
    if draw(st.booleans()):
        number = f"({number[:4]}) {number[4:]}" if not lead else number
    script = draw(st.sampled_from([None, 0x0660, 0x06F0, 0xFF10, 0x0966]))
    if script is not None:
        number = "".join(chr(script + int(c)) if c.isdigit() else c for c in number)
    if draw(st.booleans()):
        number += draw(st.sampled_from([".0", ".00"])) if number.isdigit() else ""
    prefix = draw(st.sampled_from(["", "acct:", "msisdn=", "to ", "tel:", "ref#", "Ali ", "["]))
    suffix = draw(st.sampled_from(["", "#", " ok", "]", ";x"]))
    return prefix + number + suffix, national


def _embed(value: str, hidden: str, where: int) -> str:
    """`hidden` written after, before or glued to a field's own value (which keeps an ID
    unique). Glued to a value ending in a digit, a number starting with one would become one
    longer digit run, which by the detector's rule is no number (sequence IDs), so an `_`
    joins those two: still glued, never separated by a mark people write inside numbers."""
    glue = "_" if value[-1:].isdigit() and hidden[:1].isdigit() else ""
    return (value + " " + hidden, hidden + " " + value, value + glue + hidden)[where]


Embeds = dict[tuple[int, str], tuple[str, int]]


def _edit(row: dict[str, str] | list[str], names: list[str], n: int, embeds: Embeds) -> None:
    for (m, f), (hidden, where) in embeds.items():
        if m == n:
            key: str | int = f if isinstance(row, dict) else names.index(f)
            row[key] = _embed(row[key], hidden, where)  # type: ignore[index]


def _csv(rows: list[list[str]], header: list[str] | None = None) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    if header:
        writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _canonical_rows(tag: int = 0) -> list[dict[str, str]]:
    return [
        {"record_id": f"r-{tag}-{n}", "event_time": "2025-05-02T10:00:00Z", "channel": "sms",
         "direction": "outbound", "customer_id": "cust-1", "origin": "InfoSMS",
         "destination": f"+92333123456{n}", "origin_network": "41001",
         "destination_network": "41006", "route_id": "rt-1", "status": "DELIVERED",
         "error_code": "E0", "currency": "PKR", "price": "1.5"}
        for n in range(4)
    ]  # fmt: skip


def _write(fmt: str, path: Path, embeds: Embeds, tag: int = 0) -> Path:
    """A small delivery of `fmt`, every row valid as written, with `embeds`
    ({(row, field): (text, where)}) written into its text fields; record IDs carry `tag`, so
    deliveries with other tags are never re-deliveries of it."""
    if fmt in ("canonical_csv", "canonical_parquet"):
        rows = _canonical_rows(tag)
        for n, row in enumerate(rows):
            _edit(row, list(row), n, embeds)
        if fmt == "canonical_csv":
            path.write_text(_csv([list(r.values()) for r in rows], list(rows[0])), "utf-8")
        else:
            pl.DataFrame(rows).write_parquet(path)
        return path
    if fmt == "messaging":
        lines = []
        for n in range(4):
            rec = {"messageId": f"m-{tag}-{n}", "bulkId": "b1", "from": "InfoSMS",
                   "to": f"92333123456{n}", "sentAt": "2025-05-02T10:00:00.000+0000",
                   "smsCount": 1, "mccMnc": "41001", "channel": "SMS",
                   "price": {"pricePerMessage": 0.5, "currency": "EUR"},
                   "status": {"groupName": "DELIVERED", "name": "DELIVERED_TO_HANDSET"},
                   "error": {"groupName": "OK", "name": "NO_ERROR"}}  # fmt: skip
            for (m, f), (hidden, where) in embeds.items():
                if m == n:
                    *outer, leaf = f.split(".")
                    target: dict = rec  # type: ignore[type-arg]
                    for key in outer:
                        target = target[key]
                    target[leaf] = _embed(str(target[leaf]), hidden, where)
            lines.append(json.dumps(rec, ensure_ascii=False))
        path.write_text("\n".join(lines) + "\n", "utf-8")
        return path
    if fmt == "asterisk":
        names, rows = ASTERISK, [
            ["cust-001", "1001", f"0333123456{n}", "from-internal", '"Desk" <1001>',
             "PJSIP/1001-0000001a", "PJSIP/trunk-pk-0000001b", "Dial",
             f"PJSIP/0333123456{n}@trunk-pk,30", WHEN, WHEN, "2025-05-02 10:01:00", "60", "55",
             "ANSWERED", "DOCUMENTATION", f"call-{tag}-{n}", "note"]
            for n in range(4)
        ]  # fmt: skip
    else:
        names, rows = FREESWITCH, [
            ["Desk", "1001", f"0333123456{n}", "default", WHEN, WHEN, "2025-05-02 10:01:00",
             "60", "55", "NORMAL_CLEARING", f"call-{tag}-{n}", "", "cust-001", "PCMA", "PCMA"]
            for n in range(4)
        ]  # fmt: skip
    for n, row in enumerate(rows):
        _edit(row, names, n, embeds)
    path.write_text(_csv(rows), "utf-8")
    return path


#: every text field of each format that a source fills with text of its own
TEXT_FIELDS = {
    "canonical_csv": ["record_id", "channel", "direction", "customer_id", "origin_network",
                      "destination_network", "route_id", "status", "error_code", "currency"],
    "canonical_parquet": ["record_id", "channel", "direction", "customer_id", "route_id",
                          "status", "error_code", "currency", "origin_network"],
    "messaging": ["messageId", "bulkId", "channel", "mccMnc", "status.groupName", "status.name",
                  "error.groupName", "error.name", "price.currency"],
    "asterisk": ["accountcode", "dcontext", "clid", "channel", "dstchannel", "lastapp",
                 "lastdata", "disposition", "amaflags", "uniqueid", "userfield"],
    "freeswitch": ["caller_id_name", "context", "hangup_cause", "uuid", "bleg_uuid",
                   "accountcode", "read_codec", "write_codec"],
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("fmt", sorted(TEXT_FIELDS))
def test_no_identifier_survives_in_any_text_field_of_any_format(fmt: str, tmp_path: Path) -> None:
    """One store per format; every example a delivery of its own (its record IDs tagged, its
    Data Docs site its own), searched where it wrote."""
    fields = TEXT_FIELDS[fmt]
    suffix = {"canonical_parquet": ".parquet", "messaging": ".jsonl"}.get(fmt, ".csv")
    res = _fresh(tmp_path, fmt)
    clean = ingest_file(res, _write(fmt, tmp_path / f"clean{suffix}", {}), as_of=AS_OF)
    assert (clean.gold, clean.quarantined) == (4, 0)  # without identifiers: every row kept
    tags = itertools.count(1)

    @settings(
        max_examples=6,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        st.lists(
            st.tuples(st.integers(0, 3), st.sampled_from(fields), written(), st.integers(0, 2)),
            min_size=1,
            max_size=6,
            unique_by=lambda e: (e[0], e[1]),
        )
    )
    def check(embeds: list[tuple[int, str, tuple[str, str], int]]) -> None:
        tag = next(tags)
        edits = {(n, f): (w, where) for n, f, (w, _), where in embeds}
        secrets = [secret for _, _, (_, secret), _ in embeds]
        res = _fresh(tmp_path, fmt, f"docs-{tag}")
        before = frozenset((o.key, o.size) for o in res.store.list(""))
        handler = _Capture()
        logging.getLogger().addHandler(handler)
        try:
            path = _write(fmt, tmp_path / f"cdr-{tag}{suffix}", edits, tag)
            after = ingest_file(res, path, as_of=AS_OF)
        finally:
            logging.getLogger().removeHandler(handler)
        assert after.status == "ingested", (after.status, after.detail, after.refused)
        assert (after.gold, after.quarantined) == (clean.gold, clean.quarantined), after.reasons
        texts = _everything_written(res, Path(res.settings.data_docs), handler.text, before)
        leaks = _leaks(texts, secrets)
        assert not leaks, leaks[:5]

    check()


class _Capture(logging.Handler):
    """Every log record of the ingest, formatted with its arguments."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def test_verify_finds_what_an_older_ingest_let_through(
    res: Resources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`verify` runs the same detector over what is stored: a file ingested by a version whose
    checks missed a number (simulated: the detector off during that ingest) is named, with the
    column and count, never the value; with the detector on, the same file verifies."""
    from pipeline.flows.verify import VerifyRequest, run_verify, verify_summary
    from pipeline.records import freetext

    rows = [{"status": "call back 0300 999 8802"}, {"status": "DELIVERED"}]
    monkeypatch.setattr(freetext, "identifying", lambda col, region: pl.lit(False))
    monkeypatch.setattr(detector, "pattern", lambda region=None: "a^")  # the suites' too
    ingest_file(res, _canonical(tmp_path / "old.csv", rows), as_of=AS_OF)
    monkeypatch.undo()
    report = run_verify(res, VerifyRequest())
    assert not report.ok
    text = verify_summary(report)
    assert "status (1)" in text and "9998802" not in text and "999 8802" not in text
    clean = _fresh(tmp_path, "clean")
    ingest_file(clean, _canonical(tmp_path / "new.csv", rows), as_of=AS_OF)
    assert run_verify(clean, VerifyRequest()).ok


def test_no_value_a_file_writes_can_claim_to_be_a_pbx_endpoint(
    local_env: dict[str, str], tmp_path: Path
) -> None:
    """The mark that sets a PBX's own endpoint apart is never taken from a file: an origin
    written as that mark plus a number is read as the number it holds (here: a number no
    plan allows, quarantined), never a SIP user."""
    from pipeline.cli import main as cli
    from pipeline.core.config import Settings
    from pipeline.core.resources import Resources
    from pipeline.records.transform import INTERNAL
    from pipeline.report import ingested_files

    path = tmp_path / "claim.csv"
    path.write_text(
        "record_id,event_time,channel,direction,origin,destination\n"
        f"c1,2025-03-02T10:00:00Z,sms,outbound,{INTERNAL}0000000000,+923001234567\n"
        f"c2,2025-03-02T10:00:00Z,sms,outbound,{INTERNAL}alice@example.com,+923001234567\n"
    )
    res = Resources.from_settings(Settings.from_env())
    assert cli(["ingest", "--as-of", "2025-06-15", "--default-region", "PK", str(path)]) == 0
    assert not list(res.store.list("silver/")) and not list(res.store.list("gold/"))
    (entry,) = ingested_files(res.store)
    assert entry["quarantined"] == 2 and entry["gold"] == 0  # read as written: not SIP users
