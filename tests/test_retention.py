"""Retention end to end: months lose identifiers on the exact day, gold goes at 10 years, holds
keep what they cover in their own store, a crash and a rerun end as one clean run, and nothing
identifying is left behind."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from pipeline.core import layout
from pipeline.core.config import Settings
from pipeline.core.keys import KeyDestroyed
from pipeline.core.policy import PolicyError, load_policy, parse_policy
from pipeline.core.resources import Resources
from pipeline.flows import holds
from pipeline.flows.ingest import ingest_file
from pipeline.flows.retention import RetentionError, RetentionRequest, run_retention
from pipeline.proof.audit import read_log, verify_log
from pipeline.records.synth import Generated, generate
from tests.helpers import all_text_outputs, find_identifiers, needles_for, read_tier

MONTHS = [dt.date(2025, m, 1) for m in (1, 2, 3, 4)]
INGEST_AS_OF = dt.date(2025, 6, 15)


@pytest.fixture(params=["local", "s3"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Resources]:
    env = {"CDR_KEYRING": str(tmp_path / "keys"), "CDR_DEFAULT_REGION": "PK"}
    if request.param == "local":
        env["CDR_STORE"] = str(tmp_path / "store")
    else:
        data, bronze = request.getfixturevalue("s3_buckets")
        env |= {
            "CDR_STORE": f"s3://{data}/cdr",
            "CDR_BRONZE_STORE": f"s3://{bronze}",
            "CDR_S3_ENDPOINT_URL": request.getfixturevalue("moto_endpoint"),
        }
    yield Resources.from_settings(Settings.from_env(env))


def ingest_months(res: Resources, tmp_path: Path, rows: int = 300) -> dict[str, Generated]:
    """One file per month, each with end users of its own (different seeds)."""
    out = {}
    for i, start in enumerate(MONTHS):
        g = generate("canonical_csv", tmp_path / f"m{i}.csv", rows, seed=100 + i, start=start, months=1, bad_share=0.05)  # fmt: skip
        # It arrived the day it was ingested: an upload locks its original from that month.
        arrived = dt.datetime.combine(INGEST_AS_OF, dt.time(), dt.UTC)
        ingest_file(res, g.path, as_of=INGEST_AS_OF, arrived_at=arrived)
        out[f"{start:%Y-%m}"] = g
    return out


def state(res: Resources) -> dict[str, str]:
    """Per month: 'identifiers' (silver/vault/key), 'gold only', or 'gone'."""
    silver = read_tier(res.store, "silver/")
    gold = read_tier(res.store, "gold/")
    out = {}
    for start in MONTHS:
        name = f"{start:%Y-%m}"
        has_silver = len(silver) and len(
            silver.filter(pl.col("event_time").dt.strftime("%Y-%m") == name)
        )
        has_key = res.keyring.has_data_key(f"month-{name}")
        has_gold = len(gold) and len(gold.filter(pl.col("event_time").dt.strftime("%Y-%m") == name))
        assert bool(has_silver) == has_key, name  # identifiers and their key go together
        out[name] = "identifiers" if has_silver else ("gold only" if has_gold else "gone")
    return out


def retention(res: Resources, as_of: dt.date, **kw: object) -> dict[str, object]:
    return run_retention(res, RetentionRequest(as_of, **kw)).to_dict()  # type: ignore[arg-type]


def test_months_lose_identifiers_on_the_day_holds_keep_theirs_gold_goes_at_ten_years(
    stores: Resources, tmp_path: Path
) -> None:
    res = stores
    files = ingest_months(res, tmp_path)
    assert set(state(res).values()) == {"identifiers"}

    assert retention(res, dt.date(2026, 1, 31))["months"] == []
    assert set(state(res).values()) == {"identifiers"}

    retention(res, dt.date(2026, 2, 1))  # 2025-01's purge day
    assert state(res) == {"2025-01": "gold only", "2025-02": "identifiers", "2025-03": "identifiers", "2025-04": "identifiers"}  # fmt: skip

    # A hold on one March end user, placed before March is purged.
    march_number = sorted(files["2025-03"].numbers)[0]
    holds.run_hold(
        res,
        holds.HoldRequest.from_mapping({"action": "place", "case": "CASE-7", "reason": "court order 7/2026",
         "identifiers": [march_number], "default_region": "PK"}),
    )  # fmt: skip
    dry = retention(res, dt.date(2026, 4, 1), dry_run=True)
    assert [m["month"] for m in dry["months"]] == ["2025-02", "2025-03"]
    assert state(res)["2025-02"] == "identifiers"  # a dry run changes nothing

    report = retention(res, dt.date(2026, 4, 1))
    assert state(res) == {"2025-01": "gold only", "2025-02": "gold only", "2025-03": "gold only", "2025-04": "identifiers"}  # fmt: skip
    held_count = next(m for m in report["months"] if m["month"] == "2025-03")["held"]["CASE-7"]
    assert held_count > 0
    held = holds.read_held(res.store, res.keyring, "CASE-7", "records")
    assert len(held) == held_count
    vault = holds.read_held(res.store, res.keyring, "CASE-7", "vault")
    assert march_number in vault.get_column("identifier").to_list()
    hold_file = res.store.get_bytes(layout.hold_record_key("CASE-7")).decode()
    assert march_number not in hold_file and march_number[-9:] not in hold_file

    holds.run_hold(res, holds.HoldRequest.from_mapping({"action": "release", "case": "CASE-7", "reason": "case closed"}))  # fmt: skip
    report = retention(res, dt.date(2026, 4, 2))
    assert [h["case"] for h in report["holds"]] == ["CASE-7"]
    assert not list(res.store.list("holds/CASE-7/records/"))
    with pytest.raises(KeyDestroyed):
        res.keyring.data_key(layout.hold_key_name("CASE-7"), create=False)

    retention(res, dt.date(2026, 5, 1))
    assert set(state(res).values()) == {"gold only"}
    assert not list(res.bronze.list("bronze/"))  # every file's months are purged: originals gone
    purges = [e for e in read_log(res.store) if e["action"] == "purge_file"]
    again = retention(res, dt.date(2026, 5, 2))  # the next day: nothing left to purge or record
    assert again["files"] == [] and again["months"] == []
    assert [e for e in read_log(res.store) if e["action"] == "purge_file"] == purges

    retention(res, dt.date(2035, 12, 31))
    assert set(state(res).values()) == {"gold only"}
    retention(res, dt.date(2036, 1, 1))  # 10 years after 2025 ends
    assert set(state(res).values()) == {"gone"}

    verdict = verify_log(res.store, res.keyring.public_key())
    assert verdict.ok and verdict.entries > 10
    actions = [e["action"] for e in read_log(res.store)]
    assert {"seal", "ingest", "hold_placed", "purge_month", "purge_file", "hold_released", "purge_hold", "purge_gold_year"} <= set(actions)  # fmt: skip


def test_after_a_purge_nothing_identifying_of_the_month_is_left(
    res: Resources, tmp_path: Path
) -> None:
    files = ingest_months(res, tmp_path)

    def tokens(prefix: str) -> set[str]:
        silver = read_tier(res.store, prefix)
        return set(silver.get_column("origin")) | set(silver.get_column("destination"))

    # The month's end users; the business's own sender number and address recur every month.
    jan_tokens = {t for t in tokens("silver/cdr/year=2025/month=01/") if "." in (t or "")}
    jan_tokens -= tokens("silver/cdr/year=2025/month=02/") | tokens(
        "silver/cdr/year=2025/month=03/"
    )
    assert len(jan_tokens) >= 20  # 15 people a month, each with a number and an address
    retention(res, dt.date(2026, 2, 1))
    jan = files["2025-01"]
    needles = needles_for(jan.numbers, jan.emails) + sorted(jan_tokens)
    assert not find_identifiers(all_text_outputs(res.store), needles)
    with pytest.raises(KeyDestroyed):
        res.keyring.data_key("month-2025-01", create=False)
    # Later months keep theirs: the search is not vacuous.
    feb = files["2025-02"]
    assert read_tier(res.store, "silver/cdr/year=2025/month=02/").height > 0
    assert (
        find_identifiers(
            [("vault", str(read_tier(res.store, "vault/year=2025/month=02/").height))], ["0"]
        )
        is not None
        and feb.numbers
    )


def test_a_replayed_ingest_never_recreates_a_purged_month(res: Resources, tmp_path: Path) -> None:
    g = generate("canonical_csv", tmp_path / "jan.csv", 200, seed=5, start=MONTHS[0], months=1)
    ingest_file(res, g.path, as_of=INGEST_AS_OF)
    retention(res, dt.date(2026, 2, 1))
    late = generate(
        "canonical_csv", tmp_path / "jan-late.csv", 200, seed=6, start=MONTHS[0], months=1
    )
    report = ingest_file(res, late.path, as_of=INGEST_AS_OF)  # a backfill with an old date
    assert report.silver == 0 and report.gold_only == report.gold > 0
    assert not res.keyring.has_data_key("month-2025-01")
    assert not list(res.store.list("silver/cdr/year=2025/month=01/"))


def _snapshot(res: Resources) -> dict[str, object]:
    return {
        "objects": sorted(
            o.key for o in res.store.list("") if not o.key.startswith(("audit/", "audit-events/"))
        ),
        "bronze": sorted(o.key for o in res.bronze.list("bronze/")),
        "keys": res.keyring.data_key_names(),
    }


def test_crash_in_the_middle_of_a_purge_then_rerun_equals_one_clean_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def make(name: str) -> Resources:
        return Resources.from_settings(Settings.from_env(
            {"CDR_STORE": str(tmp_path / name / "store"), "CDR_KEYRING": str(tmp_path / name / "keys")}
        ))  # fmt: skip

    clean = make("clean")
    ingest_months(clean, tmp_path / "in")
    shutil.copytree(tmp_path / "clean", tmp_path / "crashed")
    crashed = make("crashed")
    holds.run_hold(clean, holds.HoldRequest.from_mapping({"action": "place", "case": "C1", "reason": "order", "customer": "cust-001"}))  # fmt: skip
    holds.run_hold(crashed, holds.HoldRequest.from_mapping({"action": "place", "case": "C1", "reason": "order", "customer": "cust-001"}))  # fmt: skip

    retention(clean, dt.date(2026, 3, 1))

    real_purge = crashed.store.purge
    calls = {"n": 0}

    def dying_purge(key: str) -> list[str]:
        calls["n"] += 1
        if calls["n"] == 3:  # after the month key is destroyed, with partitions half deleted
            raise OSError("simulated crash")
        return real_purge(key)

    monkeypatch.setattr(crashed.store, "purge", dying_purge)
    with pytest.raises(RetentionError, match="OSError: simulated crash"):  # reported, not raised
        retention(crashed, dt.date(2026, 3, 1))
    assert not crashed.keyring.has_data_key("month-2025-01")
    monkeypatch.setattr(crashed.store, "purge", real_purge)
    retention(crashed, dt.date(2026, 3, 1))  # verification passes inside
    assert _snapshot(crashed) == _snapshot(clean)
    assert (
        len(holds.read_held(crashed.store, crashed.keyring, "C1", "records"))
        == len(holds.read_held(clean.store, clean.keyring, "C1", "records"))
        > 0
    )
    assert verify_log(crashed.store, crashed.keyring.public_key()).ok
    # The resumed run records what the crashed attempt destroyed, once per month.
    purges = {
        e["event"]: e["what"] for e in read_log(crashed.store) if e["action"] == "purge_month"
    }
    assert sorted(purges) == ["purge-month:2025-01", "purge-month:2025-02"]
    assert all(what["key_destroyed"] is True for what in purges.values())
    assert not list(crashed.store.list("retention/attempts/"))


def test_verification_fails_loudly_when_something_is_left(res: Resources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    ingest_months(res, tmp_path)
    monkeypatch.setattr(res.keyring, "destroy_data_key", lambda name: False)  # a key that survives
    with pytest.raises(RetentionError, match="2025-01: the month's data key still exists"):
        retention(res, dt.date(2026, 2, 1))


def test_country_override_keeps_that_countrys_identifiers_longer(
    res: Resources, tmp_path: Path
) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(
        (Path(__file__).parent.parent / "pipeline" / "core" / "retention.toml").read_text()
        + '\n[[override]]\ncountry = "CH"\nidentifier_months = 24\nreason = "Swiss retention law (example)"\n'
    )
    policy = load_policy(policy_file)
    assert policy.identifier_purge(2025, 1, "CH") == dt.date(2027, 2, 1)
    assert policy.identifier_purge(2025, 1, "PK") == dt.date(2026, 2, 1)
    g = generate("canonical_csv", tmp_path / "jan.csv", 400, seed=9, start=MONTHS[0], months=1)
    ingest_file(res, g.path, as_of=INGEST_AS_OF)
    silver = read_tier(res.store, "silver/")
    swiss = silver.filter(
        (pl.col("destination_country") == "CH") | (pl.col("origin_country") == "CH")
    )
    assert len(swiss) > 0
    run_retention(replace(res, policy=policy), RetentionRequest(dt.date(2026, 2, 1)))
    held = holds.read_held(res.store, res.keyring, "policy-CH-2025-01", "records")
    assert sorted(held.get_column("record_id")) == sorted(swiss.get_column("record_id"))
    assert not list(res.store.list("silver/cdr/year=2025/month=01/"))
    run_retention(replace(res, policy=policy), RetentionRequest(dt.date(2027, 1, 31)))
    assert list(res.store.list("holds/policy-CH-2025-01/records/"))
    run_retention(replace(res, policy=policy), RetentionRequest(dt.date(2027, 2, 1)))
    assert not list(res.store.list("holds/policy-CH-2025-01/records/"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[default\n", "not valid TOML"),
        ("[default]\nidentifier_months = 12\nrecord_years = 10\n", "line 1: reason must say why"),
        ('[default]\nidentifier_months = "12"\nrecord_years = 10\nreason = "x"\n', "whole number"),
        ('[default]\nidentifier_months = 200\nrecord_years = 10\nreason = "x"\n', "outlive"),
        ('[default]\nidentifier_months = 12\nrecord_years = 10\nreason = "x"\nextra = 1\n', "unknown key"),
        ('[default]\nidentifier_months = 12\nrecord_years = 10\nreason = "x"\n\n[[override]]\ncountry = "DE"\nidentifier_months = 6\nreason = "y"\n', "line 6: DE: 6 months is shorter"),
        ('[default]\nidentifier_months = 12\nrecord_years = 10\nreason = "x"\n\n[[override]]\ncountry = "DE"\nidentifier_months = 24\nreason = "y"\n\n[[override]]\ncountry = "DE"\nidentifier_months = 36\nreason = "z"\n', "line 11: a second override for DE"),
        ('[default]\nidentifier_months = 12\nrecord_years = 10\nreason = "x"\n\n[[override]]\ncountry = "Germany"\nidentifier_months = 24\nreason = "y"\n', "ISO 3166"),
    ],
)  # fmt: skip
def test_malformed_or_contradictory_policies_are_refused(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(text, "policy.toml")


def test_shipped_policy_matches_the_privacy_notice() -> None:
    policy = load_policy()
    assert policy.identifier_purge(2025, 3) == dt.date(2026, 4, 1)
    assert policy.record_delete(2025) == dt.date(2036, 1, 1)
    assert json.dumps(policy.reason)


@pytest.mark.s3
def test_on_a_versioned_bucket_no_version_keeps_an_original_or_a_purged_month(
    s3_env: dict[str, str], s3_buckets: tuple[str, str], moto_endpoint: str, tmp_path: Path
) -> None:
    from pipeline.core.store import s3_client
    from pipeline.flows.ingest import copy_into_landing, ingest_landing
    from tests.helpers import all_versions_text

    data, _ = s3_buckets
    client = s3_client(moto_endpoint)
    client.put_bucket_versioning(Bucket=data, VersioningConfiguration={"Status": "Enabled"})
    res = Resources.from_settings(Settings.from_env(s3_env | {"CDR_DEFAULT_REGION": "PK"}))
    jan = generate("canonical_csv", tmp_path / "jan.csv", 200, seed=3, start=MONTHS[0], months=1)
    key = copy_into_landing(res.store, jan.path, "operator-a")
    # What a plain delete left on a versioned bucket before: an original behind a delete marker.
    old = generate("canonical_csv", tmp_path / "old.csv", 50, seed=4, start=MONTHS[0], months=1)
    res.store.delete(copy_into_landing(res.store, old.path, "operator-b"))

    ingest_landing(res, key, as_of=INGEST_AS_OF)
    assert [v for v in res.store.versions("landing/") if v.key == key] == []
    needles = needles_for(jan.numbers, jan.emails) + needles_for(old.numbers, old.emails)
    assert find_identifiers(all_versions_text(client, data), needles)  # the leftover, for now

    report = retention(res, dt.date(2026, 2, 1))
    assert report["verified"] and report["landing_versions_deleted"] == 2  # version + marker
    assert not find_identifiers(all_versions_text(client, data), needles)
    assert not list(res.store.versions("silver/cdr/year=2025/month=01/"))
    assert not list(res.store.versions("vault/year=2025/month=01/"))
    assert not list(res.store.versions("landing/"))
