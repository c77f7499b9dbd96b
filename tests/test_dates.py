"""Retention dates, exact to the day, in UTC, from the month and year of the communication."""

from __future__ import annotations

import datetime as dt

import pytest

from pipeline.core.dates import identifier_purge_date, record_delete_date
from pipeline.core.policy import load_policy


@pytest.mark.parametrize(
    ("when", "purge"),
    [
        (dt.datetime(2025, 3, 15), dt.date(2026, 4, 1)),  # POLICY.md's worked example
        (dt.datetime(2025, 3, 31, 23, 59, 59), dt.date(2026, 4, 1)),
        (dt.datetime(2024, 2, 29, 12, 0), dt.date(2025, 3, 1)),  # leap day
        (dt.datetime(2024, 12, 31, 23, 59, 59), dt.date(2026, 1, 1)),  # year end
        (dt.datetime(2025, 1, 1, 0, 0), dt.date(2026, 2, 1)),
        (dt.datetime(2025, 12, 1), dt.date(2027, 1, 1)),
    ],
)
def test_identifier_purge_date(when: dt.datetime, purge: dt.date) -> None:
    assert identifier_purge_date(when.year, when.month, 12) == purge
    assert load_policy().identifier_purge(when.year, when.month) == purge


@pytest.mark.parametrize(
    ("months", "purge"),
    [(6, dt.date(2025, 10, 1)), (24, dt.date(2027, 4, 1)), (1, dt.date(2025, 5, 1))],
)
def test_identifier_purge_date_follows_the_period(months: int, purge: dt.date) -> None:
    assert identifier_purge_date(2025, 3, months) == purge


@pytest.mark.parametrize(
    ("year", "delete"), [(2025, dt.date(2036, 1, 1)), (2024, dt.date(2035, 1, 1))]
)
def test_record_delete_date_is_ten_years_after_the_year_ends(year: int, delete: dt.date) -> None:
    assert record_delete_date(year, 10) == delete
    assert load_policy().record_delete(year) == delete


@pytest.mark.parametrize("text", ["2026-10-01T99:99garbage", "20261001", "2026-10-01 ", "2026-13-01", "2026-W40"])  # fmt: skip
def test_request_dates_are_iso_dates_and_nothing_else(text: str) -> None:
    from pipeline.core.dates import parse_date

    with pytest.raises(ValueError, match=r"not a date \(YYYY-MM-DD\)$|month must be"):
        parse_date(text)
    assert parse_date("2026-10-01") == dt.date(2026, 10, 1)
