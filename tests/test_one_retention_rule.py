"""One retention rule: the policy file decides ingest's late arrivals, the bronze lock date and
retention's purges alike. Editing the identifier period changes all three, never just one."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from pipeline.flows.ingest import ingest_file
from pipeline.flows.retention import RetentionRequest, run_retention
from tests.helpers import read_tier

pytestmark = pytest.mark.s3

# Ingest and retention run on these days; the wall clock is earlier, so Object Lock dates are
# still in the future when they are set.
INGEST_AS_OF = dt.date(2027, 3, 15)

# Per identifier period: the last month already past its purge date on INGEST_AS_OF (late
# arrival: gold only) and the first month still within it, each one file.
CASES = {
    6: ("2026-08", "2026-09"),  # purge days 2027-03-01 and 2027-04-01
    24: ("2025-02", "2025-03"),  # the same purge days, 24 months on
}


def _policy(tmp_path: Path, months: int) -> Path:
    path = tmp_path / f"policy-{months}.toml"
    path.write_text(
        f'[default]\nidentifier_months = {months}\nrecord_years = 10\nreason = "rule of {months}"\n'
    )
    return path


def _month_file(tmp_path: Path, month: str, number: int) -> Path:
    path = tmp_path / f"cdr-{month}.csv"
    path.write_text(
        "record_id,event_time,channel,direction,origin,destination\n"
        f"{month}-a,{month}-01T00:00:00Z,sms,outbound,InfoSMS,+9230012345{number:02d}\n"
        f"{month}-b,{month}-28T23:59:59Z,voice,inbound,+9230012346{number:02d},InfoSMS\n"
    )
    return path


@pytest.mark.parametrize("months", sorted(CASES))
def test_ingest_lock_and_retention_follow_the_policy_file(
    months: int, tmp_path: Path, s3_env: dict[str, str]
) -> None:
    env = s3_env | {
        "CDR_BRONZE_LOCK": "true",
        "CDR_DEFAULT_REGION": "PK",
        "CDR_RETENTION_POLICY": str(_policy(tmp_path, months)),
    }
    res = Resources.from_settings(Settings.from_env(env))
    assert res.policy.identifier_months == months
    late, live = CASES[months]

    reports = {m: ingest_file(res, _month_file(tmp_path, m, i), as_of=INGEST_AS_OF) for i, m in enumerate((late, live))}  # fmt: skip
    # Ingest: the month past the policy's purge date goes to gold only, the next keeps identifiers.
    assert (reports[late].silver, reports[late].gold_only) == (0, 2)
    assert (reports[live].silver, reports[live].gold_only) == (2, 0)
    silver = read_tier(res.store, "silver/")
    assert set(silver.get_column("event_time").dt.strftime("%Y-%m")) == {live}
    assert not res.keyring.has_data_key(f"month-{late}")

    # Bronze: each original locked until its month's purge date under the same policy, or
    # the later purge date of the month it arrived in (now): its upload carries that lock.
    locks = {
        m: res.bronze.lock_until(next(k for k in r.outputs if k.startswith("bronze/")))
        for m, r in reports.items()
    }
    today = dt.datetime.now(dt.UTC).date()
    arrived = res.policy.identifier_purge(today.year, today.month)
    utc = dt.UTC
    expected = {late: dt.date(2027, 3, 1), live: dt.date(2027, 4, 1)}
    assert locks == {m: dt.datetime.combine(max(d, arrived), dt.time(), utc) for m, d in expected.items()}  # fmt: skip

    # Retention: nothing of the live month goes the day before its purge date, then it goes
    # on the day, and the report states the date the policy gives.
    before = run_retention(res, RetentionRequest(dt.date(2027, 3, 31))).to_dict()
    assert live not in [m["month"] for m in before["months"]]
    assert res.keyring.has_data_key(f"month-{live}")
    on_the_day = run_retention(res, RetentionRequest(dt.date(2027, 4, 1))).to_dict()
    [entry] = [m for m in on_the_day["months"] if m["month"] == live]
    assert entry["identifier_purge_date"] == "2027-04-01"
    assert not res.keyring.has_data_key(f"month-{live}")
    assert len(read_tier(res.store, "silver/")) == 0
    gold = read_tier(res.store, "gold/")
    assert gold.filter(pl.col("destination_kind") == "msisdn").height == 2


def test_no_module_but_the_policy_computes_a_retention_date() -> None:
    """Every period comes from the loaded policy: the date arithmetic is called by it alone."""
    import ast

    root = Path(__file__).resolve().parent.parent / "pipeline"
    callers = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "pipeline.core.dates":
                names = {a.name for a in node.names}
                if names & {"identifier_purge_date", "record_delete_date"}:
                    callers.add(path.name)
    assert callers == {"policy.py"}
