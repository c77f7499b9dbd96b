"""Data subject rights in the policy file: answer deadlines and early erasure, per country.

The `[subject_rights]` section of the retention policy states the default; `[[subject_rights.
country]]` tables state a country's own rule (keyed by the end user's country, ISO 3166):

- `deadline_months` or `deadline_days`: the statutory time to answer (default one month);
- `erasure_before_retention_ends`: whether identifiers may be erased on request before the
  retention obligation ends (default false: traffic data under a retention law is kept);
- `legal_basis`: the law that rule rests on, quoted in the answer to a refused request.
"""

from __future__ import annotations

import datetime as dt
import re
from calendar import monthrange
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.dates import add_months
from pipeline.core.errors import USAGE, PipelineError

DEFAULT_BASIS = (
    "the operator's retention obligation (privacy notice §5.1.2, §11): traffic data holding end "
    "users' identifiers is kept for law enforcement until 12 months after the month ends"
)
_KEYS = {"deadline_months", "deadline_days", "erasure_before_retention_ends", "legal_basis"}


class RightsPolicyError(PipelineError, ValueError):
    exit_status = USAGE


@dataclass(frozen=True)
class CountryRights:
    """One country's (or the default) rule for subject requests."""

    country: str | None = None
    deadline_months: int | None = 1
    deadline_days: int | None = None
    erasure_before_retention_ends: bool = False
    legal_basis: str = DEFAULT_BASIS

    def deadline(self, received: dt.date) -> dt.date:
        """The last day to answer a request received on `received`."""
        if self.deadline_days is not None:
            return received + dt.timedelta(days=self.deadline_days)
        y, m = add_months(received.year, received.month, self.deadline_months or 1)
        return dt.date(y, m, min(received.day, monthrange(y, m)[1]))

    def deadline_text(self) -> str:
        if self.deadline_days is not None:
            return f"{self.deadline_days} days"
        n = self.deadline_months or 1
        return f"{n} month" + ("s" if n != 1 else "")


@dataclass(frozen=True)
class RightsPolicy:
    default: CountryRights = field(default_factory=CountryRights)
    countries: dict[str, CountryRights] = field(default_factory=dict)

    def for_country(self, country: str | None) -> CountryRights:
        return self.countries.get(country or "", self.default)


def _line(text: str, header: str, index: int) -> int:
    lines = [i for i, line in enumerate(text.splitlines(), 1) if line.strip() == header]
    return lines[index] if index < len(lines) else 1


def _rule(
    table: dict[str, Any], country: str | None, base: CountryRights, where: str
) -> CountryRights:
    extra = set(table) - _KEYS - ({"country"} if country else set())
    if extra:
        raise RightsPolicyError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
    months, days = table.get("deadline_months"), table.get("deadline_days")
    if months is not None and days is not None:
        raise RightsPolicyError(f"{where}: give deadline_months or deadline_days, not both")
    for name, value, high in (("deadline_months", months, 12), ("deadline_days", days, 366)):
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= high
        ):
            raise RightsPolicyError(f"{where}: {name} must be a whole number from 1 to {high}")
    erase = table.get("erasure_before_retention_ends", base.erasure_before_retention_ends)
    if not isinstance(erase, bool):
        raise RightsPolicyError(f"{where}: erasure_before_retention_ends must be true or false")
    basis = table.get("legal_basis", base.legal_basis)
    if not isinstance(basis, str) or not basis.strip():
        raise RightsPolicyError(f"{where}: legal_basis must name the law the rule rests on")
    if months is None and days is None:
        months, days = base.deadline_months, base.deadline_days
    return CountryRights(country, months, days, erase, basis)


def parse_rights(section: object, text: str, source: str) -> RightsPolicy:
    """The `[subject_rights]` section (absent: one month, no early erasure)."""
    if section is None:
        return RightsPolicy()
    if not isinstance(section, dict):
        raise RightsPolicyError(f"{source}: subject_rights must be a table")
    head = f"{source}, line {_line(text, '[subject_rights]', 0)}"
    entries = section.get("country", [])
    default = _rule(
        {k: v for k, v in section.items() if k != "country"}, None, CountryRights(), head
    )
    if not isinstance(entries, list):
        raise RightsPolicyError(f"{head}: country must be a list of [[subject_rights.country]]")
    countries: dict[str, CountryRights] = {}
    for i, entry in enumerate(entries):
        where = f"{source}, line {_line(text, '[[subject_rights.country]]', i)}"
        code = entry.get("country")
        if not isinstance(code, str) or not re.fullmatch(r"[A-Z]{2}", code):
            raise RightsPolicyError(f"{where}: country must be an ISO 3166 code such as PK")
        if code in countries:
            raise RightsPolicyError(f"{where}: a second rule for {code} contradicts the first")
        countries[code] = _rule(entry, code, default, where)
    return RightsPolicy(default, countries)
