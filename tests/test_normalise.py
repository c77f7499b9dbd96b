"""Addresses: every written form of a person's number or e-mail gives one normalised value."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.records.normalise import CountryResolver, normalise_addresses


def normalise(values: list[str | None], region: str | None = "PK", international: bool = False,
              alphanumeric: bool = True) -> pl.DataFrame:  # fmt: skip
    df = pl.DataFrame({"raw": values}, schema={"raw": pl.String})
    out = normalise_addresses(df, {"raw": "a"}, region, international, alphanumeric)
    return CountryResolver().country(out, "a_value", "a_cc", "a_country")


PK_FORMS = [
    "+92 300 1234567",
    "0300-1234567",
    "00923001234567",
    "923001234567",
    "tel:+92-300-1234567",
    '"Ali Khan" <+923001234567>',
    "+92 (300) 123-4567",
    "sip:+923001234567@pbx.example.com",
]


@pytest.mark.parametrize("written", PK_FORMS)
def test_pakistani_number_in_every_form_is_one_e164(written: str) -> None:
    row = normalise([written]).row(0, named=True)
    assert row["a_value"] == "+923001234567"
    assert row["a_kind"] == "msisdn"
    assert row["a_country"] == "PK"
    assert row["a_bad"] is False


@pytest.mark.parametrize(
    ("written", "region", "international", "expected", "country"),
    [
        ("917-375-0980", "US", False, "+19173750980", "US"),
        ("1 917 375 0980", "US", False, "+19173750980", "US"),
        ("011 92 300 1234567", "US", False, "+923001234567", "PK"),
        ("41793026727", None, True, "+41793026727", "CH"),  # messaging API form
        ("+1 416 555 0100", None, False, "+14165550100", "CA"),  # shared +1: phonenumbers decides
        ("07400 123456", "GB", False, "+447400123456", "GB"),
    ],
)
def test_national_and_international_forms(
    written: str, region: str | None, international: bool, expected: str, country: str
) -> None:
    row = normalise([written], region, international).row(0, named=True)
    assert (row["a_value"], row["a_kind"], row["a_country"]) == (expected, "msisdn", country)


@pytest.mark.parametrize(
    ("written", "kind", "value"),
    [
        ("  Alice.Smith@Example.COM ", "email", "alice.smith@example.com"),
        ("mailto:Bob@Example.org", "email", "bob@example.org"),
        ("InfoSMS", "alphanumeric", "InfoSMS"),
        ("8080", "shortcode", "8080"),
        ("sip:Alice@pbx.example.com", "sip", "alice@pbx.example.com"),
        ("anonymous", "unknown", None),
        ("", "unknown", None),
        (None, "unknown", None),
    ],
)
def test_kinds(written: str | None, kind: str, value: str | None) -> None:
    row = normalise([written]).row(0, named=True)
    assert (row["a_kind"], row["a_value"], row["a_bad"]) == (kind, value, False)


@pytest.mark.parametrize("written", ["12ab#", "+0123456789", "0300-12", "not@an@email", "a@b"])
def test_unparseable_values_are_flagged(written: str) -> None:
    assert normalise([written]).row(0, named=True)["a_bad"] is True


@pytest.mark.parametrize("written", ["0300-1234567", "917-375-0980", "9173750980"])
def test_national_number_without_region_is_not_guessed(written: str) -> None:
    # Without a region these cannot be placed: flagged, never given a wrong country (917-375-0980
    # is not +91 India's 7375 0980).
    row = normalise([written], region=None).row(0, named=True)
    assert row["a_bad"] is True


def test_pbx_user_names_are_personal_not_business_senders() -> None:
    row = normalise(["alice"], alphanumeric=False).row(0, named=True)
    assert (row["a_kind"], row["a_value"]) == ("sip", "alice")


def test_unknown_region_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="unknown region"):
        normalise(["123"], region="XX")


def test_shared_calling_codes_are_resolved_per_number_in_one_batch() -> None:
    # +1 and +44 are shared by several countries: each number gets its own, even side by side.
    out = normalise(
        ["+1 212 555 0100", "+1 416 555 0100", "+1 876 555 0100", "+44 1534 555555",
         "+44 20 7946 0000", "+7 701 555 0000", "+7 495 555 0000"],
        region=None,
    )  # fmt: skip
    assert out.get_column("a_country").to_list() == ["US", "CA", "JM", "JE", "GB", "KZ", "RU"]


# --- country from the whole number -------------------------------------------------------------

import phonenumbers  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _examples() -> list[tuple[str, str]]:
    """(E.164, region) for the example number of every type of every region in the metadata."""
    out = set()
    for region in phonenumbers.SUPPORTED_REGIONS:
        for kind in phonenumbers.PhoneNumberType.values():
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None and phonenumbers.is_valid_number(number):
                e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
                out.add((e164, phonenumbers.region_code_for_number(number)))
    return sorted(out)


EXAMPLES = _examples()


def _poison(e164: str, cut: int) -> str | None:
    """A number that parses but no region allows: the example cut short (or None if it is not)."""
    short = e164[: len(e164) - cut]
    if len(short) < 8:
        return None
    return None if phonenumbers.is_valid_number(phonenumbers.parse(short, None)) else short


#: the two engines that resolve countries: Python's `re` for a batch of few numbers, polars
#: for many (`normalise.PYTHON_NUMBERS`); every test of countries runs on both
ENGINES = {"python re": 1 << 30, "polars": -1}


def _countries(values: list[str], engine: str = "polars") -> pl.DataFrame:
    from pipeline.records import normalise as module

    kept = module.PYTHON_NUMBERS
    module.PYTHON_NUMBERS = ENGINES[engine]
    try:
        return normalise(values, region=None).select("a_value", "a_country", "a_country_invalid")
    finally:
        module.PYTHON_NUMBERS = kept


@pytest.mark.parametrize("engine", ENGINES)
def test_every_example_number_of_every_region_gets_its_region(engine: str) -> None:
    assert len({r for _, r in EXAMPLES}) > 230
    out = _countries([e for e, _ in EXAMPLES], engine)
    got = dict(zip(out.get_column("a_value"), out.get_column("a_country"), strict=True))
    wrong = [(e, r, got[e]) for e, r in EXAMPLES if got[e] != r]
    assert not wrong, wrong[:20]
    assert not out.get_column("a_country_invalid").any()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("region", ["JE", "CA", "YT", "CC", "CX", "BL"])
def test_a_region_sharing_a_calling_code_is_not_decided_by_a_neighbour(
    region: str, engine: str
) -> None:
    """Jersey after an invalid shorter +44 number with the same digits; Canada, Mayotte, Cocos,
    Christmas Island and St Barthélemy after numbers of the region that shares their code."""
    mine = [e for e, r in EXAMPLES if r == region]
    code = phonenumbers.country_code_for_region(region)
    main = phonenumbers.region_code_for_country_code(code)
    theirs = [e for e, r in EXAMPLES if r == main][:3]
    poisons = [p for e in mine for cut in (1, 2, 3) if (p := _poison(e, cut))]
    assert mine and poisons
    out = _countries([*poisons, *theirs, *mine], engine)
    rows = {r["a_value"]: r for r in out.iter_rows(named=True)}
    assert {e: rows[e]["a_country"] for e in mine} == dict.fromkeys(mine, region)
    assert {e: rows[e]["a_country"] for e in theirs} == dict.fromkeys(theirs, main)
    for p in poisons:  # kept as a number, without a country, and flagged
        assert (rows[p]["a_country"], rows[p]["a_country_invalid"]) == (None, True), p


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(EXAMPLES), min_size=1, max_size=80, unique=True),
    st.lists(st.tuples(st.sampled_from(EXAMPLES), st.integers(1, 3)), max_size=40),
    st.randoms(use_true_random=False),
    st.sampled_from(list(ENGINES)),
)
def test_country_does_not_depend_on_order_or_on_invalid_numbers_in_the_file(
    picked: list[tuple[str, str]], poisoned: list[tuple[tuple[str, str], int]], rnd, engine: str
) -> None:  # type: ignore[no-untyped-def]
    poisons = {p for (e, _), cut in poisoned if (p := _poison(e, cut))}
    values = [e for e, _ in picked] + sorted(poisons)
    rnd.shuffle(values)
    out = _countries(values, engine)
    got = dict(zip(out.get_column("a_value"), out.get_column("a_country"), strict=True))
    assert {e: got[e] for e, _ in picked} == dict(picked)
    assert all(got[p] is None for p in poisons)


def test_an_invalid_number_is_quarantined_never_kept_under_a_token_of_nobody(res, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    from pipeline.flows.ingest import ingest_file
    from tests.helpers import read_tier

    path = tmp_path / "calls.csv"
    path.write_text(
        "record_id,event_time,channel,direction,origin,destination,status\n"
        "a1,2025-05-02T10:00:00Z,sms,outbound,InfoSMS,+441534123,DELIVERED\n"
        "a2,2025-05-02T10:01:00Z,sms,outbound,InfoSMS,+447797712345,DELIVERED\n"
    )
    report = ingest_file(res, path, as_of=dt.date(2025, 6, 1))
    assert (report.gold, report.quarantined) == (1, 1)
    assert report.reasons == {"invalid_number:destination": 1}
    gold = read_tier(res.store, "gold/")
    assert gold.get_column("destination_country").to_list() == ["JE"]  # +44 7797: Jersey
    silver = read_tier(res.store, "silver/")
    assert silver.get_column("destination").str.starts_with("msisdn.").all()


def _script(digits: str, zero: int) -> str:
    """The ASCII digits of `digits` written in the script whose zero is code point `zero`."""
    return "".join(chr(zero + int(ch)) if ch.isdigit() else ch for ch in digits)


LOOKALIKES = [
    _script("+92 300 1234567", 0xFF10),  # full-width
    _script("+923001234567", 0x0660),  # Arabic-Indic
    _script("03001234567", 0x06F0),  # Extended Arabic-Indic (Persian, Urdu)
    _script("+923001234567", 0x0966),  # Devanagari
    "+92 300\u200b1234567",  # zero-width space
    "\u202a+923001234567\u202c",  # direction embedding
    "+92\u2060300\u200d1234567\ufeff",  # word joiner, zero-width joiner, BOM
    "＋92 300 1234567",  # full-width plus
    "tel:+９２-３００-１２３４５６７",
    "+92\u00b3001234567",  # a superscript three
    "0300\u20131234567",  # en dash
    "+92\u2212300\u22121234567",  # minus signs
]


@pytest.mark.parametrize("written", LOOKALIKES)
def test_a_number_typed_with_look_alike_characters_is_the_same_number(written: str) -> None:
    """One person is one value however their number was typed: otherwise a look-alike form
    gets its own token (an export or erasure misses it) or fails the whole file's checks."""
    row = normalise([written]).row(0, named=True)
    assert (row["a_value"], row["a_kind"], row["a_country"], row["a_bad"]) == (
        "+923001234567", "msisdn", "PK", False,
    )  # fmt: skip


