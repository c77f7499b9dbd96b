"""`[gold_risk]` in the policy file: how gold's re-identification risk is measured and the
thresholds a month must meet (docs/risk.md).

```toml
[gold_risk]
time_minutes = 60              # event times grouped to this many minutes (an attacker's knowledge)
duration_seconds = 10          # durations grouped to this many seconds
k = 5                          # a record in a class smaller than k is at risk
max_share_below_k = 0.05       # at most this share of a month's records may be at risk
max_risk = 0.5                 # the highest prosecutor risk allowed (1 / the smallest class)
generalise_below_users = 0     # 0: off; n >= 2: a domain or network with fewer than n distinct
                               # end users in the month counts as "other" (its country kept)
```
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

KEYS = frozenset(
    {
        "time_minutes",
        "duration_seconds",
        "k",
        "max_share_below_k",
        "max_risk",
        "generalise_below_users",
    }
)
#: the class sizes whose shares every report gives
REPORTED_K = (2, 5, 10)


@dataclass(frozen=True)
class GoldRiskPolicy:
    """How a gold month's risk is measured, and what it must stay under."""

    time_minutes: int = 60
    duration_seconds: int = 10
    k: int = 5
    max_share_below_k: float = 0.05
    max_risk: float = 0.5
    generalise_below_users: int = 0


def parse_gold_risk(
    table: object, line: int, fail: Callable[[int, str], Exception]
) -> GoldRiskPolicy:
    """The `[gold_risk]` table, checked (absent: the defaults)."""
    if table is None:
        return GoldRiskPolicy()
    if not isinstance(table, dict):
        raise fail(line, "gold_risk must be a table")
    if extra := set(table) - KEYS:
        raise fail(line, f"unknown key(s) {', '.join(sorted(extra))} in [gold_risk]")
    base = GoldRiskPolicy()

    def whole(name: str, low: int, high: int) -> int:
        value = table.get(name, getattr(base, name))
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise fail(line, f"{name} must be a whole number from {low} to {high}, not {value!r}")
        return value

    def share(name: str) -> float:
        value = table.get(name, getattr(base, name))
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise fail(line, f"{name} must be a number from 0 to 1, not {value!r}")
        return float(value)

    minutes = whole("time_minutes", 1, 24 * 60)
    if (24 * 60) % minutes:
        raise fail(line, f"time_minutes must divide a day, not {minutes}")
    below = whole("generalise_below_users", 0, 1000)
    if below == 1:
        raise fail(line, "generalise_below_users: 0 (off) or at least 2")
    return GoldRiskPolicy(
        minutes,
        whole("duration_seconds", 1, 86_400),
        whole("k", 2, 1000),
        share("max_share_below_k"),
        share("max_risk"),
        below,
    )
