"""Replay after a fix: a file ingested without a default region gets its national-format
numbers out of quarantine by a replay from its sealed original, once, with counts and proofs
that still reconcile, and no record kept twice."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.core import layout
from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from pipeline.flows.ingest import IngestRequest, run_ingest
from pipeline.flows.replay import ReplayError, ReplayRequest, run_replay
from pipeline.flows.retention import RetentionRequest, run_retention
from pipeline.flows.verify import VerifyRequest, run_verify
from pipeline.records.synth import generate
from tests.conftest import ROOT
from tests.helpers import read_tier

AS_OF = dt.date(2025, 6, 15)
START = dt.date(2025, 3, 1)


def resources(tmp_path: Path, name: str = "store") -> Resources:
    return Resources.from_settings(Settings.from_env(env(tmp_path, name)))


def env(tmp_path: Path, name: str = "store") -> dict[str, str]:
    return {
        "CDR_STORE": str(tmp_path / name),
        "CDR_KEYRING": str(tmp_path / f"{name}-keys"),
        "CDR_DATA_DOCS": str(tmp_path / f"{name}-docs"),
        "CDR_BATCH_ROWS": "700",
    }


def parse_body(res: Resources, sha: str) -> dict:
    return json.loads(res.store.get_bytes(layout.parse_key(sha)))["body"]


def unparseable(body: dict) -> int:
    return sum(n for r, n in body["reasons"].items() if r.startswith("unparseable_number"))


def replay(res: Resources, file: str | None = None) -> list[dict]:
    return run_replay(res, ReplayRequest("unparseable_number", "PK", AS_OF, file)).files


def test_a_file_ingested_without_a_region_is_fixed_by_a_replay_without_losing_a_record(
    tmp_path: Path,
) -> None:
    g = generate("canonical_csv", tmp_path / "cdr.csv", 2500, start=START)
    res = resources(tmp_path)
    report = run_ingest(res, IngestRequest(AS_OF, source="operator-a"), g.path)
    before = parse_body(res, report.sha256)
    stuck = unparseable(before)
    assert stuck > 100  # national-format numbers, no region to read them

    (done,) = replay(res)
    after = parse_body(res, report.sha256)
    assert done["moved"] == before["quarantined"] - after["quarantined"] > 100
    assert after["records"] == before["records"] == after["gold"] + after["quarantined"]
    assert after["replays"][0]["reason"] == "unparseable_number"
    assert after["replays"][0]["before"]["quarantined"] == before["quarantined"]
    quarantine = read_tier(res.store, layout.QUARANTINE_ROWS)
    assert len(quarantine) == after["quarantined"]
    gold = read_tier(res.store, layout.GOLD)
    assert gold.get_column("record_id").n_unique() == len(gold) == after["gold"]
    assert run_verify(res, VerifyRequest()).ok

    # The same as if the region had been given at ingest: the same records kept, as kept there.
    right = resources(tmp_path, "right")
    run_ingest(right, IngestRequest(AS_OF, default_region="PK", source="operator-a"), g.path)
    fixed = parse_body(right, report.sha256)
    assert (fixed["gold"], fixed["reasons"]) == (after["gold"], after["reasons"])
    kept = ["record_id", "event_time", "origin_country", "destination_country", "leaf_index"]
    assert (
        read_tier(right.store, layout.GOLD)
        .select(kept)
        .sort("record_id")
        .equals(gold.select(kept).sort("record_id"))
    )

    # Once: a second replay finds nothing, and the audit log holds one replay entry.
    assert replay(res) == []
    assert parse_body(res, report.sha256) == after
    entries = [json.loads(res.store.get_bytes(o.key)) for o in res.store.list(layout.AUDIT)]
    replays = [e["body"] for e in entries if e["body"]["action"] == "replay"]
    assert len(replays) == 1
    assert replays[0]["what"]["moved"] == done["moved"]
    rows = list(csv.reader(g.path.read_text().splitlines()))[1:]
    numbers = {"".join(c for c in f if c.isdigit()) for r in rows for f in r[6:8]}
    text = json.dumps(replays)
    assert not [n for n in numbers if len(n) >= 7 and n in text]


def test_a_replayed_row_is_still_a_duplicate_of_another_files_record(tmp_path: Path) -> None:
    g = generate("canonical_csv", tmp_path / "first.csv", 1500, bad_share=0, start=START)
    res = resources(tmp_path)
    first = run_ingest(res, IngestRequest(AS_OF, source="operator-a"), g.path)
    stuck = unparseable(parse_body(res, first.sha256))
    # The same CDRs resent with a region: what the first file could not read is kept there.
    second = tmp_path / "second.csv"
    second.write_bytes(g.path.read_bytes().replace(b"\n", b"\r\n"))
    resent = run_ingest(res, IngestRequest(AS_OF, default_region="PK", source="operator-a"), second)
    assert resent.gold == stuck

    (done,) = replay(res, first.sha256[:16])
    assert done["moved"] == 0  # every such row is now a duplicate of the second file's
    body = parse_body(res, first.sha256)
    assert body["reasons"].get("duplicate_record_id") == stuck
    assert "unparseable_number:origin" not in body["reasons"]
    gold = read_tier(res.store, layout.GOLD)
    assert gold.get_column("record_id").n_unique() == len(gold) == 1500
    assert run_verify(res, VerifyRequest()).ok


def test_a_replay_after_the_original_was_purged_is_refused_clearly(tmp_path: Path) -> None:
    g = generate("canonical_csv", tmp_path / "cdr.csv", 800, start=START)
    res = resources(tmp_path)
    run_ingest(res, IngestRequest(AS_OF, source="operator-a"), g.path)
    run_retention(res, RetentionRequest(dt.date(2026, 6, 1)))
    with pytest.raises(ReplayError, match="original was purged"):
        replay(res)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "replay", "--reason", "unparseable_number",
         "--default-region", "PK", "--as-of", AS_OF.isoformat()],
        cwd=ROOT, env={**os.environ, **env(tmp_path)}, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "original was purged" in done.stderr


KILLED_WHILE_REPLAYING = textwrap.dedent(
    """
    import os, signal, sys
    import pipeline.core.store as store
    real_replace = os.replace
    seen = []
    def replace(src, dst):
        if "/gold/cdr/" in str(dst):
            seen.append(dst)
            if len(seen) == 2:  # one month's gold part replaced, the next not yet
                os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)
    store.os.replace = replace
    from pipeline.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_a_replay_killed_mid_way_is_redone_whole_by_the_next(tmp_path: Path) -> None:
    g = generate("canonical_csv", tmp_path / "cdr.csv", 2500, start=START)
    res = resources(tmp_path)
    report = run_ingest(res, IngestRequest(AS_OF, source="operator-a"), g.path)
    before = parse_body(res, report.sha256)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WHILE_REPLAYING, "replay", "--reason",
         "unparseable_number", "--default-region", "PK", "--as-of", AS_OF.isoformat()],
        cwd=ROOT, env={**os.environ, **env(tmp_path)}, capture_output=True,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert parse_body(res, report.sha256) == before  # not committed
    assert res.store.exists(layout.lease_key(report.sha256))  # the dead run's lease

    (done,) = replay(res)
    after = parse_body(res, report.sha256)
    assert done["moved"] == before["quarantined"] - after["quarantined"] > 100
    gold = read_tier(res.store, layout.GOLD)
    assert gold.get_column("record_id").n_unique() == len(gold) == after["gold"]
    assert len(read_tier(res.store, layout.QUARANTINE_ROWS)) == after["quarantined"]
    assert after["gold"] + after["quarantined"] == 2500
    assert run_verify(res, VerifyRequest()).ok
    assert replay(res) == []
