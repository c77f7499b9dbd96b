"""The source registry: what each source is expected to deliver, declared in the policy file.

```toml
[[source]]
name = "pbx-karachi"        # the source's slug, its landing/<source>/ folder
interval_hours = 1          # it delivers at least this often: silence longer is an alert
timezone = "Asia/Karachi"   # optional: the zone of its times written without an offset
format = "asterisk"         # optional: its files' format (a file detected as another is refused)
```

A source's zone here is used where `CDR_SOURCE_TIMEZONES` does not name it (the environment
wins, as an operator's override), before `CDR_SOURCE_TIMEZONE`. Silence is judged from the
arrival times of the source's sealed files (`pipeline.core.alerts.silent_sources`). A source's
format, when declared, is what its files must be: a file detected as another format is
quarantined whole (`format_mismatch`), one no signature matches is read as the declared format;
a run's own `format` wins over both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.core.layout import LayoutError
from pipeline.core.layout import source as source_slug
from pipeline.records.formats import FORMATS

#: the longest expected interval between two deliveries: a year
MAX_INTERVAL_HOURS = 24 * 366
KEYS = frozenset({"name", "interval_hours", "timezone", "format"})


@dataclass(frozen=True)
class SourceRule:
    """A source as the registry declares it."""

    name: str
    interval_hours: int
    timezone: str | None = None
    format: str | None = None


def parse_registry(
    entries: object, lines: list[int], fail: Callable[[int, str], Exception]
) -> dict[str, SourceRule]:
    """The `[[source]]` tables of a policy, checked; `fail(line, problem)` makes the error."""
    if not isinstance(entries, list):
        raise fail(lines[0] if lines else 1, "source must be a list of [[source]] tables")
    rules: dict[str, SourceRule] = {}
    for i, entry in enumerate(entries):
        line = lines[i] if i < len(lines) else 1
        extra = set(entry) - KEYS
        if extra:
            raise fail(line, f"unknown key(s) {', '.join(sorted(extra))} in [[source]]")
        try:
            name = source_slug(str(entry.get("name") or ""))
        except LayoutError as exc:
            raise fail(line, f"name: {exc}") from None
        if name in rules:
            raise fail(line, f"a second [[source]] for {name} contradicts the first")
        hours = entry.get("interval_hours")
        if not isinstance(hours, int) or isinstance(hours, bool) or not 1 <= hours <= MAX_INTERVAL_HOURS:  # fmt: skip
            raise fail(line, f"interval_hours must be a whole number from 1 to {MAX_INTERVAL_HOURS}, not {hours!r}")  # fmt: skip
        zone = entry.get("timezone")
        if zone is not None:
            try:
                ZoneInfo(str(zone))
            except (ZoneInfoNotFoundError, ValueError):
                raise fail(line, f"timezone {zone!r} is not an IANA time zone") from None
        fmt = entry.get("format")
        if fmt is not None and fmt not in FORMATS:
            raise fail(line, f"format {fmt!r} is not one of {', '.join(FORMATS)}")
        rules[name] = SourceRule(name, hours, None if zone is None else str(zone), fmt)
    return rules
