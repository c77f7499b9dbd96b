"""Retention date arithmetic, exact to the day, in UTC, from the month and year of the
communication.

The periods themselves come from the retention policy alone (`pipeline.core.policy`, loaded once into
the run's resources): with the shipped policy a message of 2025-03-15 loses its identifiers on
2026-04-01 (12 months after March ends) and is deleted on 2036-01-01 (10 years after 2025 ends).
"""

from __future__ import annotations

import datetime as dt
import re


def add_months(year: int, month: int, months: int) -> tuple[int, int]:
    """(year, month) moved by a number of months."""
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def identifier_purge_date(year: int, month: int, months: int) -> dt.date:
    """First day on which a month's identifiers must be gone, `months` after the month ends
    (it ends at the start of the next month)."""
    y, m = add_months(year, month, 1 + months)
    return dt.date(y, m, 1)


def record_delete_date(year: int, years: int) -> dt.date:
    """First day on which a year's non-identifying records must be gone, `years` after it ends."""
    return dt.date(year + 1 + years, 1, 1)


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_date(value: object) -> dt.date:
    """A calendar date given as a date or as ISO 8601 `YYYY-MM-DD` text, and nothing else.

    Strict on purpose: `2026-10-01T99:99garbage` or `20261001` is refused (ValueError, without
    the value), never read as the date it starts with.
    """
    if isinstance(value, dt.datetime):
        raise ValueError("not a date (YYYY-MM-DD): a date and time was given")
    if isinstance(value, dt.date):
        return value
    text = str(value)
    if not _ISO_DATE.fullmatch(text):
        raise ValueError("not a date (YYYY-MM-DD)")
    return dt.date.fromisoformat(text)


class FutureAsOf(ValueError):
    """A run asked to act for a day after today: retention would destroy identifiers, keys and
    gold early, and ingest would file every record as past its purge date (gold only, the
    identifiers unrecoverable). A typo of one year does both to a whole year of data."""


def today_utc() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def refuse_future(as_of: dt.date, today: dt.date | None = None) -> dt.date:
    """`as_of` if it is not after today (UTC); else FutureAsOf, saying how to mean it."""
    today = today or today_utc()
    if as_of > today:
        raise FutureAsOf(
            f"the day to act for ({as_of}) is after today ({today}, UTC): refused, because "
            "retention would destroy and ingest would age data early. If that is what you "
            "mean (a rehearsal on a copy of the store), give --allow-future-as-of; its use is "
            "recorded in the audit log"
        )
    return as_of