def test_an_address_typed_in_full_width_is_the_same_address() -> None:
    out = normalise(["ＡＬＩ＠Example.com", "ali@example.com", "sip:ａｌｉ@pbx.example.com"])
    assert out.get_column("a_value").to_list()[:2] == ["ali@example.com"] * 2
    assert out.get_column("a_kind").to_list() == ["email", "email", "sip"]
    assert normalise(["ＩｎｆｏＳＭＳ"]).row(0, named=True)["a_value"] == "InfoSMS"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from([0x30, 0xFF10, 0x0660, 0x06F0, 0x0966, 0x09E6, 0x1D7CE]),
        min_size=12,
        max_size=12,
    ),
    st.lists(
        st.sampled_from(["", "", "", "\u200b", "\u200e", "\u2060", " "]), min_size=12, max_size=12
    ),
)
def test_any_mix_of_scripts_and_invisible_characters_gives_the_one_number(
    zeros: list[int], gaps: list[str]
) -> None:
    digits = "923001234567"
    written = "+" + "".join(
        gap + chr(zero + int(d)) for d, zero, gap in zip(digits, zeros, gaps, strict=True)
    )
    row = normalise([written]).row(0, named=True)
    assert (row["a_value"], row["a_country"]) == ("+923001234567", "PK")


