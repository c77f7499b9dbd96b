"""A hold that has ended forgets the person: once released (or expired) and purged, its record
keeps the case, reason, dates and counts, never a token, in no version of the object."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from pipeline.cli import main as cli
from pipeline.core import layout
from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from pipeline.core.store import s3_client
from pipeline.flows import holds
from pipeline.proof.audit import read_log
from pipeline.records.lookup import identifier_tokens
from pipeline.records.synth import generate
from tests.helpers import all_versions_text, find_identifiers

pytestmark = pytest.mark.s3


def run(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *args: str) -> int:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return cli(list(args))


def test_after_release_and_the_next_retention_run_the_hold_record_holds_no_token(
    s3_env: dict[str, str],
    s3_buckets: tuple[str, str],
    moto_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, _ = s3_buckets
    client = s3_client(moto_endpoint)
    client.put_bucket_versioning(Bucket=data, VersioningConfiguration={"Status": "Enabled"})
    env = s3_env | {"CDR_DEFAULT_REGION": "PK"}
    g = generate("canonical_csv", tmp_path / "mar.csv", 200, seed=7, start=dt.date(2025, 3, 1), months=1)  # fmt: skip
    assert run(monkeypatch, env, "ingest", "--as-of", "2025-06-15", str(g.path)) == 0
    numbers = sorted(g.numbers)[:2]
    hold_args = ["hold", "place", "--case", "CASE-9", "--reason", "court order 9/2026"]
    assert run(monkeypatch, env, *hold_args, "--identifier", numbers[0], "--identifier", numbers[1]) == 0  # fmt: skip
    res = Resources.from_settings(Settings.from_env(env))
    tokens = identifier_tokens(res.keyring, numbers, "PK")
    record = layout.hold_record_key("CASE-9")
    assert set(tokens) <= set(json.loads(res.store.get_bytes(record))["tokens"])

    assert run(monkeypatch, env, "retention", "--as-of", "2026-04-01") == 0  # March is purged
    assert holds.read_held(res.store, res.keyring, "CASE-9", "records").height > 0
    assert run(monkeypatch, env, "hold", "release", "--case", "CASE-9", "--reason", "closed") == 0
    assert run(monkeypatch, env, "retention", "--as-of", "2026-04-02") == 0

    kept = json.loads(res.store.get_bytes(record))
    assert kept["tokens"] == [] and kept["identifier_count"] == 2
    assert (kept["case"], kept["reason"], kept["purged_at"]) == ("CASE-9", "court order 9/2026", "2026-04-02")  # fmt: skip
    assert kept["placed_at"] and kept["released_at"]
    # No version of any object under holds/ names the person's token (the token key lives on).
    holds_text = [(k, t) for k, t in all_versions_text(client, data) if "/holds/" in f"/{k}"]
    assert holds_text and not find_identifiers(holds_text, tokens + numbers)
    # The history stays in the audit log: placed, released, purged, without identifiers.
    actions = [e["action"] for e in read_log(res.store) if e.get("what", {}).get("case") == "CASE-9"]  # fmt: skip
    assert {"hold_placed", "hold_released", "purge_hold"} <= set(actions)
    assert not find_identifiers([(k, t) for k, t in all_versions_text(client, data) if k.startswith("cdr/audit/")], tokens + numbers)  # fmt: skip
    # A later run has nothing more to do for it, and the list still shows it with its count.
    assert run(monkeypatch, env, "retention", "--as-of", "2026-04-03") == 0
    [listed] = holds.list_holds(res.store)
    assert listed.identifiers() == 2 and listed.public()["tokens"] == 2


def test_an_expired_hold_forgets_its_tokens_too(res: Resources) -> None:
    hold = holds.place(
        res.store,
        holds.Hold(
            "CASE-10",
            "order 10",
            "2025-01-01T00:00:00+00:00",
            "clerk",
            tokens=["t.1", "t.2"],
            until="2026-01-01",
        ),
    )
    still_active = holds.forget(res.store, hold.case, dt.date(2025, 12, 31))
    assert still_active is not None and still_active.tokens == ["t.1", "t.2"]
    holds.purge_hold(res.store, res.keyring, hold.case, dt.date(2026, 1, 1))
    text = res.store.get_bytes(layout.hold_record_key("CASE-10")).decode()
    assert "t.1" not in text and json.loads(text)["identifier_count"] == 2


def test_a_forget_lost_in_a_crash_fails_the_run_and_the_rerun_finishes_it(
    res: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.flows.retention import RetentionError, RetentionRequest, run_retention

    holds.place(
        res.store,
        holds.Hold(
            "CASE-11",
            "order 11",
            "2025-01-01T00:00:00+00:00",
            "clerk",
            tokens=["t.9"],
            until="2026-01-01",
        ),
    )
    with monkeypatch.context() as m:
        m.setattr(holds, "forget", lambda *a: None)  # the record's rewrite never happens
        with pytest.raises(RetentionError, match="hold CASE-11: ended, and its record still names"):
            run_retention(res, RetentionRequest(dt.date(2026, 1, 2)))
    report = run_retention(res, RetentionRequest(dt.date(2026, 1, 3)))
    assert report.verified and [h["case"] for h in report.holds] == ["CASE-11"]
    assert "t.9" not in res.store.get_bytes(layout.hold_record_key("CASE-11")).decode()
