"""Ingest, retention, verify and audit verify through a proxy that fails a few percent of
requests (connection resets, 500/503 answers, delays, answers lost after the write, bodies cut
mid-stream; seeded), on a versioned data bucket and an Object Lock bronze bucket, compared with
the same runs without faults: identical records in every tier, one audit entry per event, no
version or delete marker holding a purged month's identifiers, and every run converging on rerun.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
import uuid
from pathlib import Path

import polars as pl
import pytest

from pipeline.cli import main as cli
from pipeline.core.config import Settings
from pipeline.core.keys import LocalKeyring
from pipeline.core.resources import Resources
from pipeline.core.store import s3_client
from pipeline.flows.ingest import copy_into_landing
from pipeline.proof.audit import read_log, verify_log
from pipeline.records.synth import Generated, generate
from tests.faultproxy import FAULTS, FaultPlan, FaultProxy
from tests.helpers import all_versions_text, find_identifiers, needles_for, read_tier

pytestmark = [pytest.mark.s3, pytest.mark.slow]  # a fault suite
INGEST_AS_OF = dt.date(2025, 6, 15)
PURGE_AS_OF = dt.date(2026, 2, 15)  # 2025-01 is purged, 2025-02 keeps its identifiers
COMMANDS = [
    ["ingest", "--landing", "--as-of", f"{INGEST_AS_OF}"],
    ["retention", "--as-of", f"{PURGE_AS_OF}"],
    ["verify"],
    ["audit", "verify"],
]


def _buckets(endpoint: str) -> tuple[str, str]:
    client = s3_client(endpoint)
    suffix = uuid.uuid4().hex[:8]
    data, bronze = f"data-{suffix}", f"bronze-{suffix}"
    client.create_bucket(Bucket=data)
    client.put_bucket_versioning(Bucket=data, VersioningConfiguration={"Status": "Enabled"})
    client.create_bucket(Bucket=bronze, ObjectLockEnabledForBucket=True)
    return data, bronze


def _deployment(endpoint: str, keys: Path, files: list[tuple[str, Generated]]) -> dict[str, str]:
    data, bronze = _buckets(endpoint)
    env = {
        "CDR_STORE": f"s3://{data}/cdr",
        "CDR_BRONZE_STORE": f"s3://{bronze}",
        "CDR_BRONZE_LOCK": "true",
        "CDR_S3_ENDPOINT_URL": endpoint,
        "CDR_KEYRING": str(keys),
        "CDR_DEFAULT_REGION": "PK",
        "CDR_BATCH_ROWS": "100",
    }
    res = Resources.from_settings(Settings.from_env(env))
    for source, g in files:
        copy_into_landing(res.store, g.path, source)
    return env


def _converge(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], args: list[str]) -> int:
    """Run a command until it succeeds; how many runs it took."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for attempt in range(1, 9):
        if cli(args) == 0:
            return attempt
    raise AssertionError(f"{' '.join(args)} did not converge in 8 runs")


def _records(res: Resources, prefix: str) -> pl.DataFrame:
    """A tier's records, sorted, without what is encrypted or keyed by a per-file random key
    (raw rows, identity commitments): the rest must be identical across deployments."""
    frame = read_tier(res.store, prefix)
    keep = [c for c, t in frame.schema.items() if t != pl.Binary and c != "identity_commitment"]
    return frame.select(keep).sort(keep) if len(frame) else frame


def test_faulty_network_gives_the_store_a_clean_run_gives(
    moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [
        (
            "operator-a",
            generate(
                "canonical_csv",
                tmp_path / "jan.csv",
                120,
                seed=1,
                start=dt.date(2025, 1, 1),
                months=1,
                bad_share=0.05,
            ),
        ),
        (
            "operator-b",
            generate(
                "messaging_jsonl",
                tmp_path / "feb.jsonl",
                120,
                seed=2,
                start=dt.date(2025, 2, 1),
                months=1,
                bad_share=0.05,
            ),
        ),
    ]
    # One token key and seal key for both deployments, so their records can be compared.
    template = tmp_path / "keys-template"
    ring = LocalKeyring(template)
    ring.token_key()
    ring.signing_key()
    shutil.copytree(template, tmp_path / "keys-clean")
    shutil.copytree(template, tmp_path / "keys-faulty")

    started = time.perf_counter()
    clean_env = _deployment(moto_endpoint, tmp_path / "keys-clean", files)
    for args in COMMANDS:
        assert _converge(monkeypatch, clean_env, args) == 1

    clean_s = time.perf_counter() - started
    plan = FaultPlan(rate=0.07, seed=18, faults=FAULTS, delay_s=0.05)
    with FaultProxy(moto_endpoint, plan) as url:
        faulty_env = _deployment(url, tmp_path / "keys-faulty", files)
        runs = {args[0]: _converge(monkeypatch, faulty_env, args) for args in COMMANDS}
        for args in COMMANDS:  # converged: a rerun changes nothing and succeeds
            assert _converge(monkeypatch, faulty_env, args) == 1
    injected = [s for s in plan.seen if s[2] != "pass"]
    print(f"runs under faults: {runs}; {len(injected)} faults in {len(plan.seen)} requests; "
          f"clean {clean_s:.1f} s, all {time.perf_counter() - started:.1f} s")  # fmt: skip
    assert len(injected) >= 8  # the faults really happened, of most kinds
    assert len({a for _, _, a in injected} & {"reset", "500", "503", "lost", "cut"}) >= 4

    direct = {**faulty_env, "CDR_S3_ENDPOINT_URL": moto_endpoint}
    clean = Resources.from_settings(Settings.from_env(clean_env))
    faulty = Resources.from_settings(Settings.from_env(direct))
    for prefix in ("silver/", "gold/", "quarantine/rows/"):
        assert _records(faulty, prefix).equals(_records(clean, prefix)), prefix
    assert len(_records(clean, "gold/")) > 0 and len(_records(clean, "silver/")) > 0

    entries = read_log(faulty.store)
    events = [e["event"] for e in entries]
    assert len(events) == len(set(events))  # one entry per event
    assert sorted(events) == sorted(e["event"] for e in read_log(clean.store))
    assert verify_log(faulty.store, faulty.keyring.public_key()).ok
    assert not list(faulty.store.list("leases/")) and not list(faulty.store.list("landing/"))

    jan = files[0][1]
    client = s3_client(moto_endpoint)
    data_bucket = faulty_env["CDR_STORE"][len("s3://") :].split("/")[0]
    assert not list(faulty.store.versions("silver/cdr/year=2025/month=01/"))
    assert not list(faulty.store.versions("vault/year=2025/month=01/"))
    assert not list(faulty.store.versions("landing/"))
    assert not find_identifiers(
        all_versions_text(client, data_bucket), needles_for(jan.numbers, jan.emails)
    )