def test_a_file_with_a_number_in_look_alike_forms_is_ingested_as_one_person(res, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Before folding, one full-width digit made an identifier the suites refuse: the whole
    file was refused. Now every form is the one person's token, and no form is kept."""
    import datetime as dt

    from pipeline.flows.ingest import ingest_file
    from tests.helpers import all_text_outputs, find_identifiers, read_tier

    forms = ["+923001234567", LOOKALIKES[0], LOOKALIKES[1], LOOKALIKES[4], "0３00-1234567"]
    rows = "".join(
        f"a{i},2025-05-02T10:0{i}:00Z,sms,outbound,InfoSMS,{form},DELIVERED\n"
        for i, form in enumerate(forms)
    )
    path = tmp_path / "sms.csv"
    path.write_text("record_id,event_time,channel,direction,origin,destination,status\n" + rows)
    report = ingest_file(res, path, as_of=dt.date(2025, 6, 1))
    assert (report.status, report.gold, report.quarantined) == ("ingested", 5, 0)
    silver = read_tier(res.store, "silver/")
    assert silver.get_column("destination").n_unique() == 1
    assert set(silver.get_column("destination_country")) == {"PK"}
    assert not find_identifiers(all_text_outputs(res.store), [*forms, "3001234567"])


def test_records_ingested_before_folding_are_found_by_the_form_they_were_typed_in(
    res, tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """A PBX user name in full-width letters was tokenised as written before look-alikes were
    folded; a request naming it that way still finds (and so erases) those records."""
    import datetime as dt

    from pipeline.flows.ingest import ingest_file
    from pipeline.records import normalise as module
    from pipeline.records.lookup import identifier_tokens, normalised_identifiers
    from tests.helpers import read_tier

    typed = "sip:ｊｏｈｎ@pbx.example.com"
    assert normalised_identifiers([typed], "PK") == [
        ("sip", "john@pbx.example.com"), ("sip", "ｊｏｈｎ@pbx.example.com"),
    ]  # fmt: skip
    path = tmp_path / "calls.csv"
    path.write_text(
        "record_id,event_time,channel,direction,origin,destination,status\n"
        f"c1,2025-05-02T10:00:00Z,voice,outbound,+923001234567,{typed},ANSWERED\n"
    )
    with monkeypatch.context() as before:
        before.setattr(module, "fold_lookalikes", lambda values: values)
        assert ingest_file(res, path, as_of=dt.date(2025, 6, 1)).status == "ingested"
    stored = read_tier(res.store, "silver/").get_column("destination").item()
    assert stored in identifier_tokens(res.keyring, [typed], "PK")
    assert stored not in identifier_tokens(res.keyring, ["sip:john@pbx.example.com"], "PK")
