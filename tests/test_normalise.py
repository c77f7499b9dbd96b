"""Addresses: every written form of a person's number or e-mail gives one normalised value."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.normalise import CountryResolver, normalise_addresses


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
        ("07700 900123", "GB", False, "+447700900123", "GB"),
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
