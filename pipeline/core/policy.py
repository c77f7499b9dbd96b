"""The retention policy as a file: defaults from the privacy notice, overrides per country.

`retention.toml` beside this module is the shipped policy; `CDR_RETENTION_POLICY` names another.
It is loaded and checked before anything is purged: a malformed or contradictory policy is
refused with the line and the problem. Dates are always computed in UTC from the month and year of
the communication (`pipeline.core.dates`).

Overrides are keyed by the end user's country and may only lengthen the identifier period: the
default purge deletes whole month partitions, so records of a country whose law demands longer
are first moved into a statutory hold of their own (`pipeline.flows.holds`) and purged at its date.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.dates import identifier_purge_date, record_delete_date
from pipeline.core.errors import USAGE, PipelineError
from pipeline.core.gold_risk import GoldRiskPolicy, parse_gold_risk
from pipeline.core.registry import SourceRule, parse_registry
from pipeline.core.rights import RightsPolicy, parse_rights

DEFAULT_FILE = Path(__file__).with_name("retention.toml")
MAX_MONTHS = 240
MAX_YEARS = 50


class PolicyError(PipelineError, ValueError):
    """A policy file that cannot be applied: says which line and why."""

    exit_status = USAGE


@dataclass(frozen=True)
class Override:
    country: str
    identifier_months: int
    reason: str


@dataclass(frozen=True)
class RetentionPolicy:
    identifier_months: int
    record_years: int
    reason: str
    overrides: dict[str, Override] = field(default_factory=dict)
    source: str = ""
    #: data subject requests: answer deadlines and early erasure per country (`pipeline.core.rights`)
    rights: RightsPolicy = field(default_factory=RightsPolicy)
    #: the source registry: each source's delivery interval and zone (`pipeline.core.registry`)
    sources: dict[str, SourceRule] = field(default_factory=dict)
    #: how gold's re-identification risk is measured, and its thresholds (`pipeline.core.gold_risk`)
    gold_risk: GoldRiskPolicy = field(default_factory=GoldRiskPolicy)

    def identifier_purge(self, year: int, month: int, country: str | None = None) -> dt.date:
        """First day without identifiers for a month (and an end user's country)."""
        months = self.overrides[country].identifier_months if country in self.overrides else None
        return identifier_purge_date(year, month, months or self.identifier_months)

    def record_delete(self, year: int) -> dt.date:
        return record_delete_date(year, self.record_years)


def _lines_of(text: str, header: str) -> list[int]:
    return [i for i, line in enumerate(text.splitlines(), 1) if line.strip() == header]


def parse_policy(text: str, source: str = "<policy>") -> RetentionPolicy:
    """Parse and check a policy text; PolicyError names the line and the problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from None
    default_line = (_lines_of(text, "[default]") or [1])[0]

    def fail(line: int, problem: str) -> PolicyError:
        return PolicyError(f"{source}, line {line}: {problem}")

    unknown = set(data) - {"default", "override", "subject_rights", "source", "gold_risk"}
    if unknown:
        raise fail(1, f"unknown section(s) {', '.join(sorted(unknown))}")
    default = data.get("default")
    if not isinstance(default, dict):
        raise fail(1, "a [default] section is required")

    def integer(table: dict[str, object], name: str, low: int, high: int, line: int) -> int:
        value = table.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise fail(line, f"{name} must be a whole number from {low} to {high}, not {value!r}")
        return value

    def text_field(table: dict[str, object], name: str, line: int) -> str:
        value = table.get(name)
        if not isinstance(value, str) or not value.strip():
            raise fail(line, f"{name} must say why (the law or notice that requires it)")
        return value

    extra = set(default) - {"identifier_months", "record_years", "reason"}
    if extra:
        raise fail(default_line, f"unknown key(s) {', '.join(sorted(extra))} in [default]")
    months = integer(default, "identifier_months", 1, MAX_MONTHS, default_line)
    years = integer(default, "record_years", 1, MAX_YEARS, default_line)
    if months > (years + 1) * 12:
        raise fail(
            default_line,
            f"identifiers kept {months} months would outlive the records they are in "
            f"({years} years after the year ends)",
        )
    reason = text_field(default, "reason", default_line)

    overrides: dict[str, Override] = {}
    lines = _lines_of(text, "[[override]]")
    entries = data.get("override", [])
    if not isinstance(entries, list):
        raise fail(default_line, "override must be a list of [[override]] tables")
    for i, entry in enumerate(entries):
        line = lines[i] if i < len(lines) else default_line
        extra = set(entry) - {"country", "identifier_months", "reason"}
        if extra:
            raise fail(line, f"unknown key(s) {', '.join(sorted(extra))} in [[override]]")
        country = entry.get("country")
        if not isinstance(country, str) or not re.fullmatch(r"[A-Z]{2}", country):
            raise fail(line, f"country must be an ISO 3166 code such as PK, not {country!r}")
        if country in overrides:
            raise fail(line, f"a second override for {country} contradicts the first")
        o_months = integer(entry, "identifier_months", 1, MAX_MONTHS, line)
        if o_months < months:
            raise fail(
                line,
                f"{country}: {o_months} months is shorter than the default {months}; month "
                "partitions are purged whole, so identifiers can only be kept longer per country",
            )
        if o_months > (years + 1) * 12:
            raise fail(line, f"{country}: identifiers would outlive their records")
        overrides[country] = Override(country, o_months, text_field(entry, "reason", line))
    rights = parse_rights(data.get("subject_rights"), text, source)
    sources = parse_registry(data.get("source", []), _lines_of(text, "[[source]]"), fail)
    risk_line = (_lines_of(text, "[gold_risk]") or [1])[0]
    risk = parse_gold_risk(data.get("gold_risk"), risk_line, fail)
    return RetentionPolicy(months, years, reason, overrides, source, rights, sources, risk)


def load_policy(path: str | Path | None = None) -> RetentionPolicy:
    """The policy from `path`, `CDR_RETENTION_POLICY`, or the shipped default."""
    chosen = Path(path or os.environ.get("CDR_RETENTION_POLICY") or DEFAULT_FILE)
    try:
        text = chosen.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read retention policy {chosen}: {exc.strerror}") from None
    return parse_policy(text, str(chosen))
